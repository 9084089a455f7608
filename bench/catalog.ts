// Catalog building and checking at cluster scale (SERVICES services × ENDPOINTS endpoints):
// - the gateway's incremental builder per EndpointSlice event, against rebuilding the whole
//   catalog from all objects for each event (the naive baseline), in the same run;
// - strict validation of a snapshot, against JSON.parse of the same text alone;
// - applying one increment to a store (what each sidecar does per feed line).
// Every loop is bounded in count and time.
import { performance } from 'node:perf_hooks';
import { buildCatalog, CatalogBuilder, type ObjectKind, objectKind } from '../lib/catalog/from-objects.ts';
import { CatalogStore } from '../lib/catalog/store.ts';
import { validateCatalog } from '../lib/catalog/validate.ts';

const SERVICES = 2_000;
const ENDPOINTS = 10;
const NODES = 50;

function objects(): unknown[] {
  const out: unknown[] = [];
  for (let n = 0; n < NODES; n++) {
    out.push({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: `edge-${n}` },
      status: { addresses: [{ type: 'InternalIP', address: `192.168.${n}.1` }] },
    });
  }
  for (let s = 0; s < SERVICES; s++) {
    const ns = `ns-${s % 40}`;
    out.push({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { namespace: ns, name: `svc-${s}` },
      spec: { clusterIP: `10.96.${s >> 8}.${s & 255}`, ports: [{ name: 'http', port: 80 }] },
    });
    const endpoints = [];
    for (let e = 0; e < ENDPOINTS; e++) {
      const i = s * ENDPOINTS + e;
      const ip = `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
      const node = `edge-${i % NODES}`;
      endpoints.push({
        addresses: [ip],
        conditions: { ready: true },
        nodeName: node,
        targetRef: { kind: 'Pod', name: `p-${i}` },
      });
      out.push({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { namespace: ns, name: `p-${i}` },
        spec: { nodeName: node },
        status: { podIP: ip },
      });
    }
    out.push({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { namespace: ns, name: `svc-${s}-x`, labels: { 'kubernetes.io/service-name': `svc-${s}` } },
      addressType: 'IPv4',
      endpoints,
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    });
  }
  return out;
}

/** Runs `fn` up to `max` times or `ms` milliseconds; returns the mean µs per call. */
function timed(fn: (i: number) => void, max: number, ms: number): { usPerOp: number; ops: number } {
  const start = performance.now();
  let i = 0;
  while (i < max && performance.now() - start < ms) fn(i++);
  return { usPerOp: ((performance.now() - start) * 1000) / i, ops: i };
}

const all = objects();
const slices = all.filter((o) => objectKind(o) === 'EndpointSlice') as Array<{
  endpoints: Array<{ conditions: { ready: boolean } }>;
}>;
console.log(
  `catalog: ${SERVICES} services × ${ENDPOINTS} endpoints, ${SERVICES * ENDPOINTS} pods, ${NODES} nodes (${all.length} objects)`,
);

// Baseline: rebuild everything from all objects for one event.
const full = timed(() => buildCatalog(all), 20, 10_000);
// Incremental: one EndpointSlice update (an endpoint flips readiness) on a warm builder.
const builder = new CatalogBuilder();
for (const o of all) builder.handle(objectKind(o) as ObjectKind, 'add', o);
const flipped = slices.map((s) => {
  const c = structuredClone(s);
  c.endpoints[0].conditions.ready = false;
  return [s, c];
});
const incremental = timed(
  (i) => {
    const [a, b] = flipped[i % flipped.length];
    builder.handle('EndpointSlice', 'update', i % 2 === 0 ? b : a);
  },
  20_000,
  5_000,
);
console.log(`full rebuild per event (baseline): ${(full.usPerOp / 1000).toFixed(1)} ms (${full.ops} runs)`);
console.log(
  `incremental builder per event:     ${incremental.usPerOp.toFixed(1)} µs (${incremental.ops} runs)`,
);
console.log(
  `ratio: incremental is ${(full.usPerOp / incremental.usPerOp).toFixed(0)}× faster than a rebuild`,
);

// Validation of a snapshot against parsing alone.
const text = JSON.stringify(builder.catalog);
const parseOnly = timed(() => JSON.parse(text), 50, 5_000);
const parseAndValidate = timed(() => validateCatalog(JSON.parse(text)), 50, 5_000);
const mb = text.length / 1e6;
console.log(
  `snapshot ${mb.toFixed(1)} MB: JSON.parse ${(mb / (parseOnly.usPerOp / 1e6)).toFixed(0)} MB/s (baseline), parse+validate ${(mb / (parseAndValidate.usPerOp / 1e6)).toFixed(0)} MB/s`,
);
console.log(
  `ratio: strict validation costs ${(parseAndValidate.usPerOp / parseOnly.usPerOp).toFixed(2)}× a bare JSON.parse`,
);

// A sidecar applying one increment (copy-on-write of the services map).
const store = new CatalogStore();
store.apply({ type: 'snapshot', catalog: builder.catalog });
const entry = builder.catalog.services['ns-0/svc-0'];
const apply = timed(
  (i) => {
    store.apply({
      type: 'service',
      revision: (store.current?.revision ?? 0) + 1,
      key: 'ns-0/svc-0',
      entry: i % 2 ? entry : { ...entry, endpoints: [] },
    });
  },
  20_000,
  3_000,
);
console.log(`store.apply of one service increment: ${apply.usPerOp.toFixed(1)} µs (${apply.ops} runs)`);
