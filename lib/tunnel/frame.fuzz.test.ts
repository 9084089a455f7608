import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../../test/harness/fuzz.ts';
import { datagramTarget, frameTarget } from './testing/fuzz.ts';

// Bounded for CI; `node bench/fuzz.ts` runs a million or more (docs/threat-model.md, Fuzzing).
describe('fuzz: tunnel frames', () => {
  it('throws only FrameError, decodes the same however the bytes are cut, round-trips valid frames', async () => {
    const r = await runFuzz(frameTarget, { seed: fuzzSeed(1601), count: 20_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.rejected).toBeGreaterThan(1000);
  });
});

describe('fuzz: datagram framing', () => {
  it('throws only FrameError, decodes the same however the bytes are cut, re-encodes to its input', async () => {
    const r = await runFuzz(datagramTarget, { seed: fuzzSeed(1801), count: 5_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.rejected).toBeGreaterThan(10);
  });
});
