import { describe, expect, it } from 'vitest';
import { canonicalIP, formatIp, ipToBytes, ipv4Bytes, ipv6Bytes } from './ip.ts';

describe('canonicalIP (golden)', () => {
  it.each([
    ['10.96.0.1', '10.96.0.1'],
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
    // RFC 5952 §4: lower case, no leading zeros, the longest run of ≥ 2 zero groups as "::"
    ['2001:0DB8:0000:0000:0000:0000:0002:0001', '2001:db8::2:1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // one zero group stays
    ['::', '::'],
    ['::1', '::1'],
    ['fd00::', 'fd00::'],
    ['::ffff:10.0.0.1', '::ffff:a00:1'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
  ])('%s → %s', (text, canonical) => {
    expect(canonicalIP(text)).toBe(canonical);
  });

  it.each([
    '',
    '1.2.3',
    '1.2.3.4.5',
    '256.1.1.1',
    '01.2.3.4',
    'fe80::1%eth0',
    '1::2::3',
    'example.com',
    ' 1.2.3.4',
  ])('refuses %j', (text) => {
    expect(canonicalIP(text)).toBeUndefined();
    expect(ipToBytes(text)).toBeUndefined();
  });
});

describe('bytes', () => {
  it('reads a dotted quad digit by digit', () => {
    expect([...ipv4Bytes('0.0.0.0')]).toEqual([0, 0, 0, 0]);
    expect([...ipv4Bytes('10.96.1.255')]).toEqual([10, 96, 1, 255]);
    expect([...ipv4Bytes('192.168.100.9')]).toEqual([192, 168, 100, 9]);
  });

  it('reads IPv6 with "::" anywhere and a dotted tail', () => {
    expect(ipv6Bytes('::1').toString('hex')).toBe(`${'0'.repeat(30)}01`);
    expect(ipv6Bytes('fd00::').toString('hex')).toBe(`fd00${'0'.repeat(28)}`);
    expect(ipv6Bytes('::ffff:1.2.3.4').toString('hex')).toBe('00000000000000000000ffff01020304');
    expect(ipv6Bytes('1:2:3:4:5:6:7:8').toString('hex')).toBe('00010002000300040005000600070008');
  });

  it('formats an IPv4-mapped address with its dotted tail only when asked', () => {
    const b = ipv6Bytes('::ffff:10.0.0.1');
    expect(formatIp(b)).toBe('::ffff:a00:1');
    expect(formatIp(b, { mappedDotted: true })).toBe('::ffff:10.0.0.1');
  });

  it('refuses a length that is no address', () => {
    expect(() => formatIp(new Uint8Array(5))).toThrow(/4 or 16 bytes, not 5/);
  });
});

describe('against the URL parser (the canonical form it writes), random addresses', () => {
  // A fixed-seed generator: the same 5,000 addresses every run, zero runs made likely.
  let seed = 0x9e3779b9;
  const next = () => {
    seed = (seed * 1664525 + 1013904223) >>> 0;
    return seed;
  };
  it('formatIp, ipv6Bytes and canonicalIP agree with it and with each other', () => {
    for (let n = 0; n < 5_000; n++) {
      const b = new Uint8Array(16);
      for (let i = 0; i < 16; i += 2) {
        const w = next() % 3 === 0 ? 0 : next() & 0xffff;
        b[i] = w >> 8;
        b[i + 1] = w & 0xff;
      }
      const text = formatIp(b);
      const url = new URL(`http://[${text}]/`).hostname.slice(1, -1);
      expect(text).toBe(url);
      expect(ipv6Bytes(text).equals(Buffer.from(b))).toBe(true);
      expect(canonicalIP(text)).toBe(text);
      const v4 = `${next() & 255}.${next() & 255}.${next() & 255}.${next() & 255}`;
      expect(formatIp(ipv4Bytes(v4))).toBe(v4);
    }
  });
});
