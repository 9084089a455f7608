import { describe, expect, it } from 'vitest';
import { encodeQuery } from './testing/testutil.ts';
import {
  canonicalIPv6,
  encodeName,
  errorResponse,
  ipv6Bytes,
  isProblem,
  parseQuery,
  type Query,
  type QueryProblem,
  reverseName,
  udpLimit,
} from './wire.ts';

const header = (id: number, flags: number, qd: number, an: number, ns: number, ar: number) => {
  const b = Buffer.alloc(12);
  [id, flags, qd, an, ns, ar].forEach((v, i) => {
    b.writeUInt16BE(v, i * 2);
  });
  return b;
};
// www.Example.com A IN, hand-assembled.
const QUESTION = Buffer.from('03777777074578616d706c6503636f6d0000010001', 'hex');

describe('parseQuery', () => {
  it('parses a query from its bytes (hex table)', () => {
    const q = parseQuery(Buffer.concat([header(0xbeef, 0x0130, 1, 0, 0, 0), QUESTION])) as Query;
    expect(q).toEqual({
      id: 0xbeef,
      flags: 0x0130,
      name: 'www.example.com',
      oddName: false,
      qtype: 1,
      qclass: 1,
      questionEnd: 12 + QUESTION.length,
      edns: undefined,
    });
  });

  it('reads EDNS0 payload size and DO bit; applies the RFC 6891 floor of 512', () => {
    const q = parseQuery(encodeQuery({ name: 'a.b', type: 'AAAA', edns: 300, dnssecOk: true })) as Query;
    expect(q.edns).toEqual({ udpSize: 300, dnssecOk: true });
    expect(udpLimit(q)).toBe(512);
    expect(udpLimit(parseQuery(encodeQuery({ name: 'a.b', type: 'A', edns: 65000 })) as Query)).toBe(4096);
    expect(udpLimit(parseQuery(encodeQuery({ name: 'a.b', type: 'A' })) as Query)).toBe(512);
  });

  it('marks names no cluster name can match (a dot or control byte inside a label)', () => {
    const dotted = Buffer.concat([
      header(1, 0, 1, 0, 0, 0),
      Buffer.from('03612e62016300', 'hex'),
      Buffer.from('00010001', 'hex'),
    ]);
    const q = parseQuery(dotted) as Query;
    expect(q.name).toBe('a.b.c');
    expect(q.oddName).toBe(true);
  });

  const problems: [string, Buffer, string, number | undefined][] = [
    ['11 bytes', Buffer.alloc(11), 'short', undefined],
    ['a response', Buffer.concat([header(1, 0x8000, 1, 0, 0, 0), QUESTION]), 'response', undefined],
    ['65535 questions in 12 bytes', header(1, 0, 65535, 0, 0, 0), 'counts', 1],
    ['no question', header(1, 0, 0, 0, 0, 0), 'counts', 1],
    ['answers in a query', Buffer.concat([header(1, 0, 1, 1, 0, 0), QUESTION]), 'counts', 1],
    ['authority in a query', Buffer.concat([header(1, 0, 1, 0, 9, 0), QUESTION]), 'counts', 1],
    ['two additional records', Buffer.concat([header(1, 0, 1, 0, 0, 2), QUESTION]), 'counts', 1],
    ['opcode NOTIFY', Buffer.concat([header(1, 4 << 11, 1, 0, 0, 0), QUESTION]), 'opcode', 4],
    [
      'label 64',
      Buffer.concat([
        header(1, 0, 1, 0, 0, 0),
        Buffer.from([64]),
        Buffer.alloc(64, 97),
        Buffer.from([0, 0, 1, 0, 1]),
      ]),
      'label',
      1,
    ],
    ['pointer', Buffer.concat([header(1, 0, 1, 0, 0, 0), Buffer.from('c00c00010001', 'hex')]), 'label', 1],
    [
      'name runs off the end',
      Buffer.concat([header(1, 0, 1, 0, 0, 0), Buffer.from('0561626364', 'hex')]),
      'name',
      1,
    ],
    [
      'name over 255 bytes',
      Buffer.concat([
        header(1, 0, 1, 0, 0, 0),
        ...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 97)])),
        Buffer.from([0, 0, 1, 0, 1]),
      ]),
      'name',
      1,
    ],
    ['no type/class', Buffer.concat([header(1, 0, 1, 0, 0, 0), QUESTION.subarray(0, -4)]), 'question', 1],
    ['non-OPT additional', Buffer.concat([header(1, 0, 1, 0, 0, 1), QUESTION, QUESTION]), 'additional', 1],
    [
      'OPT rdata past the end',
      Buffer.concat([header(1, 0, 1, 0, 0, 1), QUESTION, Buffer.from('0000290200000000000010', 'hex')]),
      'opt',
      1,
    ],
    [
      'EDNS version 1',
      Buffer.concat([header(1, 0, 1, 0, 0, 1), QUESTION, Buffer.from('0000290200000100000000', 'hex')]),
      'badvers',
      16,
    ],
    ['trailing bytes', Buffer.concat([header(1, 0, 1, 0, 0, 0), QUESTION, Buffer.from([0])]), 'trailing', 1],
    ['over 1024 bytes', Buffer.concat([header(1, 0, 1, 0, 0, 0), Buffer.alloc(1100)]), 'oversized', 1],
  ];
  for (const [what, packet, reason, rcode] of problems) {
    it(`rejects ${what}`, () => {
      const p = parseQuery(packet);
      expect(isProblem(p)).toBe(true);
      expect((p as QueryProblem).reason).toBe(reason);
      expect((p as QueryProblem).rcode).toBe(rcode);
    });
  }

  it('answers BADVERS with an OPT carrying the upper rcode bits', () => {
    const p = parseQuery(
      Buffer.concat([header(77, 0, 1, 0, 0, 1), QUESTION, Buffer.from('0000290200000100000000', 'hex')]),
    );
    expect(errorResponse(p as QueryProblem).toString('hex')).toBe(
      // id 77, QR, rcode 0 (16 & 0xf), ar 1; OPT: payload 1232, ext-rcode 1, version 0
      '004d80000000000000000001' + '00002904d0010000000000',
    );
  });
});

describe('encoders', () => {
  it('encodes names and rejects bad ones', () => {
    expect(encodeName('www.example.com.').toString('hex')).toBe('03777777076578616d706c6503636f6d00');
    expect(encodeName('.').toString('hex')).toBe('00');
    expect(() => encodeName(`${'a'.repeat(64)}.b`)).toThrow(/label/);
    expect(() => encodeName(Array.from({ length: 5 }, () => 'a'.repeat(63)).join('.'))).toThrow(/too long/);
    expect(() => encodeName('a..b')).toThrow(/label/);
    expect(() => encodeName('.a')).toThrow(/label/);
    expect(() => encodeName('a..')).toThrow(/label/);
    // The longest name: 253 characters, 255 bytes on the wire; one more is too long.
    const longest = [63, 63, 63, 61].map((n) => 'a'.repeat(n)).join('.');
    expect(encodeName(longest)).toHaveLength(255);
    expect(encodeName(longest).subarray(0, 2).toString('latin1')).toBe('\x3fa');
    expect(() => encodeName(`${longest}a`)).toThrow(/too long/);
    expect(encodeName('x.y-z.0').toString('hex')).toBe('017803792d7a013000');
  });

  const v6: [string, string, string][] = [
    ['::1', '00000000000000000000000000000001', '::1'],
    ['fd00:10:96::a', 'fd00001000960000000000000000000a', 'fd00:10:96::a'],
    ['2001:DB8:0:0:1:0:0:1', '20010db8000000000001000000000001', '2001:db8::1:0:0:1'],
    ['::ffff:192.0.2.1', '00000000000000000000ffffc0000201', '::ffff:c000:201'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008', '1:2:3:4:5:6:7:8'],
    ['fe80::', 'fe800000000000000000000000000000', 'fe80::'],
  ];
  for (const [ip, bytes, canonical] of v6) {
    it(`IPv6 ${ip}`, () => {
      expect(ipv6Bytes(ip).toString('hex')).toBe(bytes);
      expect(canonicalIPv6(ip)).toBe(canonical);
    });
  }

  it('builds reverse names', () => {
    expect(reverseName('10.96.0.1')).toBe('1.0.96.10.in-addr.arpa');
    expect(reverseName('2001:db8::1')).toBe(
      '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa',
    );
  });
});
