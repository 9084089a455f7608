/**
 * bench/on-demand.ts — the on-demand catalog (issue 13 item 1): what a sidecar costs when the
 * cluster is large, and what asking the gateway costs a first DNS query. Real processes in a
 * node and a pod namespace: `edgemesh gateway` serving a persisted catalog (API unreachable),
 * `edgemesh sidecar` with the environment the webhook injects (the old-space cap included).
 *
 *   memory      sidecar private memory (USS, smaps_rollup) idle and after its pod used 1, 10,
 *               100 services, the gateway holding 10,000 services × 10 endpoints; same-run
 *               baseline: the same sidecar with a 10-service cluster. Also today's full feed
 *               (--catalog full) at both sizes. Target: ≤ 3 MB above the baseline for ≤ 10
 *               services; no crash under the injected heap cap.
 *   first query each of N never-seen names, one at a time (one gateway round trip each);
 *               same-run baseline: the same names again (answered from what is held), in
 *               --rounds alternating blocks (first N, held N, next N fresh names, ...) so a
 *               burst of load from elsewhere falls on both kinds; the load average and the
 *               sidecar's own collections (its nodejs_gc_duration_seconds) beside them.
 *               Target: p99 < 1 ms. Then the same in one process (bench/lib/first-query.ts):
 *               the code's cost without process wake-ups, with CPU time per query.
 *   throughput  dnsperf on 100 held names (on-demand sidecar) vs the same services preloaded
 *               (--catalog-file: today's local answer, no lookup step), alternating rounds,
 *               median. Target: within 10 %. (Today's sidecar preloads the whole catalog; at
 *               10k services under the heap cap that is the memory row "full feed".)
 *
 * Run as root: `node bench/on-demand.ts [--services 10000] [--first 1000] [--seconds 5]`.
 */
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startGatewayProcess } from '../gateway/testing/gateway-process.ts';
import { type Answer, encodeAnswer } from '../lib/catalog/lookup-protocol.ts';
import { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog } from '../lib/catalog/types.ts';
import { OnDemandCatalog } from '../sidecar/catalog/on-demand.ts';
import { Resolver } from '../sidecar/dns/resolver.ts';
import { encodeQuery } from '../sidecar/dns/testing/testutil.ts';
import { EDGEMESH_BIN, NetnsLab, waitFor } from '../test/harness/netns.ts';
import { INJECTED_SIDECAR_ENV } from './lib/injected-env.ts';
import { BENCH_POD_IP, benchCatalog, benchName } from './lib/on-demand-catalog.ts';
import { percentile, printTable } from './lib/stats.ts';

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '10000' },
    first: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    /**
     * The latency part's client: c (bench/lib/dns-probe.c, blocking send/recv: only the mesh's
     * own wake-ups and pauses in the tail), node (bench/lib/dns-probe.ts, whose own collections
     * add to the tail) or dnsperf (one query outstanding; its sender and receiver threads add
     * a hand-over per answer).
     */
    client: { type: 'string', default: 'c' },
    /**
     * The latency part with the C client: also a run with queries paced this many µs apart
     * (one name at a time, as a pod's come), beside the back-to-back blocks; 0: not run.
     */
    'pace-us': { type: 'string', default: '0' },
    /** Which parts to run: memory, latency, throughput (comma-separated). */
    parts: { type: 'string', default: 'hotpath,memory,latency,throughput' },
    /**
     * V8 flags for the sidecar's node, e.g. `--no-parallel-scavenge` (the ones NODE_OPTIONS
     * refuses): the sidecar then runs as `node <flags> bin/main.ts sidecar`, and the
     * in-process latency run gets them too. To compare a flag with the same tree.
     */
    'sidecar-v8': { type: 'string', default: '' },
  },
});
const PARTS = new Set(values.parts.split(','));
const BIG = Math.min(Math.max(Number(values.services), 100), 20_000);
const FIRST = Math.min(Math.max(Number(values.first), 10), BIG - 200);
const SECONDS = Math.min(Math.max(Number(values.seconds), 1), 30);
const ROUNDS = Math.min(Math.max(Number(values.rounds), 1), 7);
const ROOT = new URL('../', import.meta.url).pathname;
const NODE = join(ROOT, 'node_modules/.bin/node');
const PROBE = join(ROOT, 'bench/lib/dns-probe.ts');
const FIRST_QUERY = join(ROOT, 'bench/lib/first-query.ts');
const NODE_IP = '10.64.0.1';
const MB = 1024 * 1024;
const USES = [1, 10, 100];
const CLIENT = values.client;
const PACE_US = Math.min(Math.max(Number(values['pace-us']) || 0, 0), 1_000_000);
if (!['c', 'node', 'dnsperf'].includes(CLIENT))
  throw new Error(`--client: ${CLIENT} is not c, node or dnsperf`);
const SIDECAR_V8 = values['sidecar-v8'].split(' ').filter(Boolean);
for (const f of SIDECAR_V8)
  if (!/^--[a-z][-a-z0-9_]*(=[-\w.]+)?$/.test(f))
    throw new Error(`--sidecar-v8: ${JSON.stringify(f)} is not a V8 flag`);
const SIDECAR_CMD =
  SIDECAR_V8.length === 0
    ? [EDGEMESH_BIN]
    : [NODE, ...SIDECAR_V8, '--disable-warning=ExperimentalWarning', join(ROOT, 'bin/main.ts')];

const name = benchName;

function uss(pid: number): number {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? Number.NaN);
  return ((kb('Private_Dirty') + kb('Private_Clean')) * 1024) / MB;
}

const settle = (ms = 1500) => new Promise((r) => setTimeout(r, ms));
const lab = new NetnsLab('emod');
const dir = mkdtempSync(join(tmpdir(), 'emod-'));
chmodSync(dir, 0o755);
let nodeNs = '';
let podNs = '';

/** The node's gateway as the DaemonSet runs it (its V8 flags), serving `catalog` from its state dir. */
function startGateway(catalog: Catalog, tag: string): Promise<ChildProcess> {
  return startGatewayProcess(lab, nodeNs, {
    stateDir: join(dir, `state-${tag}`),
    catalog,
    listen: NODE_IP,
    onStderr: () => {},
    shippedNodeFlags: true,
    readyTimeoutMs: 60_000,
  });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

/** A sidecar in the pod; resolves once /ready, or with `crashed` when it exits first. */
async function startSidecar(
  extra: string[],
  env: Record<string, string>,
): Promise<{ child: ChildProcess; crashed?: string }> {
  let log = '';
  const child = lab.spawn(
    podNs,
    [
      ...SIDECAR_CMD,
      'sidecar',
      '--gateway',
      `${NODE_IP}:15080`,
      '--node-name',
      'edge-n',
      '--upstream',
      NODE_IP,
      '--proxy-listen',
      '127.0.0.1',
      ...extra,
    ],
    { env: { ...process.env, EDGEMESH_LOG_LEVEL: 'warn', ...env } },
  );
  child.stderr?.on('data', (c: Buffer) => {
    log = (log + c.toString()).slice(-4000);
  });
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error('exited');
        const r = await lab.run(podNs, ['curl', '-s', '-m', '1', 'http://127.0.0.1:15021/ready']);
        return r.stdout.startsWith('ready');
      },
      90_000,
      200,
      'sidecar /ready',
    );
  } catch {
    const fatal = /FATAL ERROR[^\n]*/.exec(log)?.[0];
    await stop(child);
    return { child, crashed: fatal ?? `not ready (exit ${child.exitCode}): ${log.slice(-300)}` };
  }
  return { child };
}

async function probe(
  names: string[],
  paceUs = 0,
  port = 15053,
): Promise<{ ms: number[]; rcodes: Record<string, number> }> {
  if (CLIENT === 'dnsperf') return probeDnsperf(names);
  const file = join(dir, 'names.txt');
  writeFileSync(file, names.join('\n'));
  const argv =
    CLIENT === 'c'
      ? [compiled('dns-probe'), String(port), file, '2000', String(paceUs)]
      : [NODE, PROBE, '--port', String(port), '--names-file', file];
  const r = await lab.run(podNs, argv, { timeoutMs: 120_000 });
  return JSON.parse(r.stdout);
}

const compiledPaths = new Map<string, string>();
/** Compiles bench/lib/<name>.c into the temp dir once (a C compiler: scripts/setup has gcc). */
function compiled(name: 'dns-probe' | 'relay-chain'): string {
  let path = compiledPaths.get(name);
  if (!path) {
    path = join(dir, name);
    execFileSync('cc', ['-O2', '-Wall', '-Werror', '-o', path, join(ROOT, `bench/lib/${name}.c`)]);
    compiledPaths.set(name, path);
  }
  return path;
}

/**
 * The machine's floor for a first query, in the same run: the same four process wake-ups
 * (client → "sidecar" over UDP → "gateway" over loopback TCP and back, a LOOKUP answer's
 * size) between C processes with no mesh code (bench/lib/relay-chain.c) on port 15054, timed
 * by the same client. What the first-query row has above it is the mesh's own work.
 */
async function startFloor(replyBytes: number): Promise<ChildProcess> {
  const chain = lab.spawn(podNs, [compiled('relay-chain'), '15054', String(replyBytes)]);
  await settle(300);
  if (chain.exitCode !== null) throw new Error(`relay-chain exited (${chain.exitCode})`);
  return chain;
}

/**
 * dnsperf with one query outstanding (`-q 1`), each name once in order (`-n 1`): `-v` prints
 * a line per answer, `> RCODE name type latency-seconds` (dnsperf(1), "-v"). A timed-out
 * query prints `T` as its rcode.
 */
async function probeDnsperf(names: string[]): Promise<{ ms: number[]; rcodes: Record<string, number> }> {
  const file = join(dir, 'names-perf.txt');
  writeFileSync(file, names.map((n) => `${n} A`).join('\n'));
  const r = await lab.run(
    podNs,
    [
      'dnsperf',
      '-s',
      '127.0.0.1',
      '-p',
      '15053',
      '-d',
      file,
      '-n',
      '1',
      '-q',
      '1',
      '-c',
      '1',
      '-t',
      '2',
      '-v',
    ],
    { timeoutMs: 120_000 },
  );
  const ms: number[] = [];
  const rcodes: Record<string, number> = {};
  for (const m of r.stdout.matchAll(/^> (\S+) \S+ \S+ ([\d.]+)$/gm)) {
    ms.push(Number(m[2]) * 1000);
    rcodes[m[1]] = (rcodes[m[1]] ?? 0) + 1;
  }
  if (ms.length !== names.length)
    throw new Error(`dnsperf answered ${ms.length} of ${names.length} queries: ${r.stdout.slice(-400)}`);
  return { ms, rcodes };
}

const dnsperf = (names: string[]) => dnsperfFor(names, SECONDS);

async function dnsperfFor(names: string[], seconds: number): Promise<number> {
  const file = join(dir, 'perf.txt');
  writeFileSync(file, names.map((n) => `${n} A`).join('\n'));
  const r = await lab.run(
    podNs,
    ['dnsperf', '-s', '127.0.0.1', '-p', '15053', '-d', file, '-l', String(seconds), '-q', '200', '-c', '1'],
    { timeoutMs: (seconds + 30) * 1000 },
  );
  return Number(/Queries per second:\s+([\d.]+)/.exec(r.stdout)?.[1] ?? Number.NaN);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : String(x));
const signed = (x: number, d = 1) => `${x >= 0 ? '+' : ''}${fmt(x, d)}`;

async function main(): Promise<void> {
  for (const tool of ['dnsperf', 'curl']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      console.log(`bench/on-demand: skipped, ${tool} is not installed`);
      return;
    }
  }
  NetnsLab.cleanUpOnInterrupt();
  nodeNs = await lab.add('node');
  podNs = await lab.add('pod');
  await lab.link(
    { ns: nodeNs, ifname: 'cbr0', addr: `${NODE_IP}/24` },
    { ns: podNs, ifname: 'eth0', addr: `${BENCH_POD_IP}/24` },
  );
  await lab.exec(nodeNs, ['ip', 'link', 'set', 'lo', 'up']);
  await lab.exec(podNs, ['ip', 'link', 'set', 'lo', 'up']);
  const small = benchCatalog(10);
  const big = benchCatalog(BIG);

  if (PARTS.has('hotpath')) hotPath(big);
  if (PARTS.has('memory')) await memory(small, big);
  if (PARTS.has('latency') || PARTS.has('throughput')) await latencyAndThroughput(big);
}

/**
 * The held-answer hot path in-process (no sockets, one thread: steadier than dnsperf on a
 * loaded machine): the resolver with the on-demand lookup step (100 services held) vs the
 * same resolver on the same 100 services preloaded. Alternating rounds, median q/s.
 */
function hotPath(big: Catalog): void {
  const names = Array.from({ length: 100 }, (_, i) => name(100 + i));
  const od = new OnDemandCatalog({ host: '127.0.0.1', clusterDomain: 'cluster.local' });
  const answer: Answer = { type: 'answer', id: 1, revision: 1, services: {}, pods: {}, namespaces: {} };
  for (let i = 100; i < 200; i++) {
    const key = `bench/svc-${i}`;
    od.held.answer(
      { kind: 'svc', namespace: 'bench', name: `svc-${i}` },
      { ...answer, services: { [key]: big.services[key] } },
      Date.now(),
    );
  }
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: od.held.catalog() });
  const resolvers = {
    'on-demand (held)': new Resolver({ store, lookup: od, upstreams: [] }),
    'preloaded (baseline)': new Resolver({ store, upstreams: [] }),
  };
  const queries = names.map((n) => encodeQuery({ name: n, type: 'A' }));
  // Queries per CPU second of this process (one thread runs the loop): time spent waiting for
  // a core on a shared machine is not counted, so rounds taken under load stay comparable.
  const run = (r: Resolver) => {
    let answered = 0;
    const c0 = process.cpuUsage();
    for (let i = 0; i < 100_000; i++) r.handle(queries[i % queries.length], 'udp', () => answered++);
    const cpu = process.cpuUsage(c0);
    const qps = answered / ((cpu.user + cpu.system) / 1e6);
    if (answered !== 100_000) throw new Error(`hot path: ${answered} answered`);
    return qps;
  };
  const results: Record<string, number[]> = { 'on-demand (held)': [], 'preloaded (baseline)': [] };
  for (let round = 0; round < 21; round++)
    for (const [k, r] of Object.entries(resolvers)) results[k].push(run(r));
  // Best of 21: on a shared, loaded machine the slow rounds measure the neighbours, not the code.
  const best = (xs: number[]) => Math.max(...xs);
  const held = best(results['on-demand (held)']);
  const pre = best(results['preloaded (baseline)']);
  printTable(
    `bench/on-demand: held DNS answers in-process (Resolver.handle, 100k queries × 21 alternating rounds, q per CPU second; load average ${loadavg()[0].toFixed(1)})`,
    ['resolver', 'best', 'median'],
    Object.entries(results).map(([k, xs]) => [k, fmt(best(xs), 0), fmt(median(xs), 0)]),
  );
  console.log(
    `${held >= pre * 0.9 ? 'PASS' : 'MISS'} hot path on-demand/preloaded ${fmt(held / pre, 3)} best-of, ` +
      `${fmt(median(results['on-demand (held)']) / median(results['preloaded (baseline)']), 3)} median (target ≥ 0.9)`,
  );
}

async function memory(small: Catalog, big: Catalog): Promise<void> {
  const mem: Record<string, Record<string, number | string>> = {};
  for (const [tag, catalog] of [
    ['10 services', small],
    [`${BIG} services`, big],
  ] as const) {
    const gw = await startGateway(catalog, tag.replace(/ /g, '-'));
    const row: Record<string, number | string> = {};
    const s = await startSidecar([], INJECTED_SIDECAR_ENV);
    if (s.crashed) row.idle = `crashed: ${s.crashed}`;
    else {
      const pid = s.child.pid as number;
      await settle();
      row.idle = uss(pid);
      let used = 0;
      for (const n of USES) {
        const upto = Math.min(n, Object.keys(catalog.services).length);
        if (upto > used) {
          const r = await probe(Array.from({ length: upto - used }, (_, i) => name(used + i)));
          if (r.rcodes.NOERROR !== upto - used)
            throw new Error(`lookups failed: ${JSON.stringify(r.rcodes)}`);
          used = upto;
        }
        await settle();
        row[`uses ${n}`] = upto < n ? `(${upto} exist)` : uss(pid);
      }
      await stop(s.child);
    }
    // Today: the whole catalog over the feed, same env.
    const full = await startSidecar(['--catalog', 'full'], INJECTED_SIDECAR_ENV);
    if (full.crashed) row['full feed (today)'] = `crashed: ${full.crashed.slice(0, 80)}`;
    else {
      await settle();
      row['full feed (today)'] = uss(full.child.pid as number);
      await stop(full.child);
    }
    mem[tag] = row;
    await stop(gw);
  }
  const cols = ['idle', ...USES.map((n) => `uses ${n}`), 'full feed (today)'];
  printTable(
    'bench/on-demand: sidecar private memory (USS, MB), injected env (heap cap), on-demand catalog',
    ['gateway holds', ...cols],
    Object.entries(mem).map(([tag, row]) => [
      tag,
      ...cols.map((c) => (typeof row[c] === 'number' ? fmt(row[c] as number) : (row[c] ?? '-'))),
    ]),
  );
  const base = mem['10 services'];
  const large = mem[`${BIG} services`];
  for (const c of ['idle', 'uses 1', 'uses 10']) {
    const b = base[c] as number;
    const l = large[c] as number;
    const d = l - b;
    console.log(
      `${d <= 3 ? 'PASS' : 'MISS'} ${c}: ${fmt(l)} MB at ${BIG} services vs ${fmt(b)} MB at 10 (${signed(d)} MB; ratio ${fmt(l / b, 2)}; target ≤ +3 MB)`,
    );
  }
  const l100 = large['uses 100'];
  if (typeof l100 === 'number')
    console.log(
      `uses 100 at ${BIG} services: ${fmt(l100)} MB (${signed(l100 - (base['uses 10'] as number))} MB over 10 used at 10)`,
    );
}

async function latencyAndThroughput(big: Catalog): Promise<void> {
  const gw = await startGateway(big, 'latency');
  const s = await startSidecar([], INJECTED_SIDECAR_ENV);
  if (s.crashed) throw new Error(`on-demand sidecar crashed: ${s.crashed}`);
  // Warm the JIT on both paths with names not measured.
  await probe(Array.from({ length: 100 }, (_, i) => name(BIG - 1 - i)));
  await probe(Array.from({ length: 100 }, (_, i) => name(BIG - 1 - i)));
  // A LOOKUP answer's size for the floor's relay (one service of the bench catalog).
  const key = 'bench/svc-100';
  const answer = { type: 'answer', id: 1, revision: big.revision, services: { [key]: big.services[key] } };
  const replyBytes = encodeAnswer({ ...answer, pods: {}, namespaces: {} } as Answer, (e) =>
    JSON.stringify(e),
  ).length;
  if (PARTS.has('latency')) await latency(0, 0, replyBytes);
  // Paced after back to back, on names neither run asked before.
  if (PARTS.has('latency') && PACE_US > 0 && CLIENT === 'c')
    await latency(PACE_US, ROUNDS * FIRST, replyBytes);
  if (PARTS.has('throughput')) await throughput(s.child, big);
  else await stop(s.child);
  await stop(gw);
  if (PARTS.has('latency')) await inProcess();
}

/**
 * The same first queries in one process (bench/lib/first-query.ts: the resolver and the
 * on-demand catalog asking the gateway's hub over loopback), in the node namespace with the
 * lab's processes stopped: the code's own cost, without the two process wake-ups a query
 * through real processes waits for. Same-run baseline: the same names held.
 */
async function inProcess(): Promise<void> {
  // The sidecar side with the sidecar's heap flags (the hub's worker sets its own limits).
  const flags = (INJECTED_SIDECAR_ENV.NODE_OPTIONS ?? '').split(' ').filter(Boolean);
  const first = String(Math.min(FIRST, Math.floor((BIG - 100) / 3)));
  const r = await lab.run(
    nodeNs,
    [
      NODE,
      ...flags,
      ...SIDECAR_V8,
      FIRST_QUERY,
      '--services',
      String(BIG),
      '--first',
      first,
      '--rounds',
      '3',
    ],
    { timeoutMs: 300_000 },
  );
  const out = JSON.parse(r.stdout) as {
    first: number[];
    held: number[];
    cpuMs: { first: number; held: number };
    gc: Record<'first' | 'held', { count: number; ms: number }>;
  };
  const row = (what: string, kind: 'first' | 'held') => {
    const s = [...out[kind]].sort((a, b) => a - b);
    const gc = out.gc[kind];
    return [
      what,
      fmt(percentile(s, 50), 3),
      fmt(percentile(s, 99), 3),
      fmt(s[s.length - 1], 3),
      fmt(out.cpuMs[kind], 3),
      `${gc.count} / ${fmt(gc.ms, 0)} ms`,
    ];
  };
  printTable(
    `bench/on-demand: DNS query latency in one process (resolver + on-demand catalog + the gateway's hub over loopback, sidecar heap flags), ${out.first.length} names (ms)`,
    ['query', 'p50', 'p99', 'max', 'CPU per query', 'sidecar-side GCs / their time'],
    [row('first (asks the hub)', 'first'), row('again (held, baseline)', 'held')],
  );
}

/**
 * The sidecar's collections so far (prom-client's nodejs_gc_duration_seconds, all kinds), or
 * undefined when the scrape failed (a starved machine can miss a few seconds' timeout).
 */
async function sidecarGCs(): Promise<{ count: number; seconds: number } | undefined> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const r = await lab.run(podNs, ['curl', '-s', '-m', '5', 'http://127.0.0.1:15020/metrics']);
    let count = 0;
    let seconds = 0;
    let seen = false;
    for (const m of r.stdout.matchAll(/^nodejs_gc_duration_seconds_(count|sum)\{[^}]*\} ([\d.e+-]+)$/gm)) {
      seen = true;
      if (m[1] === 'count') count += Number(m[2]);
      else seconds += Number(m[2]);
    }
    if (seen) return { count, seconds };
  }
  return undefined;
}

/**
 * First queries and the same names held, in ROUNDS alternating blocks of FIRST fresh names
 * (names 100 … 100 + ROUNDS × FIRST; the warm-up used the last 100). One block is one probe
 * process: its own wake-ups and timing are the client's, as a pod's resolver would see them.
 */
async function latency(paceUs: number, offset: number, replyBytes: number): Promise<void> {
  const rounds = Math.min(ROUNDS, Math.floor((BIG - 300 - offset) / FIRST));
  if (rounds < 1) {
    console.log(
      `bench/on-demand: no fresh names left for the latency run (pace ${paceUs} µs); raise --services`,
    );
    return;
  }
  const first: number[] = [];
  const again: number[] = [];
  const floorMs: number[] = [];
  const chain = CLIENT === 'dnsperf' ? undefined : await startFloor(replyBytes);
  const rcodes = { first: {} as Record<string, number>, again: {} as Record<string, number> };
  const gcs = { first: { count: 0, seconds: 0 }, again: { count: 0, seconds: 0 } };
  const load = [loadavg()[0]];
  const block = async (names: string[], into: number[], kind: 'first' | 'again') => {
    const g0 = await sidecarGCs();
    const r = await probe(names, paceUs);
    const g1 = await sidecarGCs();
    into.push(...r.ms);
    for (const [k, n] of Object.entries(r.rcodes)) rcodes[kind][k] = (rcodes[kind][k] ?? 0) + n;
    if (!g0 || !g1)
      gcs[kind].count = Number.NaN; // not known for this block: none is shown
    else {
      gcs[kind].count += g1.count - g0.count;
      gcs[kind].seconds += g1.seconds - g0.seconds;
    }
  };
  // Per block of first queries: how the tail moves as the sidecar's JIT settles and its held
  // set grows (docs/scale.md round 8: 7.7 / 4.9 / 2.8 % over 1 ms in three blocks).
  const perBlock: string[] = [];
  for (let r = 0; r < rounds; r++) {
    const fresh = Array.from({ length: FIRST }, (_, i) => name(100 + offset + r * FIRST + i));
    const before = first.length;
    await block(fresh, first, 'first');
    const mine = first.slice(before).sort((x, y) => x - y);
    perBlock.push(`${fmt(percentile(mine, 99), 2)} ms (${mine.filter((x) => x > 1).length} over 1 ms)`);
    await block(fresh, again, 'again');
    if (chain) floorMs.push(...(await probe(fresh, paceUs, 15054)).ms);
    load.push(loadavg()[0]);
  }
  if (chain) await stop(chain);
  const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
  const f = sorted(first);
  const a = sorted(again);
  const fl = sorted(floorMs);
  const row = (what: string, s: number[], kind: 'first' | 'again') => [
    what,
    fmt(percentile(s, 50), 3),
    fmt(percentile(s, 99), 3),
    fmt(percentile(s, 99.9), 3),
    fmt(s[s.length - 1], 3),
    Number.isNaN(gcs[kind].count)
      ? '- (a scrape failed)'
      : `${gcs[kind].count} / ${fmt(gcs[kind].seconds * 1000, 0)} ms`,
    JSON.stringify(rcodes[kind]),
  ];
  printTable(
    `bench/on-demand: DNS query latency from the pod (${CLIENT} client${paceUs ? `, queries ${paceUs} µs apart` : ', back to back'}), ${rounds} × ${FIRST} names one at a time, alternating blocks${SIDECAR_V8.length ? ` (sidecar ${SIDECAR_V8.join(' ')})` : ''} (ms; load average ${load.map((x) => x.toFixed(1)).join(' → ')})`,
    ['query', 'p50', 'p99', 'p99.9', 'max', 'sidecar GCs / their time', 'rcodes'],
    [
      row('first (asks the gateway)', f, 'first'),
      row('again (held, baseline)', a, 'again'),
      ...(fl.length > 0
        ? [
            [
              `the same hops in C, no mesh code (floor; ${replyBytes} B answer)`,
              ...[50, 99, 99.9].map((q) => fmt(percentile(fl, q), 3)),
              fmt(fl[fl.length - 1], 3),
              '-',
              '-',
            ],
          ]
        : []),
    ],
  );
  console.log(`first queries, p99 per block of ${FIRST} in order: ${perBlock.join(', ')}`);
  const p99 = percentile(f, 99);
  console.log(
    `${p99 < 1 ? 'PASS' : 'MISS'} first-query p99 ${fmt(p99, 3)} ms (target < 1 ms; held p99 ${fmt(percentile(a, 99), 3)} ms in the same runs); ` +
      `the gateway round trip adds p50 ${fmt(percentile(f, 50) - percentile(a, 50), 3)} ms (first/held p50 ratio ${fmt(percentile(f, 50) / percentile(a, 50), 2)})` +
      (fl.length > 0
        ? `; the machine's floor for those hops: p99 ${fmt(percentile(fl, 99), 3)} ms, ${fl.filter((x) => x > 1).length} of ${fl.length} over 1 ms (first queries: ${f.filter((x) => x > 1).length} of ${f.length})`
        : ''),
  );
}

/**
 * Held names on the on-demand sidecar vs the same services preloaded from a catalog file
 * (today's local answer, without the lookup step; both with the injected env), alternating,
 * each after a settle and a 1 s warm-up so start-up work is not measured.
 */
async function throughput(first: ChildProcess, big: Catalog): Promise<void> {
  const held = Array.from({ length: 100 }, (_, i) => name(100 + i));
  const heldFile = join(dir, 'held.json');
  const part: Catalog = { ...big, services: {} };
  for (let i = 100; i < 200; i++) part.services[`bench/svc-${i}`] = big.services[`bench/svc-${i}`];
  writeFileSync(heldFile, JSON.stringify(part));
  const warm = async () => {
    await settle(3000);
    await dnsperfFor(held, 1);
  };
  const onDemand: number[] = [];
  const preloaded: number[] = [];
  let current = first;
  await probe(held);
  for (let r = 0; r < ROUNDS; r++) {
    await warm();
    onDemand.push(await dnsperf(held));
    await stop(current);
    const p = await startSidecar(['--catalog-file', heldFile], INJECTED_SIDECAR_ENV);
    if (p.crashed) throw new Error(`preloaded sidecar crashed: ${p.crashed}`);
    await warm();
    preloaded.push(await dnsperf(held));
    await stop(p.child);
    const o = await startSidecar([], INJECTED_SIDECAR_ENV);
    if (o.crashed) throw new Error(`on-demand sidecar crashed: ${o.crashed}`);
    current = o.child;
    await probe(held); // hold them again (a fresh sidecar holds nothing)
  }
  await stop(current);
  const od = median(onDemand);
  const pre = median(preloaded);
  printTable(
    `bench/on-demand: cached DNS q/s (dnsperf, ${SECONDS} s × ${ROUNDS} rounds, median), 100 names`,
    ['sidecar', 'q/s', 'rounds'],
    [
      ['on-demand (held)', fmt(od, 0), onDemand.map((x) => fmt(x, 0)).join(' ')],
      [
        'preloaded: the same 100 from --catalog-file (baseline)',
        fmt(pre, 0),
        preloaded.map((x) => fmt(x, 0)).join(' '),
      ],
    ],
  );
  console.log(
    `${od >= pre * 0.9 ? 'PASS' : 'MISS'} on-demand/preloaded q/s ratio ${fmt(od / pre, 3)} (target ≥ 0.9)`,
  );
}

try {
  await main();
} finally {
  await lab.cleanup();
  rmSync(dir, { recursive: true, force: true });
}
