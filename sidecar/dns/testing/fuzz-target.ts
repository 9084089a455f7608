/**
 * The DNS server's fuzz target for the long run (bench/fuzz.ts): the resolver's decision for
 * one query packet, in-process, with no upstream. The CI test is fuzz.test.ts (its own loop
 * over the same packets, plus upstream responses); this adds the per-input seed and timing.
 */
import dnsPacket from 'dns-packet';
import { Registry } from 'prom-client';
import { CatalogStore } from '../../../lib/catalog/store.ts';
import { check, type FuzzTarget } from '../../../test/harness/fuzz.ts';
import { Resolver } from '../resolver.ts';
import { fixtureCatalog } from './fixture.ts';
import { fuzzPacket } from './fuzz.ts';

let resolver: Resolver | undefined;
function shared(): Resolver {
  if (!resolver) {
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: fixtureCatalog() });
    resolver = new Resolver({ store, upstreams: [], registry: new Registry() });
  }
  return resolver;
}

export interface DnsInput {
  packet: Buffer;
  udp: boolean;
}

/**
 * Properties (as fuzz.test.ts): never throws, answers at most once and only when it says it
 * will, each answer a decodable response to the query's ID, at most 4096 bytes over UDP.
 */
export const dnsTarget: FuzzTarget<DnsInput> = {
  name: 'DNS queries (sidecar/dns)',
  input: (rng) => ({ packet: fuzzPacket(rng.next), udp: rng.chance(0.5) }),
  parse({ packet, udp }) {
    const answers: Buffer[] = [];
    const willAnswer = shared().handle(packet, udp ? 'udp' : 'tcp', (a) => answers.push(a));
    return { willAnswer, answers };
  },
  verify({ packet, udp }, { value }) {
    const { willAnswer, answers } = value as { willAnswer: boolean; answers: Buffer[] };
    check(answers.length <= 1 && (willAnswer || answers.length === 0), () => `${answers.length} answers`);
    for (const a of answers) {
      check(a.readUInt16BE(0) === packet.readUInt16BE(0) && (a[2] & 0x80) !== 0, () => 'bad answer header');
      check(!udp || a.length <= 4096, () => `UDP answer of ${a.length} bytes`);
      dnsPacket.decode(a);
    }
  },
  expected: () => false,
  show: (i) => `${i.udp ? 'udp' : 'tcp'} ${i.packet.toString('hex')}`,
};
