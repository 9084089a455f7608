import { describe, expect, it } from 'vitest';
import { collectYoungIfDue, YOUNG_DUE_FRACTION, youngGenDue } from './young-gc.ts';

describe('young generation collected while a lookup waits', () => {
  it('is due from half full (V8 itself starts at 0.8), never for an empty or unknown space', () => {
    expect(YOUNG_DUE_FRACTION).toBe(0.5);
    expect(youngGenDue(0, 1 << 20)).toBe(false);
    expect(youngGenDue(500_000, 548_576)).toBe(false);
    expect(youngGenDue(524_288, 524_288)).toBe(true);
    expect(youngGenDue(1 << 20, 0)).toBe(true);
    expect(youngGenDue(0, 0)).toBe(false);
    expect(youngGenDue(300, 700, 0.25)).toBe(true);
  });

  it('collects when due and leaves the new space emptier', () => {
    const keep: object[] = [];
    // Fill the new space past the threshold with objects that survive, then ask.
    let collected = false;
    for (let round = 0; round < 2_000 && !collected; round++) {
      for (let i = 0; i < 100; i++) keep.push({ round, i, text: `entry-${round}-${i}` });
      collected = collectYoungIfDue();
    }
    expect(collected).toBe(true);
    expect(collectYoungIfDue()).toBe(false); // just collected: not due again
    expect(keep.length).toBeGreaterThan(0);
  });
});
