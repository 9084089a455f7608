import { describe, expect, it } from 'vitest';
import { RateLimiter } from './rate-limit.ts';

describe('RateLimiter', () => {
  it('allows a second of burst, then asks for the time the overdraft takes to refill', () => {
    const r = new RateLimiter(1000);
    expect(r.charge('edge-a', 1000, 0)).toBe(0);
    expect(r.charge('edge-a', 500, 0)).toBe(500);
    // 700 ms later: -500 + 700 = 200 left, minus 300 → -100 → 100 ms
    expect(r.charge('edge-a', 300, 700)).toBe(100);
    expect(r.charge('edge-b', 1000, 700)).toBe(0); // per key
  });

  it('never banks more than one second', () => {
    const r = new RateLimiter(1000);
    r.charge('edge-a', 0, 0);
    expect(r.charge('edge-a', 1500, 60_000)).toBe(500);
  });

  it('refuses a rate that is not positive', () => {
    expect(() => new RateLimiter(0)).toThrow(/0 bytes\/s is not > 0/);
  });
});
