/**
 * Deterministic malformed-packet generator for the fuzz tests (in-process and over real
 * sockets): random bytes of random lengths, bit-flipped and truncated copies of valid
 * queries, and header-count lies. Seeded, so a failure can be replayed.
 */
import dnsPacket from 'dns-packet';
import { prng } from '../../../test/harness/fuzz.ts';

// The shared harness's PRNG: one generator for every fuzz target (test/harness/fuzz.ts).
export { prng };

/** Valid queries the mutations start from (cluster names, external names, EDNS, odd types). */
export function seedQueries(): Buffer[] {
  const q = (name: string, type: string, edns = false) =>
    dnsPacket.encode({
      type: 'query',
      id: 1,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ name, type: type as 'A' }],
      additionals: edns ? [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer] : [],
    });
  return [
    q('web.default.svc.cluster.local', 'A'),
    q('_http._tcp.web.default.svc.cluster.local', 'SRV', true),
    q('db.default.svc.cluster.local', 'AAAA'),
    q('10.0.96.10.in-addr.arpa', 'PTR', true),
    q('ext.default.svc.cluster.local', 'A'),
    q('big.default.svc.cluster.local', 'ANY'),
    q('dns-version.cluster.local', 'TXT', true),
  ];
}

/** One malformed packet drawn from `rand` (the DNS-aware mutator the targets share). */
export function fuzzPacket(rand: () => number, seeds: readonly Buffer[] = SEEDS): Buffer {
  const int = (n: number) => Math.floor(rand() * n);
  const kind = int(5);
  if (kind === 0) {
    // Random bytes, mostly short.
    const len = rand() < 0.8 ? int(64) : int(1500);
    const b = Buffer.allocUnsafe(len);
    for (let j = 0; j < len; j++) b[j] = int(256);
    return b;
  }
  if (kind === 1 || kind === 2) {
    // A valid query with 1-8 random bits flipped.
    const b = Buffer.from(seeds[int(seeds.length)]);
    for (let f = 1 + int(8); f > 0; f--) b[int(b.length)] ^= 1 << int(8);
    return b;
  }
  if (kind === 3) {
    // A valid query cut short or padded.
    const s = seeds[int(seeds.length)];
    return rand() < 0.5
      ? s.subarray(0, int(s.length))
      : Buffer.concat([s, Buffer.alloc(1 + int(40), int(256))]);
  }
  // Header counts that lie (up to 65535 questions/records) over a short body.
  const b = Buffer.from(seeds[int(seeds.length)].subarray(0, 12 + int(20)));
  b.writeUInt16BE(int(65536), 4 + 2 * int(4));
  return b;
}
const SEEDS = seedQueries();

export function* fuzzPackets(seed: number, count: number): Generator<Buffer> {
  const rand = prng(seed);
  for (let i = 0; i < count; i++) yield fuzzPacket(rand);
}
