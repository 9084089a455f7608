/**
 * Fuzz target of the datagram channel's opener (gateway/tunnel/dgram-seal.ts): whatever a
 * relay or a broken peer puts on the channel is dropped with a reason, never thrown, and
 * nothing but an exact sealed message opens.
 */
import { check, type FuzzTarget, mutateBytes } from '../../../test/harness/fuzz.ts';
import { openDatagram, SEAL_HEADER_BYTES, sealDatagram, splitExported } from '../dgram-seal.ts';

/** Fixed key material (not a secret: test only). */
export const FUZZ_MATERIAL = Buffer.from(Array.from({ length: 56 }, (_, i) => i));
const client = splitExported(FUZZ_MATERIAL, 'client');
const server = splitExported(FUZZ_MATERIAL, 'server');
const CORPUS = [
  sealDatagram(client.send, 1, 0, Buffer.alloc(0)),
  sealDatagram(client.send, 3, 1, Buffer.from('hello')),
  sealDatagram(client.send, 0xffff_ffff, 2 ** 24 - 1, Buffer.alloc(200, 7)),
];
const VALID = new Set(CORPUS.map((b) => b.toString('hex')));

export const sealTarget: FuzzTarget<{ bytes: Buffer }> = {
  name: 'datagram channel messages (gateway/tunnel/dgram-seal.ts)',
  input: (rng) => ({
    bytes: mutateBytes(rng, CORPUS, [
      { offset: 1, size: 4 },
      { offset: 5, size: 4 },
      { offset: 9, size: 4 },
    ]),
  }),
  parse: ({ bytes }) => openDatagram((e) => (e === 0 ? server.receive : undefined), bytes),
  verify({ bytes }, outcome) {
    check(!outcome.error, () => `openDatagram threw ${outcome.error?.message}`);
    const opened = outcome.value as ReturnType<typeof openDatagram>;
    const exact = VALID.has(bytes.toString('hex'));
    check(opened.ok === exact, () => (exact ? 'a sealed message did not open' : 'a changed message opened'));
    if (opened.ok) {
      // What opened seals back to the same bytes (same key, stream, seq).
      const again = sealDatagram(client.send, opened.stream, opened.seq, opened.payload);
      check(again.equals(bytes), () => 're-sealing changed the bytes');
      check(bytes.length >= SEAL_HEADER_BYTES, () => 'opened a message shorter than its header');
    }
  },
  expected: () => false, // openDatagram documents no throw
};
