import dnsPacket from 'dns-packet';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../../lib/catalog/store.ts';
import { inspectResponse, skipName } from './message.ts';
import { Resolver } from './resolver.ts';
import { fixtureCatalog } from './testing/fixture.ts';
import { fuzzPackets, prng } from './testing/fuzz.ts';

// The resolver in-process against 30,000 generated packets (bounded count): every call
// returns, never throws, answers at most once, and every answer is a well-formed DNS
// response to the packet's ID. No upstream is configured, so nothing leaves the process.
const registry = new Registry();
const store = new CatalogStore();
store.apply({ type: 'snapshot', catalog: fixtureCatalog() });
const resolver = new Resolver({ store, upstreams: [], registry });
afterAll(() => resolver.close());

describe('fuzz (in-process)', () => {
  it('handles random, bit-flipped, truncated and lying packets', async () => {
    let replies = 0;
    let dropped = 0;
    const problems: string[] = [];
    for (const [udp, packet] of [...fuzzPackets(424242, 30_000)].map((p, i) => [i % 2 === 0, p] as const)) {
      let answered = 0;
      const willAnswer = resolver.handle(packet, udp ? 'udp' : 'tcp', (answer) => {
        answered++;
        replies++;
        if (answered > 1) problems.push(`answered twice: ${packet.toString('hex')}`);
        if (answer.readUInt16BE(0) !== packet.readUInt16BE(0) || !(answer[2] & 0x80)) {
          problems.push(`bad answer header for ${packet.toString('hex')}`);
        }
        if (udp && answer.length > 4096) problems.push(`UDP answer of ${answer.length} bytes`);
        try {
          dnsPacket.decode(answer);
        } catch (err) {
          problems.push(`undecodable answer ${answer.toString('hex')}: ${err}`);
        }
      });
      if (!willAnswer) {
        dropped++;
        if (answered > 0) problems.push(`dropped but answered: ${packet.toString('hex')}`);
      }
    }
    // ExternalName chases without an upstream settle on the next ticks.
    await new Promise((r) => setTimeout(r, 50));
    expect(problems.slice(0, 5)).toEqual([]);
    expect(replies + dropped).toBe(30_000);
    const rejected = await registry.getSingleMetric('edgemesh_dns_rejected_total')!.get();
    expect(rejected.values.find((v) => v.labels.reason === 'internal')).toBeUndefined();
    expect(rejected.values.find((v) => v.labels.reason === 'counts')!.value).toBeGreaterThan(1000);
  });

  it('walks random and bit-flipped upstream responses without throwing or looping', () => {
    const rand = prng(99);
    const seeds = [
      dnsPacket.encode({
        type: 'response',
        id: 1,
        flags: dnsPacket.RECURSION_AVAILABLE,
        questions: [{ name: 'www.example.test', type: 'A' }],
        answers: [
          { name: 'www.example.test', type: 'CNAME', ttl: 60, data: 'web.example.test' },
          { name: 'web.example.test', type: 'A', ttl: 30, data: '198.51.100.1' },
        ],
        additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer],
      }),
      dnsPacket.encode({
        type: 'response',
        id: 2,
        flags: 3,
        questions: [{ name: 'nope.example.test', type: 'AAAA' }],
        authorities: [
          {
            name: 'example.test',
            type: 'SOA',
            ttl: 300,
            data: {
              mname: 'ns.example.test',
              rname: 'h.example.test',
              serial: 1,
              refresh: 1,
              retry: 1,
              expire: 1,
              minimum: 30,
            },
          },
        ],
      }),
    ];
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      const b = Buffer.from(seeds[i % 2]);
      for (let f = 1 + Math.floor(rand() * 6); f > 0; f--)
        b[Math.floor(rand() * b.length)] ^= 1 << Math.floor(rand() * 8);
      const cut = rand() < 0.2 ? b.subarray(0, Math.floor(rand() * b.length)) : b;
      const qEnd = cut.length >= 12 ? skipName(cut, 12) : -1;
      if (qEnd < 0 || qEnd + 4 > cut.length) continue;
      const r = inspectResponse(cut, qEnd + 4, 3600);
      if (!r) continue;
      accepted++;
      for (const o of r.ttlOffsets) expect(o + 4).toBeLessThanOrEqual(r.bytes.length);
      expect(r.cacheTtl).toBeGreaterThanOrEqual(0);
      expect(r.cacheTtl).toBeLessThanOrEqual(3600);
    }
    expect(accepted).toBeGreaterThan(100);
  });
});
