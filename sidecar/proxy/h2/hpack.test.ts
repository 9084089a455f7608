import { describe, expect, it } from 'vitest';
import { encodeBlock, HpackDecoder, HpackError, huffmanDecode } from './hpack.ts';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const pairs = (flat: string[]) =>
  Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]]);

// RFC 7541 Appendix C: the examples, decoded in sequence on one context, with the dynamic
// table's size after each block.
const REQ1 = [
  [':method', 'GET'],
  [':scheme', 'http'],
  [':path', '/'],
  [':authority', 'www.example.com'],
];
const REQ2 = [...REQ1, ['cache-control', 'no-cache']];
const REQ3 = [
  [':method', 'GET'],
  [':scheme', 'https'],
  [':path', '/index.html'],
  [':authority', 'www.example.com'],
  ['custom-key', 'custom-value'],
];
const RESP = (status: string, date: string) => [
  [':status', status],
  ['cache-control', 'private'],
  ['date', date],
  ['location', 'https://www.example.com'],
];
const RESP3 = [
  ...RESP('200', 'Mon, 21 Oct 2013 20:13:22 GMT'),
  ['content-encoding', 'gzip'],
  ['set-cookie', 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1'],
];

const SEQUENCES: { name: string; table: number; steps: [string, string[][], number][] }[] = [
  {
    name: 'C.3 requests without Huffman',
    table: 4096,
    steps: [
      ['8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d', REQ1, 57],
      ['8286 84be 5808 6e6f 2d63 6163 6865', REQ2, 110],
      ['8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65', REQ3, 164],
    ],
  },
  {
    name: 'C.4 requests with Huffman',
    table: 4096,
    steps: [
      ['8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff', REQ1, 57],
      ['8286 84be 5886 a8eb 1064 9cbf', REQ2, 110],
      ['8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf', REQ3, 164],
    ],
  },
  {
    name: 'C.5 responses without Huffman (256-octet table: evictions)',
    table: 256,
    steps: [
      [
        '4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d',
        RESP('302', 'Mon, 21 Oct 2013 20:13:21 GMT'),
        222,
      ],
      ['4803 3330 37c1 c0bf', RESP('307', 'Mon, 21 Oct 2013 20:13:21 GMT'), 222],
      [
        '88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31',
        RESP3,
        215,
      ],
    ],
  },
  {
    name: 'C.6 responses with Huffman',
    table: 256,
    steps: [
      [
        '4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3',
        RESP('302', 'Mon, 21 Oct 2013 20:13:21 GMT'),
        222,
      ],
      ['4883 640e ffc1 c0bf', RESP('307', 'Mon, 21 Oct 2013 20:13:21 GMT'), 222],
      [
        '88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07',
        RESP3,
        215,
      ],
    ],
  },
];

describe('HPACK decoder: RFC 7541 Appendix C', () => {
  it('C.2 single fields: incremental indexing, without indexing, never indexed, indexed', () => {
    const d = new HpackDecoder();
    expect(pairs(d.decode(hex('400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572')))).toEqual([
      ['custom-key', 'custom-header'],
    ]);
    expect(d.size).toBe(55);
    const e = new HpackDecoder();
    expect(pairs(e.decode(hex('040c 2f73 616d 706c 652f 7061 7468')))).toEqual([[':path', '/sample/path']]);
    expect(pairs(e.decode(hex('1008 7061 7373 776f 7264 0673 6563 7265 74')))).toEqual([
      ['password', 'secret'],
    ]);
    expect(pairs(e.decode(hex('82')))).toEqual([[':method', 'GET']]);
    expect(e.size).toBe(0);
  });

  for (const seq of SEQUENCES) {
    it(seq.name, () => {
      const d = new HpackDecoder(seq.table);
      for (const [block, fields, size] of seq.steps) {
        expect(pairs(d.decode(hex(block)))).toEqual(fields);
        expect(d.size).toBe(size);
      }
    });
  }
});

describe('HPACK decoder: what it refuses (COMPRESSION_ERROR)', () => {
  const bad: [string, string][] = [
    ['index 0', '80'],
    ['index beyond the dynamic table', 'be'],
    ['string longer than the block', '0005 6162'],
    ['truncated integer', '7f'],
    ['integer over 2^31', '0f ff ff ff ff 7f'],
    ['table size update above the advertised limit', '3fe21f'],
    ['table size update after a field', '82 20'],
    ['Huffman EOS', '00 84 ff ff ff ff 00'],
    ['Huffman padding of 8 bits', '00 82 1f ff 00'],
    ['Huffman padding not all ones', '00 81 00 00'],
  ];
  for (const [name, block] of bad)
    it(name, () => {
      expect(() => new HpackDecoder().decode(hex(block))).toThrow(HpackError);
    });

  it('a table size update may shrink the table to 0 and back (evicting everything)', () => {
    const d = new HpackDecoder();
    d.decode(hex('400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572'));
    expect(pairs(d.decode(hex('20 82')))).toEqual([[':method', 'GET']]);
    expect(d.size).toBe(0);
    expect(() => d.decode(hex('be'))).toThrow(HpackError);
    expect(pairs(d.decode(hex('3fe11f 82')))).toEqual([[':method', 'GET']]);
  });

  it('stops an HPACK bomb: a block of one-octet references to a large entry, past the list bound', () => {
    const d = new HpackDecoder(4096, 64 * 1024);
    const entry = Buffer.concat([
      Buffer.from([0x40, 0x01, 0x78, 0x7f, 0xa1, 0x1e]),
      Buffer.alloc(4000, 0x61),
    ]);
    d.decode(entry); // x: aaaa… (4,000 octets) at index 62
    expect(() => d.decode(Buffer.alloc(1000, 0xbe))).toThrow(/header list above 65536/);
  });

  it('counts the decoded header list size (name + value + 32 per field)', () => {
    const d = new HpackDecoder();
    d.decode(hex('8286'));
    expect(d.listSize).toBe(':method'.length + 3 + 32 + ':scheme'.length + 4 + 32);
  });
});

describe('HPACK encoder (literal without indexing, no Huffman)', () => {
  it('C.2.2: an indexed name with a literal value is the RFC example byte for byte', () => {
    expect(encodeBlock([':path', '/sample/path']).toString('hex')).toBe('040c2f73616d706c652f70617468');
  });

  it('round-trips through the decoder without touching its dynamic table, any octet value', () => {
    const octets = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join('');
    const fields = [
      ':method',
      'POST',
      ':path',
      '/pkg.S/M',
      'x-long',
      'v'.repeat(5000),
      'x-bin',
      octets,
      'content-type',
      'application/grpc',
    ];
    const d = new HpackDecoder();
    expect(d.decode(encodeBlock(fields))).toEqual(fields);
    expect(d.size).toBe(0);
  });

  it('Huffman strings of the RFC examples decode alone (the canonical code derived from the lengths)', () => {
    // C.4.1's authority and C.6.1's date: all 5- to 8-bit codes and a 7-bit EOS padding.
    expect(huffmanDecode(hex('f1e3c2e5f23a6ba0ab90f4ff'), 0, 12)).toBe('www.example.com');
    expect(huffmanDecode(hex('d07abe941054d444a8200595040b8166e082a62d1bff'), 0, 22)).toBe(
      'Mon, 21 Oct 2013 20:13:21 GMT',
    );
  });
});
