import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRegistry } from '../../../lib/metrics.ts';

/**
 * Test-only: every metric name the code can expose, so a dashboard query or an alert rule
 * that names a metric nobody exports (a typo, a rename) fails a test instead of showing an
 * empty panel. Two sources:
 *   - a real registry from lib/metrics.ts createRegistry: the process and runtime metrics
 *     prom-client's standard process/runtime names (process_*, nodejs_*), and edgemesh_build_info;
 *   - the parts' sources: every string literal that is a whole `edgemesh_*` name (metric
 *     names are written out where they are registered), and names built from a prefix as
 *     lib/tunnel/renewer.ts does (`${prefix}_certificate_expiry_seconds`), with the prefixes
 *     passed to certificateMetrics().
 * Tests, testing/ folders and node_modules are left out: a fake metric there proves nothing.
 */
const PARTS = ['lib', 'gateway', 'sidecar', 'tunnel-server', 'webhook', 'signer'];

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'testing' && entry.name !== 'node_modules' && entry.name !== 'testdata')
        out.push(...sources(path));
    } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) out.push(path);
  }
  return out;
}

export async function knownMetricNames(root: string): Promise<Set<string>> {
  const names = new Set<string>();
  const registry = createRegistry('known-metrics');
  for (const m of registry.getMetricsAsArray()) names.add((m as unknown as { name: string }).name);

  const literals = new Set<string>();
  const suffixes = new Set<string>();
  const prefixes = new Set<string>();
  for (const file of PARTS.flatMap((p) => sources(join(root, p)))) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/['"`](edgemesh_[a-z0-9_]+)['"`]/g)) literals.add(m[1] as string);
    for (const m of text.matchAll(/`\$\{prefix\}(_[a-z0-9_]+)`/g)) suffixes.add(m[1] as string);
    for (const m of text.matchAll(/certificateMetrics\(\s*'(edgemesh_[a-z0-9_]+)'/g))
      prefixes.add(m[1] as string);
  }
  for (const l of literals) if (!prefixes.has(l)) names.add(l);
  for (const p of prefixes) for (const s of suffixes) names.add(`${p}${s}`);
  return names;
}

/** The `edgemesh_*` metric names a PromQL expression selects (label names never start so). */
export function metricNamesIn(expr: string): string[] {
  return [...new Set([...expr.matchAll(/\bedgemesh_[a-z0-9_]+\b/g)].map((m) => m[0]))];
}

/** Whether `name` is exposed: itself, or a histogram's/summary's _bucket, _sum or _count series. */
export function isKnown(name: string, known: ReadonlySet<string>): boolean {
  if (known.has(name)) return true;
  const base = name.replace(/_(bucket|sum|count)$/, '');
  return base !== name && known.has(base);
}
