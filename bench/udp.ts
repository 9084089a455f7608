/**
 * bench/udp.ts — the sidecar's UDP path (docs/udp.md) beside direct UDP, in the same run.
 *
 *   pod ns: load generator ── veth ── srv ns: echo backend 10.62.0.11:7000 (C, recvmmsg/sendmmsg)
 *     direct   the generator as gid 1337 (exempt from the capture) → 10.62.0.11:7000
 *     sidecar  the generator as an app uid → ClusterIP 10.96.62.10:7000: TPROXY → the sidecar
 *              (`edgemesh sidecar --capture-udp true`, uid 0/gid 1337, NET_ADMIN + NET_BIND_SERVICE only, the
 *              injected env) → the backend; replies from the ClusterIP
 *     gateway  (--cross) the generator as an app uid → ClusterIP 10.96.62.11:7000, whose one
 *              endpoint 10.62.0.12 is "on node-b": sidecar → DGRAM to node-a's gateway on
 *              10.61.0.1:15080 → in-process tunnel → node-b's UDP flow → the backend
 *              (gateway/testing/two-gateways.ts: the real gateway code minus TLS)
 *
 * Measured, rounds alternating direct and sidecar:
 *   1. max datagrams/s: the generator sends as fast as it can on 64 flows for 2 s; replies/s
 *   2. at 50 % of that round's direct rate: loss (1 − replies/sent) and RTT p50/p99 of both,
 *      and the sidecar's CPU (all threads) per datagram carried there and back
 *   3. at a low fixed rate (1,000/s): RTT p50 of both (the added latency without queueing)
 *   4. memory: private MB of the sidecar before and after 10,000 flows (one datagram each)
 *   5. (--cross) gateway: max datagrams/s beside direct's of the same round, and loss and
 *      p50 at 1,000/s
 * The generator and the echo server are a small C program compiled here (cc,
 * bench/lib/udp-tool.c): a Node generator would be slower than the path it measures.
 *
 *   node bench/udp.ts [--rounds 3] [--seconds 2] [--cross] [--cpu-prof DIR]
 *
 * --cpu-prof DIR: the sidecar (and with --cross the gateways' process) run with Node's
 * --cpu-prof, written to DIR when the bench ends them with SIGTERM (the memory step is skipped).
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Catalog } from '../lib/catalog/types.ts';
import { startUdpSidecar } from '../sidecar/testing/udp-pod.ts';
import { EDGEMESH_BIN, NetnsLab, waitFor } from '../test/harness/netns.ts';
import { INJECTED_SIDECAR_ENV } from './lib/injected-env.ts';
import { cpuSeconds, memoryMB } from './lib/proc-stats.ts';
import { buildUdpTool, type LoadResult, parseLoad } from './lib/udp-tool.ts';

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '2' },
    cross: { type: 'boolean', default: false },
    'cpu-prof': { type: 'string' },
  },
});
const ROUNDS = Number(args.rounds);
const SECONDS = Number(args.seconds);
const PROF_DIR = args['cpu-prof'];
const profArgs = (name: string) =>
  PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROF_DIR}`, `--cpu-prof-name=${name}.cpuprofile`] : [];
const PORT = 7000;
const VIP = '10.96.62.10';
const BACKEND = '10.62.0.11';
const VIP_REMOTE = '10.96.62.11';
const BACKEND_REMOTE = '10.62.0.12';
const FLOWS = 64;
const MANY_FLOWS = 10_000;
const APP = { uid: 1000, gid: 1000 };
const EXEMPT = { uid: 1337, gid: 1337 };

function catalog(): Catalog {
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
          ports: [{ name: '', port: PORT, protocol: 'UDP' }],
          sessionAffinity: { type: 'None' },
          lbPolicy: 'round-robin',
          publishNotReadyAddresses: false,
        },
        endpoints: [
          {
            ip: BACKEND,
            ready: true,
            serving: true,
            terminating: false,
            nodeName: 'node-a',
            ports: [{ name: '', port: PORT, protocol: 'UDP' }],
          },
        ],
      },
      'bench/echo-remote': {
        service: {
          namespace: 'bench',
          name: 'echo-remote',
          type: 'ClusterIP',
          clusterIPs: [VIP_REMOTE],
          headless: false,
          ports: [{ name: '', port: PORT, protocol: 'UDP' }],
          sessionAffinity: { type: 'None' },
          lbPolicy: 'round-robin',
          publishNotReadyAddresses: false,
        },
        endpoints: [
          {
            ip: BACKEND_REMOTE,
            ready: true,
            serving: true,
            terminating: false,
            nodeName: 'node-b',
            ports: [{ name: '', port: PORT, protocol: 'UDP' }],
          },
        ],
      },
    },
    pods: {
      // For the gateways (--cross): the pod is node-a's, the remote backend's pod node-b's.
      '10.61.0.2': { ip: '10.61.0.2', namespace: 'bench', name: 'load', nodeName: 'node-a' },
      [BACKEND_REMOTE]: { ip: BACKEND_REMOTE, namespace: 'bench', name: 'echo-b', nodeName: 'node-b' },
    },
    nodes: {},
  };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'emub-'));
  await chmod(dir, 0o755);
  const tool = buildUdpTool(dir);
  const catalogFile = join(dir, 'catalog.json');
  await writeFile(catalogFile, JSON.stringify(catalog()));
  NetnsLab.cleanUpOnInterrupt();
  const lab = new NetnsLab('emub');
  try {
    const pod = await lab.add('pod');
    const srv = await lab.add('srv');
    await lab.link(
      { ns: pod, ifname: 'eth0', addr: '10.61.0.2/24' },
      { ns: srv, ifname: 'eth0', addr: '10.61.0.1/24' },
    );
    await lab.exec(pod, ['ip', 'route', 'add', 'default', 'via', '10.61.0.1']);
    await lab.exec(srv, ['ip', 'addr', 'add', `${BACKEND}/32`, 'dev', 'lo']);
    const echo = lab.spawn(srv, [tool, 'echo', BACKEND, String(PORT)]);
    let echoOut = '';
    echo.stdout?.on('data', (d: Buffer) => {
      echoOut += d;
    });
    await waitFor(() => echoOut.includes('ready'), 10_000, 20, 'echo backend');
    let gatewayPid = 0;
    let gatewayProc: ChildProcess | undefined;
    if (args.cross) {
      await lab.exec(srv, ['ip', 'addr', 'add', `${BACKEND_REMOTE}/32`, 'dev', 'lo']);
      const echoB = lab.spawn(srv, [tool, 'echo', BACKEND_REMOTE, String(PORT)]);
      const gw = lab.spawn(srv, [
        process.execPath,
        ...profArgs('gateways'),
        join(import.meta.dirname, '../gateway/testing/two-gateways.ts'),
        '10.61.0.1',
        catalogFile,
        join(dir, 'state'),
      ]);
      let out = '';
      for (const p of [echoB, gw]) p.stdout?.on('data', (d: Buffer) => (out += d));
      await waitFor(() => out.split('ready').length > 2, 30_000, 20, 'remote echo and gateways');
      gatewayPid = gw.pid as number;
      gatewayProc = gw;
    }
    await lab.exec(pod, [EDGEMESH_BIN, 'init', '--capture-udp=true', '--capture-dns=false', '--ipv6=false'], {
      timeoutMs: 60_000,
    });
    const { child: sidecar } = await startUdpSidecar(
      lab,
      pod,
      [
        '--catalog-file',
        catalogFile,
        '--node-name',
        'node-a',
        '--upstream',
        '10.61.0.1',
        '--capture-udp',
        'true',
        ...(args.cross ? ['--gateway', '10.61.0.1:15080'] : []),
      ],
      {
        ...process.env,
        EDGEMESH_LOG_LEVEL: 'warn',
        ...INJECTED_SIDECAR_ENV,
        ...(PROF_DIR ? { NODE_OPTIONS: profArgs('sidecar').join(' ') } : {}),
      },
    );
    const pid = sidecar.pid as number;
    // For strace/perf attached from outside during a phase (docs/udp.md "Round 2").
    console.log(`sidecar pid ${pid}`);

    const run = async (
      path: 'direct' | 'sidecar' | 'gateway',
      flows: number,
      rate: number,
      seconds = SECONDS,
    ) => {
      const [ip, as] = path === 'direct' ? [BACKEND, EXEMPT] : [path === 'gateway' ? VIP_REMOTE : VIP, APP];
      const r = await lab.exec(
        pod,
        [tool, 'load', ip, String(PORT), String(flows), String(rate), String(seconds), '64'],
        {
          ...as,
          timeoutMs: 60_000,
        },
      );
      return parseLoad(r.stdout);
    };
    // Warm-up: flows made, JIT warm, neighbour entries resolved.
    await run('direct', FLOWS, 2000, 0.5);
    await run('sidecar', FLOWS, 2000, 0.5);
    if (args.cross) await run('gateway', FLOWS, 1000, 0.5);

    const rows: string[] = [];
    const ratios: number[] = [];
    const losses: { direct: number[]; sidecar: number[] } = { direct: [], sidecar: [] };
    const added: number[] = [];
    const addedLow: number[] = [];
    const loads: number[] = [];
    const cpuPer: number[] = [];
    const cpuLow: number[] = [];
    const cpuIdle: number[] = [];
    const gatewayRatios: number[] = [];
    const gatewayLoss: number[] = [];
    const gatewayCpu = { sidecar: [] as number[], gateways: [] as number[], nodeLocal: [] as number[] };
    for (let round = 1; round <= ROUNDS; round++) {
      loads.push(loadavg()[0]);
      const dMax = await run('direct', FLOWS, 0);
      const sMax = await run('sidecar', FLOWS, 0);
      const dRate = dMax.received / dMax.seconds;
      const sRate = sMax.received / sMax.seconds;
      ratios.push(sRate / dRate);
      const half = Math.round(dRate / 2);
      const dHalf = await run('direct', FLOWS, half);
      const cpu0 = cpuSeconds(pid);
      const sHalf = await run('sidecar', FLOWS, half);
      // The sidecar's own CPU per datagram carried (both ways): a cost the machine's load barely moves.
      const usPer = ((cpuSeconds(pid) - cpu0) * 1e6) / Math.max(sHalf.received, 1);
      cpuPer.push(usPer);
      const loss = (r: LoadResult) => 1 - r.received / r.sent;
      losses.direct.push(loss(dHalf));
      losses.sidecar.push(loss(sHalf));
      added.push(sHalf.p50us - dHalf.p50us);
      const dLow = await run('direct', FLOWS, 1000);
      const low0 = cpuSeconds(pid);
      const sLow = await run('sidecar', FLOWS, 1000);
      // One datagram per wake-up: the per-wake-up cost, which batching cannot share.
      const usLow = ((cpuSeconds(pid) - low0) * 1e6) / Math.max(sLow.received, 1);
      cpuLow.push(usLow);
      addedLow.push(sLow.p50us - dLow.p50us);
      // Idle for as long as a run: what the sidecar spends with no datagrams (timers, any polling).
      const idle0 = cpuSeconds(pid);
      await new Promise((r) => setTimeout(r, SECONDS * 1000));
      const idleMs = (cpuSeconds(pid) - idle0) * 1000;
      cpuIdle.push(idleMs);
      rows.push(
        `round ${round}: max direct ${fmt(dRate)}/s sidecar ${fmt(sRate)}/s (${(sRate / dRate).toFixed(2)}x); ` +
          `at ${fmt(half)}/s loss direct ${pct(loss(dHalf))} sidecar ${pct(loss(sHalf))}, p50 ${dHalf.p50us}/${sHalf.p50us} µs, ` +
          `p99 ${dHalf.p99us}/${sHalf.p99us} µs, sidecar CPU ${usPer.toFixed(1)} µs per datagram; at 1,000/s p50 ${dLow.p50us}/${sLow.p50us} µs, ` +
          `sidecar CPU ${usLow.toFixed(1)} µs per datagram; idle ${SECONDS} s: ${idleMs.toFixed(0)} ms CPU`,
      );
      console.log(rows[rows.length - 1]);
      if (args.cross) {
        const gMax = await run('gateway', FLOWS, 0);
        const gRate = gMax.received / gMax.seconds;
        gatewayRatios.push(gRate / dRate);
        // Same-run baselines for the CPU below: both processes idle for as long as a run (their
        // timers), and the same-node sidecar path at the same 1,000/s (one datagram per wake-up).
        // (after a pause: what the max run left queued is carried or dropped first)
        await new Promise((r) => setTimeout(r, SECONDS * 1000));
        const [i0, j0] = [cpuSeconds(pid), cpuSeconds(gatewayPid)];
        await new Promise((r) => setTimeout(r, SECONDS * 1000));
        const idle = { sidecar: cpuSeconds(pid) - i0, gateways: cpuSeconds(gatewayPid) - j0 };
        const n0 = cpuSeconds(pid);
        const nLow = await run('sidecar', FLOWS, 1000);
        const nodeLocal = ((cpuSeconds(pid) - n0) * 1e6) / Math.max(nLow.received, 1);
        const [s0, g0] = [cpuSeconds(pid), cpuSeconds(gatewayPid)];
        const [ss0, gs0] = [systemSeconds(pid), systemSeconds(gatewayPid)];
        const gLow = await run('gateway', FLOWS, 1000);
        // CPU per datagram carried there and back, of the sidecar and of the gateways' process.
        const per = (t: number) => ((t * 1e6) / Math.max(gLow.received, 1)).toFixed(1);
        const sUs = ((cpuSeconds(pid) - s0) * 1e6) / Math.max(gLow.received, 1);
        const gUs = ((cpuSeconds(gatewayPid) - g0) * 1e6) / Math.max(gLow.received, 1);
        gatewayCpu.sidecar.push(sUs);
        gatewayCpu.gateways.push(gUs);
        gatewayCpu.nodeLocal.push(nodeLocal);
        // The kernel's share (system time): syscalls, and the network stack run in them.
        const sys = (t: number, total: number) =>
          `${((100 * t) / Math.max(total, 1e-9)).toFixed(0)} % system`;
        const cpu =
          `sidecar ${sUs.toFixed(1)} µs (${sys(systemSeconds(pid) - ss0, cpuSeconds(pid) - s0)}), gateways ` +
          `${gUs.toFixed(1)} µs (${sys(systemSeconds(gatewayPid) - gs0, cpuSeconds(gatewayPid) - g0)}) CPU per datagram ` +
          `(same-node sidecar at 1,000/s ${nodeLocal.toFixed(1)} µs; idle for ${SECONDS} s: sidecar ` +
          `${per(idle.sidecar)}, gateways ${per(idle.gateways)} µs per datagram's worth)`;
        gatewayLoss.push(loss(gLow));
        console.log(
          `round ${round} gateway: max ${fmt(gRate)}/s (${(gRate / dRate).toFixed(2)}x direct's ${fmt(dRate)}/s); ` +
            `at 1,000/s loss ${pct(loss(gLow))} (direct ${pct(loss(dLow))}), p50 ${gLow.p50us} µs (direct ${dLow.p50us} µs); ${cpu}`,
        );
      }
    }

    if (PROF_DIR) {
      // The profiles are written at exit: end both by SIGTERM (the sidecar drains first).
      for (const p of [pid, gatewayPid]) if (p) process.kill(p, 'SIGTERM');
      await waitFor(
        () =>
          [sidecar, ...(gatewayPid ? [gatewayProc as ChildProcess] : [])].every(
            (c) => c.exitCode !== null || c.signalCode !== null,
          ),
        30_000,
        100,
        'profiled processes to exit',
      );
      console.log(`cpu profiles in ${PROF_DIR}`);
      return;
    }
    // Memory: 10,000 flows, one datagram each (the flows stay for the 30 s idle timeout).
    const activeFlows = async () =>
      Number(
        /edgemesh_udp_active_flows\{[^}]*\} (\d+)/.exec(
          (await lab.run(pod, ['curl', '-s', 'http://127.0.0.1:15020/metrics'])).stdout,
        )?.[1] ?? 0,
      );
    const flowsBefore = await activeFlows();
    const before = memoryMB(pid).privateMB;
    const many = await run('sidecar', MANY_FLOWS, 5000, MANY_FLOWS / 5000);
    await new Promise((r) => setTimeout(r, 500));
    const after = memoryMB(pid).privateMB;
    const newFlows = (await activeFlows()) - flowsBefore;
    console.log(
      `memory: private ${before.toFixed(1)} MB → ${after.toFixed(1)} MB with ${newFlows} flows added ` +
        `(${many.received}/${many.sent} replies): ${(((after - before) * 1000) / Math.max(newFlows, 1)).toFixed(2)} MB per 1,000 flows`,
    );
    const span = (xs: number[], f: (x: number) => string) => `${f(Math.min(...xs))}–${f(Math.max(...xs))}`;
    console.log(
      `summary (${ROUNDS} alternated rounds, load average ${span(loads, (x) => x.toFixed(2))}): ` +
        `sidecar/direct max ${span(ratios, (x) => x.toFixed(2))}x; at 50 % of direct's rate loss ` +
        `direct ${span(losses.direct, pct)}, sidecar ${span(losses.sidecar, pct)}; added p50 ${span(added, (x) => `${x.toFixed(0)} µs`)}` +
        ` (at 1,000/s ${span(addedLow, (x) => `${x.toFixed(0)} µs`)}); sidecar CPU per datagram ${span(cpuPer, (x) => `${x.toFixed(1)} µs`)}` +
        ` (at 1,000/s ${span(cpuLow, (x) => `${x.toFixed(0)} µs`)}; idle ${span(cpuIdle, (x) => `${x.toFixed(0)} ms`)} per ${SECONDS} s)` +
        (args.cross
          ? `; gateway/direct max ${span(gatewayRatios, (x) => x.toFixed(2))}x, loss at 1,000/s ${span(gatewayLoss, pct)}, ` +
            `CPU per datagram at 1,000/s sidecar ${span(gatewayCpu.sidecar, (x) => `${x.toFixed(0)} µs`)}, gateways ` +
            `${span(gatewayCpu.gateways, (x) => `${x.toFixed(0)} µs`)} (same-node sidecar ${span(gatewayCpu.nodeLocal, (x) => `${x.toFixed(0)} µs`)})`
          : ''),
    );
  } finally {
    await lab.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

/** System CPU seconds of the process so far (/proc/PID/stat stime, 100 ticks a second). */
function systemSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[12]) / 100;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const pct = (x: number) => `${(Math.max(0, x) * 100).toFixed(2)} %`;

await main();
