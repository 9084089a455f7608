import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../../test/harness/fuzz.ts';
import { controlTarget } from './testing/fuzz.ts';

// Bounded for CI; `node bench/fuzz.ts` runs a million or more (docs/threat-model.md, Fuzzing).
describe('fuzz: control messages', () => {
  it('throws only FrameError and accepts what it accepted again after a JSON round trip', async () => {
    const r = await runFuzz(controlTarget, { seed: fuzzSeed(1602), count: 20_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.rejected).toBeGreaterThan(1000);
  });
});
