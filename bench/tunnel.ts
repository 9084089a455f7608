// Tunnel benchmark in the NAT lab (needs root: network namespaces). One run measures each
// tunnel path and, as its baseline, plain Node TCP over the same NATs and routers (a port
// forward on the far NAT router; LAN routing for the same-site case), then prints ratios.
// The gateway nodes run with the gateway's V8 flags, as the DaemonSet runs the gateway.
// Besides MB/s, each gateway's CPU time per GB carried and read/write syscalls per MB (medians
// over the rounds): on this shared machine MB/s swings with the load, what a gateway spends
// per byte much less.
//   node_modules/.bin/node bench/tunnel.ts [--mb 200] [--udp-mb 50] [--rounds 3] [--only direct,relay]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { GATEWAY_NODE_FLAGS } from '../gateway/tunnel/node-flags.ts';
import { NetnsLab, waitFor } from '../test/harness/netns.ts';
import type { LabNode } from '../test/natlab/lab.ts';
import { type SendResult, TunnelLab } from '../test/natlab/tunnel-fixture.ts';

const { values: opt } = parseArgs({
  options: {
    mb: { type: 'string', default: '200' },
    'udp-mb': { type: 'string', default: '50' },
    rounds: { type: 'string', default: '3' },
    // Comma-separated case-name prefixes to run (profiling one path); every case by default.
    only: { type: 'string', default: '' },
  },
});
const MB = 1024 * 1024;
const ROUNDS = Number(opt.rounds);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mbps = (r: SendResult) =>
  r.bytes && r.ms && r.reply === `${r.sha} ${r.bytes}` ? r.bytes / MB / (r.ms / 1000) : Number.NaN;

/**
 * CPU seconds and read/write syscalls of a gateway node process so far (/proc: `ip netns exec`
 * execs node, so the child's pid is the gateway's). CPU per GB is steadier than MB/s on a
 * shared machine: it is what the gateways cost, whatever else runs.
 */
function usage(pid: number | undefined): { cpu: number; calls: number } {
  if (!pid) return { cpu: Number.NaN, calls: Number.NaN };
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  return {
    cpu: (Number(stat[11]) + Number(stat[12])) / 100, // utime + stime, clock ticks of 1/100 s
    calls: Number(/syscr: (\d+)/.exec(io)?.[1]) + Number(/syscw: (\d+)/.exec(io)?.[1]),
  };
}

NetnsLab.cleanUpOnInterrupt();
const t = await TunnelLab.create(
  [
    { mapping: 'preserving', inbound: 'drop', nodes: 2, podsPerNode: 1 },
    { mapping: 'preserving', inbound: 'drop', nodes: 1, podsPerNode: 1 },
    { mapping: 'preserving', inbound: 'reject', nodes: 1, podsPerNode: 1 },
    { mapping: 'preserving', inbound: 'reject', nodes: 1, podsPerNode: 1 },
    { mapping: 'random', inbound: 'drop', nodes: 1, podsPerNode: 1 },
  ],
  2,
  [],
  'emq',
);
const rows: string[][] = [];
const notes: string[] = [];
try {
  const n = Object.fromEntries(t.lab.sites.flatMap((s) => s.nodes.map((x) => [x.name, x]))) as Record<
    string,
    LabNode
  >;
  for (const node of Object.values(n)) await t.startNode(node);

  const cases: {
    name: string;
    from: LabNode;
    to: LabNode;
    path: string;
    mb: number;
    plain: () => Promise<string>;
  }[] = [
    {
      name: 'direct (same site)',
      from: n['node1-1'],
      to: n['node1-2'],
      path: 'direct',
      mb: Number(opt.mb),
      plain: async () => n['node1-2'].pods[0].addr,
    },
    {
      name: 'punched TCP (DROP NATs)',
      from: n['node1-1'],
      to: n['node2-1'],
      path: 'punched',
      mb: Number(opt.mb),
      plain: () => t.portForward(n['node2-1']),
    },
    {
      name: 'punched UDP (REJECT NATs)',
      from: n['node3-1'],
      to: n['node4-1'],
      path: 'punched',
      mb: Number(opt['udp-mb']),
      plain: () => t.portForward(n['node4-1']),
    },
    {
      name: 'relay (symmetric NAT)',
      from: n['node1-2'],
      to: n['node5-1'],
      path: 'relay',
      mb: Number(opt.mb),
      plain: () => t.portForward(n['node5-1']),
    },
  ];
  const only = opt.only.split(',').filter(Boolean);
  for (const c of cases) {
    if (only.length > 0 && !only.some((o) => c.name.startsWith(o))) continue;
    // Time from the first stream to the path the gateway settles on.
    const first = await t.send(c.from, c.to, 1000);
    if (first.error) throw new Error(`${c.name}: ${first.error}`);
    const settle = c.path === 'relay' ? 'nextUpgradeAt' : c.path;
    const peer = await waitFor(
      async () => {
        const p = (await t.status(c.from)).peers.find((x) => x.node === c.to.name);
        return p?.path === c.path && (settle !== 'nextUpgradeAt' || 'nextUpgradeAt' in p) ? p : undefined;
      },
      30_000,
      100,
      `${c.name} path`,
    );
    const toPath =
      c.path === 'relay'
        ? Number.NaN
        : (peer.paths[c.path]?.upAt ?? Number.NaN) - (peer.firstUseAt ?? Number.NaN);
    const host = await c.plain();
    const plainAddr = host.startsWith('10.') ? `${host}:9000` : `${host}:19000`;
    const echoAddr = host.startsWith('10.') ? `${host}:9001` : `${host}:19001`;
    const bytes = c.mb * MB;
    // Interleaved rounds, median of each: this machine is shared, single runs are noise.
    const plainRuns: number[] = [];
    const tunRuns: number[] = [];
    // Per round: [sending, receiving] gateway CPU s per GB and syscalls per MB carried.
    const cpuRuns: number[][] = [];
    const callRuns: number[][] = [];
    const pids = [t.nodes.get(c.from.name)?.pid, t.nodes.get(c.to.name)?.pid];
    for (let round = 0; round < ROUNDS; round++) {
      plainRuns.push(mbps(await t.sendPlain(c.from, plainAddr, bytes, 120_000)));
      const before = pids.map(usage);
      const tun = await t.send(c.from, c.to, bytes, 180_000);
      const after = pids.map(usage);
      if (tun.path !== c.path) notes.push(`${c.name}: stream took ${tun.path}`);
      tunRuns.push(mbps(tun));
      cpuRuns.push(after.map((u, k) => (u.cpu - before[k].cpu) / (bytes / 1024 ** 3)));
      callRuns.push(after.map((u, k) => (u.calls - before[k].calls) / (bytes / MB)));
    }
    const plain = median(plainRuns);
    const tunnel = median(tunRuns);
    const plainRtt = await t.echo(c.from, { direct: echoAddr });
    const tunRtt = await t.echo(c.from, c.to);
    rows.push([
      c.name,
      `${c.mb}`,
      plain.toFixed(0),
      tunnel.toFixed(0),
      (tunnel / plain).toFixed(2),
      `${plainRtt.p50Us}`,
      `${tunRtt.p50Us}`,
      `${(tunRtt.p50Us ?? 0) - (plainRtt.p50Us ?? 0)}`,
      Number.isNaN(toPath) ? '-' : `${toPath}`,
      [0, 1].map((k) => median(cpuRuns.map((r) => r[k])).toFixed(2)).join(' / '),
      [0, 1].map((k) => median(callRuns.map((r) => r[k])).toFixed(0)).join(' / '),
    ]);
  }

  // Relay failover: kill the replica carrying the relay, time until the gateway has a relay
  // through the other one (both gateways' clocks are this machine's).
  const relayFailover = async (): Promise<number> => {
    const from = n['node1-2'];
    const before = (await t.status(from)).peers.find((p) => p.node === 'node5-1');
    const via = before?.paths.relay?.transport ?? '';
    const killedAt = Date.now();
    t.killServer(via.endsWith('ts2') ? 1 : 0);
    const after = await waitFor(
      async () => {
        const p = (await t.status(from)).peers.find((x) => x.node === 'node5-1');
        return p?.paths.relay && p.paths.relay.upAt > killedAt ? p : undefined;
      },
      30_000,
      20,
      'relay failover',
    );
    return (after.paths.relay?.upAt ?? 0) - killedAt;
  };
  const failoverMs = rows.some((r) => r[0].startsWith('relay')) ? await relayFailover() : undefined;

  const head = [
    'path',
    'MB',
    'plain MB/s',
    'tunnel MB/s',
    'ratio',
    'plain p50 µs',
    'tunnel p50 µs',
    'added p50 µs',
    'first stream → path ms',
    'gateway CPU s/GB (send / recv)',
    'syscalls/MB (send / recv)',
  ];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  if (failoverMs !== undefined)
    console.log(`relay failover (replica killed → relay via the other replica up): ${failoverMs} ms`);
  for (const note of notes) console.log(`note: ${note}`);
  console.log(`gateway node flags: ${GATEWAY_NODE_FLAGS.join(' ')}`);
} finally {
  await t.cleanup();
}
