/**
 * bench/proxy-h2.ts — the sidecar's h2c path against direct client→server, in one run, in the
 * proxy's network-namespace lab (sidecar/testing/lab.ts). Load generator: h2load (nghttp2,
 * C, HTTP/2 prior knowledge) in the pod namespace; each run lasts BENCH_SECONDS (default 2 s),
 * after an untimed 2,000-request warm-up of each path per scenario; BENCH_ROUNDS (default 3) runs per cell, paths interleaved, median.
 *
 *   direct        h2load as uid 1337 (exempt from capture) → the h2c backend 10.20.0.11:50051
 *   sidecar       h2load as root → 10.96.0.18:50051 (`grpc` port: per-stream balancing over the
 *                 three backends, shared upstream sessions; the backends are one process)
 *   haproxy h2c   h2load → HAProxy `mode http`, `bind … proto h2`, `server … proto h2` over the
 *                 same three backends, round robin per request, on 127.0.0.1 in the pod as
 *                 uid 1337: the industry reference, same path shape as the sidecar
 *
 * Scenarios: `-c 1 -m 100` (one connection × 100 streams: the issue's target, ≥ 0.5× direct),
 * `-c 4 -m 25`, and `-c 1 -m 1` for the added p50 latency. p50 comes from h2load's per-request
 * log. CPU µs per request (from /proc, per run) of the sidecar, of HAProxy and of the backend
 * process: on this shared machine the req/s ratios move with other processes' load (the
 * sidecar path has one process more to schedule than direct), CPU per request much less.
 * BENCH_EDGEMESH_BIN runs another checkout's bin/edgemesh as the sidecar (before/after
 * comparisons); BENCH_H2_PATH=node|frames sets the sidecar's EDGEMESH_H2_PATH (the node:http2
 * path or the frame relay; run both alternately, each with its own direct baseline);
 * BENCH_CPU_PROF=DIR writes the sidecar's --cpu-prof profile there.
 * Needs root (namespaces), h2load and haproxy (scripts/setup installs them).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BACKENDS,
  H2C_PORT,
  type ProxyLab,
  setUpProxyLab,
  startSidecar,
  VIP,
} from '../sidecar/testing/lab.ts';
import { EDGEMESH_BIN, NetnsLab, waitFor } from '../test/harness/netns.ts';
import { INJECTED_SIDECAR_ENV } from './lib/injected-env.ts';
import { cpuSeconds } from './lib/proc-stats.ts';
import { percentile, printTable } from './lib/stats.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const HAPROXY_H2_PORT = 18082;

interface H2loadResult {
  rps: number;
  p50ms: number;
  errors: number;
  /** CPU time per request of the proxy in the path (sidecar or HAProxy; none for direct). */
  proxyCpuUs: number;
  /** CPU time per request of the backend process (all three backends are one process). */
  backendCpuUs: number;
}

/** The one process of `ns` whose command line contains `needle` (this lab's, not another's). */
function pidIn(ns: string, needle: string): number {
  const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const pid of pids) {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (cmd.includes(needle) && /node|edgemesh|haproxy/.test(readFileSync(`/proc/${pid}/comm`, 'utf8') + cmd))
      return Number(pid);
  }
  throw new Error(`no process with ${needle} in ${ns}`);
}

/** One h2load run; `log`: a file h2load may write its per-request log to. */
async function h2load(
  l: ProxyLab,
  url: string,
  opts: {
    connections: number;
    streams: number;
    uid?: number;
    log: string;
    proxyPid?: number;
    backendPid: number;
  },
): Promise<H2loadResult> {
  const args = [
    'h2load',
    '-t1',
    `-c${opts.connections}`,
    `-m${opts.streams}`,
    `-D${SECONDS}`,
    '-T10',
    `--log-file=${opts.log}`,
    url,
  ];
  const proxy0 = opts.proxyPid ? cpuSeconds(opts.proxyPid) : 0;
  const backend0 = cpuSeconds(opts.backendPid);
  const { stdout } = await l.lab.exec(l.pod, args, { uid: opts.uid, timeoutMs: (SECONDS + 30) * 1000 });
  const proxyCpu = opts.proxyPid ? cpuSeconds(opts.proxyPid) - proxy0 : Number.NaN;
  const backendCpu = cpuSeconds(opts.backendPid) - backend0;
  const num = (re: RegExp) => Number(re.exec(stdout)?.[1] ?? Number.NaN);
  const requests =
    /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
      stdout,
    );
  if (!requests) throw new Error(`h2load printed no request summary:\n${stdout}`);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  const non2xx = codes ? Number(codes[2]) + Number(codes[3]) + Number(codes[4]) : 0;
  // Log rows: start µs, status, µs to the end of the response.
  const durations = (await readFile(opts.log, 'utf8'))
    .split('\n')
    .map((row) => row.split('\t'))
    .filter((c) => c.length >= 3 && c[1] !== '-1')
    .map((c) => Number(c[2]) / 1000)
    .sort((a, b) => a - b);
  const done = Number(requests[2]);
  return {
    rps: num(/finished in [\d.]+\w+, ([\d.]+) req\/s/),
    p50ms: percentile(durations, 50),
    errors: Number(requests[4]) + Number(requests[5]) + Number(requests[6]) + non2xx,
    proxyCpuUs: (proxyCpu / done) * 1e6,
    backendCpuUs: (backendCpu / done) * 1e6,
  };
}

function medianOf(runs: H2loadResult[], metric: 'rps' | 'p50ms'): H2loadResult {
  const sorted = [...runs].sort((a, b) => a[metric] - b[metric]);
  return { ...sorted[Math.floor(sorted.length / 2)], errors: runs.reduce((a, r) => a + r.errors, 0) };
}

async function main(): Promise<void> {
  for (const tool of ['h2load', 'haproxy']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`]);
    } catch {
      console.error(`bench/proxy-h2: ${tool} is not installed (scripts/setup installs it)`);
      process.exit(2);
    }
  }
  const dir = await mkdtemp(join(tmpdir(), 'emh2b-'));
  await chmod(dir, 0o755);
  const logs = join(dir, 'logs');
  await mkdir(logs);
  await chmod(logs, 0o777); // h2load runs as uid 1337 for the direct and HAProxy paths
  const catalogFile = join(dir, 'catalog.json');
  NetnsLab.cleanUpOnInterrupt();
  const l = await setUpProxyLab('emh2b', { catalogFile, sidecar: false });
  const profDir = process.env.BENCH_CPU_PROF;
  try {
    // With the env the webhook injects (heap caps, one V8 thread, one malloc arena): as in a pod.
    const env: Record<string, string> = { ...INJECTED_SIDECAR_ENV };
    const h2Path = process.env.BENCH_H2_PATH ?? 'frames';
    env.EDGEMESH_H2_PATH = h2Path;
    if (profDir) {
      await mkdir(profDir, { recursive: true });
      await chmod(profDir, 0o777);
      env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${profDir}`.trim();
    }
    const bin = process.env.BENCH_EDGEMESH_BIN ?? EDGEMESH_BIN;
    l.sidecar = await startSidecar(l, catalogFile, ['--metrics-port', '0'], env, [bin]);
    const cfg = join(dir, 'haproxy.cfg');
    await writeFile(
      cfg,
      [
        'global',
        '  maxconn 8000',
        'defaults',
        '  mode http',
        '  timeout connect 5s',
        '  timeout client 60s',
        '  timeout server 60s',
        'frontend f',
        `  bind 127.0.0.1:${HAPROXY_H2_PORT} proto h2`,
        '  default_backend b',
        'backend b',
        '  balance roundrobin',
        '  http-reuse always',
        ...BACKENDS.map((ip, i) => `  server s${i} ${ip}:${H2C_PORT} proto h2`),
        '',
      ].join('\n'),
    );
    await chmod(cfg, 0o644);
    const haproxy = l.lab.spawn(l.pod, ['haproxy', '-db', '-f', cfg], { uid: 1337 });
    let haproxyLog = '';
    haproxy.stderr?.on('data', (d) => {
      haproxyLog += d;
    });
    haproxy.stdout?.resume();
    await waitFor(
      async () => {
        if (haproxy.exitCode !== null) throw new Error(`haproxy exited: ${haproxyLog}`);
        const r = await l.lab.run(
          l.pod,
          ['curl', '-s', '-m', '1', '--http2-prior-knowledge', `http://127.0.0.1:${HAPROXY_H2_PORT}/`],
          { uid: 1337 },
        );
        return r.stdout.startsWith('h2 ');
      },
      10_000,
      100,
      'haproxy h2c answering',
    );

    const backendPid = pidIn(l.srv, 'sidecar/testing/backend.ts');
    const paths = {
      direct: { url: `http://${BACKENDS[0]}:${H2C_PORT}/`, uid: 1337, proxyPid: undefined },
      sidecar: { url: `http://${VIP.grpc}:${H2C_PORT}/`, uid: undefined, proxyPid: l.sidecar.pid },
      'haproxy h2c': { url: `http://127.0.0.1:${HAPROXY_H2_PORT}/`, uid: 1337, proxyPid: haproxy.pid },
    } as const;
    type PathName = keyof typeof paths;
    const names = Object.keys(paths) as PathName[];
    const scenarios = [
      { name: '1 conn × 100 streams', connections: 1, streams: 100, target: 0.5 },
      { name: '4 conns × 25 streams', connections: 4, streams: 25 },
      { name: '1 conn × 1 stream', connections: 1, streams: 1 },
    ];
    const rows: (string | number)[][] = [];
    const verdicts: string[] = [];
    let run = 0;
    for (const s of scenarios) {
      const runs = Object.fromEntries(names.map((n) => [n, [] as H2loadResult[]])) as Record<
        PathName,
        H2loadResult[]
      >;
      // Untimed warm-up of every path (JIT, upstream sessions) before the measured rounds.
      for (const name of names)
        await l.lab.exec(
          l.pod,
          ['h2load', '-t1', `-c${s.connections}`, `-m${s.streams}`, '-n2000', '-T10', paths[name].url],
          { uid: paths[name].uid, timeoutMs: 60_000 },
        );
      for (let round = 0; round < ROUNDS; round++) {
        for (let i = 0; i < names.length; i++) {
          const name = names[(i + round) % names.length];
          const p = paths[name];
          runs[name].push(
            await h2load(l, p.url, {
              connections: s.connections,
              streams: s.streams,
              uid: p.uid,
              log: join(logs, `run-${run++}.tsv`),
              proxyPid: p.proxyPid,
              backendPid,
            }),
          );
        }
      }
      const rps = Object.fromEntries(names.map((n) => [n, medianOf(runs[n], 'rps')])) as Record<
        PathName,
        H2loadResult
      >;
      const p50 = Object.fromEntries(names.map((n) => [n, medianOf(runs[n], 'p50ms')])) as Record<
        PathName,
        H2loadResult
      >;
      const range = (n: PathName) => {
        const r = runs[n].map((x) => x.rps / rps.direct.rps).sort((a, b) => a - b);
        return `${r[0].toFixed(2)}–${r.at(-1)?.toFixed(2)}`;
      };
      const cell = (n: PathName) =>
        `${rps[n].rps.toFixed(0)} (${(rps[n].rps / rps.direct.rps).toFixed(2)}×, ${range(n)})`;
      // CPU per request, median over rounds: what the machine's load cannot distort much.
      const cpu = (n: PathName, k: 'proxyCpuUs' | 'backendCpuUs') =>
        runs[n]
          .map((x) => x[k])
          .sort((a, b) => a - b)
          [Math.floor(runs[n].length / 2)].toFixed(0);
      const latency = (n: PathName) =>
        n === 'direct'
          ? p50[n].p50ms.toFixed(3)
          : `${p50[n].p50ms.toFixed(3)} (+${(p50[n].p50ms - p50.direct.p50ms).toFixed(3)})`;
      rows.push([
        s.name,
        rps.direct.rps.toFixed(0),
        cell('sidecar'),
        cell('haproxy h2c'),
        latency('direct'),
        latency('sidecar'),
        latency('haproxy h2c'),
        cpu('sidecar', 'proxyCpuUs'),
        cpu('haproxy h2c', 'proxyCpuUs'),
        cpu('direct', 'backendCpuUs'),
        String(names.reduce((a, n) => a + rps[n].errors, 0)),
      ]);
      if (s.target !== undefined) {
        const ratio = rps.sidecar.rps / rps.direct.rps;
        verdicts.push(
          `${ratio >= s.target ? 'PASS' : 'MISS'} ${s.name}: sidecar ${ratio.toFixed(2)}× direct (target ≥ ${s.target}×; HAProxy ${(rps['haproxy h2c'].rps / rps.direct.rps).toFixed(2)}×)`,
        );
      }
    }
    printTable(
      `bench/proxy-h2 (sidecar h2c path: ${h2Path}, load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(
          ' ',
        )}): median of ${ROUNDS} × ${SECONDS} s per cell (paths interleaved), h2load -t1 in the pod namespace; req/s (ratio to direct in the same run, range over rounds), p50 ms (added)`,
      [
        'scenario',
        'direct req/s',
        'sidecar h2c',
        'haproxy h2c',
        'p50 direct',
        'p50 sidecar',
        'p50 haproxy',
        'CPU µs/req sidecar',
        'CPU µs/req haproxy',
        'CPU µs/req backend (direct)',
        'errors',
      ],
      rows,
    );
    for (const v of verdicts) console.log(v);
    if (profDir && l.sidecar?.pid) {
      // The profile is written when the sidecar exits by itself: SIGTERM drains, then exits.
      const sidecar = l.sidecar;
      process.kill(sidecar.pid as number, 'SIGTERM');
      await waitFor(() => sidecar.exitCode !== null, 20_000, 100, 'sidecar exit');
      console.log(`sidecar CPU profile in ${profDir}`);
    }
  } catch (err) {
    const sidecar = l.sidecar;
    console.error(`bench/proxy-h2 failed; sidecar exit ${sidecar?.exitCode} signal ${sidecar?.signalCode}`);
    console.error(l.sidecarLog.join('').slice(-4000));
    throw err;
  } finally {
    await l.lab.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
