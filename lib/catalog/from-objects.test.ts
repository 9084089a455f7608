import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  buildCatalog,
  CatalogBuilder,
  diffCatalogs,
  type EventType,
  type ObjectKind,
  objectKind,
} from './from-objects.ts';
import { parseObjectsText } from './objects-file.ts';
import { applyUpdate } from './store.ts';
import { type Catalog, emptyCatalog } from './types.ts';
import { validateCatalog } from './validate.ts';

// Golden files: testdata/<case>.yaml → testdata/<case>.golden.json ({catalog, problems,
// ignored}). REFRESH_GOLDEN=1 rewrites them; a golden file without its case fails.
const dir = join(import.meta.dirname, 'testdata');
const refresh = process.env.REFRESH_GOLDEN === '1';
const cases = readdirSync(dir)
  .filter((f) => f.endsWith('.yaml'))
  .map((f) => f.slice(0, -'.yaml'.length))
  .sort();

const load = (name: string) => parseObjectsText(readFileSync(join(dir, `${name}.yaml`), 'utf8'), name);
const content = (c: Catalog) => ({ ...c, revision: 0 });

/** A seeded shuffle so a failure reproduces. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

describe('catalog from Kubernetes objects (golden)', () => {
  it('has cases', () => expect(cases.length).toBeGreaterThanOrEqual(5));

  for (const name of cases) {
    it(name, () => {
      const result = buildCatalog(load(name));
      // Whatever the objects hold, the result is a valid catalog.
      expect(validateCatalog(JSON.parse(JSON.stringify(result.catalog)))).toEqual(result.catalog);
      const got = `${JSON.stringify(result, null, 2)}\n`;
      const goldenPath = join(dir, `${name}.golden.json`);
      if (refresh) writeFileSync(goldenPath, got);
      const want = readFileSync(goldenPath, 'utf8');
      // toEqual on the text gives a line diff on failure.
      expect(got).toEqual(want);
    });
  }

  it('has no golden file without a case', () => {
    const goldens = readdirSync(dir).filter((f) => f.endsWith('.golden.json'));
    const unused = goldens.filter((f) => !cases.includes(f.slice(0, -'.golden.json'.length)));
    expect(unused).toEqual([]);
  });
});

describe('incremental builder', () => {
  for (const name of cases) {
    it(`${name}: events in any order give the same catalog, and the updates replay it`, () => {
      const objects = load(name).filter((o) => objectKind(o));
      const full = buildCatalog(objects).catalog;
      for (const seed of [1, 7, 42]) {
        const builder = new CatalogBuilder();
        let replayed: Catalog | undefined = emptyCatalog();
        for (const obj of shuffled(objects, seed)) {
          const before = builder.catalog.revision;
          const updates = builder.handle(objectKind(obj) as ObjectKind, 'add', obj);
          updates.forEach((u, i) => {
            expect(u.type !== 'snapshot' && u.revision).toBe(before + i + 1);
            replayed = applyUpdate(replayed, u);
          });
        }
        expect(content(builder.catalog)).toEqual(content(full));
        expect(replayed).toEqual(builder.catalog);
        // Deleting everything, in another order, empties it again.
        for (const obj of shuffled(objects, seed + 100)) {
          for (const u of builder.handle(objectKind(obj) as ObjectKind, 'delete', obj)) {
            replayed = applyUpdate(replayed, u);
          }
        }
        expect(content(builder.catalog)).toEqual(content(emptyCatalog()));
        expect(replayed).toEqual(builder.catalog);
      }
    });
  }

  it('emits nothing for an update that changes nothing the catalog holds', () => {
    const [service, slice] = load('clusterip-web');
    const builder = new CatalogBuilder();
    expect(builder.handle('Service', 'add', service)).toHaveLength(1);
    expect(builder.handle('EndpointSlice', 'add', slice)).toHaveLength(1);
    const relabelled = structuredClone(service) as { metadata: { labels: Record<string, string> } };
    relabelled.metadata.labels.version = 'v2';
    expect(builder.handle('Service', 'update', relabelled)).toEqual([]);
    expect(builder.catalog.revision).toBe(2);
  });

  it('follows an endpoint becoming ready, a slice moving, a pod changing IP', () => {
    const objects = load('clusterip-web');
    const builder = new CatalogBuilder();
    for (const o of objects) builder.handle(objectKind(o) as ObjectKind, 'add', o);
    const start = builder.catalog.revision;
    const slice = structuredClone(objects[1]) as {
      endpoints: Array<{ conditions: Record<string, boolean> }>;
    };
    slice.endpoints[1].conditions = { ready: true, serving: true, terminating: false };
    const [u] = builder.handle('EndpointSlice', 'update', slice);
    expect(u).toMatchObject({ type: 'service', revision: start + 1, key: 'demo/web' });
    expect(builder.catalog.services['demo/web'].endpoints.find((e) => e.ip === '10.244.2.9')?.ready).toBe(
      true,
    );

    const pod = structuredClone(objects[2]) as { status: { podIP: string; podIPs: Array<{ ip: string }> } };
    pod.status.podIP = '10.244.1.99';
    pod.status.podIPs = [{ ip: '10.244.1.99' }];
    const podUpdates = builder.handle('Pod', 'update', pod);
    expect(podUpdates.map((x) => x.type === 'pod' && [x.ip, x.pod === null])).toEqual([
      ['10.244.1.17', true],
      ['10.244.1.99', false],
    ]);

    const events: Array<[ObjectKind, EventType, unknown]> = [['Service', 'delete', objects[0]]];
    for (const [k, e, o] of events) builder.handle(k, e, o);
    expect(builder.catalog.services['demo/web']).toBeUndefined();
    // The slice is still known: the service coming back brings its endpoints back.
    builder.handle('Service', 'add', objects[0]);
    expect(builder.catalog.services['demo/web'].endpoints).toHaveLength(3);
  });

  it('diffCatalogs moves one catalog to another with consecutive revisions', () => {
    const a = { ...buildCatalog(load('clusterip-web')).catalog, revision: 10 };
    const b = buildCatalog([...load('clusterip-web').slice(0, 3), ...load('dual-stack')]).catalog;
    const updates = diffCatalogs(a, b);
    expect(updates.map((u) => u.type !== 'snapshot' && u.revision)).toEqual(updates.map((_, i) => 11 + i));
    let c: Catalog | undefined = a;
    for (const u of updates) c = applyUpdate(c, u);
    expect(content(c as Catalog)).toEqual(content(b));
    expect(diffCatalogs(b, b)).toEqual([]);
  });

  it('never throws on garbage objects', () => {
    const garbage: unknown[] = [
      null,
      42,
      'x',
      [],
      {},
      { metadata: 'x' },
      { metadata: { name: 7 } },
      { metadata: { name: 'a' }, spec: { ports: 'x', clusterIPs: [1, null], type: 'Weird' } },
      { metadata: { name: 'b' }, spec: { ports: [{ port: 70000 }, null, { port: 80, protocol: 'ICMP' }] } },
      { metadata: { name: 'c', namespace: 'Bad_NS' }, spec: { clusterIP: '10.0.0.1' } },
      {
        metadata: { name: 'd', labels: { 'kubernetes.io/service-name': 5 } },
        addressType: 'IPv4',
        endpoints: 'x',
      },
      {
        metadata: { name: 'e', labels: { 'kubernetes.io/service-name': 'a' } },
        addressType: 'IPv4',
        endpoints: [{ addresses: ['1.2.3.4', 5, 'fd00::1'], conditions: 'x', hostname: 'Bad Host' }],
        ports: [{ port: 'x' }],
      },
      { metadata: { name: 'f' }, spec: { nodeName: 'n' }, status: { podIPs: [{ ip: 'x' }, null] } },
      { metadata: { name: 'g' }, status: { addresses: [{ type: 'InternalIP', address: 'nope' }] } },
    ];
    const problems: string[] = [];
    const builder = new CatalogBuilder({ onProblem: (p) => problems.push(p) });
    for (const kind of ['Service', 'EndpointSlice', 'Pod', 'Node'] as const) {
      for (const obj of garbage) {
        for (const event of ['add', 'update', 'delete'] as const) builder.handle(kind, event, obj);
        builder.handle(kind, 'add', obj);
      }
    }
    expect(validateCatalog(JSON.parse(JSON.stringify(builder.catalog)))).toEqual(builder.catalog);
    expect(problems.some((p) => p.includes('left out of the catalog'))).toBe(true);
    expect(problems.some((p) => p.includes('skipped a port'))).toBe(true);
  });
});

describe('CatalogBuilder reuse (a restarted gateway)', () => {
  it('holds the equal items of the catalog it replaces, and new ones for what changed', () => {
    const objects = load('clusterip-web');
    const kinds = objects.map((o) => [objectKind(o), o] as const).filter(([k]) => k) as [
      ObjectKind,
      unknown,
    ][];
    const first = new CatalogBuilder({ nodeName: 'elsewhere' });
    for (const [kind, o] of kinds) first.handle(kind, 'add', o);
    const persisted = validateCatalog(JSON.parse(JSON.stringify(first.catalog)));
    const key = Object.keys(persisted.services)[0];
    const before = persisted.services[key];

    const second = new CatalogBuilder({ nodeName: 'elsewhere', reuse: persisted });
    for (const [kind, o] of kinds) second.handle(kind, 'add', o);
    const after = second.catalog;
    expect(after.services).toEqual(persisted.services);
    expect(after.services[key].service).toBe(before.service);
    after.services[key].endpoints.forEach((e, i) => {
      expect(e).toBe(before.endpoints[i]);
    });
    for (const ip of Object.keys(after.pods)) expect(after.pods[ip]).toBe(persisted.pods[ip]);

    second.endReuse();
    const slice = kinds.find(([k]) => k === 'EndpointSlice')?.[1] as { endpoints: { conditions?: object }[] };
    const changed = structuredClone(slice);
    changed.endpoints[0].conditions = { ready: false };
    second.handle('EndpointSlice', 'update', changed);
    expect(second.catalog.services[key].endpoints.some((e) => !before.endpoints.includes(e))).toBe(true);
  });
});
