import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../../test/harness/fuzz.ts';
import { catalogTarget } from './testing/fuzz.ts';

// Bounded for CI; `node bench/fuzz.ts` runs a million or more (docs/threat-model.md, Fuzzing).
describe('fuzz: catalog validation', () => {
  it('throws only EDGEMESH_ERR_CATALOG and re-validates what it accepts to itself', async () => {
    const r = await runFuzz(catalogTarget, { seed: fuzzSeed(1606), count: 5_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.rejected).toBeGreaterThan(1000);
  });
});
