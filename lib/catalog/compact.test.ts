import { describe, expect, it } from 'vitest';
import { Interner, MultiIndex } from './compact.ts';

describe('MultiIndex', () => {
  it('holds one value bare, more in a set, and drops empty keys', () => {
    const index = new MultiIndex();
    index.add('ip', 'b');
    index.add('ip', 'b');
    expect(index.sorted('ip')).toEqual(['b']);
    index.add('ip', 'a');
    expect(index.sorted('ip')).toEqual(['a', 'b']);
    index.delete('ip', 'b');
    expect(index.sorted('ip')).toEqual(['a']);
    index.delete('ip', 'x');
    expect(index.sorted('ip')).toEqual(['a']);
    index.delete('ip', 'a');
    expect(index.sorted('ip')).toEqual([]);
    expect(index.size).toBe(0);
  });
});

describe('Interner', () => {
  it('returns the first copy of a repeated value, up to its bound', () => {
    const ports = new Interner<number[]>(1);
    const first = [80];
    expect(ports.get('80', first)).toBe(first);
    expect(ports.get('80', [80])).toBe(first);
    const other = [81];
    expect(ports.get('81', other)).toBe(other); // over the bound: not held
    expect(ports.get('81', [81])).not.toBe(other);
    const names = new Interner<string>();
    expect(names.string('node-a')).toBe('node-a');
  });
});
