import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../test/harness/fuzz.ts';
import { headerTarget } from './testing/fuzz.ts';

// Bounded for CI; `node bench/fuzz.ts` runs a million or more (docs/threat-model.md, Fuzzing).
describe('fuzz: gateway header line', () => {
  it('throws only its own errors and round-trips requests and replies', async () => {
    const r = await runFuzz(headerTarget, { seed: fuzzSeed(1605), count: 30_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.rejected).toBeGreaterThan(1000);
  });
});
