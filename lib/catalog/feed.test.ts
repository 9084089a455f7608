import { describe, expect, it } from 'vitest';
import { decodeFeedLine, encodeFeedLine, LineSplitter } from './feed.ts';
import { emptyCatalog } from './types.ts';

describe('feed lines', () => {
  it('round-trips updates and keepalives', () => {
    const lines = [
      { type: 'snapshot', catalog: { ...emptyCatalog(), revision: 4 } },
      {
        type: 'pod',
        revision: 5,
        ip: '10.0.0.1',
        pod: { ip: '10.0.0.1', namespace: 'a', name: 'b', nodeName: 'n' },
      },
      { type: 'node', revision: 6, name: 'n', node: null },
      { type: 'keepalive', revision: 6 },
    ] as const;
    for (const line of lines) {
      const text = encodeFeedLine(line);
      expect(text.endsWith('\n')).toBe(true);
      expect(text.slice(0, -1)).not.toContain('\n');
      expect(decodeFeedLine(text.slice(0, -1))).toEqual(line);
    }
  });

  it('rejects bad lines with a reason', () => {
    expect(() => decodeFeedLine('{')).toThrow(/not JSON/);
    expect(() => decodeFeedLine('{"type":"keepalive"}')).toThrow(/keepalive line/);
    expect(() => decodeFeedLine('{"type":"keepalive","revision":-1}')).toThrow(/keepalive line/);
    expect(() => decodeFeedLine('{"type":"keepalive","revision":1,"x":2}')).toThrow(/keepalive line/);
    expect(() => decodeFeedLine('{"type":"pod","revision":1,"ip":"x","pod":null}')).toThrow(
      /ip: must be an IP/,
    );
    expect(() => decodeFeedLine('[]')).toThrow(/must be an object/);
    expect(() => decodeFeedLine('null')).toThrow(/must be an object/);
  });

  it('splits lines across chunks and bounds a line', () => {
    const s = new LineSplitter(10);
    expect(s.push(Buffer.from('ab'))).toEqual([]);
    expect(s.push(Buffer.from('c\nde\n\nf'))).toEqual(['abc', 'de', '']);
    expect(s.push(Buffer.from('g\n'))).toEqual(['fg']);
    expect(s.push(Buffer.from('0123456789\n'))).toEqual(['0123456789']);
    expect(() => s.push(Buffer.from('0123456789A'))).toThrow(/longer than 10 bytes/);
    const t = new LineSplitter(10);
    t.push(Buffer.from('012345'));
    expect(() => t.push(Buffer.from('6789A\n'))).toThrow(/longer than 10 bytes/);
  });
});
