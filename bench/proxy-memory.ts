/**
 * bench/proxy-memory.ts — the sidecar's private memory (USS = Private_Dirty + Private_Clean,
 * /proc/PID/smaps_rollup) with 1,000 open keep-alive connections on the L7 (HTTP port) path,
 * beside idle and 1,000 open L4 connections in the same run. Each HTTP connection has carried
 * one request (bench/lib/http-hold.ts), so the sidecar holds it parsed and idle, as an app's
 * keep-alive pool between requests; the upstream side is then the fast path's bounded pool.
 *
 * The sidecar runs as the image ships it (types stripped to .js, the webhook's injected env),
 * its catalog from the lab gateway's feed, as bench/memory.ts does. Targets (issue 14): idle
 * unchanged (±1 MB), ≤ 40 MB private with 1,000 open keep-alive HTTP connections.
 * BENCH_ROUNDS (default 2) repeats the held/closed cycle: growth from round to round is a leak.
 */
import { readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stripTree } from '../scripts/strip-types.ts';
import { HTTP_PORT, NODE, type ProxyLab, setUpProxyLab, startSidecar, VIP } from '../sidecar/testing/lab.ts';
import { NetnsLab, waitFor } from '../test/harness/netns.ts';
import { INJECTED_SIDECAR_ENV } from './lib/injected-env.ts';
import { printTable } from './lib/stats.ts';

const ROUNDS = Math.min(Number(process.env.BENCH_ROUNDS ?? 2), 10);
const COUNT = 1000;
const HOLD_HTTP = new URL('./lib/http-hold.ts', import.meta.url).pathname;
const CLIENT = new URL('../sidecar/testing/client.ts', import.meta.url).pathname;
const MB = 1024 * 1024;

function privateMB(pid: number): { uss: number; rss: number; fds: number } {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? Number.NaN);
  return {
    uss: ((kb('Private_Dirty') + kb('Private_Clean')) * 1024) / MB,
    rss: (kb('Rss') * 1024) / MB,
    fds: readdirSync(`/proc/${pid}/fd`).length,
  };
}

const settle = () => new Promise((r) => setTimeout(r, 1500));

/** Holds COUNT connections with `argv` (a holder printing "held N"), samples, closes them. */
async function held(l: ProxyLab, pid: number, argv: string[], idleFds: number) {
  const holder = l.lab.spawn(l.pod, argv);
  let out = '';
  holder.stdout?.on('data', (d) => {
    out += d;
  });
  holder.stderr?.on('data', (d) => {
    out += d;
  });
  await waitFor(
    () => out.includes(`held ${COUNT}`) || holder.exitCode !== null,
    60_000,
    100,
    `${COUNT} held`,
  );
  if (!out.includes(`held ${COUNT}`)) throw new Error(`holder failed: ${out}`);
  await settle();
  const s = privateMB(pid);
  holder.stdin?.end();
  await waitFor(() => holder.exitCode !== null, 10_000);
  await waitFor(() => privateMB(pid).fds <= idleFds + 2 + 64, 10_000, 100, 'client sockets closed');
  return s;
}

async function main(): Promise<void> {
  NetnsLab.cleanUpOnInterrupt();
  const dir = await mkdtemp(join(tmpdir(), 'empx-'));
  await chmod(dir, 0o755);
  const root = new URL('..', import.meta.url).pathname;
  stripTree(root, join(dir, 'js'), ['bin', 'lib', 'sidecar']);
  symlinkSync(join(root, 'node_modules'), join(dir, 'js', 'node_modules'));
  await chmod(join(dir, 'js'), 0o755);
  const l: ProxyLab = await setUpProxyLab('empx', { catalogFile: join(dir, 'catalog.json'), sidecar: false });
  try {
    l.sidecar = await startSidecar(l, undefined, [], INJECTED_SIDECAR_ENV, [
      NODE,
      join(dir, 'js/bin/main.js'),
    ]);
    const pid = l.sidecar.pid as number;
    await settle();
    const idle = privateMB(pid);
    const rows: (string | number)[][] = [['idle', idle.rss, idle.uss, idle.fds]];
    const http = [NODE, HOLD_HTTP, '--host', VIP.web, '--port', '80', '--count', String(COUNT)];
    const tcp = [NODE, CLIENT, 'hold', '--host', VIP.echo, '--port', '7', '--count', String(COUNT)];
    let lastHttp = idle;
    for (let round = 1; round <= ROUNDS; round++) {
      const h = await held(l, pid, http, idle.fds);
      rows.push([`${COUNT} open keep-alive HTTP (L7), round ${round}`, h.rss, h.uss, h.fds]);
      lastHttp = h;
      const t = await held(l, pid, tcp, idle.fds);
      rows.push([`${COUNT} open TCP (L4), round ${round}`, t.rss, t.uss, t.fds]);
    }
    await settle();
    const after = privateMB(pid);
    rows.push(['after closing them', after.rss, after.uss, after.fds]);
    printTable(
      `bench/proxy-memory: sidecar as shipped (.js, injected env), smaps_rollup, MB (backend :${HTTP_PORT})`,
      ['state', 'RSS', 'private (USS)', 'open fds'],
      rows,
    );
    console.log(
      `${lastHttp.uss <= 40 ? 'PASS' : 'MISS'} ${COUNT} keep-alive HTTP connections: ${lastHttp.uss.toFixed(1)} MB private (target ≤ 40 MB); idle ${idle.uss.toFixed(1)} MB`,
    );
  } finally {
    await l.lab.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
