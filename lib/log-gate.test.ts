import { describe, expect, it } from 'vitest';
import { LogGate } from './log-gate.ts';

describe('LogGate', () => {
  it('logs the first at once, then one per interval saying how many it dropped', () => {
    const g = new LogGate(10_000);
    expect(g.pass(0)).toEqual({ log: true, suppressed: 0 });
    for (let t = 1; t < 10_000; t += 1000) expect(g.pass(t).log).toBe(false);
    expect(g.pass(10_000)).toEqual({ log: true, suppressed: 10 });
    expect(g.pass(25_000)).toEqual({ log: true, suppressed: 0 });
  });
});
