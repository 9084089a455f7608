import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { dashboardPanels, dashboardQueries } from './testing/dashboard.ts';
import { isKnown, knownMetricNames, metricNamesIn } from './testing/known-metrics.ts';
import { prometheusBinary, runTool } from './testing/prometheus-tools.ts';

// The Grafana dashboard: every query parses (promtool check rules over a temporary rules
// file with one recording rule per query: promtool has no other offline PromQL check), and
// every edgemesh_* metric it or the alert rules name is one the code exports. That the
// queries also evaluate is prometheus.netns.test.ts's job, against a real Prometheus.
const dir = import.meta.dirname;
const root = join(dir, '../..');
const dashboardFile = join(dir, 'grafana-dashboard.json');
const queries = dashboardQueries(dashboardFile);
const tmp = mkdtempSync(join(tmpdir(), 'edgemesh-dashboard-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let promtool = '';
let known = new Set<string>();
beforeAll(async () => {
  promtool = prometheusBinary('promtool');
  known = await knownMetricNames(root);
});

describe('grafana-dashboard.json', () => {
  it('has panels with a title, a description and queries on the chosen Prometheus', () => {
    const doc = JSON.parse(readFileSync(dashboardFile, 'utf8'));
    expect(doc.templating.list).toContainEqual(
      expect.objectContaining({ name: 'datasource', type: 'datasource' }),
    );
    const panels = dashboardPanels(dashboardFile).filter((p) => p.type !== 'row');
    expect(panels.length).toBeGreaterThan(20);
    const ids = dashboardPanels(dashboardFile).map((p) => (p as unknown as { id: number }).id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels as unknown as {
      title: string;
      description?: string;
      datasource: unknown;
      targets: { datasource: unknown }[];
    }[]) {
      expect(p.description, p.title).toBeTruthy();
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JS template
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets) expect(t.datasource, p.title).toEqual(p.datasource);
    }
  });

  it('uses no Grafana variable but the interval ones it knows (the rest would not be PromQL)', () => {
    expect(queries.filter((q) => q.expr.includes('$')).map((q) => `${q.panel}: ${q.raw}`)).toEqual([]);
  });

  it('every query parses (promtool check rules, one recording rule each)', async () => {
    const file = join(tmp, 'dashboard.rules.yaml');
    const rules = queries.map((q, i) => ({ record: `edgemesh:dashboard:query${i}`, expr: q.expr }));
    writeFileSync(file, YAML.stringify({ groups: [{ name: 'dashboard', rules }] }));
    const r = await runTool(promtool, ['check', 'rules', file]);
    expect(
      r.code,
      `${r.output}\n(queries in order: ${queries.map((q, i) => `${i} ${q.panel}`).join('; ')})`,
    ).toBe(0);
    expect(r.output).toContain(`SUCCESS: ${queries.length} rules found`);
  });

  it('names only metrics the code exports', () => {
    expect(known.has('edgemesh_gateway_peer_path')).toBe(true);
    expect(known.has('process_resident_memory_bytes')).toBe(true);
    expect(isKnown('edgemesh_gateway_peer_pathz', known)).toBe(false);
    expect(isKnown('edgemesh_webhook_admission_duration_seconds_bucket', known)).toBe(true);
    const unknown = queries.flatMap((q) =>
      metricNamesIn(q.expr)
        .filter((n) => !isKnown(n, known))
        .map((n) => `${q.panel}: ${n}`),
    );
    expect(unknown).toEqual([]);
  });
});

describe('edgemesh.rules.yaml', () => {
  it('names only metrics the code exports', () => {
    const doc = YAML.parse(readFileSync(join(dir, 'edgemesh.rules.yaml'), 'utf8')) as {
      groups: { rules: { alert: string; expr: string }[] }[];
    };
    const unknown = doc.groups
      .flatMap((g) => g.rules)
      .flatMap((r) =>
        metricNamesIn(r.expr)
          .filter((n) => !isKnown(n, known))
          .map((n) => `${r.alert}: ${n}`),
      );
    expect(unknown).toEqual([]);
  });
});
