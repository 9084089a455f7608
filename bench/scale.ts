/**
 * bench/scale.ts — the gateway against a real kube-apiserver at cluster scale (issue 13
 * item 4): SCALE_SERVICES Services (10,000), their EndpointSlices with SCALE_ENDPOINTS
 * endpoints each (10: 100,000 endpoints), SCALE_NODES Node objects (1,000) and the Pods of
 * the gateway's own node, created through the API server of test/cluster/control-plane.ts
 * (etcd + kube-apiserver + controller-manager + scheduler from the cached binaries; no
 * kubelets). bench/lib/scale-objects.ts says why the slices are written directly.
 *
 * Then a real `edgemesh gateway` process per variant, one after the other against the same
 * API server, and for each:
 *   complete     spawn → the first snapshot on a FEED connection (adopted only once every
 *                kind is listed), checked against the catalog gauges
 *   memory       private (Private_Clean + Private_Dirty, smaps_rollup) 5 s after complete,
 *                and the peak while starting; CPU seconds to complete
 *   fan-out      the API server's long-running WATCH requests and registered watchers the
 *                gateway adds, by resource; watch events it sent during the changes
 *   change       PATCH an EndpointSlice (endpoint 0 flips ready) → the gateway writes that
 *                service's update to a subscribed FEED connection (the point where a sidecar
 *                would get it; the sidecar's on-demand lookup is measured elsewhere);
 *                SCALE_CHANGES changes (200), one at a time, p50/p99
 *   restart      SIGTERM (the catalog is flushed to disk), start again: spawn → the persisted
 *                snapshot served on FEED, → API synced; private memory after that
 *
 * Variants: SCALE_VARIANTS=name=DIR,… (default: this checkout), each a checkout of the
 * project (`git worktree add --detach /tmp/edgemesh-before <commit>` plus a node_modules
 * symlink), printed side by side. Each runs as the image ships it: types stripped to .js
 * (scripts/strip-types.ts) and the DaemonSet's node flags and env (manifests/base/gateway.yaml
 * of that variant).
 * Run with `nice -n 10 node bench/scale.ts`. Every process started here is stopped by PID,
 * every temp dir removed (the control plane's and the stripped trees too), also on failure.
 */
import { symlinkSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { stripTree } from '../scripts/strip-types.ts';
import { ControlPlane } from '../test/cluster/control-plane.ts';
import { ManagedProcess } from '../test/cluster/process.ts';
import { describeRuntime, gatewayRuntime } from './lib/daemonset-runtime.ts';
import { heapFigures, waitForLog } from './lib/gateway-probe.ts';
import { AdminApi } from './lib/kube-admin.ts';
import { cpuSeconds, memoryMB, watchPeakPrivate } from './lib/proc-stats.ts';
import {
  namespaceObject,
  namespaceOf,
  nodeName,
  nodeObject,
  podsOnNode,
  type ScaleShape,
  serviceObject,
  sliceEndpoints,
  sliceName,
  sliceObject,
} from './lib/scale-objects.ts';
import { printTable, summarize } from './lib/stats.ts';

const envInt = (name: string, dflt: number, max: number) => Math.min(Number(process.env[name] ?? dflt), max);
const SHAPE: ScaleShape = {
  services: envInt('SCALE_SERVICES', 10_000, 50_000),
  endpointsPerService: envInt('SCALE_ENDPOINTS', 10, 1_000),
  nodes: envInt('SCALE_NODES', 1_000, 20_000),
  namespaces: envInt('SCALE_NAMESPACES', 100, 1_000),
};
const CHANGES = envInt('SCALE_CHANGES', 200, 10_000);
const GATEWAY_NODE = nodeName(0);
const CONCURRENCY = 16;
/** Idle time before the settled memory samples. */
const SETTLE_MS = 25_000;
const HERE = new URL('..', import.meta.url).pathname;

interface Variant {
  name: string;
  root: string;
}
const variants: Variant[] = (process.env.SCALE_VARIANTS ?? `current=${HERE}`).split(',').map((v) => {
  const [name, root] = v.split('=');
  if (!name || !root) throw new Error(`SCALE_VARIANTS: "${v}" is not name=DIR`);
  return { name, root };
});

/** The variant's gateway as the image ships it: .js with types stripped, beside its node_modules. */
function shipped(v: Variant, work: string): string {
  const out = join(work, `js-${v.name}`);
  stripTree(v.root, out, ['bin', 'lib', 'gateway']);
  symlinkSync(join(v.root, 'node_modules'), join(out, 'node_modules'));
  return join(out, 'bin/main.js');
}

/** One FEED connection: resolves waits on the first line and on service updates by key. */
class FeedWatch {
  readonly socket: net.Socket;
  firstLineAt: Promise<number>;
  #firstLine: (t: number) => void = () => {};
  #pending: Buffer[] = [];
  #waiters = new Map<string, (t: number) => void>();
  #lines = 0;

  constructor(port: number) {
    this.firstLineAt = new Promise((r) => {
      this.#firstLine = r;
    });
    this.socket = net.connect({ host: '127.0.0.1', port });
    this.socket.write('EDGEMESH/1 FEED 0\n');
    this.socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    this.socket.on('error', () => {});
  }

  #onData(chunk: Buffer): void {
    const now = performance.now();
    let start = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
      this.#pending.push(chunk.subarray(start, nl));
      const line = this.#pending.length === 1 ? this.#pending[0] : Buffer.concat(this.#pending);
      this.#pending = [];
      start = nl + 1;
      if (this.#lines++ === 0) this.#firstLine(now);
      // Only the head is read: "{"type":"service","revision":N,"key":"ns/name",...".
      const head = line.subarray(0, 200).toString('latin1');
      const key = /^\{"type":"service","revision":\d+,"key":"([^"]+)"/.exec(head)?.[1];
      if (key) {
        this.#waiters.get(key)?.(now);
        this.#waiters.delete(key);
      }
    }
    if (start < chunk.length) this.#pending.push(chunk.subarray(start));
  }

  /** Resolves with the time the next update of service `key` arrives. */
  next(key: string): Promise<number> {
    return new Promise((r) => this.#waiters.set(key, r));
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Connects until the gateway listens; resolves with the watch once connected. */
async function connectFeed(port: number, deadline: number, gw: ManagedProcess): Promise<FeedWatch> {
  for (;;) {
    if (!gw.running) throw new Error(`${gw.name} exited (${gw.exitCode}):\n${await logTail(gw.logFile)}`);
    const feed = new FeedWatch(port);
    const ok = await new Promise<boolean>((resolve) => {
      feed.socket.once('connect', () => resolve(true));
      feed.socket.once('error', () => resolve(false));
    });
    if (ok) return feed;
    feed.close();
    if (performance.now() > deadline)
      throw new Error(`${gw.name}: never listened on ${port}:\n${await logTail(gw.logFile)}`);
    await sleep(20);
  }
}

async function logTail(file: string): Promise<string> {
  return (await readFile(file, 'utf8').catch(() => '')).trim().split('\n').slice(-15).join('\n');
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const withTimeout = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([
    p,
    sleep(ms).then(() => {
      throw new Error(`${what}: not within ${ms / 1000} s`);
    }),
  ]);

/** `p`, or an error with the log's tail if the gateway exits first. */
const untilExit = <T>(p: Promise<T>, gw: ManagedProcess): Promise<T> =>
  Promise.race([
    p,
    gw.exited.then(async (code) => {
      throw new Error(`${gw.name} exited (${code}):\n${await logTail(gw.logFile)}`);
    }),
  ]);

/** Samples of the API server's watch metrics, by "name{labels}". */
async function watchMetrics(api: AdminApi): Promise<Map<string, number>> {
  const text = await api.must('GET', '/metrics');
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m =
      /^(apiserver_registered_watchers|apiserver_longrunning_requests|apiserver_watch_events_total)\{([^}]*)\} (\S+)$/.exec(
        line,
      );
    if (!m) continue;
    if (m[1] === 'apiserver_longrunning_requests' && !m[2].includes('verb="WATCH"')) continue;
    out.set(`${m[1]}{${m[2]}}`, Number(m[3]));
  }
  return out;
}

/** What changed between two samples, summed by metric and resource/kind. */
function metricDelta(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, value] of after) {
    const d = value - (before.get(key) ?? 0);
    if (d === 0) continue;
    const name = key.slice(0, key.indexOf('{'));
    const what = /(?:resource|kind)="([^"]*)"/.exec(key)?.[1] ?? '?';
    const short = `${name.replace('apiserver_', '')}:${what}`;
    out.set(short, (out.get(short) ?? 0) + d);
  }
  return out;
}

const describe = (m: Map<string, number>) =>
  [...m]
    .sort()
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');

async function gaugeValues(metricsPort: number): Promise<{ services: number; endpoints: number }> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  const text = await res.text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return {
    services: value('edgemesh_gateway_catalog_services'),
    endpoints: value('edgemesh_gateway_catalog_endpoints'),
  };
}

type Row = Record<string, string>;
/** Slices whose endpoint 0 is flipped now (across variants: each change must change something). */
const flipped = new Set<number>();
/** The resources a gateway watches: what its share of the API server's watch events is. */
const GATEWAY_RESOURCES = /:(services|endpointslices|pods|nodes)$/;

async function runVariant(cp: ControlPlane, api: AdminApi, v: Variant, work: string): Promise<Row> {
  const row: Row = {};
  const stateDir = join(work, `state-${v.name}`);
  const port = await freePort();
  const metricsPort = await freePort();
  const main = shipped(v, work);
  // As the variant's DaemonSet runs it: its node flags and env (manifests/base/gateway.yaml).
  const runtime = gatewayRuntime(v.root);
  row['node flags, env'] = describeRuntime(runtime);
  const spawnGateway = (n: number) =>
    new ManagedProcess(
      `gateway-${v.name}-${n}`,
      [
        process.execPath,
        ...runtime.flags,
        main,
        'gateway',
        `--node-name=${GATEWAY_NODE}`,
        `--kubeconfig=${cp.localKubeconfig}`,
        `--state-dir=${stateDir}`,
        '--listen=127.0.0.1',
        `--port=${port}`,
        `--metrics-port=${metricsPort}`,
      ],
      { logFile: join(work, `gateway-${v.name}-${n}.log`), env: { ...process.env, ...runtime.env } as never },
    );
  const expected = { services: SHAPE.services + 1, endpoints: SHAPE.services * SHAPE.endpointsPerService };

  // ---- cold start ----
  const watchBefore = await watchMetrics(api);
  const t0 = performance.now();
  let gw = spawnGateway(1);
  const pid = gw.pid as number;
  const peak = watchPeakPrivate(pid);
  let feed: FeedWatch | undefined;
  try {
    feed = await connectFeed(port, t0 + 30_000, gw);
    const complete = await withTimeout(untilExit(feed.firstLineAt, gw), 300_000, `${v.name}: first catalog`);
    const cpuToComplete = cpuSeconds(pid);
    const gauges = await gaugeValues(metricsPort);
    if (gauges.services < expected.services || gauges.endpoints < expected.endpoints)
      throw new Error(`${v.name}: catalog incomplete at its first snapshot: ${JSON.stringify(gauges)}`);
    row['start → complete catalog (s)'] = ((complete - t0) / 1000).toFixed(2);
    row['CPU to complete (s)'] = cpuToComplete.toFixed(1);
    await sleep(5_000);
    row['private 5 s after complete (MB)'] = memoryMB(pid).privateMB.toFixed(0);
    row['peak private while starting (MB)'] = peak.stop().toFixed(0);
    const cpuIdle0 = cpuSeconds(pid);
    // V8's memory reducer gives back the start's garbage after some idle seconds.
    await sleep(SETTLE_MS);
    row['CPU idle (%)'] = (((cpuSeconds(pid) - cpuIdle0) / (SETTLE_MS / 1000)) * 100).toFixed(1);
    const settled = memoryMB(pid);
    row['private 30 s after complete (MB)'] = settled.privateMB.toFixed(0);
    row['RSS 30 s after complete (MB)'] = settled.rssMB.toFixed(0);
    row['V8 heap used / total, external (MB)'] = await heapFigures(metricsPort);
    const watchAfter = await watchMetrics(api);
    row['API watches added'] = describe(
      new Map([...metricDelta(watchBefore, watchAfter)].filter(([k]) => k.startsWith('longrunning'))),
    );

    // ---- endpoint changes ----
    const latencies: number[] = [];
    let missed = 0;
    const cpuChanges0 = cpuSeconds(pid);
    const tChanges = performance.now();
    for (let i = 0; i < CHANGES; i++) {
      const s = (i * 7919) % SHAPE.services;
      const flip = !flipped.has(s);
      if (flip) flipped.add(s);
      else flipped.delete(s);
      const ns = namespaceOf(SHAPE, s);
      const seen = feed.next(`${ns}/svc-${s}`);
      const sent = performance.now();
      await api.must(
        'PATCH',
        `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices/${sliceName(s)}`,
        { endpoints: sliceEndpoints(SHAPE, s, flip) },
        { contentType: 'application/merge-patch+json' },
      );
      try {
        latencies.push((await withTimeout(seen, 10_000, 'change')) - sent);
      } catch {
        missed++;
      }
    }
    const changeSeconds = (performance.now() - tChanges) / 1000;
    const watchChanged = await watchMetrics(api);
    const lat = summarize(latencies);
    row['change → FEED p50 (ms)'] = lat.p50.toFixed(1);
    row['change → FEED p99 (ms)'] = lat.p99.toFixed(1);
    row['change → FEED max (ms)'] = lat.max.toFixed(1);
    row['changes missed (10 s)'] = String(missed);
    row['CPU during changes (%)'] = (((cpuSeconds(pid) - cpuChanges0) / changeSeconds) * 100).toFixed(1);
    row['watch events sent during changes'] = describe(
      new Map(
        [...metricDelta(watchAfter, watchChanged)].filter(
          ([k]) => k.startsWith('watch_events') && GATEWAY_RESOURCES.test(k),
        ),
      ),
    );
    row['private after changes (MB)'] = memoryMB(pid).privateMB.toFixed(0);

    // ---- restart from disk ----
    feed.close();
    await gw.stop(30_000);
    const file = await stat(join(stateDir, 'catalog.json'));
    row['persisted file (MB)'] = (file.size / 1e6).toFixed(1);
    const t1 = performance.now();
    gw = spawnGateway(2);
    const restartPeak = watchPeakPrivate(gw.pid as number);
    feed = await connectFeed(port, t1 + 30_000, gw);
    const served = await withTimeout(
      untilExit(feed.firstLineAt, gw),
      60_000,
      `${v.name}: persisted catalog served`,
    );
    row['restart → served from disk (s)'] = ((served - t1) / 1000).toFixed(2);
    // Its CPU seconds: steadier than wall-clock time on a loaded machine.
    row['CPU to served from disk (s)'] = cpuSeconds(gw.pid as number).toFixed(2);
    const synced = await waitForLog(gw.logFile, 'API synced', t1 + 300_000);
    row['restart → API synced (s)'] = ((synced - t1) / 1000).toFixed(2);
    await sleep(5_000 + SETTLE_MS);
    row['private 30 s after restart + sync (MB)'] = memoryMB(gw.pid as number).privateMB.toFixed(0);
    row['peak private while restarting (MB)'] = restartPeak.stop().toFixed(0);
  } finally {
    peak.stop();
    feed?.close();
    await gw.stop(30_000);
  }
  return row;
}

async function populate(api: AdminApi): Promise<Row> {
  const row: Row = {};
  const timed = async (what: string, fn: () => Promise<void>) => {
    const t = performance.now();
    await fn();
    row[what] = ((performance.now() - t) / 1000).toFixed(1);
    console.log(`  ${what}: ${row[what]} s`);
  };
  const namespaces = Array.from({ length: SHAPE.namespaces }, (_, i) => `scale-${i}`);
  await timed('create namespaces (s)', () =>
    api.createAll(
      namespaces.map((n) => ({ path: '/api/v1/namespaces', body: namespaceObject(n) })),
      CONCURRENCY,
    ),
  );
  await timed(`create ${SHAPE.nodes} Nodes (s)`, () =>
    api.createAll(
      Array.from({ length: SHAPE.nodes }, (_, n) => ({ path: '/api/v1/nodes', body: nodeObject(n) })),
      CONCURRENCY,
    ),
  );
  await timed(`create ${SHAPE.services} Services (s)`, () =>
    api.createAll(
      Array.from({ length: SHAPE.services }, (_, s) => ({
        path: `/api/v1/namespaces/${namespaceOf(SHAPE, s)}/services`,
        body: serviceObject(SHAPE, s),
      })),
      CONCURRENCY,
    ),
  );
  await timed(
    `create ${SHAPE.services} EndpointSlices (${SHAPE.services * SHAPE.endpointsPerService} endpoints) (s)`,
    () =>
      api.createAll(
        Array.from({ length: SHAPE.services }, (_, s) => ({
          path: `/apis/discovery.k8s.io/v1/namespaces/${namespaceOf(SHAPE, s)}/endpointslices`,
          body: sliceObject(SHAPE, s),
        })),
        CONCURRENCY,
      ),
  );
  const pods = podsOnNode(SHAPE, GATEWAY_NODE);
  await timed(`create ${pods.length} Pods on ${GATEWAY_NODE} + their IPs (s)`, async () => {
    await api.createAll(
      pods.map((p) => {
        const m = (p.object as { metadata: { namespace: string } }).metadata;
        return { path: `/api/v1/namespaces/${m.namespace}/pods`, body: p.object };
      }),
      CONCURRENCY,
    );
    let next = 0;
    const worker = async () => {
      while (next < pods.length) {
        const p = pods[next++];
        const m = (p.object as { metadata: { namespace: string; name: string } }).metadata;
        await api.must(
          'PATCH',
          `/api/v1/namespaces/${m.namespace}/pods/${m.name}/status`,
          { status: { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }] } },
          { contentType: 'application/merge-patch+json' },
        );
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  });
  return row;
}

const work = await mkdtemp(join(tmpdir(), 'edgemesh-scale-'));
let cp: ControlPlane | undefined;
let api: AdminApi | undefined;
const stopAll = async () => {
  api?.close();
  await cp?.stop();
  await rm(work, { recursive: true, force: true });
};
process.once('SIGINT', () => void stopAll().then(() => process.exit(130)));
try {
  console.log(
    `scale: ${SHAPE.services} services × ${SHAPE.endpointsPerService} endpoints, ${SHAPE.nodes} nodes, ${SHAPE.namespaces} namespaces; ${CHANGES} changes; variants: ${variants.map((v) => `${v.name} (${v.root})`).join(', ')}`,
  );
  cp = await ControlPlane.start();
  api = new AdminApi(
    {
      server: cp.localServer,
      caFile: cp.pki.caCert,
      certFile: cp.pki.admin.cert,
      keyFile: cp.pki.admin.key,
    },
    CONCURRENCY,
  );
  const creation = await populate(api);
  printTable(
    'creation through kube-apiserver',
    ['what', 'seconds'],
    Object.entries(creation).map(([k, v]) => [k, v]),
  );
  const rows: Row[] = [];
  for (const v of variants) {
    console.log(`\n--- gateway: ${v.name} (load average ${loadavg()[0].toFixed(1)}) ---`);
    rows.push(await runVariant(cp, api, v, work));
    console.log(rows.at(-1));
  }
  const keys = Object.keys(rows.at(-1) ?? {});
  printTable(
    `gateway at ${SHAPE.services} services / ${SHAPE.services * SHAPE.endpointsPerService} endpoints / ${SHAPE.nodes} nodes (same run)`,
    ['what', ...variants.map((v) => v.name)],
    keys.map((k) => [k, ...rows.map((r) => r[k] ?? '')]),
  );
} finally {
  await stopAll();
}
