// The long fuzz run: every parser that takes bytes from outside, a million inputs or more
// each (bounded by a time cap per parser), through the same targets the CI fuzz tests run
// a few thousand of (test/harness/fuzz.ts, `<part>/testing/fuzz.ts`).
//
// Each parser runs in a child process of its own, so a crash that kills a process or an input
// that never returns is seen (a watchdog kills a child past its cap) without stopping the
// others. Per parser: inputs, crashes (undocumented throws, broken properties), inputs slower
// than 10 ms, and the slowest input with its hex. The first-pass time of a slow input can be a
// GC pause or JIT compilation rather than the input: every input over 10 ms and the slowest
// are run again 5 times and the best time is reported ("re-timed"); a hang is an input whose
// re-timed best is still over 10 ms.
//
//   nice -n 15 node bench/fuzz.ts [--count 1000000] [--seconds 1500] [--seed N] [name ...]
//   node bench/fuzz.ts --replay <index> --seed N <name>     one input: shown, run, its error
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { offerTarget, probeTarget } from '../gateway/tunnel/testing/lane-fuzz.ts';
import { catalogTarget, feedTarget } from '../lib/catalog/testing/fuzz.ts';
import { listBodyTarget } from '../lib/kube/testing/fuzz.ts';
import { headerTarget } from '../lib/testing/fuzz.ts';
import { controlTarget, datagramTarget, frameTarget, muxTarget } from '../lib/tunnel/testing/fuzz.ts';
import { dnsTarget } from '../sidecar/dns/testing/fuzz-target.ts';
import {
  connTarget as h2ConnTarget,
  frameTarget as h2FrameTarget,
  hpackTarget,
} from '../sidecar/proxy/h2/testing/fuzz.ts';
import {
  chunkedTarget as h1ChunkedTarget,
  headTarget as h1HeadTarget,
} from '../sidecar/proxy/http1/testing/fuzz.ts';
import {
  type FuzzReport,
  type FuzzTarget,
  isDocumented,
  replayInput,
  runFuzz,
} from '../test/harness/fuzz.ts';
import { stunTarget } from '../tunnel-server/testing/fuzz.ts';
import { admissionTarget } from '../webhook/testing/fuzz.ts';
import { printTable } from './lib/stats.ts';

const TARGETS: Record<string, FuzzTarget<never>> = {
  frame: frameTarget as FuzzTarget<never>,
  control: controlTarget as FuzzTarget<never>,
  mux: muxTarget as FuzzTarget<never>,
  stun: stunTarget as FuzzTarget<never>,
  header: headerTarget as FuzzTarget<never>,
  catalog: catalogTarget as FuzzTarget<never>,
  feed: feedTarget as FuzzTarget<never>,
  admission: admissionTarget as FuzzTarget<never>,
  dns: dnsTarget as FuzzTarget<never>,
  datagram: datagramTarget as FuzzTarget<never>,
  'list-body': listBodyTarget as FuzzTarget<never>,
  hpack: hpackTarget as FuzzTarget<never>,
  'h2-frame': h2FrameTarget as FuzzTarget<never>,
  'h2-conn': h2ConnTarget as FuzzTarget<never>,
  'http1-native': h1HeadTarget as FuzzTarget<never>,
  'http1-native-chunked': h1ChunkedTarget as FuzzTarget<never>,
  'lane-probe': probeTarget as FuzzTarget<never>,
  'lane-offer': offerTarget as FuzzTarget<never>,
};
const STALL_MS = 10;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    count: { type: 'string', default: '1000000' },
    seconds: { type: 'string', default: '1500' },
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    child: { type: 'boolean', default: false },
    replay: { type: 'string' },
  },
});
const COUNT = Number(values.count);
const SECONDS = Number(values.seconds);
const SEED = Number(values.seed);
if (!Number.isInteger(COUNT) || COUNT < 1 || !(SECONDS > 0) || !Number.isInteger(SEED))
  throw new Error('--count and --seed must be integers, --seconds positive');
const unknown = positionals.filter((p) => !(p in TARGETS));
if (unknown.length > 0)
  throw new Error(`unknown parser(s) ${unknown.join(', ')}; known: ${Object.keys(TARGETS).join(', ')}`);
const names = positionals.length > 0 ? positionals : Object.keys(TARGETS);

/** Best of five runs of one input, in ms (what the input costs, not a GC pause that hit it). */
async function retime(target: FuzzTarget<never>, index: number): Promise<number> {
  let best = Number.POSITIVE_INFINITY;
  for (let k = 0; k < 5; k++) {
    const input = replayInput(target, SEED, index);
    const t0 = performance.now();
    let value: unknown;
    try {
      value = target.parse(input);
      if (value instanceof Promise) value = await value;
    } catch {}
    const stall = (value as { stallMs?: number } | undefined)?.stallMs;
    best = Math.min(best, typeof stall === 'number' ? stall : performance.now() - t0);
  }
  return best;
}

interface ChildResult {
  report: FuzzReport;
  hangs: { index: number; ms: number; input: string }[];
  /** The slowest input after re-timing (of those over 10 ms on the first pass, and the slowest). */
  slowest: { index: number; ms: number; input: string };
}

async function child(name: string): Promise<void> {
  const target = TARGETS[name];
  // Whatever escapes the parser's call into an event handler is a crash of this parser too.
  let escaped = 0;
  process.on('uncaughtException', (err) => {
    escaped++;
    console.error(`uncaught in ${name}: ${err.stack}`);
  });
  process.on('unhandledRejection', (err) => {
    escaped++;
    console.error(`unhandled rejection in ${name}: ${(err as Error)?.stack ?? err}`);
  });
  const report = await runFuzz(target, {
    seed: SEED,
    count: COUNT,
    timeLimitMs: SECONDS * 1000,
    stallMs: STALL_MS,
    keep: 200,
  });
  report.crashCount += escaped;
  const hangs: ChildResult['hangs'] = [];
  let slowest = { ...report.slowest, ms: 0 };
  for (const s of [report.slowest, ...report.slow]) {
    if (s.index < 0) continue;
    const ms = await retime(target, s.index);
    if (ms > STALL_MS && s !== report.slowest) hangs.push({ ...s, ms });
    if (ms > slowest.ms) slowest = { ...s, ms };
  }
  // The slow inputs are summed up in `hangs`; their texts would only bloat the pipe.
  const result: ChildResult = { report: { ...report, slow: [] }, hangs, slowest };
  // Exit once the pipe has the whole line: process.exit() drops a pipe write still pending.
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}

async function replay(name: string, index: number): Promise<void> {
  const target = TARGETS[name];
  const input = replayInput(target, SEED, index);
  console.log(`${name} seed ${SEED} input #${index}:\n${target.show ? target.show(input) : String(input)}`);
  try {
    let value = target.parse(input);
    if (value instanceof Promise) value = await value;
    await target.verify?.(input, { value });
    console.log('accepted, properties hold');
  } catch (err) {
    console.log(isDocumented(target, err) ? 'refused (documented error):' : 'CRASH:', err);
  }
}

function runChild(name: string): Promise<ChildResult | string> {
  return new Promise((resolve) => {
    const p = spawn(
      process.execPath,
      [
        new URL(import.meta.url).pathname,
        '--child',
        '--count',
        String(COUNT),
        '--seconds',
        String(SECONDS),
        '--seed',
        String(SEED),
        name,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    // Cap + re-timing + slack: a child still running then is stuck on one input.
    const watchdog = setTimeout(() => p.kill('SIGKILL'), (SECONDS + 180) * 1000);
    p.on('exit', (code, signal) => {
      clearTimeout(watchdog);
      const line = out.trim().split('\n').at(-1) ?? '';
      if (code === 0 && line.startsWith('{')) resolve(JSON.parse(line) as ChildResult);
      else resolve(signal === 'SIGKILL' ? 'HUNG (killed by the watchdog)' : `DIED (exit ${code ?? signal})`);
    });
  });
}

if (values.replay !== undefined) await replay(names[0], Number(values.replay));
else if (values.child) await child(names[0]);
else {
  console.log(
    `fuzz: ${names.length} parsers, up to ${COUNT} inputs or ${SECONDS} s each, seed ${SEED} ` +
      `(replay one input: node bench/fuzz.ts --replay <index> --seed ${SEED} <parser>)`,
  );
  const rows: (string | number)[][] = [];
  let failed = false;
  for (const name of names) {
    const r = await runChild(name);
    if (typeof r === 'string') {
      failed = true;
      rows.push([name, r, '', '', '', '', '', '', '']);
      continue;
    }
    const { report } = r;
    if (report.crashCount > 0 || r.hangs.length > 0) failed = true;
    for (const c of report.crashes) console.log(`CRASH ${name} #${c.index}: ${c.error}\n  input ${c.input}`);
    for (const h of r.hangs)
      console.log(`HANG ${name} #${h.index}: ${h.ms.toFixed(2)} ms re-timed\n  input ${h.input}`);
    const hex = r.slowest.input;
    console.log(`${name} slowest #${r.slowest.index} (${r.slowest.ms.toFixed(3)} ms re-timed): ${hex}`);
    rows.push([
      name,
      String(report.inputs),
      (report.elapsedMs / 1000).toFixed(0),
      String(report.rejected),
      String(report.crashCount),
      `${report.slowCount} / ${r.hangs.length}`,
      report.slowest.ms.toFixed(2),
      r.slowest.ms.toFixed(3),
      hex.length > 48 ? `${hex.slice(0, 48)}…` : hex,
    ]);
    console.log(`${name}: done | ${rows.at(-1)?.join(' | ')}`);
  }
  printTable(
    `fuzz results, seed ${SEED} (first pass: wall time, GC pauses and other processes included; re-timed: best of 5 runs, of every input over ${STALL_MS} ms and the slowest)`,
    [
      'parser',
      'inputs',
      's',
      'refused',
      'crashes',
      `>${STALL_MS} ms first pass / re-timed`,
      'slowest ms (first pass)',
      'slowest re-timed ms',
      'slowest input',
    ],
    rows,
  );
  process.exit(failed ? 1 : 0);
}
