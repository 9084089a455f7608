import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { check, type FuzzTarget, fuzzSeed, mutateBytes, runFuzz, summary } from '../../test/harness/fuzz.ts';
import { DatagramDecoder, encodeDatagram, FrameError } from './frame.ts';
import { frameTarget } from './testing/fuzz.ts';

/**
 * Datagram framing: arbitrary bytes cut anywhere decode to the same datagrams (or fail the
 * same way), only FrameError is thrown, and what decodes re-encodes to the bytes it came from.
 */
const DATAGRAM_CORPUS = [
  Buffer.from('0000', 'hex'),
  Buffer.from('000141', 'hex'),
  Buffer.from('0003616263000178', 'hex'),
  Buffer.concat([Buffer.from('012c', 'hex'), Buffer.alloc(300, 7)]),
];
const datagramTarget: FuzzTarget<{ bytes: Buffer; cuts: number[] }> = {
  name: 'datagram framing (lib/tunnel/frame.ts)',
  input(rng) {
    const bytes = mutateBytes(rng, DATAGRAM_CORPUS, [{ offset: 0, size: 2 }]);
    const cuts = Array.from({ length: rng.int(4) }, () => rng.int(bytes.length + 1)).sort((a, b) => a - b);
    return { bytes, cuts };
  },
  parse: ({ bytes }) => new DatagramDecoder().push(bytes),
  verify({ bytes, cuts }, outcome) {
    const dec = new DatagramDecoder();
    const pieces: Buffer[] = [];
    let error: unknown;
    try {
      let at = 0;
      for (const cut of [...cuts, bytes.length]) {
        pieces.push(...dec.push(bytes.subarray(at, cut)));
        at = cut;
      }
    } catch (err) {
      error = err;
    }
    check(!!error === !!outcome.error, () => `cuts ${cuts} changed the outcome`);
    if (error) return;
    const whole = (outcome.value ?? []) as Buffer[];
    check(isDeepStrictEqual(pieces, whole), () => `cuts ${cuts} changed the datagrams`);
    const again = Buffer.concat(whole.map((d) => encodeDatagram(d)));
    check(again.equals(bytes.subarray(0, again.length)), () => 're-encoding changed the bytes');
    check(again.length + dec.buffered === bytes.length, () => 'bytes lost between datagrams');
  },
  expected: (err) => err instanceof FrameError,
  show: (i) => `${i.bytes.subarray(0, 64).toString('hex')}… (${i.bytes.length} B) cuts=${i.cuts.join(',')}`,
};

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
