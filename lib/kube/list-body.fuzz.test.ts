import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../../test/harness/fuzz.ts';
import { listBodyTarget } from './testing/fuzz.ts';

describe('fuzz: LIST body decoder', () => {
  it('throws only ListBodyErrors, holds one value at most and agrees with JSON.parse', async () => {
    const r = await runFuzz(listBodyTarget, { seed: fuzzSeed(1613), count: 10_000, stallMs: 50 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.rejected).toBeGreaterThan(500);
    expect(r.inputs - r.rejected).toBeGreaterThan(500);
    // No input stalls: every one is small, and the decoder is linear in its length.
    expect(r.slowCount, summary(r)).toBeLessThan(r.inputs / 1000);
  });
});
