import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

// What a gateway loads before it serves its persisted catalog: every module is CPU spent before a
// restarted gateway answers its first LOOKUP (docs/scale.md, round 5). The tunnel's modules
// (node-forge, node-datachannel) load when the tunnel starts, and the metrics take prom-client's
// classes from their own files (lib/metrics.ts), not its index (which loads @opentelemetry/api).
const LATE = ['/node-forge/', '/node-datachannel/', '/@opentelemetry/', '/prom-client/index.js', '/undici/'];

/** The files a fresh node process loads to import `specifier` (module hooks see CJS and ESM). */
function loadedBy(specifier: string): string[] {
  const code = `
    import { registerHooks } from 'node:module';
    const seen = [];
    registerHooks({ load(url, context, next) { seen.push(url); return next(url, context); } });
    await import(${JSON.stringify(specifier)});
    process.stdout.write(JSON.stringify(seen));
  `;
  const out = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`importing ${specifier} failed: ${out.stderr}`);
  return JSON.parse(out.stdout) as string[];
}

describe('gateway start-up modules', () => {
  it('importing the gateway command loads none of the modules it needs only later', () => {
    const loaded = loadedBy(new URL('./cli.ts', import.meta.url).href);
    // It did load the gateway itself (the hook saw the graph).
    expect(loaded.some((u) => u.endsWith('/gateway/gateway.ts'))).toBe(true);
    expect(loaded.filter((u) => LATE.some((l) => u.includes(l)))).toEqual([]);
  });

  it('the tunnel still loads them when it starts', () => {
    const loaded = loadedBy(new URL('./tunnel/index.ts', import.meta.url).href);
    expect(loaded.some((u) => u.includes('/node-forge/'))).toBe(true);
  });
});
