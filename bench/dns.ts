// DNS: the sidecar's DNS server against dnsmasq (Debian) serving the same names, in the
// same run, with the same load generator (dnsperf, Debian), both servers pinned to one core.
//
//   ns bench: edgemesh DNS 127.0.0.1:15053 (cpu 1)   dnsmasq 127.0.0.1:15153 (cpu 1)
//             dnsperf (cpu 0)
//        eth0 10.54.0.2 ── ns up: eth0 10.54.0.1, dnsmasq authoritative for example.test (cpu 0)
//
// Workloads: cluster names answered locally; external names forwarded and then cached
// (the same few names); external names that miss every cache (unique names, answered by the
// upstream). For each: queries/s at saturation (closed loop, bounded by time) and p50/p99 at a
// fixed rate (open loop). Rounds alternate the servers; the median round is reported.
//
// Run as root: `node bench/dns.ts [--seconds N] [--rounds N]`. Needs dnsperf and dnsmasq.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import dnsPacket from 'dns-packet';
import { applyUpdate, CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog } from '../lib/catalog/types.ts';
import { Resolver } from '../sidecar/dns/resolver.ts';
import { fixtureCatalog } from '../sidecar/dns/testing/fixture.ts';
import { encodeQuery } from '../sidecar/dns/testing/testutil.ts';
import { ZoneTables } from '../sidecar/dns/zone.ts';
import { NetnsLab, waitFor } from '../test/harness/netns.ts';
import { percentile, printTable } from './lib/stats.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    rate: { type: 'string', default: '10000' },
  },
});
const SECONDS = Math.min(Math.max(Number(values.seconds), 1), 30);
const ROUNDS = Math.min(Math.max(Number(values.rounds), 1), 7);
const RATE = Math.min(Math.max(Number(values.rate), 100), 50_000);
const ROOT = new URL('../', import.meta.url).pathname;
const NODE = join(ROOT, 'node_modules/.bin/node');

for (const tool of ['dnsperf', 'dnsmasq', 'taskset']) {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  } catch {
    console.log(`bench/dns: skipped, ${tool} is not installed (scripts/setup installs it)`);
    process.exit(0);
  }
}

// The same cluster names for both servers (dnsmasq: --host-record; edgemesh: the catalog).
const catalog = fixtureCatalog();
const LOCAL_NAMES: [string, string, string?][] = [
  ['web.default.svc.cluster.local', '10.96.0.10', 'fd00:10:96::a'],
  ['kubernetes.default.svc.cluster.local', '10.96.0.1'],
  ['api.team-b.svc.cluster.local', '10.96.1.20'],
  ['db-0.db.default.svc.cluster.local', '10.244.1.5'],
  ['db-1.db.default.svc.cluster.local', '10.244.2.6', 'fd00:244::6'],
];
const CACHED_NAMES = Array.from({ length: 20 }, (_, i) => `host${i}.example.test`);
const MISS_COUNT = 400_000;

interface Sample {
  qps: number;
  perCpuSecond: number;
  lost: number;
  p50: number;
  p99: number;
}

/** utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15, in clock ticks of 1/100 s). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * The codec choice, measured in-process: our whole answer path (header checks, parse,
 * lookup, response from pre-encoded bytes, metrics) against dns-packet's decode + encode of
 * the same query and answer alone (no lookup at all). Bounded: 200k queries each.
 */
function codecComparison(): void {
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: fixtureCatalog() });
  const resolver = new Resolver({ store, upstreams: [] });
  const query = encodeQuery({ name: 'Web.default.svc.cluster.local', type: 'A', edns: 1232 });
  let sink = 0;
  const ours = () =>
    resolver.handle(query, 'udp', (b) => {
      sink += b.length;
    });
  const theirs = () => {
    const q = dnsPacket.decode(query);
    const answer = dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
      questions: q.questions,
      answers: [{ name: q.questions![0].name, type: 'A', ttl: 5, data: '10.96.0.10' }],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer],
    });
    sink += answer.length;
  };
  const time = (f: () => void) => {
    for (let i = 0; i < 20_000; i++) f();
    const t0 = performance.now();
    for (let i = 0; i < 200_000; i++) f();
    return ((performance.now() - t0) * 1000) / 200_000;
  };
  const oursUs = Math.min(time(ours), time(ours), time(ours));
  const theirsUs = Math.min(time(theirs), time(theirs), time(theirs));
  resolver.close();
  printTable(
    'DNS codec (in-process, best of 3 x 200k queries)',
    ['path', 'µs per query', 'ratio'],
    [
      ['edgemesh: checks + parse + lookup + answer + metrics', oursUs, (oursUs / theirsUs).toFixed(2)],
      ['dns-packet: decode + encode only', theirsUs, '1.00'],
    ],
  );
  if (sink === 0) console.log('(no output)');
}
codecComparison();

/**
 * Zone (lookup table) builds for a large catalog: 5,000 ClusterIP services with two named
 * ports and 500 headless services of 10 endpoints, in 50 namespaces. Full build, then the
 * update after one service changed (only that service's names are touched).
 */
function zoneBuildTimes(): void {
  const services: Catalog['services'] = {};
  const base = {
    sessionAffinity: { type: 'None' as const },
    lbPolicy: 'round-robin' as const,
    publishNotReadyAddresses: false,
  };
  for (let i = 0; i < 5000; i++) {
    const namespace = `ns${i % 50}`;
    services[`${namespace}/svc${i}`] = {
      service: {
        ...base,
        namespace,
        name: `svc${i}`,
        type: 'ClusterIP',
        clusterIPs: [`10.96.${i >> 8}.${i & 255}`],
        headless: false,
        ports: [
          { name: 'http', port: 80, protocol: 'TCP' },
          { name: 'grpc', port: 9090, protocol: 'TCP' },
        ],
      },
      endpoints: [],
    };
  }
  for (let i = 0; i < 500; i++) {
    const namespace = `ns${i % 50}`;
    services[`${namespace}/hl${i}`] = {
      service: {
        ...base,
        namespace,
        name: `hl${i}`,
        type: 'ClusterIP',
        clusterIPs: [],
        headless: true,
        ports: [],
      },
      endpoints: Array.from({ length: 10 }, (_, j) => ({
        ip: `10.244.${i >> 4}.${(i & 15) * 10 + j + 1}`,
        ready: true,
        serving: true,
        terminating: false,
        hostname: `p${j}`,
        ports: [{ name: 'pg', port: 5432, protocol: 'TCP' as const }],
      })),
    };
  }
  let catalog: Catalog = {
    format: 1,
    revision: 1,
    clusterDomain: 'cluster.local',
    services,
    pods: {},
    nodes: {},
  };
  const full: number[] = [];
  const incremental: number[] = [];
  let zone = new ZoneTables({ domain: 'cluster.local' });
  for (let k = 0; k < 12; k++) {
    // Every 4th round a table from scratch; otherwise the update after one service changed.
    if (k % 4 === 0) zone = new ZoneTables({ domain: 'cluster.local' });
    const t0 = performance.now();
    zone.update(catalog);
    (k % 4 === 0 ? full : incremental).push(performance.now() - t0);
    const entry = structuredClone(catalog.services['ns7/hl7']);
    entry.endpoints[0].ready = !entry.endpoints[0].ready;
    catalog = applyUpdate(catalog, {
      type: 'service',
      revision: catalog.revision + 1,
      key: 'ns7/hl7',
      entry,
    })!;
  }
  const names = zone.size;
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  printTable(
    `DNS zone build, 5,500 services, ${names} names (median ms)`,
    ['build', 'ms'],
    [
      ['full (new catalog)', med(full)],
      ['after one service changed', med(incremental)],
    ],
  );
}
zoneBuildTimes();

NetnsLab.cleanUpOnInterrupt();
const lab = new NetnsLab('emd');
const dir = mkdtempSync(join(tmpdir(), 'emd-bench-'));
chmodSync(dir, 0o755);
try {
  const ns = await lab.add('bench');
  const up = await lab.add('up');
  await lab.link(
    { ns, ifname: 'eth0', addr: '10.54.0.2/24' },
    { ns: up, ifname: 'eth0', addr: '10.54.0.1/24' },
  );

  writeFileSync(join(dir, 'catalog.json'), JSON.stringify(catalog));
  const lines = (names: string[], types = ['A']) =>
    names.flatMap((n) => types.map((t) => `${n} ${t}`)).join('\n');
  writeFileSync(
    join(dir, 'local.txt'),
    `${lines(
      LOCAL_NAMES.map((n) => n[0]),
      ['A', 'AAAA'],
    )}\n`,
  );
  writeFileSync(join(dir, 'cached.txt'), `${lines(CACHED_NAMES)}\n`);
  for (const server of ['edgemesh', 'dnsmasq']) {
    // Unique names per server and round, so neither can answer any of them from its cache.
    for (let r = 0; r < ROUNDS; r++) {
      const names = Array.from({ length: MISS_COUNT }, (_, i) => `${server}-${r}-${i}.miss.example.test A`);
      writeFileSync(join(dir, `miss-${server}-${r}.txt`), `${names.join('\n')}\n`);
    }
  }

  // Upstream: authoritative for example.test, every *.miss.example.test answered by --address.
  lab.spawn(up, [
    'taskset',
    '-c',
    '0',
    'dnsmasq',
    '--keep-in-foreground',
    '--no-resolv',
    '--no-hosts',
    '--bind-interfaces',
    '--listen-address=10.54.0.1',
    '--user=root',
    `--pid-file=${join(dir, 'up.pid')}`,
    '--cache-size=0',
    '--address=/miss.example.test/198.51.100.7',
    ...CACHED_NAMES.map((n, i) => `--host-record=${n},198.51.100.${i + 20}`),
    '--auth-server=ns.example.test,eth0',
    '--auth-zone=example.test',
  ]);
  const edgemesh = lab.spawn(
    ns,
    [
      'taskset',
      '-c',
      '1',
      NODE,
      join(ROOT, 'sidecar/dns/main.ts'),
      '--catalog-file',
      join(dir, 'catalog.json'),
      '--listen',
      '127.0.0.1',
      '--port',
      '15053',
      '--upstream',
      '10.54.0.1',
      '--metrics-port',
      '15020',
    ],
    {
      uid: 1337,
      env: { ...process.env, EDGEMESH_LOG_LEVEL: 'warn', NODE_OPTIONS: process.env.DNS_NODE_OPTIONS ?? '' },
    },
  );
  const dnsmasq = lab.spawn(ns, [
    'taskset',
    '-c',
    '1',
    'dnsmasq',
    '--keep-in-foreground',
    '--no-resolv',
    '--no-hosts',
    '--bind-interfaces',
    '--listen-address=127.0.0.1',
    '--port=15153',
    '--user=root',
    `--pid-file=${join(dir, 'local.pid')}`,
    '--server=10.54.0.1',
    '--local=/cluster.local/',
    '--cache-size=10000',
    '--dns-forward-max=512',
    ...LOCAL_NAMES.map(([n, ...ips]) => `--host-record=${[n, ...ips].join(',')}`),
  ]);
  const servers = { edgemesh: 15053, dnsmasq: 15153 } as const;
  const pids = { edgemesh: edgemesh.pid ?? 0, dnsmasq: dnsmasq.pid ?? 0 };
  for (const port of Object.values(servers)) {
    await waitFor(
      async () =>
        (
          await lab.run(ns, ['dig', '@127.0.0.1', '-p', String(port), '+short', LOCAL_NAMES[0][0]])
        ).stdout.includes('10.96.0.10'),
      20_000,
      200,
      `server on :${port}`,
    );
  }

  const dnsperf = async (port: number, file: string, extra: string[]) =>
    (
      await lab.exec(
        ns,
        [
          'taskset',
          '-c',
          '0',
          'dnsperf',
          '-s',
          '127.0.0.1',
          '-p',
          String(port),
          '-d',
          file,
          '-t',
          '1',
          ...extra,
        ],
        { timeoutMs: (SECONDS + 30) * 1000 },
      )
    ).stdout;

  async function measure(server: keyof typeof servers, file: string, once: boolean): Promise<Sample> {
    const port = servers[server];
    const runs = once ? ['-n', '1'] : [];
    // Saturation: 200 queries outstanding for SECONDS (a burst larger than that overflows
    // the loopback socket buffers and measures drops instead of the server). The server's
    // CPU time over the run gives queries per CPU-second: what one whole core would serve,
    // whatever share of it this shared machine actually gave.
    const cpu0 = cpuSeconds(pids[server]);
    const sat = await dnsperf(port, file, ['-l', String(SECONDS), '-q', '200', ...runs]);
    const cpu = cpuSeconds(pids[server]) - cpu0;
    const qps = Number(/Queries per second:\s+([\d.]+)/.exec(sat)?.[1] ?? Number.NaN);
    const completed = Number(/Queries completed:\s+(\d+)/.exec(sat)?.[1] ?? Number.NaN);
    const lost = Number(/Queries lost:\s+(\d+)/.exec(sat)?.[1] ?? Number.NaN);
    // Latency at a fixed rate: every answer's latency, then percentiles.
    const lat = await dnsperf(port, file, ['-l', '2', '-Q', String(RATE), '-q', '500', ...runs, '-v']);
    const ms = lat
      .split('\n')
      .filter((l) => l.startsWith('> '))
      .map((l) => Number(l.split(' ').pop()) * 1000)
      .filter((x) => Number.isFinite(x))
      .sort((a, b) => a - b);
    return { qps, perCpuSecond: completed / cpu, lost, p50: percentile(ms, 50), p99: percentile(ms, 99) };
  }

  const workloads = ['local', 'cached', 'miss'] as const;
  const results: Record<string, Record<string, Sample[]>> = {};
  // Warm both (JIT, caches) before measuring.
  for (const port of Object.values(servers)) {
    await dnsperf(port, join(dir, 'local.txt'), ['-l', '1', '-q', '50']);
    await dnsperf(port, join(dir, 'cached.txt'), ['-l', '1', '-q', '50']);
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const w of workloads) {
      const order = r % 2 === 0 ? (['edgemesh', 'dnsmasq'] as const) : (['dnsmasq', 'edgemesh'] as const);
      for (const s of order) {
        const file = w === 'miss' ? join(dir, `miss-${s}-${r}.txt`) : join(dir, `${w}.txt`);
        const sample = await measure(s, file, w === 'miss');
        results[w] ??= {};
        results[w][s] ??= [];
        results[w][s].push(sample);
        console.log(
          `round ${r + 1} ${w.padEnd(6)} ${s.padEnd(8)} ${sample.qps.toFixed(0)} q/s, ${sample.perCpuSecond.toFixed(0)} q/CPU-s, p50 ${sample.p50.toFixed(3)} ms, p99 ${sample.p99.toFixed(3)} ms, lost ${sample.lost}`,
        );
      }
    }
  }

  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const title: Record<string, string> = {
    local: 'cluster names (local answers)',
    cached: 'external names, cached',
    miss: 'external names, cache miss (forwarded)',
  };
  printTable(
    `DNS: edgemesh vs dnsmasq, one core each, dnsperf, ${SECONDS} s x ${ROUNDS} rounds (median); latency at ${RATE} q/s`,
    [
      'workload',
      'edgemesh q/s',
      'dnsmasq q/s',
      'ratio',
      'edgemesh q/CPU-s',
      'dnsmasq q/CPU-s',
      'ratio',
      'edgemesh p50/p99 ms',
      'dnsmasq p50/p99 ms',
    ],
    workloads.map((w) => {
      const e = results[w].edgemesh;
      const d = results[w].dnsmasq;
      const eq = median(e.map((x) => x.qps));
      const dq = median(d.map((x) => x.qps));
      const ec = median(e.map((x) => x.perCpuSecond));
      const dc = median(d.map((x) => x.perCpuSecond));
      return [
        title[w],
        eq,
        dq,
        (eq / dq).toFixed(2),
        ec,
        dc,
        (ec / dc).toFixed(2),
        `${median(e.map((x) => x.p50)).toFixed(3)} / ${median(e.map((x) => x.p99)).toFixed(3)}`,
        `${median(d.map((x) => x.p50)).toFixed(3)} / ${median(d.map((x) => x.p99)).toFixed(3)}`,
      ];
    }),
  );
  // What one more pod pays for its DNS server: private memory beside RSS (DESIGN.md).
  // `ip netns exec`, setpriv and taskset each exec the next: the child's PID is node's.
  const pid = edgemesh.pid ?? 0;
  if (pid > 0 && edgemesh.exitCode === null) {
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(rollup)?.[1] ?? 0);
    const mb = (n: number) => (n / 1024).toFixed(1);
    const metrics = (await lab.run(ns, ['curl', '-s', 'http://127.0.0.1:15020/metrics'])).stdout;
    const gauge = (name: string) =>
      Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)`, 'm').exec(metrics)?.[1] ?? Number.NaN);
    console.log(
      `edgemesh DNS heap: used ${(gauge('nodejs_heap_size_used_bytes') / 2 ** 20).toFixed(1)} MB of ${(gauge('nodejs_heap_size_total_bytes') / 2 ** 20).toFixed(1)} MB, external ${(gauge('nodejs_external_memory_bytes') / 2 ** 20).toFixed(1)} MB, cache entries ${gauge('edgemesh_dns_cache_entries')}`,
    );
    console.log(
      `edgemesh DNS after the runs: RSS ${mb(kb('Rss'))} MB, private ${mb(kb('Private_Dirty') + kb('Private_Clean'))} MB (Private_Dirty ${mb(kb('Private_Dirty'))} MB)`,
    );
  }
  const local = results.local;
  const perCore = median(local.edgemesh.map((x) => x.perCpuSecond));
  const ratio = perCore / median(local.dnsmasq.map((x) => x.perCpuSecond));
  console.log(
    `target: local answers >= 50k q/s on one core (${perCore.toFixed(0)} q per CPU-second: ${perCore >= 50_000 ? 'met' : 'NOT met'}), ` +
      `within 4x of dnsmasq (ratio ${ratio.toFixed(2)} >= 0.25: ${ratio >= 0.25 ? 'met' : 'NOT met'})`,
  );
} finally {
  await lab.cleanup();
  rmSync(dir, { recursive: true, force: true });
}
