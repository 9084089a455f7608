import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../test/harness/fuzz.ts';
import { stunTarget } from './testing/fuzz.ts';

// Bounded for CI; `node bench/fuzz.ts` runs a million or more (docs/threat-model.md, Fuzzing).
describe('fuzz: STUN responder', () => {
  it('never throws, answers only well-formed Binding Requests, never amplifies', async () => {
    const r = await runFuzz(stunTarget, { seed: fuzzSeed(1604), count: 30_000 });
    expect(r.crashes, summary(r)).toEqual([]);
  });
});
