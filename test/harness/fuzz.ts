/**
 * The fuzz harness every parser's fuzz target uses (CI tests run a bounded count, `node
 * bench/fuzz.ts` a million or more): a seeded PRNG, structure-aware mutators for bytes and
 * JSON, and a driver that runs a target over N inputs.
 *
 * Reproducing a failure: input `i` of a run with seed `s` is generated from its own PRNG,
 * seeded from (s, i) alone, so `replayInput(target, s, i)` rebuilds exactly the input the
 * report names, without re-running the ones before it.
 *
 * What counts as a crash: a throw that is not an Error, or an Error the target does not
 * document (`expected` returns false) — a TypeError such as "Cannot read properties of
 * undefined" is a crash however the target classifies its own errors, because a parser must
 * say what is wrong with its input, not trip over it. A target's property checks (round trip,
 * state) throw FuzzPropertyError, which is never expected.
 */

/** mulberry32: tiny, fast, good enough to spread inputs; not for secrets. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Rng {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = prng(seed);
  }
  /** 0..n-1 */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  /** Mostly small lengths, sometimes up to `max`: most bugs live near the edges. */
  length(max: number): number {
    return this.chance(0.8) ? this.int(Math.min(max, 64) + 1) : this.int(max + 1);
  }
}

/** The seed of input `index` in a run seeded `seed` (independent of every other input). */
export function inputSeed(seed: number, index: number): number {
  return (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35)) >>> 0;
}

/** Integers at the edges of every width a wire format uses. */
export const BOUNDARY_INTS = [
  0, 1, 2, 3, 4, 7, 8, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xfffe, 0xffff, 0x10000, 0x7fffffff,
  0x80000000, 0xfffffffe, 0xffffffff,
] as const;

/** Where a format keeps a length or count, so mutations can make it lie. */
export interface IntField {
  offset: number;
  size: 1 | 2 | 4;
}

function writeInt(b: Buffer, field: IntField, value: number): void {
  if (field.offset + field.size > b.length) return;
  if (field.size === 1) b[field.offset] = value & 0xff;
  else if (field.size === 2) b.writeUInt16BE(value & 0xffff, field.offset);
  else b.writeUInt32BE(value >>> 0, field.offset);
}

/**
 * One input from a corpus of valid ones: random bytes, or a corpus entry put through 1–3
 * mutations (bit flips, truncation, extension, a splice with another entry, a boundary integer
 * at a random offset or in a declared length field, a length that lies about what follows,
 * a duplicated or deleted run, several entries back to back).
 */
export function mutateBytes(rng: Rng, corpus: readonly Buffer[], fields: readonly IntField[] = []): Buffer {
  if (corpus.length === 0 || rng.chance(0.05)) return rng.bytes(rng.length(1500));
  let b = Buffer.from(rng.pick(corpus));
  for (let m = 1 + rng.int(3); m > 0; m--) {
    switch (rng.int(10)) {
      case 0:
        for (let f = 1 + rng.int(8); f > 0 && b.length > 0; f--) b[rng.int(b.length)] ^= 1 << rng.int(8);
        break;
      case 1:
        b = b.subarray(0, rng.int(b.length + 1));
        break;
      case 2:
        b = Buffer.concat([b, rng.chance(0.5) ? rng.bytes(1 + rng.int(64)) : Buffer.alloc(1 + rng.int(64))]);
        break;
      case 3: {
        const other = rng.pick(corpus);
        b = Buffer.concat([b.subarray(0, rng.int(b.length + 1)), other.subarray(rng.int(other.length + 1))]);
        break;
      }
      case 4:
        if (b.length > 0)
          writeInt(
            b,
            { offset: rng.int(b.length), size: rng.pick([1, 2, 4] as const) },
            rng.pick(BOUNDARY_INTS),
          );
        break;
      case 5:
      case 6:
        if (fields.length > 0) {
          // A length field that lies: off by a little around the real size, or a boundary.
          const field = rng.pick(fields);
          const near = b.length - field.offset - field.size + rng.int(9) - 4;
          writeInt(b, field, rng.chance(0.5) ? Math.max(0, near) : rng.pick(BOUNDARY_INTS));
        } else b[rng.int(b.length + 1)] = rng.int(256);
        break;
      case 7:
        if (b.length > 0) {
          const at = rng.int(b.length);
          const run = b.subarray(at, at + 1 + rng.int(16));
          b = Buffer.concat([b.subarray(0, at), run, b.subarray(at)]);
        }
        break;
      case 8:
        if (b.length > 0) {
          const at = rng.int(b.length);
          b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rng.int(16))]);
        }
        break;
      default:
        b = Buffer.concat([b, rng.pick(corpus)]);
    }
  }
  return b;
}

const ODD_VALUES: readonly unknown[] = [
  null,
  true,
  false,
  0,
  -1,
  1.5,
  -0,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  -(2 ** 53),
  1e308,
  '',
  ' ',
  '0',
  '-1',
  'a'.repeat(300),
  '\u0000',
  '\ud800',
  '::ffff:127.0.0.1',
  '127.0.0.1',
  '__proto__',
  [],
  [null],
  {},
  { __proto__: null, constructor: 'x' },
];

/**
 * A JSON value through 1–3 structure-aware mutations: a node replaced by an odd value (a
 * wrong type, a boundary number, an empty, long or lone-surrogate string, `__proto__`), a
 * key deleted or added (unknown keys, `__proto__`, `constructor`), an array element duplicated
 * or dropped, or a subtree copied somewhere else. Returns the JSON text.
 */
export function mutateJson(rng: Rng, value: unknown): string {
  let doc = JSON.parse(JSON.stringify(value)) as unknown;
  for (let m = 1 + rng.int(3); m > 0; m--) {
    const nodes: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
    const walk = (v: unknown, depth: number) => {
      if (depth > 12 || typeof v !== 'object' || v === null) return;
      const entries: [string | number, unknown][] = Array.isArray(v)
        ? v.map((item, k) => [k, item])
        : Object.entries(v);
      for (const [key, item] of entries) {
        nodes.push({ parent: v as Record<string, unknown> | unknown[], key });
        walk(item, depth + 1);
      }
    };
    walk(doc, 0);
    if (nodes.length === 0 || rng.chance(0.03)) {
      doc = rng.pick(ODD_VALUES);
      continue;
    }
    const { parent, key } = rng.pick(nodes);
    const at = parent as Record<string | number, unknown>;
    switch (rng.int(6)) {
      case 0:
      case 1:
        at[key] = structuredClone(rng.pick(ODD_VALUES));
        break;
      case 2:
        if (Array.isArray(parent)) parent.splice(key as number, 1);
        else delete at[key];
        break;
      case 3:
        if (Array.isArray(parent)) parent.push(structuredClone(parent[key as number]));
        else
          Object.defineProperty(
            parent,
            rng.pick(['extra', '__proto__', 'constructor', 'toString', 'x'.repeat(70)]),
            {
              value: structuredClone(rng.pick(ODD_VALUES)),
              enumerable: true,
              configurable: true,
              writable: true,
            },
          );
        break;
      case 4:
        at[key] = structuredClone(rng.pick(nodes).parent);
        break;
      default:
        if (typeof at[key] === 'number') at[key] = rng.pick(BOUNDARY_INTS) + rng.int(3) - 1;
        else if (typeof at[key] === 'string')
          at[key] = (at[key] as string) + rng.pick(['.', '-', 'A', ' ', '\n', '/x']);
        else at[key] = structuredClone(rng.pick(ODD_VALUES));
    }
  }
  return JSON.stringify(doc) ?? 'null';
}

/** One parser under attack. `I` is its input (bytes, text, or a script of steps). */
export interface FuzzTarget<I> {
  name: string;
  /** Builds input from its own PRNG (structure-aware: usually a mutated valid input). */
  input(rng: Rng): I;
  /**
   * The parser as production calls it, and only that: it is what the driver times. Throws
   * what the parser throws. A target whose work spans event-loop turns returns
   * `{ stallMs }`, the longest synchronous stretch it saw, to be timed by that instead.
   */
  parse(input: I): unknown;
  /** Property checks (round trip, state), untimed; `outcome` is what parse returned or threw. */
  verify?(input: I, outcome: { value?: unknown; error?: Error }): void | Promise<void>;
  /** The parser's documented errors: anything else is a crash. */
  expected(err: Error): boolean;
  /** The input as text for a report (hex for bytes). */
  show?(input: I): string;
}

/** A target's property check failed (round trip, state): never an expected error. */
export class FuzzPropertyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FuzzPropertyError';
  }
}

export function check(ok: boolean, message: () => string): asserts ok {
  if (!ok) throw new FuzzPropertyError(message());
}

export interface FuzzFinding {
  index: number;
  input: string;
  error: string;
}

export interface FuzzReport {
  name: string;
  seed: number;
  inputs: number;
  /** Inputs the parser refused with one of its documented errors. */
  rejected: number;
  crashes: FuzzFinding[];
  crashCount: number;
  /** Inputs that took longer than `stallMs` (wall time, GC pauses included). */
  slow: { index: number; ms: number; input: string }[];
  slowCount: number;
  slowest: { index: number; ms: number; input: string };
  elapsedMs: number;
}

export interface FuzzOptions {
  seed: number;
  count: number;
  /** Stop early after this long (the long run's per-parser cap). */
  timeLimitMs?: number;
  stallMs?: number;
  /** Crash and slow-input details kept (all are counted). */
  keep?: number;
}

const showInput = <I>(target: FuzzTarget<I>, input: I): string => {
  const text = target.show
    ? target.show(input)
    : Buffer.isBuffer(input)
      ? input.toString('hex')
      : JSON.stringify(input);
  return text.length > 512 ? `${text.slice(0, 512)}… (${text.length} chars)` : text;
};

function describeThrow(err: unknown): string {
  if (!(err instanceof Error)) return `non-Error thrown: ${String(err)}`;
  return `${err.name}: ${err.message}${err.stack ? `\n${err.stack.split('\n').slice(1, 4).join('\n')}` : ''}`;
}

export function isDocumented<I>(target: FuzzTarget<I>, err: unknown): boolean {
  if (!(err instanceof Error) || err instanceof FuzzPropertyError) return false;
  if (err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError) return false;
  return target.expected(err);
}

/** Input `index` of a run seeded `seed`, rebuilt on its own. */
export function replayInput<I>(target: FuzzTarget<I>, seed: number, index: number): I {
  return target.input(new Rng(inputSeed(seed, index)));
}

const stallOf = (value: unknown): number | undefined =>
  typeof value === 'object' && value !== null && typeof (value as { stallMs?: unknown }).stallMs === 'number'
    ? (value as { stallMs: number }).stallMs
    : undefined;

/** Runs `count` inputs (or until `timeLimitMs`) and reports crashes and the slowest inputs. */
export async function runFuzz<I>(target: FuzzTarget<I>, opts: FuzzOptions): Promise<FuzzReport> {
  const stallMs = opts.stallMs ?? 10;
  const keep = opts.keep ?? 10;
  const started = performance.now();
  const deadline = opts.timeLimitMs === undefined ? Number.POSITIVE_INFINITY : started + opts.timeLimitMs;
  const report: FuzzReport = {
    name: target.name,
    seed: opts.seed,
    inputs: 0,
    rejected: 0,
    crashes: [],
    crashCount: 0,
    slow: [],
    slowCount: 0,
    slowest: { index: -1, ms: 0, input: '' },
    elapsedMs: 0,
  };
  for (let i = 0; i < opts.count; i++) {
    if ((i & 255) === 0 && performance.now() > deadline) break;
    const input = replayInput(target, opts.seed, i);
    const crash = (err: unknown) => {
      report.crashCount++;
      if (report.crashes.length < keep)
        report.crashes.push({ index: i, input: showInput(target, input), error: describeThrow(err) });
    };
    const t0 = performance.now();
    let outcome: { value?: unknown; error?: Error };
    let ms: number;
    try {
      let value = target.parse(input);
      if (value instanceof Promise) value = await value;
      ms = stallOf(value) ?? performance.now() - t0;
      outcome = { value };
    } catch (err) {
      ms = performance.now() - t0;
      outcome = { error: err as Error };
    }
    report.inputs++;
    if (outcome.error && !isDocumented(target, outcome.error)) crash(outcome.error);
    else {
      if (outcome.error) report.rejected++;
      try {
        const pending = target.verify?.(input, outcome);
        if (pending) await pending;
      } catch (err) {
        crash(err);
      }
    }
    if (ms > report.slowest.ms) report.slowest = { index: i, ms, input: '' };
    if (ms > stallMs) {
      report.slowCount++;
      if (report.slow.length < keep) report.slow.push({ index: i, ms, input: showInput(target, input) });
    }
  }
  if (report.slowest.index >= 0)
    report.slowest.input = showInput(target, replayInput(target, opts.seed, report.slowest.index));
  report.elapsedMs = performance.now() - started;
  return report;
}

/** A one-line summary for test output and failure messages. */
export function summary(r: FuzzReport): string {
  const crashes = r.crashes.map((c) => `\n  #${c.index} ${c.error}\n    input ${c.input}`).join('');
  return (
    `fuzz ${r.name} (seed ${r.seed}): ${r.inputs} inputs, ${r.rejected} rejected, ${r.crashCount} crashes, ` +
    `slowest #${r.slowest.index} ${r.slowest.ms.toFixed(2)} ms${crashes}`
  );
}

/** The seed a CI fuzz test uses: its own fixed one, or FUZZ_SEED to explore further. */
export function fuzzSeed(fixed: number): number {
  const env = process.env.FUZZ_SEED;
  return env && /^\d+$/.test(env) ? Number(env) : fixed;
}
