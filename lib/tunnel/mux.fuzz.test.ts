import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../../test/harness/fuzz.ts';
import { muxTarget } from './testing/fuzz.ts';

// A real session pair with hostile frames between honest ones (lib/tunnel/testing/fuzz.ts):
// the attacked side closes with a protocol error, no stream gets another's bytes. Bounded
// for CI; `node bench/fuzz.ts` runs a million or more.
describe('fuzz: mux state machine', () => {
  it('closes on a frame it must refuse and never mixes up streams', async () => {
    const r = await runFuzz(muxTarget, { seed: fuzzSeed(1603), count: 1_500 });
    expect(r.crashes, summary(r)).toEqual([]);
  }, 60_000); // ~2 s on an idle machine; generous for a loaded one
});
