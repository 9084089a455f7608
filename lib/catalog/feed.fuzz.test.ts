import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../../test/harness/fuzz.ts';
import { feedTarget } from './testing/fuzz.ts';

// Bounded for CI; `node bench/fuzz.ts` runs a million or more (docs/threat-model.md, Fuzzing).
describe('fuzz: catalog feed lines', () => {
  it('throws only its own errors, round-trips lines, and builds only valid catalogs', async () => {
    const r = await runFuzz(feedTarget, { seed: fuzzSeed(1607), count: 5_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.rejected).toBeGreaterThan(500);
  });
});
