import { describe, expect, it } from 'vitest';
import { SlotList } from './splice.ts';

describe('SlotList', () => {
  it('adds and removes in O(1), moving the last entry into the freed slot', () => {
    const list = new SlotList<{ name: string; slot: number }>();
    const [a, b, c] = ['a', 'b', 'c'].map((name) => ({ name, slot: -1 }));
    for (const x of [a, b, c]) list.add(x);
    expect(list.items.map((x) => x.name)).toEqual(['a', 'b', 'c']);
    list.remove(a);
    expect(list.items.map((x) => x.name)).toEqual(['c', 'b']);
    expect(list.items.every((x, i) => x.slot === i)).toBe(true);
    list.remove(a); // idempotent
    list.remove(b);
    expect(list.items.map((x) => x.name)).toEqual(['c']);
    list.remove(c);
    expect(list.size).toBe(0);
    expect(c.slot).toBe(-1);
  });
});
