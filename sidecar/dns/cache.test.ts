import dnsPacket from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { ResponseCache } from './cache.ts';
import { inspectResponse, skipName } from './message.ts';

// Upstream responses built with dns-packet (an independent encoder, which compresses names).
const response = (opts: Partial<dnsPacket.Packet> & { rcode?: string }): Buffer =>
  dnsPacket.encode({
    type: 'response',
    id: 1,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (opts.flags ?? 0),
    questions: [{ name: 'www.example.test', type: 'A', class: 'IN' }],
    ...opts,
  } as dnsPacket.Packet);
const qEnd = (buf: Buffer) => skipName(buf, 12) + 4;
const soa = (ttl: number, minimum: number): dnsPacket.Answer => ({
  name: 'example.test',
  type: 'SOA',
  ttl,
  data: {
    mname: 'ns.example.test',
    rname: 'hostmaster.example.test',
    serial: 1,
    refresh: 1,
    retry: 1,
    expire: 1,
    minimum,
  },
});

describe('inspectResponse', () => {
  it('finds every TTL, takes the smallest answer TTL, and strips the OPT', () => {
    const buf = response({
      answers: [
        { name: 'www.example.test', type: 'CNAME', ttl: 300, data: 'web.example.test' },
        { name: 'web.example.test', type: 'A', ttl: 60, data: '198.51.100.1' },
      ],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer],
    });
    const r = inspectResponse(buf, qEnd(buf), 3600)!;
    expect(r.cacheTtl).toBe(60);
    expect(r.ttls).toEqual([300, 60]);
    expect(r.ttlOffsets.map((o) => r.bytes.readUInt32BE(o))).toEqual([300, 60]);
    expect(r.bytes.length).toBe(buf.length - 11);
    const decoded = dnsPacket.decode(r.bytes);
    expect(decoded.additionals).toEqual([]);
    expect(decoded.answers?.map((a) => a.name)).toEqual(['www.example.test', 'web.example.test']);
  });

  it('caches negative answers for min(SOA TTL, SOA minimum) and caps TTLs', () => {
    const nx = response({ flags: 3, authorities: [soa(900, 30)] });
    expect(inspectResponse(nx, qEnd(nx), 3600)!.cacheTtl).toBe(30);
    const nodata = response({ authorities: [soa(20, 300)] });
    expect(inspectResponse(nodata, qEnd(nodata), 3600)!.cacheTtl).toBe(20);
    const noSoa = response({ flags: 3 });
    expect(inspectResponse(noSoa, qEnd(noSoa), 3600)!.cacheTtl).toBe(0);
    const long = response({
      answers: [{ name: 'www.example.test', type: 'A', ttl: 86400, data: '198.51.100.1' }],
    });
    expect(inspectResponse(long, qEnd(long), 3600)!.cacheTtl).toBe(3600);
    const servfail = response({ flags: 2 });
    expect(inspectResponse(servfail, qEnd(servfail), 3600)!.cacheTtl).toBe(0);
  });

  it('treats TTLs with the top bit set as 0 (RFC 2181 §8): not cached, not passed on', () => {
    const buf = response({
      answers: [
        { name: 'www.example.test', type: 'A', ttl: 0xffffffff, data: '198.51.100.1' },
        { name: 'www.example.test', type: 'A', ttl: 0x80000000, data: '198.51.100.2' },
        { name: 'www.example.test', type: 'A', ttl: 0x7fffffff, data: '198.51.100.3' },
      ],
    });
    const copy = Buffer.from(buf);
    const r = inspectResponse(buf, qEnd(buf), 3600)!;
    expect(r.cacheTtl).toBe(0);
    expect(r.ttls).toEqual([0, 0, 0x7fffffff]);
    expect(r.ttlOffsets.map((o) => r.bytes.readUInt32BE(o))).toEqual([0, 0, 0x7fffffff]);
    expect(buf.equals(copy)).toBe(true); // the upstream buffer is left alone
  });

  it('rejects malformed responses without looping over lying counts', () => {
    const ok = response({ answers: [{ name: 'www.example.test', type: 'A', ttl: 5, data: '198.51.100.1' }] });
    const lying = Buffer.from(ok);
    lying.writeUInt16BE(65535, 6);
    expect(inspectResponse(lying, qEnd(ok), 3600)).toBeUndefined();
    expect(inspectResponse(ok.subarray(0, ok.length - 2), qEnd(ok), 3600)).toBeUndefined();
    expect(inspectResponse(Buffer.concat([ok, Buffer.from([1])]), qEnd(ok), 3600)).toBeUndefined();
    // Names are skipped, never followed: a pointer (even to itself) ends a name in 2 bytes.
    expect(skipName(Buffer.from([0xc0, 0x00]), 0)).toBe(2);
    expect(skipName(Buffer.alloc(300, 1), 0)).toBe(-1);
    expect(skipName(Buffer.from([0x80, 0]), 0)).toBe(-1);
  });
});

describe('ResponseCache', () => {
  const entry = (ttl: number) => {
    const buf = response({ answers: [{ name: 'www.example.test', type: 'A', ttl, data: '198.51.100.1' }] });
    return inspectResponse(buf, qEnd(buf), 3600)!;
  };

  it('serves copies with TTLs counted down, and expires entries', () => {
    let now = 1_000_000;
    const cache = new ResponseCache({ now: () => now });
    cache.put('k', entry(10));
    const ttlOf = (b: Buffer | undefined) =>
      b
        ? dnsPacket.decode(b).answers?.[0] && (dnsPacket.decode(b).answers![0] as { ttl: number }).ttl
        : undefined;
    expect(ttlOf(cache.copy('k'))).toBe(10);
    now += 3_500;
    expect(ttlOf(cache.copy('k'))).toBe(7);
    const served = cache.copy('k')!;
    served.writeUInt16BE(0xffff, 0); // callers patch their copy; the cache must not change
    expect(cache.copy('k')!.readUInt16BE(0)).toBe(1);
    now += 6_500;
    expect(cache.copy('k')).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('does not cache zero TTLs', () => {
    const cache = new ResponseCache();
    cache.put('k', entry(0));
    expect(cache.copy('k')).toBeUndefined();
  });

  it('is bounded by entries (least recently used goes first) and by bytes', () => {
    const cache = new ResponseCache({ maxEntries: 3 });
    for (const k of ['a', 'b', 'c']) cache.put(k, entry(60));
    cache.get('a'); // a is now the most recently used
    cache.put('d', entry(60));
    expect(['a', 'b', 'c', 'd'].map((k) => cache.copy(k) !== undefined)).toEqual([true, false, true, true]);
    const small = new ResponseCache({ maxBytes: 16 * 60 * 2 });
    for (let i = 0; i < 100; i++) small.put(String(i), entry(60));
    expect(small.bytes).toBeLessThanOrEqual(16 * 60 * 2);
    expect(small.size).toBeGreaterThan(0);
  });
});
