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
 *
 * Prints one JSON line: {"first":[ms...], "held":[ms...], "cpuMs":{"first":x,"held":y},
 * "gc":{"first":{"count","ms"},"held":{...}}} over all rounds (a round asks `first` fresh
 * names, then the same names again: the same-run baseline); cpuMs is the process's CPU time
 * per query (both threads), gc the sidecar side's collections during each kind.
 */
import net from 'node:net';
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
  },
});
const SERVICES = Number(values.services);
const FIRST = Number(values.first);
const ROUNDS = Number(values.rounds);
if (FIRST * ROUNDS + 100 > SERVICES) throw new Error('--services must exceed --first × --rounds + 100');

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
  parentPort?.postMessage((server.address() as net.AddressInfo).port);
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
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });

  // The sidecar: in-place store, on-demand catalog, resolver, as sidecar/sidecar.ts wires them.
  const store = new CatalogStore({ inPlace: true });
  const od = new OnDemandCatalog({ host: '127.0.0.1', port, clusterDomain: 'cluster.local' });
  await od.start(store);
  while (!od.connected || !store.synced) await new Promise((r) => setTimeout(r, 5));
  const resolver = new Resolver({ store, lookup: od, upstreams: [] });

  function ask(name: string): Promise<number> {
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

  const series = async (names: string[]) => {
    const ms: number[] = [];
    for (const n of names) ms.push(await ask(n));
    return ms;
  };

  // Warm the JIT on both paths with names not measured.
  const warm = Array.from({ length: 100 }, (_, i) => benchName(SERVICES - 1 - i));
  await series(warm);
  await series(warm);
  const first: number[] = [];
  const held: number[] = [];
  // CPU time per query (both sides: they share this process): steadier than latency on a
  // loaded machine, where a query's wall time includes waiting for a core.
  const cpu = { first: 0, held: 0 };
  // Garbage collections during each kind of query (both sides' garbage: one heap here).
  const gc = { first: { count: 0, ms: 0 }, held: { count: 0, ms: 0 } };
  let phase: keyof typeof gc | undefined;
  const gcs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (!phase) continue;
      gc[phase].count++;
      gc[phase].ms += e.duration;
    }
  });
  gcs.observe({ entryTypes: ['gc'] });
  const measure = async (names: string[], what: keyof typeof gc, into: number[]) => {
    phase = what;
    const t0 = process.cpuUsage();
    into.push(...(await series(names)));
    const used = process.cpuUsage(t0);
    await new Promise((r) => setImmediate(r)); // gc entries are delivered asynchronously
    phase = undefined;
    cpu[what] += (used.user + used.system) / 1000 / names.length / ROUNDS;
  };
  for (let r = 0; r < ROUNDS; r++) {
    const names = Array.from({ length: FIRST }, (_, i) => benchName(r * FIRST + i));
    await measure(names, 'first', first);
    await measure(names, 'held', held);
  }
  gcs.disconnect();
  process.stdout.write(`${JSON.stringify({ first, held, cpuMs: cpu, gc })}\n`);
  resolver.close();
  await od.stop();
  await worker.terminate();
}
