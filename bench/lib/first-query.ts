/**
 * The first DNS query for a name, in one process: the sidecar's resolver and on-demand
 * catalog asking the gateway's real LookupHub over loopback TCP (no other processes to wake,
 * so the code's own cost shows beside the held answer's). The hub runs in a worker thread:
 * its own heap, as the gateway's own process has, so the sidecar side's collections are
 * counted alone and run with the sidecar's heap flags (bench/on-demand.ts passes the
 * injected NODE_OPTIONS). bench/on-demand.ts runs it in a network namespace; `--cpu-prof`
 * on it shows where a first query's time goes.
 *
 *   node bench/lib/first-query.ts [--services 10000] [--first 1000] [--rounds 3]
 *     [--transports tcp,unix]
 *
 * Prints one JSON line per transport: {"transport":"tcp","first":[ms...], "held":[ms...],
 * "cpuMs":{"first":x,"held":y}, "gc":{"first":{"count","ms"},"held":{...}}} over all rounds
 * (a round asks `first` fresh names, then the same names again: the same-run baseline);
 * cpuMs is the process's CPU time per query (both threads), gc the sidecar side's collections
 * during each kind. `--transports tcp,unix`: a sidecar per transport (loopback TCP, as the
 * pod reaches its node's gateway today, and a unix socket, as a hostPath socket would),
 * their rounds interleaved in alternating order so a burst of load falls on both.
 */
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { LookupHub } from '../../gateway/lookup.ts';
import { CatalogStore } from '../../lib/catalog/store.ts';
import { OnDemandCatalog } from '../../sidecar/catalog/on-demand.ts';
import { Resolver } from '../../sidecar/dns/resolver.ts';
import { encodeQuery } from '../../sidecar/dns/testing/testutil.ts';
import { benchCatalog, benchName } from './on-demand-catalog.ts';

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '10000' },
    first: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '3' },
    transports: { type: 'string', default: 'tcp' },
  },
});
const TRANSPORTS = values.transports.split(',');
for (const t of TRANSPORTS)
  if (t !== 'tcp' && t !== 'unix') throw new Error(`--transports: ${t} is not tcp or unix`);
const SERVICES = Number(values.services);
const FIRST = Number(values.first);
const ROUNDS = Number(values.rounds);
if (FIRST * ROUNDS * TRANSPORTS.length + 100 > SERVICES)
  throw new Error('--services must exceed --first × --rounds × transports + 100');

/**
 * The gateway (worker thread): its copying store and hub, behind a server that reads the
 * header line first (as gateway/server.ts does) and hands the rest of the connection to the
 * hub. Posts its port; runs until the process ends.
 */
async function gateway(services: number): Promise<void> {
  const gatewayStore = new CatalogStore();
  gatewayStore.apply({ type: 'snapshot', catalog: benchCatalog(services) });
  const hub = new LookupHub(gatewayStore);
  const server = net.createServer((socket) => {
    socket.once('data', (first: Buffer) => {
      socket.pause();
      hub.attach(socket, 'bench', first.subarray(first.indexOf(0x0a) + 1));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  // The same hub behind a unix socket (a second listener of the same handler).
  const path = join(mkdtempSync(join(tmpdir(), 'first-query-')), 'gateway.sock');
  const unix = net.createServer(server.listeners('connection')[0] as (s: net.Socket) => void);
  await new Promise<void>((r) => unix.listen(path, r));
  parentPort?.postMessage({ port: (server.address() as net.AddressInfo).port, path });
}

if (!isMainThread) {
  await gateway(workerData as number);
} else {
  await sidecar();
}

async function sidecar(): Promise<void> {
  const worker = new Worker(new URL(import.meta.url), {
    workerData: SERVICES,
    argv: process.argv.slice(2),
    // The gateway's heap, not the sidecar's caps (V8 flags are per process).
    resourceLimits: { maxOldGenerationSizeMb: 4096, maxYoungGenerationSizeMb: 48 },
  });
  const gw = await new Promise<{ port: number; path: string }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });

  // A sidecar per transport: in-place store, on-demand catalog, resolver, as sidecar/sidecar.ts wires them.
  const sidecars: { transport: string; od: OnDemandCatalog; resolver: Resolver; result: Result }[] = [];
  for (const transport of TRANSPORTS) {
    const store = new CatalogStore({ inPlace: true });
    const od = new OnDemandCatalog({
      host: '127.0.0.1',
      port: gw.port,
      path: transport === 'unix' ? gw.path : undefined,
      clusterDomain: 'cluster.local',
    });
    await od.start(store);
    while (!od.connected || !store.synced) await new Promise((r) => setTimeout(r, 5));
    const resolver = new Resolver({ store, lookup: od, upstreams: [] });
    sidecars.push({ transport, od, resolver, result: newResult() });
  }

  function ask(resolver: Resolver, name: string): Promise<number> {
    const query = encodeQuery({ name, type: 'A' });
    return new Promise((resolve, reject) => {
      const t0 = performance.now();
      resolver.handle(query, 'udp', (response) => {
        const ms = performance.now() - t0;
        if ((response[3] & 0xf) !== 0 || response.readUInt16BE(6) !== 1)
          reject(new Error(`${name}: rcode ${response[3] & 0xf}, ${response.readUInt16BE(6)} answers`));
        else resolve(ms);
      });
    });
  }

  const series = async (resolver: Resolver, names: string[]) => {
    const ms: number[] = [];
    for (const n of names) ms.push(await ask(resolver, n));
    return ms;
  };

  // Warm the JIT on both paths with names not measured.
  for (const [i, { resolver }] of sidecars.entries()) {
    const warm = Array.from({ length: 100 }, (_, j) => benchName(SERVICES - 1 - i * 100 - j));
    await series(resolver, warm);
    await series(resolver, warm);
  }
  // Garbage collections during each kind of query (both sides' garbage: one heap here).
  let into: Result['gc']['first'] | undefined;
  const gcs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (!into) continue;
      into.count++;
      into.ms += e.duration;
    }
  });
  gcs.observe({ entryTypes: ['gc'] });
  const measure = async (s: (typeof sidecars)[number], names: string[], what: 'first' | 'held') => {
    into = s.result.gc[what];
    // CPU time per query (both sides: they share this process): steadier than latency on a
    // loaded machine, where a query's wall time includes waiting for a core.
    const t0 = process.cpuUsage();
    s.result[what].push(...(await series(s.resolver, names)));
    const used = process.cpuUsage(t0);
    await new Promise((r) => setImmediate(r)); // gc entries are delivered asynchronously
    into = undefined;
    s.result.cpuMs[what] += (used.user + used.system) / 1000 / names.length / ROUNDS;
  };
  let next = 0;
  for (let r = 0; r < ROUNDS; r++) {
    // Alternating order: the first transport of a round goes last in the next one.
    const order = r % 2 === 0 ? sidecars : [...sidecars].reverse();
    for (const s of order) {
      const names = Array.from({ length: FIRST }, () => benchName(next++));
      await measure(s, names, 'first');
      await measure(s, names, 'held');
    }
  }
  gcs.disconnect();
  for (const s of sidecars)
    process.stdout.write(`${JSON.stringify({ transport: s.transport, ...s.result })}\n`);
  for (const s of sidecars) {
    s.resolver.close();
    await s.od.stop();
  }
  await worker.terminate();
}

interface Result {
  first: number[];
  held: number[];
  cpuMs: { first: number; held: number };
  gc: Record<'first' | 'held', { count: number; ms: number }>;
}

function newResult(): Result {
  return {
    first: [],
    held: [],
    cpuMs: { first: 0, held: 0 },
    gc: { first: { count: 0, ms: 0 }, held: { count: 0, ms: 0 } },
  };
}
