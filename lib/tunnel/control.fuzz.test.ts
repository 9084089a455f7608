import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { check, type FuzzTarget, fuzzSeed, mutateJson, runFuzz, summary } from '../../test/harness/fuzz.ts';
import { parseBirthdaySignal } from './control.ts';
import { FrameError } from './frame.ts';
import { controlTarget } from './testing/fuzz.ts';

/** Valid birthday signals (signal data, gateway/tunnel/birthday.ts): what mutations start from. */
const BIRTHDAY_CORPUS: readonly Record<string, unknown>[] = [
  {
    type: 'birthday',
    step: 'hello',
    nat: 'easy',
    secret: '0123456789abcdef0123456789abcdef',
    addr: { ip: '203.0.113.74', port: 40000 },
  },
  {
    type: 'birthday',
    step: 'hello',
    nat: 'hard',
    secret: 'ffffffffffffffffffffffffffffffff',
    ip: '203.0.113.90',
  },
  { type: 'birthday', step: 'hello', nat: 'unknown', secret: '00000000000000000000000000000000' },
  { type: 'birthday', step: 'bye', reason: 'both NATs are hard (symmetric)' },
];

/** Birthday signal data: only FrameError; what is accepted is accepted again after a JSON round trip. */
const birthdayTarget: FuzzTarget<string> = {
  name: 'birthday signal (lib/tunnel/control.ts parseBirthdaySignal)',
  input: (rng) => mutateJson(rng, rng.pick(BIRTHDAY_CORPUS)),
  parse(json) {
    const m = JSON.parse(json) as unknown;
    // The signal parser passes only objects on as data (parseToGateway signal).
    if (typeof m !== 'object' || m === null || Array.isArray(m)) return undefined;
    return parseBirthdaySignal(m as Record<string, unknown>);
  },
  verify(_json, { value }) {
    if (value === undefined) return;
    const again = parseBirthdaySignal(JSON.parse(JSON.stringify(value)));
    check(isDeepStrictEqual(again, value), () => `round trip changed ${JSON.stringify(value)}`);
  },
  expected: (err) => err instanceof FrameError,
  show: (json) => json,
};

// Bounded for CI; `node bench/fuzz.ts` runs a million or more (docs/threat-model.md, Fuzzing).
describe('fuzz: control messages', () => {
  it('throws only FrameError and accepts what it accepted again after a JSON round trip', async () => {
    const r = await runFuzz(controlTarget, { seed: fuzzSeed(1602), count: 20_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.rejected).toBeGreaterThan(1000);
  });

  it('birthday signals: only FrameError, stable after a JSON round trip', async () => {
    const r = await runFuzz(birthdayTarget, { seed: fuzzSeed(1503), count: 10_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.rejected).toBeGreaterThan(500);
    expect(r.inputs - r.rejected, 'some mutated signals are still valid').toBeGreaterThan(0);
  });
});
