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
 * The generator and the echo server are a small C program compiled here (cc): a Node
 * generator would be slower than the path it measures.
 *
 *   node bench/udp.ts [--rounds 3] [--seconds 2] [--cross] [--cpu-prof DIR]
 *
 * --cpu-prof DIR: the sidecar (and with --cross the gateways' process) run with Node's
 * --cpu-prof, written to DIR when the bench ends them with SIGTERM (the memory step is skipped).
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
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

/** echo IP PORT | load IP PORT FLOWS RATE(0 = max) SECONDS SIZE → one JSON line. */
const TOOL_C = String.raw`
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static uint64_t now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec; }
static int addr(const char *ip, int port, struct sockaddr_in *a) { memset(a, 0, sizeof *a); a->sin_family = AF_INET; a->sin_port = htons(port); return inet_pton(AF_INET, ip, &a->sin_addr) == 1; }
static int cmp(const void *a, const void *b) { uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b; return x < y ? -1 : x > y; }
#define B 64
static int echo(const char *ip, int port) {
  struct sockaddr_in a; if (!addr(ip, port, &a)) return 2;
  int fd = socket(AF_INET, SOCK_DGRAM, 0); int big = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
  printf("ready\n"); fflush(stdout);
  static char bufs[B][2048]; struct mmsghdr m[B]; struct iovec v[B]; struct sockaddr_in from[B];
  for (;;) {
    for (int i = 0; i < B; i++) { v[i].iov_base = bufs[i]; v[i].iov_len = sizeof bufs[i]; memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
      m[i].msg_hdr.msg_iov = &v[i]; m[i].msg_hdr.msg_iovlen = 1; m[i].msg_hdr.msg_name = &from[i]; m[i].msg_hdr.msg_namelen = sizeof from[i]; }
    int n = recvmmsg(fd, m, B, MSG_WAITFORONE, NULL);
    if (n <= 0) continue;
    for (int i = 0; i < n; i++) v[i].iov_len = m[i].msg_len;
    sendmmsg(fd, m, n, 0);
  }
}
static int load(const char *ip, int port, int flows, double rate, double seconds, int size) {
  struct sockaddr_in a; if (!addr(ip, port, &a) || size < 16 || size > 1400) return 2;
  struct rlimit r = {flows + 64, flows + 64}; setrlimit(RLIMIT_NOFILE, &r);
  int *fds = calloc(flows, sizeof *fds); int ep = epoll_create1(0);
  for (int i = 0; i < flows; i++) {
    fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&a, sizeof a) != 0) { perror("socket"); return 1; }
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = i}; epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
  }
  size_t cap = 4u << 20; uint32_t *rtt = malloc(cap * sizeof *rtt);
  uint64_t sent = 0, got = 0, sendfail = 0, nrtt = 0; char buf[2048]; memset(buf, 'x', sizeof buf);
  uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), stop = end + 300000000u;
  struct epoll_event evs[256];
  for (;;) {
    uint64_t t = now_ns();
    if (t >= stop) break;
    if (t < end) {
      uint64_t due = rate > 0 ? (uint64_t)((t - start) * rate / 1e9) + 1 : sent + 32;
      for (int k = 0; sent < due && k < 256; k++) {
        uint64_t hdr[2] = {sent, now_ns()}; memcpy(buf, hdr, 16);
        if (send(fds[sent % flows], buf, size, 0) < 0) sendfail++;
        sent++;
      }
    }
    /* Wait for replies until the next datagram is due (ns precision: a sleep would add its
     * length to the RTTs measured at low rates). */
    struct timespec wait = {0, 20000000};
    if (t < end) {
      uint64_t next = rate > 0 ? start + (uint64_t)(sent * 1e9 / rate) : t;
      uint64_t d = next > t ? next - t : 0;
      wait.tv_sec = d / 1000000000u;
      wait.tv_nsec = d % 1000000000u;
    }
    int n = epoll_pwait2(ep, evs, 256, &wait, NULL);
    for (int i = 0; i < n; i++) {
      int fd = fds[evs[i].data.u32];
      for (;;) {
        ssize_t len = recv(fd, buf + 1024, 1024, 0);
        if (len < 16) break;
        uint64_t hdr[2]; memcpy(hdr, buf + 1024, 16); got++;
        uint64_t d = now_ns() - hdr[1];
        if (nrtt < cap && d < 4000000000u) rtt[nrtt++] = (uint32_t)d;
      }
    }
  }
  qsort(rtt, nrtt, sizeof *rtt, cmp);
  double p50 = nrtt ? rtt[nrtt / 2] / 1000.0 : -1, p99 = nrtt ? rtt[(size_t)(nrtt * 0.99)] / 1000.0 : -1;
  printf("{\"sent\":%llu,\"received\":%llu,\"sendFailures\":%llu,\"seconds\":%.3f,\"p50us\":%.1f,\"p99us\":%.1f}\n",
    (unsigned long long)sent, (unsigned long long)got, (unsigned long long)sendfail, seconds, p50, p99);
  return 0;
}
int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "echo")) return echo(argv[2], atoi(argv[3]));
  if (argc == 8 && !strcmp(argv[1], "load")) return load(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), atof(argv[6]), atoi(argv[7]));
  fprintf(stderr, "usage: echo IP PORT | load IP PORT FLOWS RATE SECONDS SIZE\n"); return 2;
}
`;

interface LoadResult {
  sent: number;
  received: number;
  sendFailures: number;
  seconds: number;
  p50us: number;
  p99us: number;
}

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
  const tool = join(dir, 'udp-tool');
  await writeFile(join(dir, 'udp-tool.c'), TOOL_C);
  execFileSync('cc', ['-O2', '-o', tool, join(dir, 'udp-tool.c')]);
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
      return JSON.parse(r.stdout) as LoadResult;
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
