import { describe, expect, it } from 'vitest';
import { ListBodyDecoder, ListBodyError, type ListMeta } from './list-body.ts';

/** Decodes `body` written in the pieces that `cuts` (ascending byte offsets) make. */
function decode(
  body: Buffer,
  cuts: number[] = [],
  maxValueBytes?: number,
): { items: unknown[]; meta: ListMeta } {
  const items: unknown[] = [];
  const decoder = new ListBodyDecoder('/api/v1/services', (item) => items.push(item), { maxValueBytes });
  let from = 0;
  for (const cut of [...cuts, body.length]) {
    decoder.write(body.subarray(from, cut));
    from = cut;
  }
  return { items, meta: decoder.end() };
}

/** What JSON.parse of the whole body gives, in the decoder's terms. */
function whole(body: Buffer): { items: unknown[]; meta: ListMeta } {
  const doc = JSON.parse(body.toString('utf8')) as { items: unknown[]; metadata?: Record<string, unknown> };
  const text = (v: unknown) => (typeof v === 'string' ? v : '');
  return {
    items: doc.items,
    meta: {
      resourceVersion: text(doc.metadata?.resourceVersion),
      continue: text(doc.metadata?.continue),
      count: doc.items.length,
    },
  };
}

const tricky = {
  metadata: { name: 'a]b}c', namespace: 'x"y', uid: 'back\\slash\\' },
  spec: {
    s: '{[',
    t: ']}',
    q: '\\"',
    u: 'é日本😀',
    e: '\u0000\u001f',
    list: [[], {}, [{}], 1.5e-3, -0, null, true],
  },
};
const BODIES: Record<string, string> = {
  'metadata first': JSON.stringify({
    kind: 'ServiceList',
    apiVersion: 'v1',
    metadata: { resourceVersion: '42', continue: 'tok"en' },
    items: [tricky, { metadata: { name: 'b' } }],
  }),
  'metadata after items': JSON.stringify({ items: [tricky], metadata: { resourceVersion: '7' }, kind: 'X' }),
  'no metadata, empty items': '{"items":[]}',
  'pretty-printed': JSON.stringify({ metadata: { resourceVersion: '1' }, items: [tricky, 'x', 3] }, null, 2),
  'scalar items and odd whitespace':
    ' \r\n\t{ "items" : [ 1 , true,null ,"a\\"]" , -2.5e+3 ] , "x" : [ ] } \n',
  'escaped key': '{"\\u0069tems":[{"a":1}],"meta\\u0064ata":{"resourceVersion":"9"}}',
  'metadata not an object': '{"metadata":"odd","items":[{}]}',
  'nested arrays in an item': '{"items":[[[[]]],{"a":[{"b":[]}]}]}',
  // Small enough for every pair of cuts: brackets, an escaped quote and backslash, 2- and 4-byte UTF-8.
  'small and tricky': '{"items":[{"n":"]}\\\\\\"é😀{","m":[{}]}],"metadata":{"resourceVersion":"3"}}',
};

describe('ListBodyDecoder: every chunk split gives what JSON.parse gives', () => {
  for (const [name, text] of Object.entries(BODIES)) {
    it(name, () => {
      const body = Buffer.from(text);
      const expected = whole(body);
      expect(decode(body)).toEqual(expected);
      // One cut anywhere, including inside every multi-byte UTF-8 sequence and escape.
      for (let a = 0; a <= body.length; a++) expect(decode(body, [a]), `cut at ${a}`).toEqual(expected);
      // Two cuts anywhere (small bodies only: quadratic).
      if (body.length <= 200)
        for (let a = 0; a <= body.length; a++)
          for (let b = a; b <= body.length; b++)
            expect(decode(body, [a, b]), `cuts at ${a}, ${b}`).toEqual(expected);
      // One byte at a time.
      const each = Array.from({ length: body.length }, (_, i) => i);
      expect(decode(body, each)).toEqual(expected);
    });
  }

  it('hands each item over as soon as it is whole, not at the end', () => {
    const items: unknown[] = [];
    const decoder = new ListBodyDecoder('/x', (item) => items.push(item));
    decoder.write(Buffer.from('{"items":[{"a":1},{"b":'));
    expect(items).toEqual([{ a: 1 }]);
    decoder.write(Buffer.from('2}]}'));
    expect(items).toEqual([{ a: 1 }, { b: 2 }]);
    expect(decoder.end()).toEqual({ resourceVersion: '', continue: '', count: 2 });
  });

  it('holds only the item being cut, not the body', () => {
    const item = JSON.stringify({ metadata: { name: 'x'.repeat(1000) } });
    const decoder = new ListBodyDecoder('/x', () => {});
    decoder.write(Buffer.from('{"items":['));
    let most = 0;
    for (let i = 0; i < 200; i++) {
      const piece = Buffer.from(`${i ? ',' : ''}${item}`);
      decoder.write(piece.subarray(0, 500));
      most = Math.max(most, decoder.held);
      decoder.write(piece.subarray(500));
    }
    decoder.write(Buffer.from(']}'));
    expect(decoder.end().count).toBe(200);
    expect(most).toBeLessThanOrEqual(500);
  });
});

describe('ListBodyDecoder: bad bodies', () => {
  const cases: [string, string, RegExp, number][] = [
    ['empty', '', /the body is empty/, 0],
    ['whitespace only', '  \n', /the body is empty/, 3],
    ['an array', '[]', /expected '\{' \(a List object\), found '\['/, 0],
    ['a Status without items', '{"kind":"Status","code":500}', /not a list: no items/, 28],
    ['items an object', '{"items":{}}', /items is not an array \(starts with '\{'\)/, 9],
    ['items twice', '{"items":[],"items":[]}', /items appears twice/, 20],
    ['metadata twice', '{"metadata":{},"items":[],"metadata":{}}', /metadata appears twice/, 37],
    ['trailing comma in items', '{"items":[1,]}', /expected an item after ',' in items/, 12],
    ['missing colon', '{"items" []}', /expected ':', found '\['/, 9],
    ['bad item', '{"items":[{"a":1},{"a":}]}', /items\[1\] is not JSON \(/, 18],
    ['bad other value', '{"kind":tru,"items":[]}', /the value of "kind" is not JSON/, 8],
    ['unquoted key', '{items:[]}', /expected a key or '\}', found 'i'/, 1],
    ['truncated inside an item', '{"items":[{"a":"}]}', /the body ends inside items\[0\] \(truncated\)/, 19],
    ['truncated after an item', '{"items":[{"a":1}', /the body ends inside items \(truncated\)/, 17],
    ['truncated after items', '{"items":[]', /the body ends before the List does \(truncated\)/, 11],
    ['truncated inside a key', '{"ite', /the body ends inside a key \(truncated\)/, 5],
    ['garbage after the List', '{"items":[]} x', /expected nothing after the List, found 'x'/, 13],
    ['a control byte', '{"items":[]\u0001}', /expected ',' or '\}', found byte 0x1/, 11],
  ];
  for (const [name, text, problem, offset] of cases) {
    it(`${name}: the problem and its byte offset, however the body is cut`, () => {
      const body = Buffer.from(text);
      for (let a = 0; a <= body.length; a++) {
        let err: unknown;
        try {
          decode(body, [a]);
        } catch (e) {
          err = e;
        }
        expect(err, `cut at ${a}`).toBeInstanceOf(ListBodyError);
        const e = err as ListBodyError;
        expect(e.problem, `cut at ${a}`).toMatch(problem);
        expect(e.offset, `cut at ${a}`).toBe(offset);
        expect(e.message).toContain('LIST /api/v1/services: ');
        expect(e.message).toContain(`at byte ${offset}`);
      }
    });
  }

  it('refuses an item over the size limit before holding more of it', () => {
    const decoder = new ListBodyDecoder('/x', () => {}, { maxValueBytes: 100 });
    decoder.write(Buffer.from('{"items":[{"a":"'));
    expect(() => decoder.write(Buffer.from('x'.repeat(200)))).toThrow(
      /items\[0\] is larger than 100 bytes at byte 10/,
    );
    expect(decoder.held).toBe(0);
    // Dead after an error: every later call says the same.
    expect(() => decoder.write(Buffer.from('"}]}'))).toThrow(/larger than 100 bytes/);
    expect(() => decoder.end()).toThrow(/larger than 100 bytes/);
  });

  it('refuses an endless key', () => {
    expect(() => decode(Buffer.from(`{"${'k'.repeat(2000)}":1,"items":[]}`))).toThrow(
      /a key is larger than 1024 bytes at byte 1/,
    );
  });

  it("passes an error of onItem's own on, and stops", () => {
    const decoder = new ListBodyDecoder('/x', () => {
      throw new Error('builder refused');
    });
    expect(() => decoder.write(Buffer.from('{"items":[{}, {}]}'))).toThrow('builder refused');
    expect(() => decoder.end()).toThrow(/decoding stopped by an earlier error/);
  });
});
