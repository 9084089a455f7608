import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../../../test/harness/fuzz.ts';
import { connTarget, frameTarget, hpackTarget } from './testing/fuzz.ts';

// Bounded for CI; the targets take a million inputs or more in a long run.
describe('fuzz: the h2c frame relay', () => {
  it('HPACK decoder throws only HpackError and what it accepts round-trips through the encoder', async () => {
    const r = await runFuzz(hpackTarget, { seed: fuzzSeed(1401), count: 20_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.rejected).toBeGreaterThan(1000);
    // Some inputs decode (and so are round-tripped): a target that refuses all tests nothing.
    expect(r.inputs - r.rejected, summary(r)).toBeGreaterThan(1000);
  });

  it('frame reader throws only H2Error and reads the same frames however the bytes are cut', async () => {
    const r = await runFuzz(frameTarget, { seed: fuzzSeed(1402), count: 20_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.rejected).toBeGreaterThan(500);
  });

  it('a client leg fed hostile frames never throws, and a connection it fails ends with GOAWAY', async () => {
    const r = await runFuzz(connTarget, { seed: fuzzSeed(1403), count: 20_000 });
    expect(r.crashes, summary(r)).toEqual([]);
  });
});
