import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../../../test/harness/fuzz.ts';
import { chunkedTarget, headTarget } from './testing/fuzz.ts';

// Bounded for CI; `node bench/fuzz.ts http1-native http1-native-chunked` runs a million or more.
describe('fuzz: native HTTP/1.1 framing (http1.c) against parse.ts', () => {
  it('gives the same verdict on every head (accept, refuse with the same status and message, frame, forward)', async () => {
    const r = await runFuzz(headTarget, { seed: fuzzSeed(1401), count: 20_000 });
    expect(r.crashes, summary(r)).toEqual([]);
  });

  it('finds the same end of every chunked body however it is cut', async () => {
    const r = await runFuzz(chunkedTarget, { seed: fuzzSeed(1402), count: 20_000 });
    expect(r.crashes, summary(r)).toEqual([]);
  });
});
