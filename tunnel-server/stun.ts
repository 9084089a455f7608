import { isIPv4 } from 'node:net';
import { ipv4Bytes } from '../lib/ip.ts';
import type { Address } from '../lib/tunnel/control.ts';

/**
 * The smallest useful STUN server (RFC 5389 Binding only): answers a Binding Request with the
 * source address it came from (XOR-MAPPED-ADDRESS), so ICE agents behind NAT learn their
 * server-reflexive candidate. Anything that is not a well-formed Binding Request gets no
 * answer (returns undefined): a UDP responder must never amplify or echo junk.
 *
 * No amplification: the answer is 32 bytes, so a request shorter than that gets none (the
 * source of a UDP packet is unauthenticated; a spoofed one would otherwise turn 20 bytes into
 * 32 towards a victim). RFC 5389 lets requests carry attributes, and ICE agents do: libjuice
 * (node-datachannel) sends SOFTWARE + FINGERPRINT, 40 bytes. A bare 20-byte request from
 * another client goes unanswered; padding it with any attribute (e.g. SOFTWARE) is enough.
 *
 *   0                   1                   2                   3
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |0 0|  message type (0x0001)    |  message length (attrs)       |
 *   |                  magic cookie 0x2112A442                      |
 *   |                  transaction id (96 bits)                     |
 */
const MAGIC = 0x2112a442;
const BINDING_REQUEST = 0x0001;
const BINDING_SUCCESS = 0x0101;
const XOR_MAPPED_ADDRESS = 0x0020;
/** Header (20) + XOR-MAPPED-ADDRESS for IPv4 (12): the answer, and the smallest request answered. */
export const STUN_RESPONSE_LENGTH = 32;

export function stunResponse(msg: Buffer, from: Address): Buffer | undefined {
  if (msg.length < STUN_RESPONSE_LENGTH || msg.length > 1500) return undefined;
  if (msg.readUInt16BE(0) !== BINDING_REQUEST || msg.readUInt32BE(4) !== MAGIC) return undefined;
  const attrLength = msg.readUInt16BE(2);
  if (attrLength % 4 !== 0 || 20 + attrLength !== msg.length) return undefined;
  if (!isIPv4(from.ip)) return undefined; // IPv4 only for now
  const v4 = ipv4Bytes(from.ip);
  const out = Buffer.alloc(STUN_RESPONSE_LENGTH);
  out.writeUInt16BE(BINDING_SUCCESS, 0);
  out.writeUInt16BE(12, 2);
  out.writeUInt32BE(MAGIC, 4);
  msg.copy(out, 8, 8, 20);
  out.writeUInt16BE(XOR_MAPPED_ADDRESS, 20);
  out.writeUInt16BE(8, 22);
  out.writeUInt8(0, 24);
  out.writeUInt8(0x01, 25);
  out.writeUInt16BE(from.port ^ (MAGIC >>> 16), 26);
  const addr = ((v4[0] << 24) | (v4[1] << 16) | (v4[2] << 8) | v4[3]) >>> 0;
  out.writeUInt32BE((addr ^ MAGIC) >>> 0, 28);
  return out;
}
