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

// Offline autonomy: a restarted gateway serving its persisted catalog to a sidecar, against
// reading + parsing the same file alone (the floor). Then fan-out of increments to sidecars.
const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
const { tmpdir } = await import('node:os');
const { join } = await import('node:path');
const net = await import('node:net');
const { silentLogger } = await import('../lib/log.ts');
const { saveCatalog } = await import('../gateway/persist.ts');
const { startGateway } = await import('../gateway/gateway.ts');
const { GatewayFeedSource } = await import('../lib/catalog/feed-source.ts');

const dir = mkdtempSync(join(tmpdir(), 'emc-bench-'));
try {
  await saveCatalog(dir, builder.catalog);
  const t0 = performance.now();
  JSON.parse(readFileSync(join(dir, 'catalog.json'), 'utf8'));
  const floorMs = performance.now() - t0;
  const t1 = performance.now();
  const gw = await startGateway({
    nodeName: 'edge-0',
    stateDir: dir,
    listenHost: '127.0.0.1',
    listenPort: 0,
    clusterDomain: 'cluster.local',
    log: silentLogger,
  });
  const listening = performance.now() - t1;
  const port = (gw.server.address() as import('node:net').AddressInfo).port;
  const sidecarStore = new CatalogStore();
  const feed = new GatewayFeedSource({ host: '127.0.0.1', port });
  const t2 = performance.now();
  await feed.start(sidecarStore);
  while (!sidecarStore.synced && performance.now() - t2 < 30_000) await new Promise((r) => setTimeout(r, 1));
  const served = performance.now() - t2;
  console.log(
    `restart: read+parse of the state file ${floorMs.toFixed(0)} ms (floor); gateway listening with it ${listening.toFixed(0)} ms; a sidecar holds it ${served.toFixed(0)} ms later (transfer + strict validation)`,
  );
  await feed.stop();

  // Fan-out: CLIENTS raw sidecar connections, UPDATES small increments.
  const CLIENTS = 50;
  const UPDATES = 2_000;
  const sockets: import('node:net').Socket[] = [];
  const received = new Array(CLIENTS).fill(0);
  for (let i = 0; i < CLIENTS; i++) {
    const s = net.connect({ host: '127.0.0.1', port });
    s.write('EDGEMESH/1 FEED 0\n');
    s.on('data', (c: Buffer) => {
      for (const b of c) if (b === 10) received[i]++;
    });
    sockets.push(s);
  }
  while (received.some((n) => n < 1)) await new Promise((r) => setTimeout(r, 5)); // snapshots in
  const t3 = performance.now();
  let rev = gw.store.current?.revision ?? 0;
  for (let u = 0; u < UPDATES; u++) {
    gw.store.apply({
      type: 'node',
      revision: ++rev,
      name: `x-${u % 10}`,
      node: u % 2 ? null : { name: `x-${u % 10}`, addresses: ['192.168.99.1'] },
    });
    if (u % 100 === 99) await new Promise((r) => setImmediate(r));
  }
  while (received.some((n) => n < UPDATES + 1) && performance.now() - t3 < 30_000)
    await new Promise((r) => setTimeout(r, 1));
  const fanMs = performance.now() - t3;
  console.log(
    `feed fan-out: ${UPDATES} increments to ${CLIENTS} sidecars in ${fanMs.toFixed(0)} ms = ${((UPDATES * CLIENTS) / (fanMs / 1000)).toFixed(0)} lines/s delivered (the gateway's store.apply is in the loop)`,
  );
  for (const s of sockets) s.destroy();
  await gw.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
