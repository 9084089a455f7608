/**
 * bench/scale-fake.ts — bench/scale.ts's memory and restart figures in a minute instead of
 * ten: the same objects (bench/lib/scale-objects.ts, plus the `default/kubernetes` Service a
 * real API server has) served by gateway/testing/fake-api.ts instead of a kube-apiserver, so
 * nothing is created through the API first. No endpoint changes (the fake API reloads its
 * whole file per change) and no API fan-out figures: bench/scale.ts has those.
 *
 * Per variant (SCALE_VARIANTS=name=DIR,…, as bench/scale.ts; default this checkout), the
 * gateway runs as the DaemonSet runs it: types stripped to .js, and the container command's
 * node flags and plain env values read from that variant's manifests/base/gateway.yaml.
 *   complete     spawn → the first snapshot on a FEED connection; CPU seconds to it
 *   memory       private (smaps_rollup) 5 s and 30 s after complete, its V8 heap figures
 *   restart      SIGTERM (catalog flushed), start again: "served from disk" is the first answer a
 *                sidecar gets from the persisted catalog, for both kinds: spawn → the first
 *                LOOKUP answer (an on-demand sidecar, the default), → the snapshot on FEED (a
 *                `--catalog full` sidecar or a tool; encoded only now that one asks), → "API
 *                synced"; private 30 s after
 *
 * SCALE_RESTARTS=N then restarts every variant N times more, alternated (a b a b …), each on the
 * state dir its first run left and against the same fake API: spawn → first LOOKUP answer (wall
 * and CPU), CPU to "API synced", peak private until then, the load average at the time; one
 * column per variant, the runs as "a / b / c" (the restart's figures vary with the machine's
 * load, and alternating spreads it over both variants).
 *
 * `nice -n 10 node bench/scale-fake.ts`; SCALE_NODE_FLAGS adds node flags (a CPU profile, a GC
 * trace) to the gateways, SCALE_LOG_DIR keeps their logs. Every process started here is
 * stopped by its PID, the temp dir removed.
 */
import { symlinkSync, writeFileSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { stripTree } from '../scripts/strip-types.ts';
import { ManagedProcess } from '../test/cluster/process.ts';
import { describeRuntime, gatewayRuntime } from './lib/daemonset-runtime.ts';
import { heapFigures, waitForLog } from './lib/gateway-probe.ts';
import { cpuSeconds, memoryMB, watchPeakPrivate } from './lib/proc-stats.ts';
import {
  namespaceObject,
  nodeName,
  nodeObject,
  podsOnNode,
  type ScaleShape,
  serviceObject,
  sliceObject,
} from './lib/scale-objects.ts';
import { printTable } from './lib/stats.ts';

const envInt = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
const SHAPE: ScaleShape = {
  services: envInt('SCALE_SERVICES', 10_000),
  endpointsPerService: envInt('SCALE_ENDPOINTS', 10),
  nodes: envInt('SCALE_NODES', 1_000),
  namespaces: envInt('SCALE_NAMESPACES', 100),
};
const GATEWAY_NODE = nodeName(0);
const SETTLE_MS = 25_000;
const RESTARTS = envInt('SCALE_RESTARTS', 0);
/**
 * SCALE_NODE_FLAGS: node flags added to every gateway, `{name}` and `{n}` replaced by the
 * variant and the start (1, 2 = the restart), e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof/{name}-{n}`
 * or `--trace-gc`: a profile of the start this benchmark measures.
 */
const EXTRA_FLAGS = (name: string, n: number): string[] =>
  (process.env.SCALE_NODE_FLAGS ?? '')
    .split(' ')
    .filter(Boolean)
    .map((f) => f.replaceAll('{name}', name).replaceAll('{n}', String(n)));
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

/** The objects a real API server would list, as one List for fake-api.ts. */
function objectsFile(path: string): void {
  const items: object[] = [];
  for (let n = 0; n < SHAPE.namespaces; n++) items.push(namespaceObject(`scale-${n}`));
  items.push(namespaceObject('default'));
  for (let n = 0; n < SHAPE.nodes; n++) items.push(nodeObject(n));
  items.push({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: 'default', name: 'kubernetes' },
    spec: { clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443, protocol: 'TCP' }] },
  });
  for (let s = 0; s < SHAPE.services; s++) {
    const svc = serviceObject(SHAPE, s) as { spec: Record<string, unknown> };
    // A real API server allocates one; 10.96.0.0/12 holds them all.
    svc.spec.clusterIP = `10.${96 + ((s + 2) >> 16)}.${((s + 2) >> 8) & 255}.${(s + 2) & 255}`;
    items.push(svc, sliceObject(SHAPE, s));
  }
  for (const p of podsOnNode(SHAPE, GATEWAY_NODE)) {
    items.push({ ...p.object, status: { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }] } });
  }
  writeFileSync(path, JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const FEED = 'EDGEMESH/1 FEED 0\n';
// What an on-demand sidecar asks first (lib/catalog/lookup-protocol.ts): answered from the
// store and the lookup index, no whole-catalog encoding.
const LOOKUP = 'EDGEMESH/1 LOOKUP\nQ 1 SVC default/kubernetes\n';

/**
 * Connects and sends `request` (retrying until the gateway listens and answers); resolves at
 * the first byte of the answer: for FEED the snapshot line, sent only once it is encoded whole.
 */
async function firstAnswerByte(
  port: number,
  gw: ManagedProcess,
  deadline: number,
  request = FEED,
): Promise<number> {
  for (;;) {
    if (!gw.running) throw new Error(`${gw.name} exited: ${await tail(gw.logFile)}`);
    const socket = net.connect({ host: '127.0.0.1', port });
    const at = await new Promise<number | undefined>((resolve) => {
      socket.once('error', () => resolve(undefined));
      socket.once('close', () => resolve(undefined));
      socket.once('connect', () => socket.write(request));
      // A keepalive may come first to a FEED client waiting for a first catalog.
      socket.on('data', (d: Buffer) => {
        const head = d.subarray(0, 20).toString();
        if (head.startsWith('{"type":"snapshot"') || head.startsWith('{"type":"answer"'))
          resolve(performance.now());
        else if (!head.startsWith('{"type":"keepalive"')) resolve(undefined);
      });
    });
    socket.destroy();
    if (at !== undefined) return at;
    if (performance.now() > deadline) throw new Error(`${gw.name}: no feed: ${await tail(gw.logFile)}`);
    await sleep(20);
  }
}

const tail = async (file: string) =>
  (await readFile(file, 'utf8').catch(() => '')).trim().split('\n').slice(-10).join('\n');

type Row = Record<string, string>;

/** A variant made ready to run: its stripped tree, its ports and state dir, and how to start it. */
interface Prepared {
  port: number;
  metricsPort: number;
  stateDir: string;
  runtime: ReturnType<typeof gatewayRuntime>;
  /** Start number n (1: cold, 2: the restart, 3…: SCALE_RESTARTS). */
  spawn(n: number): ManagedProcess;
}

async function prepare(v: Variant, apiUrl: string, work: string): Promise<Prepared> {
  const out = join(work, `js-${v.name}`);
  stripTree(v.root, out, ['bin', 'lib', 'gateway']);
  symlinkSync(join(v.root, 'node_modules'), join(out, 'node_modules'));
  const runtime = gatewayRuntime(v.root);
  const { flags, env } = runtime;
  const stateDir = join(work, `state-${v.name}`);
  const port = await freePort();
  const metricsPort = await freePort();
  const spawn = (n: number) =>
    new ManagedProcess(
      `gateway-${v.name}-${n}`,
      [
        process.execPath,
        ...flags,
        ...EXTRA_FLAGS(v.name, n),
        join(out, 'bin/main.js'),
        'gateway',
        `--node-name=${GATEWAY_NODE}`,
        `--api-server=${apiUrl}`,
        '--edge=false',
        `--state-dir=${stateDir}`,
        '--listen=127.0.0.1',
        `--port=${port}`,
        `--metrics-port=${metricsPort}`,
      ],
      { logFile: join(work, `gateway-${v.name}-${n}.log`), env: { ...process.env, ...env } as never },
    );
  return { port, metricsPort, stateDir, runtime, spawn };
}

async function runVariant(ready: Prepared): Promise<Row> {
  const row: Row = {};
  const { port, metricsPort, stateDir, spawn } = ready;
  row['node flags, env'] = describeRuntime(ready.runtime);
  const t0 = performance.now();
  let gw = spawn(1);
  try {
    const peak = watchPeakPrivate(gw.pid as number);
    const complete = await firstAnswerByte(port, gw, t0 + 300_000);
    row['start → complete catalog (s)'] = ((complete - t0) / 1000).toFixed(2);
    row['CPU to complete (s)'] = cpuSeconds(gw.pid as number).toFixed(1);
    await sleep(5_000);
    row['private 5 s after complete (MB)'] = memoryMB(gw.pid as number).privateMB.toFixed(0);
    row['peak private while starting (MB)'] = peak.stop().toFixed(0);
    await sleep(SETTLE_MS);
    const settled = memoryMB(gw.pid as number);
    row['private / RSS 30 s after complete (MB)'] =
      `${settled.privateMB.toFixed(0)} / ${settled.rssMB.toFixed(0)}`;
    row['V8 heap used / total, external (MB)'] = await heapFigures(metricsPort);
    await gw.stop(30_000);
    row['persisted file (MB)'] = ((await stat(join(stateDir, 'catalog.json'))).size / 1e6).toFixed(1);

    const t1 = performance.now();
    gw = spawn(2);
    const restartPeak = watchPeakPrivate(gw.pid as number);
    const answered = await firstAnswerByte(port, gw, t1 + 120_000, LOOKUP);
    row['restart → served from disk: first LOOKUP answer (s)'] = ((answered - t1) / 1000).toFixed(2);
    row['CPU to the first LOOKUP answer (s)'] = cpuSeconds(gw.pid as number).toFixed(2);
    const served = await firstAnswerByte(port, gw, t1 + 120_000);
    row['restart → served from disk: FEED snapshot (s)'] = ((served - t1) / 1000).toFixed(2);
    // Its CPU seconds: steadier than wall-clock time on a loaded machine.
    row['CPU to the FEED snapshot (s)'] = cpuSeconds(gw.pid as number).toFixed(2);
    const synced = await waitForLog(gw.logFile, 'API synced', t1 + 300_000);
    row['restart → API synced (s)'] = ((synced - t1) / 1000).toFixed(2);
    row['CPU to API synced (s)'] = cpuSeconds(gw.pid as number).toFixed(2);
    await sleep(5_000 + SETTLE_MS);
    row['private 30 s after restart + sync (MB)'] = memoryMB(gw.pid as number).privateMB.toFixed(0);
    row['V8 heap after restart (MB)'] = await heapFigures(metricsPort);
    row['peak private while restarting (MB)'] = restartPeak.stop().toFixed(0);
  } finally {
    await gw.stop(30_000);
  }
  return row;
}

/** One more restart of a prepared variant (SCALE_RESTARTS): its figures to "API synced". */
async function restartOnce(ready: Prepared, n: number): Promise<Row> {
  const row: Row = { load: loadavg()[0].toFixed(1) };
  const t1 = performance.now();
  const gw = ready.spawn(n);
  try {
    const peak = watchPeakPrivate(gw.pid as number);
    const answered = await firstAnswerByte(ready.port, gw, t1 + 120_000, LOOKUP);
    row['restart → first LOOKUP answer (s)'] = ((answered - t1) / 1000).toFixed(2);
    row['CPU to the first LOOKUP answer (s)'] = cpuSeconds(gw.pid as number).toFixed(2);
    const synced = await waitForLog(gw.logFile, 'API synced', t1 + 300_000);
    row['restart → API synced (s)'] = ((synced - t1) / 1000).toFixed(1);
    row['CPU to API synced (s)'] = cpuSeconds(gw.pid as number).toFixed(2);
    row['peak private to API synced (MB)'] = peak.stop().toFixed(0);
  } finally {
    await gw.stop(30_000);
  }
  return row;
}

const work = await mkdtemp(join(tmpdir(), 'edgemesh-scale-fake-'));
let api: ManagedProcess | undefined;
try {
  const objects = join(work, 'objects.json');
  objectsFile(objects);
  const apiPort = await freePort();
  api = new ManagedProcess(
    'fake-api',
    [
      process.execPath,
      join(HERE, 'gateway/testing/fake-api.ts'),
      '--port',
      String(apiPort),
      '--objects',
      objects,
    ],
    { logFile: join(work, 'fake-api.log') },
  );
  await waitForLog(api.logFile, 'ready', performance.now() + 120_000);
  const rows: Row[] = [];
  const prepared: Prepared[] = [];
  for (const v of variants) {
    console.log(
      `--- ${v.name} (load average ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')}) ---`,
    );
    prepared.push(await prepare(v, `http://127.0.0.1:${apiPort}`, work));
    rows.push(await runVariant(prepared[prepared.length - 1]));
    console.log(rows.at(-1));
  }
  const keys = Object.keys(rows[0] ?? {});
  printTable(
    `gateway at ${SHAPE.services} services × ${SHAPE.endpointsPerService} endpoints, ${SHAPE.nodes} nodes, fake API (same run; load ${loadavg()[0].toFixed(1)})`,
    ['what', ...variants.map((v) => v.name)],
    keys.map((k) => [k, ...rows.map((r) => r[k] ?? '')]),
  );
  if (RESTARTS > 0) {
    // Alternated: a b a b …, so the machine's load falls on both variants alike.
    const runs: Row[][] = variants.map(() => []);
    for (let r = 0; r < RESTARTS; r++) {
      for (let i = 0; i < variants.length; i++) {
        runs[i].push(await restartOnce(prepared[i], 3 + r));
        console.log(variants[i].name, runs[i].at(-1));
      }
    }
    const restartKeys = Object.keys(runs[0][0] ?? {});
    printTable(
      `${RESTARTS} restarts per variant, alternated (each run a / b / …; load average at each start)`,
      ['what', ...variants.map((v) => v.name)],
      restartKeys.map((k) => [k, ...runs.map((rs) => rs.map((r) => r[k]).join(' / '))]),
    );
  }
} finally {
  await api?.stop();
  // SCALE_LOG_DIR keeps the gateways' logs (their timings: loaded, synced, compacted).
  if (process.env.SCALE_LOG_DIR)
    await cp(work, process.env.SCALE_LOG_DIR, { recursive: true, filter: (f) => !/js-|objects/.test(f) });
  await rm(work, { recursive: true, force: true });
}
