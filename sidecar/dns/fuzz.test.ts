import dnsPacket from 'dns-packet';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../../lib/catalog/store.ts';
import { fixtureCatalog } from './fixture.ts';
import { fuzzPackets } from './fuzz.ts';
import { Resolver } from './resolver.ts';

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
});
