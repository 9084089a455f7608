/**
 * bench/udp-natlab.ts — a UDP Service whose endpoint is on another site, through the NAT lab
 * (issue 18's "cross-site on the UDP path: ≥ 0.3× plain UDP through the same NATs"), beside
 * plain UDP from the same client namespace to the same server through the same NATs.
 *
 *   site 1 (NAT, REJECTs unsolicited)                  site 2 (NAT, REJECTs unsolicited)
 *   pod1-1: udp-tool load ── edgemesh sidecar           pod2-1: udp-tool echo 10.2.1.2:7000
 *           (capture-udp, as injected)                           ▲
 *             │ DGRAM to node1-1's gateway :15080                │
 *   node1-1: edgemesh gateway ══ tunnel, punched UDP path ══ node2-1: edgemesh gateway
 *   plain:   pod1-1 as gid 1337 → site 2's public address :17000 (a port forward on its NAT
 *            router) → 10.2.1.2:7000: the same NATs and routers, no edgemesh
 *
 * The gateways are the real `edgemesh gateway` processes (bin/main.ts, the gateway's V8 flags),
 * on a persisted catalog with the API unreachable, enrolled at the lab's tunnel-server. Both
 * routers REJECT unsolicited traffic, so TCP punching fails and the tunnel takes the UDP path
 * (bench/tunnel.ts's "punched UDP" case); the bench fails unless node1-1's path to node2-1 is
 * punched over UDP and the measured datagrams went on it (its /status datagram counters).
 *
 * Per payload size and round, alternating plain and tunnel, each run a new set of 64 flows
 * (new source ports: new sidecar flows, new tunnel streams on the current path):
 *   1. max: the generator blasts for SECONDS; replies/s and loss
 *   2. at 50 % of that round's plain max: loss, and CPU per datagram (there and back) of the
 *      sidecar and each gateway process
 *   3. at 1,000/s: p50 round trip
 * Medians over the rounds. Bounded: every run SECONDS long, every exec with a timeout.
 *
 *   node_modules/.bin/node bench/udp-natlab.ts [--rounds 3] [--seconds 2] [--sizes 512,1200]
 *       [--lane on|off]    (the gateways' datagram lane, docs/udp.md; off: the SCTP channel)
 *       [--cpu-prof DIR]   (the gateways with --cpu-prof, written when they end)
 */
import type { ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { saveCatalog } from '../gateway/persist.ts';
import { GATEWAY_NODE_FLAGS } from '../gateway/tunnel/node-flags.ts';
import type { Catalog } from '../lib/catalog/types.ts';
import { type GatewayStatus, parseGatewayStatus } from '../lib/gateway-status.ts';
import { startUdpSidecar } from '../sidecar/testing/udp-pod.ts';
import { EDGEMESH_BIN, NetnsLab, waitFor } from '../test/harness/netns.ts';
import type { LabNode } from '../test/natlab/lab.ts';
import { TunnelLab } from '../test/natlab/tunnel-fixture.ts';
import { INJECTED_SIDECAR_ENV } from './lib/injected-env.ts';
import { cpuSeconds } from './lib/proc-stats.ts';
import { buildUdpTool, type LoadResult, parseLoad } from './lib/udp-tool.ts';

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '2' },
    sizes: { type: 'string', default: '512,1200' },
    'cpu-prof': { type: 'string' },
    lane: { type: 'string', default: 'on' },
  },
});
if (args.lane !== 'on' && args.lane !== 'off') throw new Error('--lane on|off');
const LANE = args.lane === 'on';
const ROUNDS = Number(args.rounds);
const SECONDS = Number(args.seconds);
const SIZES = args.sizes.split(',').map(Number);
if (!(ROUNDS >= 1 && ROUNDS <= 20) || !(SECONDS > 0 && SECONDS <= 10))
  throw new Error('--rounds 1..20, --seconds (0, 10]');
for (const s of SIZES) if (!(s >= 16 && s <= 1400)) throw new Error(`--sizes: ${s} is not in 16..1400`);
const PROF_DIR = args['cpu-prof'];

const NODE = new URL('../node_modules/.bin/node', import.meta.url).pathname;
const MAIN = new URL('../bin/main.ts', import.meta.url).pathname;
const PORT = 7000;
const PUBLIC_PORT = 17000;
const VIP = '10.96.63.10';
const FLOWS = 64;
const LOW_RATE = 1000;
const APP = { uid: 1000, gid: 1000 };
const EXEMPT = { uid: 1337, gid: 1337 };

function catalog(a: LabNode, b: LabNode): Catalog {
  const port = { name: '', port: PORT, protocol: 'UDP' as const };
  return {
    format: 1,
    revision: 1,
    clusterDomain: 'cluster.local',
    services: {
      'bench/echo': {
        service: {
          namespace: 'bench',
          name: 'echo',
          type: 'ClusterIP',
          clusterIPs: [VIP],
          headless: false,
          ports: [port],
          sessionAffinity: { type: 'None' },
          lbPolicy: 'round-robin',
          publishNotReadyAddresses: false,
        },
        endpoints: [
          {
            ip: b.pods[0].addr,
            ready: true,
            serving: true,
            terminating: false,
            nodeName: b.name,
            ports: [port],
          },
        ],
      },
    },
    // The client's pod on node A (the gateway admits its sidecar), the endpoint's on node B
    // (the far gateway dials only endpoints of pods on its node).
    pods: {
      [a.pods[0].addr]: { ip: a.pods[0].addr, namespace: 'bench', name: 'load', nodeName: a.name },
      [b.pods[0].addr]: { ip: b.pods[0].addr, namespace: 'bench', name: 'echo', nodeName: b.name },
    },
    nodes: {},
  };
}

/** The real gateway on a lab node, with the tunnel on; resolves once its sidecar listener is up. */
async function startGateway(t: TunnelLab, node: LabNode, cat: Catalog, dir: string): Promise<ChildProcess> {
  const stateDir = join(dir, node.name);
  await mkdir(stateDir, { recursive: true });
  await saveCatalog(stateDir, cat);
  const token = join(stateDir, 'token');
  await writeFile(token, t.tokens.get(node.name) ?? '');
  const prof = PROF_DIR
    ? ['--cpu-prof', `--cpu-prof-dir=${PROF_DIR}`, `--cpu-prof-name=gateway-${node.name}.cpuprofile`]
    : [];
  const child = t.lab.spawn(
    node.ns,
    [
      NODE,
      ...GATEWAY_NODE_FLAGS,
      ...prof,
      MAIN,
      'gateway',
      `--node-name=${node.name}`,
      `--state-dir=${stateDir}`,
      `--listen=${node.addr}`,
      '--api-server=http://127.0.0.1:1',
      '--metrics-port=15090',
      `--tunnel-servers=${t.serverList}`,
      `--mesh-ca=${t.caFile}`,
      `--enroll-token-file=${token}`,
    ],
    { env: { ...process.env, EDGEMESH_DGRAM_LANE: String(LANE) } },
  );
  let log = '';
  child.stderr?.on('data', (c: Buffer) => {
    log = (log + c.toString()).slice(-20_000);
  });
  await waitFor(
    () => log.includes('sidecar listener ready') || child.exitCode !== null,
    30_000,
    50,
    `${node.name} gateway`,
  );
  if (child.exitCode !== null) throw new Error(`${node.name} gateway exited ${child.exitCode}: ${log}`);
  return child;
}

/** The gateway's /status; a busy gateway (a blast just ended, a loaded machine) gets 3 tries of 5 s. */
async function status(t: TunnelLab, node: LabNode): Promise<GatewayStatus> {
  for (let attempt = 1; ; attempt++) {
    const r = await t.lab.run(node.ns, ['curl', '-sf', '-m', '5', 'http://127.0.0.1:15090/status']);
    if (r.code === 0) return parseGatewayStatus(JSON.parse(r.stdout), `${node.name} /status`);
    if (attempt === 3) throw new Error(`${node.name} /status: curl exit ${r.code} three times`);
  }
}

/** node A's path to B and its datagram counters on it. */
async function pathTo(t: TunnelLab, a: LabNode, b: LabNode) {
  const peer = (await status(t, a)).peers.find((p) => p.node === b.name);
  const current = peer?.paths.find((p) => p.path === peer.path);
  return {
    path: peer?.path,
    transport: current?.transport,
    datagrams: current?.datagrams,
    lane: current?.lane,
  };
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const pct = (x: number) => `${(Math.max(0, x) * 100).toFixed(2)} %`;
const loss = (r: LoadResult) => 1 - r.received / Math.max(r.sent, 1);
const span = (xs: number[], f: (x: number) => string) =>
  `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'emun-'));
  await chmod(dir, 0o755);
  const tool = buildUdpTool(dir);
  NetnsLab.cleanUpOnInterrupt();
  const t = await TunnelLab.create(
    [
      { mapping: 'preserving', inbound: 'reject', nodes: 1, podsPerNode: 1 },
      { mapping: 'preserving', inbound: 'reject', nodes: 1, podsPerNode: 1 },
    ],
    1,
    [],
    'emun',
  );
  try {
    const [A, B] = t.lab.sites.map((s) => s.nodes[0]);
    const cat = catalog(A, B);
    const catalogFile = join(dir, 'catalog.json');
    await writeFile(catalogFile, JSON.stringify(cat));
    const echo = t.lab.spawn(B.pods[0].ns, [tool, 'echo', B.pods[0].addr, String(PORT)]);
    let echoOut = '';
    echo.stdout?.on('data', (d: Buffer) => {
      echoOut += d;
    });
    await waitFor(() => echoOut.includes('ready'), 10_000, 20, 'echo backend');
    const plainAddr = await t.lab.forwardPort(t.lab.sites[1], {
      protocol: 'udp',
      publicPort: PUBLIC_PORT,
      to: B.pods[0].addr,
      port: PORT,
    });
    const gwA = await startGateway(t, A, cat, dir);
    const gwB = await startGateway(t, B, cat, dir);
    await waitFor(
      async () =>
        (await status(t, A)).tunnel?.state === 'running' && (await status(t, B)).tunnel?.state === 'running',
      60_000,
      200,
      'both tunnels running',
    );
    await t.lab.exec(
      A.pods[0].ns,
      [EDGEMESH_BIN, 'init', '--capture-udp=true', '--capture-dns=false', '--ipv6=false'],
      { timeoutMs: 60_000 },
    );
    const { child: sidecar } = await startUdpSidecar(
      t.lab.netns,
      A.pods[0].ns,
      [
        '--catalog-file',
        catalogFile,
        '--node-name',
        A.name,
        '--upstream',
        A.addr,
        '--capture-udp',
        'true',
        '--gateway',
        `${A.addr}:15080`,
      ],
      { ...process.env, EDGEMESH_LOG_LEVEL: 'warn', ...INJECTED_SIDECAR_ENV },
    );
    const pids = { sidecar: sidecar.pid as number, gwA: gwA.pid as number, gwB: gwB.pid as number };

    /**
     * Before a tunnel run: node A's path to B must be punched UDP and healthy (a degraded path
     * keeps its streams but new ones take the relay; it recovers after 3 good PINGs, 15 s).
     * Each run's flows are new streams, opened on that path and kept on it to their end.
     */
    let demoted = 0;
    const onUdpPath = async (timeoutMs = 45_000) => {
      const p = await waitFor(
        async () => {
          const x = await pathTo(t, A, B);
          return x.path === 'punched' && x.transport === 'udp' ? x : undefined;
        },
        timeoutMs,
        250,
        "node A's path to node B punched over UDP",
      );
      return p.datagrams;
    };
    /** Datagrams A put on B's UDP path's channel during a run, and those framed on streams. */
    const channelUse = { sent: 0, dropped: 0, framed: 0, lane: 0 };
    const tunnelRun = async (rate: number, size: number) => {
      const before = await onUdpPath();
      const laneBefore = (await pathTo(t, A, B)).lane?.sent;
      const r = await run('tunnel', rate, size);
      const after = await pathTo(t, A, B);
      if (after.path !== 'punched') demoted++;
      const punched = (await status(t, A)).peers
        .find((p) => p.node === B.name)
        ?.paths.find((p) => p.path === 'punched');
      const now = punched?.datagrams;
      channelUse.lane += (punched?.lane?.sent ?? 0) - (laneBefore ?? 0);
      channelUse.sent += (now?.sent ?? 0) - (before?.sent ?? 0);
      channelUse.dropped += (now?.dropped ?? 0) - (before?.dropped ?? 0);
      channelUse.framed += (now?.framed ?? 0) - (before?.framed ?? 0);
      return r;
    };

    const run = async (path: 'plain' | 'tunnel', rate: number, size: number, seconds = SECONDS) => {
      const [ip, port, as] = path === 'plain' ? [plainAddr, PUBLIC_PORT, EXEMPT] : [VIP, PORT, APP];
      const r = await t.lab.exec(
        A.pods[0].ns,
        [tool, 'load', ip, String(port), String(FLOWS), String(rate), String(seconds), String(size)],
        { ...as, timeoutMs: 60_000 },
      );
      return parseLoad(r.stdout);
    };

    // Warm-up: the first flows open the relay while A punches; wait for the punched UDP path.
    await run('plain', 1000, 64, 0.5);
    await run('tunnel', 1000, 64, 0.5);
    // The first punch: ICE through both NATs, slower on a loaded machine (once 45 s were not enough).
    await onUdpPath(120_000);
    console.log('path A → B: punched udp');
    await run('tunnel', 1000, 64, 0.5);

    const summary: string[] = [];
    for (const size of SIZES) {
      const r = {
        plainMax: [] as number[],
        tunnelMax: [] as number[],
        ratio: [] as number[],
        plainMaxLoss: [] as number[],
        tunnelMaxLoss: [] as number[],
        plainHalfLoss: [] as number[],
        tunnelHalfLoss: [] as number[],
        plainP50: [] as number[],
        tunnelP50: [] as number[],
        cpu: { sidecar: [] as number[], gwA: [] as number[], gwB: [] as number[] },
        load: [] as number[],
      };
      const use0 = { ...channelUse };
      const demoted0 = demoted;
      for (let round = 1; round <= ROUNDS; round++) {
        r.load.push(loadavg()[0]);
        const pMax = await run('plain', 0, size);
        const tMax = await tunnelRun(0, size);
        const pRate = pMax.received / pMax.seconds;
        const tRate = tMax.received / tMax.seconds;
        // What the max run left queued is carried or dropped before the next measurement.
        await new Promise((res) => setTimeout(res, SECONDS * 1000));
        const half = Math.max(Math.round(pRate / 2), 1);
        const pHalf = await run('plain', half, size);
        const c0 = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuSeconds(p)]));
        const tHalf = await tunnelRun(half, size);
        // Per reply received (what a carried datagram cost; rises with loss, as the lost ones
        // cost something too) and per datagram the app sent (a lower bound under loss).
        const used = Object.fromEntries(
          Object.entries(pids).map(([k, p]) => [k, (cpuSeconds(p) - c0[k]) * 1e6]),
        ) as Record<keyof typeof pids, number>;
        const per = (k: keyof typeof pids) => used[k] / Math.max(tHalf.received, 1);
        const cpu = { sidecar: per('sidecar'), gwA: per('gwA'), gwB: per('gwB') };
        const perSent = (k: keyof typeof pids) => (used[k] / Math.max(tHalf.sent, 1)).toFixed(1);
        await new Promise((res) => setTimeout(res, SECONDS * 1000));
        const pLow = await run('plain', LOW_RATE, size);
        const tLow = await tunnelRun(LOW_RATE, size);
        r.plainMax.push(pRate);
        r.tunnelMax.push(tRate);
        r.ratio.push(tRate / pRate);
        r.plainMaxLoss.push(loss(pMax));
        r.tunnelMaxLoss.push(loss(tMax));
        r.plainHalfLoss.push(loss(pHalf));
        r.tunnelHalfLoss.push(loss(tHalf));
        r.plainP50.push(pLow.p50us);
        r.tunnelP50.push(tLow.p50us);
        for (const k of ['sidecar', 'gwA', 'gwB'] as const) r.cpu[k].push(cpu[k]);
        console.log(
          `${size} B round ${round} (load ${r.load.at(-1)?.toFixed(2)}): max plain ${fmt(pRate)}/s ` +
            `(loss ${pct(loss(pMax))}) tunnel ${fmt(tRate)}/s (loss ${pct(loss(tMax))}) = ${(tRate / pRate).toFixed(2)}x; ` +
            `at ${fmt(half)}/s loss plain ${pct(loss(pHalf))} tunnel ${pct(loss(tHalf))}, CPU per datagram ` +
            `sidecar ${cpu.sidecar.toFixed(1)} µs, gateway A ${cpu.gwA.toFixed(1)} µs, gateway B ${cpu.gwB.toFixed(1)} µs ` +
            `(per datagram sent: ${perSent('sidecar')} / ${perSent('gwA')} / ${perSent('gwB')} µs); ` +
            `at ${fmt(LOW_RATE)}/s p50 plain ${pLow.p50us} µs tunnel ${tLow.p50us} µs (loss ${pct(loss(tLow))})`,
        );
      }
      // The flows' datagrams went on the UDP path's datagram channel, not framed on a stream.
      const onChannel = channelUse.sent - use0.sent;
      const framed = channelUse.framed - use0.framed;
      if (onChannel <= framed)
        throw new Error(
          `${size} B: ${onChannel} datagrams on the channel, ${framed} framed: not the UDP path's`,
        );
      const us = (x: number) => `${x.toFixed(0)} µs`;
      summary.push(
        `${size} B, ${ROUNDS} rounds, median (min–max), load average ${span(r.load, (x) => x.toFixed(2))}:\n` +
          `  max datagrams/s: plain ${span(r.plainMax, fmt)} (loss ${span(r.plainMaxLoss, pct)}), tunnel ${span(r.tunnelMax, fmt)} (loss ${span(r.tunnelMaxLoss, pct)})\n` +
          `  tunnel/plain: ${span(r.ratio, (x) => `${x.toFixed(2)}x`)}\n` +
          `  loss at 50 % of plain's max: plain ${span(r.plainHalfLoss, pct)}, tunnel ${span(r.tunnelHalfLoss, pct)}\n` +
          `  p50 at ${fmt(LOW_RATE)}/s: plain ${span(r.plainP50, us)}, tunnel ${span(r.tunnelP50, us)}\n` +
          `  CPU per datagram there and back at 50 %: sidecar ${span(r.cpu.sidecar, us)}, gateway A ${span(r.cpu.gwA, us)}, gateway B ${span(r.cpu.gwB, us)}\n` +
          `  A's datagrams to B on the UDP path's datagram channel: ${onChannel} sent, ${channelUse.dropped - use0.dropped} dropped ` +
          `(channel full or closed), ${framed} framed on streams; ${channelUse.lane - use0.lane} messages on the datagram lane ` +
          `(${LANE ? 'on' : 'off'}); the path was demoted (degraded) by ${demoted - demoted0} of ` +
          `${3 * ROUNDS} tunnel runs (each started on it)`,
      );
    }
    console.log(`\npath A → B: punched udp at the start of every tunnel run\n${summary.join('\n')}`);
    // Where the datagrams went: each side's channel (and lane) counters on its punched path.
    for (const [x, y] of [
      [A, B],
      [B, A],
    ] as const) {
      const p = (await status(t, x)).peers
        .find((q) => q.node === y.name)
        ?.paths.find((q) => q.path === 'punched');
      console.log(
        `${x.name} → ${y.name} punched: datagrams ${JSON.stringify(p?.datagrams)} lane ${JSON.stringify(p?.lane)}`,
      );
    }
    if (PROF_DIR) {
      for (const p of [gwA, gwB]) p.kill('SIGTERM');
      await waitFor(
        () => [gwA, gwB].every((c) => c.exitCode !== null || c.signalCode !== null),
        30_000,
        100,
        'profiled gateways to exit',
      );
      console.log(`cpu profiles in ${PROF_DIR}`);
    }
  } finally {
    await t.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
