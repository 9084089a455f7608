/**
 * bench/memory.ts — what each extra pod costs: the sidecar's private memory (Private_Dirty +
 * Private_Clean = USS, from /proc/PID/smaps_rollup) beside its RSS, measured on the real
 * `edgemesh sidecar` process in the proxy lab (sidecar/testing/lab.ts):
 *
 *   idle              started, catalog loaded, no traffic
 *   1,000 open        1,000 client connections held open through the proxy (2,000 sockets)
 *   after close       those closed again
 *   after churn       N more short connections (default 20,000; BENCH_CHURN), then idle:
 *                     open fds back to the idle count = no fd leak; RSS/USS drift = leak
 *   after quiet       21 s later without traffic (the sidecar compacts its heap when quiet)
 *
 * Baseline in the same run: a bare Node 24 process (`node -e` holding an idle TCP server),
 * i.e. the floor any Node sidecar pays. Targets (issue 5): ≤ 15 MB private idle, ≤ 40 MB
 * private at 1,000 open connections.
 */
import { readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stripTree } from '../scripts/strip-types.ts';
import { NODE, type ProxyLab, setUpProxyLab, startSidecar, VIP } from '../sidecar/testing/lab.ts';
import { NetnsLab, waitFor } from '../test/harness/netns.ts';
import { INJECTED_SIDECAR_ENV } from './lib/injected-env.ts';
import { printTable } from './lib/stats.ts';

const CHURN = Math.min(Number(process.env.BENCH_CHURN ?? 10_000), 100_000);
/**
 * The sidecar from .ts sources, then with the environment the webhook injects (a leak under
 * churn would crash it against the injected old-space cap), then as the image ships it.
 */
const ALL_VARIANTS: { name: string; env: Record<string, string>; js?: boolean }[] = [
  { name: '.ts sources', env: {} },
  { name: '.ts + injected NODE_OPTIONS/MALLOC_ARENA_MAX', env: INJECTED_SIDECAR_ENV },
  { name: 'as shipped: types stripped (.js) + injected env', env: INJECTED_SIDECAR_ENV, js: true },
];
/** BENCH_VARIANTS=shipped (or any name substring, comma-separated) runs only those variants. */
const VARIANTS = process.env.BENCH_VARIANTS
  ? ALL_VARIANTS.filter((v) => process.env.BENCH_VARIANTS?.split(',').some((f) => v.name.includes(f)))
  : ALL_VARIANTS;

/**
 * What an image build could ship instead of .ts sources: the same files with types stripped
 * by Node's own stripper (node:module stripTypeScriptTypes) and `.ts` specifiers rewritten.
 * Running .ts directly makes every sidecar carry the stripper (measured ~25 MB private).
 */
function stripToJs(outDir: string): string {
  const root = new URL('..', import.meta.url).pathname;
  stripTree(root, outDir, ['bin', 'lib', 'sidecar']);
  symlinkSync(join(root, 'node_modules'), join(outDir, 'node_modules'));
  return join(outDir, 'bin/main.js');
}

const CLIENT = new URL('../sidecar/testing/client.ts', import.meta.url).pathname;
const MB = 1024 * 1024;

interface Sample {
  rssMB: number;
  privateMB: number;
  privateDirtyMB: number;
  fds: number;
}

function sample(pid: number): Sample {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? Number.NaN);
  return {
    rssMB: (kb('Rss') * 1024) / MB,
    privateMB: ((kb('Private_Dirty') + kb('Private_Clean')) * 1024) / MB,
    privateDirtyMB: (kb('Private_Dirty') * 1024) / MB,
    fds: readdirSync(`/proc/${pid}/fd`).length,
  };
}

const settle = () => new Promise((r) => setTimeout(r, 1500));
/** Two of the sidecar's 10 s quiet checks: the first may still see the churn's CPU. */
const QUIET_WAIT_MS = 21_000;

async function measure(l: ProxyLab, variant: string): Promise<void> {
  const pid = l.sidecar?.pid;
  if (!pid) throw new Error('sidecar did not start');
  const rows: (string | number)[][] = [];
  const row = (name: string, s: Sample) => rows.push([name, s.rssMB, s.privateMB, s.privateDirtyMB, s.fds]);

  await settle();
  const idle = sample(pid);
  row('sidecar idle', idle);

  // 1,000 connections through the proxy to the TCP echo service, held open.
  const holder = l.lab.spawn(l.pod, [
    NODE,
    CLIENT,
    'hold',
    '--host',
    VIP.echo,
    '--port',
    '7',
    '--count',
    '1000',
  ]);
  let held = '';
  holder.stdout?.on('data', (d) => {
    held += d;
  });
  await waitFor(() => held.includes('held 1000') || holder.exitCode !== null, 30_000, 100, '1,000 held');
  if (!held.includes('held 1000')) throw new Error(`holder failed: ${held}`);
  await settle();
  const open = sample(pid);
  row('sidecar, 1,000 open connections', open);

  holder.stdin?.end();
  await waitFor(() => holder.exitCode !== null, 10_000);
  await waitFor(() => sample(pid).fds <= idle.fds + 2, 10_000, 100, 'sockets closed');
  await settle();
  row('sidecar, after closing them', sample(pid));

  // Two churn rounds: growth in the first is the heap settling; growth in the second would be a leak.
  let churnSeconds = 0;
  let churned = { done: 0, errors: 0 };
  const afterRounds: Sample[] = [];
  for (let round = 1; round <= 2; round++) {
    const t0 = Date.now();
    const churn = await l.lab.exec(
      l.pod,
      [NODE, CLIENT, 'churn', '--host', VIP.echo, '--port', '7', '--count', String(CHURN)],
      { timeoutMs: 90_000 },
    );
    const r = JSON.parse(churn.stdout) as { done: number; errors: number };
    churned = { done: churned.done + r.done, errors: churned.errors + r.errors };
    churnSeconds += (Date.now() - t0) / 1000;
    await settle();
    const s = sample(pid);
    afterRounds.push(s);
    row(`sidecar, after churn round ${round} (${r.done} connections)`, s);
  }
  const after = afterRounds[1];
  // Then no traffic: the sidecar compacts its heap after a quiet check interval (10 s) that
  // follows growth (sidecar.ts compactWhenQuiet), so this is what a pod pays between bursts.
  await new Promise((r) => setTimeout(r, QUIET_WAIT_MS));
  const quiet = sample(pid);
  row(`sidecar, ${QUIET_WAIT_MS / 1000} s after the churn`, quiet);
  printTable(
    `bench/memory: edgemesh sidecar (${variant}), smaps_rollup, MB`,
    ['state', 'RSS', 'private (USS)', 'private dirty', 'open fds'],
    rows,
  );
  console.log(
    `\nchurn: ${churned.done} connections (${churned.errors} errors) in ${churnSeconds.toFixed(1)} s; ` +
      `fds after ${after.fds} vs idle ${idle.fds}; private ${after.privateMB.toFixed(1)} MB vs idle ${idle.privateMB.toFixed(1)} MB`,
  );
  const perConn = ((open.privateMB - idle.privateMB) * 1024) / 1000;
  console.log(`per open connection (2 sockets): ${perConn.toFixed(1)} KB private`);
  console.log(
    `[${variant}] ${idle.privateMB <= 15 ? 'PASS' : 'MISS'} idle private ${idle.privateMB.toFixed(1)} MB (target ≤ 15 MB)`,
  );
  console.log(
    `[${variant}] ${open.privateMB <= 40 ? 'PASS' : 'MISS'} 1,000 connections private ${open.privateMB.toFixed(1)} MB (target ≤ 40 MB)`,
  );
  console.log(
    `[${variant}] ${after.fds <= idle.fds + 2 ? 'PASS' : 'MISS'} no fd leak after churn (${after.fds} vs ${idle.fds})`,
  );
  const drift = after.privateMB - afterRounds[0].privateMB;
  console.log(
    `[${variant}] ${drift <= 5 ? 'PASS' : 'MISS'} no memory growth from churn round 1 to 2: ${drift >= 0 ? '+' : ''}${drift.toFixed(1)} MB private`,
  );
}

async function main(): Promise<void> {
  NetnsLab.cleanUpOnInterrupt();
  const dir = await mkdtemp(join(tmpdir(), 'empm-'));
  await chmod(dir, 0o755);
  const catalogFile = join(dir, 'catalog.json');
  const l: ProxyLab = await setUpProxyLab('empm', { catalogFile, sidecar: false });
  try {
    // Baseline: a bare Node 24 process with one idle listener, in the same namespace.
    const bare = l.lab.spawn(l.pod, [
      NODE,
      '-e',
      "require('net').createServer().listen(17000, '127.0.0.1', () => console.log('ready'))",
    ]);
    await waitFor(() => bare.stdout?.read() !== null, 10_000);
    await settle();
    if (!bare.pid) throw new Error('baseline did not start');
    const b = sample(bare.pid);
    printTable(
      'bench/memory: bare node 24 (baseline), MB',
      ['state', 'RSS', 'private (USS)', 'private dirty', 'open fds'],
      [['idle listener', b.rssMB, b.privateMB, b.privateDirtyMB, b.fds]],
    );
    for (const variant of VARIANTS) {
      if (l.sidecar) {
        const old = l.sidecar;
        const exited = new Promise((r) => old.once('exit', r));
        old.kill('SIGTERM');
        await exited;
      }
      const command = variant.js ? [NODE, stripToJs(join(dir, 'js'))] : undefined;
      // Catalog from the lab gateway's feed, as in a pod (--catalog-file would also load the YAML
      // parser for the objects source: ~2 MB that a pod does not pay).
      l.sidecar = await startSidecar(l, undefined, [], variant.env, command);
      await measure(l, variant.name);
    }
  } finally {
    await l.lab.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
