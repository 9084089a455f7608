import { describe, expect, it } from 'vitest';
import { check, type FuzzTarget, mutateBytes, mutateJson, Rng, replayInput, runFuzz } from './fuzz.ts';

/** A target whose parser does what the input's first byte says. */
const target: FuzzTarget<Buffer> = {
  name: 'test',
  input: (rng) => mutateBytes(rng, [Buffer.from([0, 1, 2, 3])]),
  parse(b) {
    const op = (b[0] ?? 0) % 5;
    if (op === 1) throw new SyntaxError('documented');
    if (op === 2) throw new TypeError('Cannot read properties of undefined');
    if (op === 3) throw 'a string';
    return op;
  },
  verify: (_b, { value }) => check(value !== 4, () => 'property broken'),
  // Claims to expect everything: TypeErrors and non-Errors are crashes all the same.
  expected: () => true,
};

describe('fuzz harness', () => {
  it('counts documented refusals, and TypeErrors, non-Error throws and broken properties as crashes', async () => {
    const r = await runFuzz(target, { seed: 1, count: 2000, keep: 2000 });
    expect(r.inputs).toBe(2000);
    const kinds = new Set(r.crashes.map((c) => c.error.split(':')[0]));
    expect([...kinds].sort()).toEqual(['FuzzPropertyError', 'TypeError', 'non-Error thrown']);
    expect(r.rejected).toBeGreaterThan(0);
    expect(r.rejected + r.crashCount).toBeLessThan(2000);
    expect(r.slowest.index).toBeGreaterThanOrEqual(0);
  });

  it('rebuilds any one input from the seed and its index alone', async () => {
    const seen: string[] = [];
    const recording = { ...target, parse: (b: Buffer) => seen.push(b.toString('hex')) };
    await runFuzz(recording, { seed: 42, count: 50 });
    expect(replayInput(target, 42, 37).toString('hex')).toBe(seen[37]);
  });

  it('mutates JSON into JSON', () => {
    const rng = new Rng(3);
    for (let i = 0; i < 2000; i++) JSON.parse(mutateJson(rng, { a: [1, { b: 'x' }], c: null }));
  });
});
