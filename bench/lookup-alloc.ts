/**
 * bench/lookup-alloc.ts — what a first DNS query allocates in the sidecar (issue 13, round 5):
 * the sidecar's resolver and on-demand catalog asking the gateway's real LookupHub over
 * loopback (the hub in a worker thread: its own heap, so only the sidecar side is counted),
 * N fresh names one at a time, then the same names held (the same-run baseline). Run it with
 * the injected NODE_OPTIONS so the young generation is the pod's:
 *
 *   node --max-semi-space-size=1 --max-old-space-size=96 --v8-pool-size=1 \
 *     bench/lookup-alloc.ts [--first 10000] [--no-parallel-scavenge] [--format 2|1]
 *
 * `--format 1` makes the sidecar ask for JSON answers instead of the compact service answer
 * (lib/catalog/lookup-compact.ts): the same build, each form measured against the other.
 *
 * The last column is the gateway's hub (its worker thread's heap) over the same phase.
 *
 * Bytes allocated = the heap's growth over the phase plus what each collection freed
 * (v8.GCProfiler's before/after used sizes), so collected garbage is counted too; off-heap
 * Buffer contents are not (their JS wrappers are). `--no-parallel-scavenge` sets that V8
 * flag at start, as the sidecar would. Prints one table.
 */
import { Session } from 'node:inspector/promises';
import net from 'node:net';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { LookupHub } from '../gateway/lookup.ts';
import { CatalogStore } from '../lib/catalog/store.ts';
import { OnDemandCatalog } from '../sidecar/catalog/on-demand.ts';
import { Resolver } from '../sidecar/dns/resolver.ts';
import { encodeQuery } from '../sidecar/dns/testing/testutil.ts';
import { benchCatalog, benchName } from './lib/on-demand-catalog.ts';
import { percentile, printTable } from './lib/stats.ts';

const { values } = parseArgs({
  options: {
    first: { type: 'string', default: '10000' },
    'no-parallel-scavenge': { type: 'boolean', default: false },
    /** Where the first queries allocate: V8's sampling heap profiler, collected objects included. */
    sites: { type: 'boolean', default: false },
    /** How many allocation sites (and files) --sites lists. */
    top: { type: 'string', default: '20' },
    /** The LOOKUP answer format the sidecar asks for: 2 compact service answers, 1 JSON lines. */
    format: { type: 'string', default: '2' },
  },
});
const FORMAT = values.format === '1' ? 1 : values.format === '2' ? 2 : undefined;
if (FORMAT === undefined) throw new Error(`--format: ${values.format} is not 1 or 2`);
const FIRST = Math.min(Math.max(Number(values.first), 100), 40_000);
const WARM = 200;
const SERVICES = FIRST + WARM;

async function gateway(services: number): Promise<void> {
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: benchCatalog(services) });
  const hub = new LookupHub(store);
  const server = net.createServer((socket) => {
    socket.once('data', (first: Buffer) => {
      socket.pause();
      hub.attach(socket, 'bench', first.subarray(first.indexOf(0x0a) + 1));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  // The hub's own allocation over a phase, on the main thread's 'start' / 'stop' (the same
  // count as the sidecar side's: heap growth plus what collections freed).
  let profiler: v8.GCProfiler | undefined;
  let used0 = 0;
  parentPort?.on('message', (m: string) => {
    if (m === 'start') {
      used0 = v8.getHeapStatistics().used_heap_size;
      profiler = new v8.GCProfiler();
      profiler.start();
      parentPort?.postMessage('started');
    } else if (m === 'stop' && profiler) {
      const used1 = v8.getHeapStatistics().used_heap_size;
      const result = profiler.stop();
      let freed = 0;
      for (const st of result.statistics)
        freed += st.beforeGC.heapStatistics.usedHeapSize - st.afterGC.heapStatistics.usedHeapSize;
      parentPort?.postMessage({ bytes: used1 - used0 + freed, collections: result.statistics.length });
    }
  });
  parentPort?.postMessage((server.address() as net.AddressInfo).port);
}

if (!isMainThread) await gateway(workerData as number);
else await main();

async function main(): Promise<void> {
  if (values['no-parallel-scavenge']) v8.setFlagsFromString('--no-parallel-scavenge');
  const worker = new Worker(new URL(import.meta.url), {
    workerData: SERVICES,
    argv: [],
    resourceLimits: { maxOldGenerationSizeMb: 4096, maxYoungGenerationSizeMb: 48 },
  });
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const store = new CatalogStore({ inPlace: true });
  const od = new OnDemandCatalog({ host: '127.0.0.1', port, clusterDomain: 'cluster.local', format: FORMAT });
  await od.start(store);
  while (!od.connected || !store.synced) await new Promise((r) => setTimeout(r, 5));
  const resolver = new Resolver({ store, lookup: od, upstreams: [] });

  const ask = (name: string): Promise<number> => {
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
  };
  const series = async (names: string[]) => {
    const ms: number[] = [];
    for (const n of names) ms.push(await ask(n));
    return ms;
  };
  const warm = Array.from({ length: WARM }, (_, i) => benchName(FIRST + i));
  await series(warm);
  await series(warm);

  const hub = <T>(message: string) =>
    new Promise<T>((resolve) => {
      worker.once('message', resolve);
      worker.postMessage(message);
    });
  const phase = async (names: string[]) => {
    await hub('start');
    const used0 = v8.getHeapStatistics().used_heap_size;
    const profiler = new v8.GCProfiler();
    profiler.start();
    const ms = await series(names);
    const used1 = v8.getHeapStatistics().used_heap_size;
    const result = profiler.stop();
    let freed = 0;
    let scavenges = 0;
    let scavengeMs = 0;
    for (const s of result.statistics) {
      freed += s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize;
      if (s.gcType === 'Scavenge') {
        scavenges++;
        scavengeMs += s.cost / 1000; // microseconds
      }
    }
    ms.sort((a, b) => a - b);
    const gw = await hub<{ bytes: number }>('stop');
    return {
      bytes: (used1 - used0 + freed) / names.length,
      gatewayBytes: gw.bytes / names.length,
      scavenges,
      scavengeMs,
      ms,
    };
  };
  const names = Array.from({ length: FIRST }, (_, i) => benchName(i));
  const session = values.sites ? new Session() : undefined;
  session?.connect();
  await session?.post('HeapProfiler.startSampling', {
    samplingInterval: 256,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  const first = await phase(names);
  if (session) {
    const { profile } = await session.post('HeapProfiler.stopSampling');
    printSites(profile, FIRST);
    session.disconnect();
  }
  const held = await phase(names);
  const row = (what: string, r: typeof first) => [
    what,
    Math.round(r.bytes).toLocaleString('en'),
    ((r.scavenges * 1000) / FIRST).toFixed(1),
    r.scavenges ? (r.scavengeMs / r.scavenges).toFixed(3) : '-',
    percentile(r.ms, 50).toFixed(3),
    percentile(r.ms, 99).toFixed(3),
    Math.round(r.gatewayBytes).toLocaleString('en'),
  ];
  printTable(
    `bench/lookup-alloc: ${FIRST} names in one process, sidecar side (${values['no-parallel-scavenge'] ? '--no-parallel-scavenge' : 'parallel scavenge'}; answer format ${FORMAT}; NODE_OPTIONS ${process.execArgv.join(' ') || '(none)'})`,
    ['query', 'bytes / query', 'scavenges / 1,000', 'ms / scavenge', 'p50 ms', 'p99 ms', 'hub bytes / query'],
    [row('first (asks the hub)', first), row('again (held, baseline)', held)],
  );
  resolver.close();
  await od.stop();
  await worker.terminate();
}

interface SamplingNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: SamplingNode[];
}

/** The top allocation sites of the first queries (function, file:line), bytes per query. */
function printSites(profile: { head: SamplingNode }, queries: number): void {
  const sites = new Map<string, number>();
  // A builtin (no url: Map's set, an iterator's next, Array's push) is named with the
  // function that called it, so a line says which code allocated.
  const walk = (n: SamplingNode, caller: string) => {
    const f = n.callFrame;
    const here = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/main\//, '')}:${f.lineNumber + 1}`;
    const where = f.url === '' && caller !== '' ? `${f.functionName || '(builtin)'} in ${caller}` : here;
    sites.set(where, (sites.get(where) ?? 0) + n.selfSize);
    for (const c of n.children) walk(c, f.url === '' ? caller : here);
  };
  walk(profile.head, '');
  // Per file too: which part of the sidecar a first query's bytes come from.
  const byFile = new Map<string, number>();
  for (const [where, bytes] of sites) {
    const file = where.replace(/^.* (in )?/, '').replace(/:\d+$/, '');
    byFile.set(file, (byFile.get(file) ?? 0) + bytes);
  }
  printTable(
    'where a first query allocates, by file',
    ['file', 'bytes / query'],
    [...byFile]
      .sort((a, b) => b[1] - a[1])
      .slice(0, Number(values.top) || 20)
      .map(([file, bytes]) => [file || '(V8)', Math.round(bytes / queries)]),
  );
  const top = [...sites].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top) || 20);
  let sampled = 0;
  for (const bytes of sites.values()) sampled += bytes;
  printTable(
    `where a first query allocates (sampling heap profiler, collected objects included; all sites ${Math.round(sampled / queries)} bytes / query)`,
    ['site', 'bytes / query'],
    top.map(([where, bytes]) => [where, Math.round(bytes / queries)]),
  );
}
