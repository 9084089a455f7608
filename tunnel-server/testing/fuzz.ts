/**
 * Fuzz target for the tunnel-server's STUN responder (stun.ts; test/harness/fuzz.ts runs it):
 * UDP from any source on the internet. The gateway has no STUN parser of its own (ICE's
 * STUN client is libjuice's, inside node-datachannel).
 */

import type { Address } from '../../lib/tunnel/control.ts';
import { check, type FuzzTarget, mutateBytes } from '../../test/harness/fuzz.ts';
import { STUN_RESPONSE_LENGTH, stunResponse } from '../stun.ts';

const TXID = '0102030405060708090a0b0c';
const CORPUS = [
  `000100142112a442${TXID}802200086c69626a7569636580280004020cfd56`, // libjuice: SOFTWARE + FINGERPRINT
  `0001000c2112a442${TXID}802200087878787878787878`, // the smallest answered
  `000100002112a442${TXID}`, // bare, 20 bytes: too short to answer
  `0101000c2112a442${TXID}00200008000199b8ea12d504`, // a Binding Success (ours)
].map((h) => Buffer.from(h, 'hex'));
const FROM: readonly Address[] = [
  { ip: '203.0.113.70', port: 41001 },
  { ip: '0.0.0.0', port: 1 },
  { ip: '255.255.255.255', port: 65535 },
  { ip: '::ffff:10.0.0.1', port: 2 },
  { ip: 'fd00::1', port: 3 },
];

export interface StunInput {
  msg: Buffer;
  from: Address;
}

/**
 * Properties: never throws; answers only a well-formed Binding Request, with exactly 32 bytes,
 * never more than it received, echoing the transaction id, and the XOR-MAPPED-ADDRESS decodes
 * to the source address and port.
 */
export const stunTarget: FuzzTarget<StunInput> = {
  name: 'STUN (tunnel-server/stun.ts)',
  input: (rng) => ({ msg: mutateBytes(rng, CORPUS, [{ offset: 2, size: 2 }]), from: rng.pick(FROM) }),
  parse: ({ msg, from }) => stunResponse(msg, from),
  verify({ msg, from }, { value }) {
    const r = value as Buffer | undefined;
    if (!r) return;
    check(
      r.length === STUN_RESPONSE_LENGTH && r.length <= msg.length,
      () => `answered ${r.length} bytes to ${msg.length}`,
    );
    check(
      msg.readUInt16BE(0) === 0x0001 && msg.readUInt32BE(4) === 0x2112a442,
      () => 'answered a non-request',
    );
    check(r.subarray(8, 20).equals(msg.subarray(8, 20)), () => 'transaction id not echoed');
    const port = r.readUInt16BE(26) ^ 0x2112;
    const ip = (r.readUInt32BE(28) ^ 0x2112a442) >>> 0;
    const text = [ip >>> 24, (ip >>> 16) & 255, (ip >>> 8) & 255, ip & 255].join('.');
    check(port === from.port && text === from.ip, () => `mapped ${text}:${port} for ${from.ip}:${from.port}`);
  },
  expected: () => false,
  show: (i) => `${i.msg.toString('hex')} from ${i.from.ip}:${i.from.port}`,
};
