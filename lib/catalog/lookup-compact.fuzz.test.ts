import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { fuzzSeed, mutateBytes, Rng } from '../../test/harness/fuzz.ts';
import { EdgemeshError, ErrorCodes } from '../errors.ts';
import { compactAnswerHead, compactServiceTail, decodeCompactAnswer } from './lookup-compact.ts';
import { CATALOGS } from './testing/fuzz.ts';
import { validateServiceEntry } from './validate.ts';

// The compact answer is read from a socket: any bytes. Properties on mutated real lines (the
// golden catalogs' services): the reader throws only its own Errors or the catalog's
// validation error, never a TypeError or RangeError; what it accepts is a valid entry (the
// copying validator returns it unchanged) that the writer writes back to a line read as equal.
const LINES = CATALOGS.flatMap((c) => Object.entries(c.services)).map(([key, e], i) =>
  Buffer.from(compactAnswerHead(i + 1, i) + compactServiceTail(key, e).slice(0, -1)),
);
const TOKENS = ['-', '^', '=', '0', '1', '-1', '4294967296', '%', '%2', '=%FF', ',', '/', 'r', 'rst', 'x'];

const expected = (err: unknown) =>
  (err instanceof EdgemeshError && err.code === ErrorCodes.CATALOG) ||
  (err instanceof Error && err.constructor === Error && err.message.startsWith('compact answer'));

/** Byte mutations (flips, cuts, splices) or token ones (drop, repeat, swap, replace). */
function mutate(rng: Rng): Buffer {
  if (rng.chance(0.5)) return mutateBytes(rng, LINES);
  const tokens = rng.pick(LINES).toString('latin1').split(' ');
  for (let m = 1 + rng.int(3); m > 0; m--) {
    const i = rng.int(tokens.length);
    switch (rng.int(4)) {
      case 0:
        tokens.splice(i, 1);
        break;
      case 1:
        tokens.splice(i, 0, tokens[i]);
        break;
      case 2: {
        const j = rng.int(tokens.length);
        [tokens[i], tokens[j]] = [tokens[j], tokens[i]];
        break;
      }
      default:
        tokens[i] = rng.pick(TOKENS);
    }
  }
  return Buffer.from(tokens.join(' '), 'latin1');
}

describe('fuzz: compact service answers (lib/catalog/lookup-compact.ts)', () => {
  it('only its own errors; what it accepts is valid and round-trips, on 20,000 mutated lines', () => {
    const rng = new Rng(fuzzSeed(1314));
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      const b = mutate(rng);
      let got: ReturnType<typeof decodeCompactAnswer>;
      try {
        got = decodeCompactAnswer(b, 0, b.length);
      } catch (err) {
        if (!expected(err)) expect.fail(`${b.toString('latin1')}: ${(err as Error).stack}`);
        continue;
      }
      accepted++;
      const again = Buffer.from(
        compactAnswerHead(got.id, got.revision) + compactServiceTail(got.key, got.entry).slice(0, -1),
      );
      const back = decodeCompactAnswer(again, 0, again.length);
      if (
        !isDeepStrictEqual(back, got) ||
        !isDeepStrictEqual(validateServiceEntry(structuredClone(got.entry)), got.entry)
      )
        expect({ line: b.toString('latin1'), back }).toEqual({ line: b.toString('latin1'), back: got });
    }
    // Both sides are reached: most mutations are refused, some still make a valid line.
    expect(accepted).toBeGreaterThan(200);
    expect(accepted).toBeLessThan(19_000);
  });
});
