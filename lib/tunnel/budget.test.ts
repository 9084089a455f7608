import { describe, expect, it } from 'vitest';
import { type BudgetHolder, ReceiveBudget } from './budget.ts';

function holder(name: string, shed: string[]): BudgetHolder {
  return { shed: (reason) => shed.push(`${name}: ${reason}`) };
}

describe('ReceiveBudget', () => {
  it('counts what holders hold, and releases a holder that leaves', () => {
    const b = new ReceiveBudget(100);
    const shed: string[] = [];
    const a = holder('a', shed);
    const c = holder('c', shed);
    b.set(a, 40);
    b.set(c, 30);
    b.set(a, 10);
    expect(b.total).toBe(40);
    b.release(a);
    b.release(a); // twice is harmless
    expect(b.total).toBe(30);
    expect(shed).toEqual([]);
  });

  it('refuses a new stream when a fresh window would not fit', () => {
    const b = new ReceiveBudget(100);
    b.set(holder('a', []), 60);
    expect(b.fits(40)).toBe(true);
    expect(b.fits(41)).toBe(false);
  });

  it('past the cap, sheds the holders with the most until the total fits, never one that reads', () => {
    const shedBytes: number[] = [];
    const b = new ReceiveBudget(100, (bytes) => shedBytes.push(bytes));
    const shed: string[] = [];
    const reader = holder('reader', shed);
    const big = holder('big', shed);
    const mid = holder('mid', shed);
    b.set(reader, 5);
    b.set(big, 50);
    b.set(mid, 40);
    expect(shed).toEqual([]);
    b.set(mid, 70); // 5 + 50 + 70 = 125: shed mid (70), left 55
    expect(shed).toEqual(["mid: peer's streams hold more than 100 bytes unread here; this one held 70"]);
    expect(b.total).toBe(55);
    b.set(reader, 0);
    b.set(big, 120); // alone over the cap: shed it too
    expect(shed.map((s) => s.split(':')[0])).toEqual(['mid', 'big']);
    expect(b.total).toBe(0);
    expect(shedBytes).toEqual([70, 120]);
    // A shed holder that reports again (late read) is counted afresh, not twice.
    b.set(big, 10);
    expect(b.total).toBe(10);
  });

  it('refuses a limit that is not a positive number', () => {
    expect(() => new ReceiveBudget(0)).toThrow(/receive budget must be > 0 bytes, got 0/);
  });
});
