/**
 * The datagram lane's probes (docs/udp.md *The datagram lane*): what two gateways send each
 * other on a plain UDP socket pair to open their NATs' mappings, to learn the address the
 * other is seen from, and to keep both alive. Pure: no sockets, no clocks.
 *
 *    0             1             2                                              10
 *   +-------------+-------------+----------------------------------------------+
 *   | version (3) | kind        |            counter (u64, big endian)         |
 *   +-------------+-------------+----------------------------------------------+
 *   |   tag: HMAC-SHA-256(direction key, bytes 0..10), first 16 bytes          |
 *   +--------------------------------------------------------------------------+
 *
 * Version 3 sits beside the datagram channel's versions 1 and 2 (dgram-seal.ts) on the same
 * socket, so one byte tells a probe from sealed datagrams. Kind: PROBE asks for an ANSWER; an
 * ANSWER asks for nothing (no loop, and no packet is ever sent in reply to one that did not
 * authenticate: the socket reflects nothing to a forged source).
 *
 * Keys: the TLS 1.3 exporter (RFC 8446 §7.5) of the gateways' own session, label
 * LANE_EXPORTER_LABEL, 64 bytes: client→server key (32), server→client key (32). Only the
 * two gateways know them, so a probe proves its sender is the peer of that session and no
 * other: a NAT, relay or tunnel-server on the way can drop probes, not forge one, and one
 * direction's probe never passes as the other's (reflection). The counter rises with every
 * probe a side sends; a receiver takes only counters above the highest it took, so an old
 * probe replayed from another address cannot move the lane there.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const LANE_VERSION = 3;
export const LANE_EXPORTER_LABEL = 'EXPORTER-edgemesh-datagram-lane';
export const LANE_KEY_BYTES = 64;
export const PROBE_BYTES = 26;
const SIGNED_BYTES = 10;
const TAG_BYTES = 16;

export const ProbeKind = { PROBE: 1, ANSWER: 2 } as const;
export type ProbeKind = (typeof ProbeKind)[keyof typeof ProbeKind];

export interface LaneKeys {
  send: Buffer;
  receive: Buffer;
}

/** The exporter's 64 bytes → this end's send and receive keys (`role`: its TLS role). */
export function laneKeys(material: Buffer, role: 'client' | 'server'): LaneKeys {
  if (material.length !== LANE_KEY_BYTES)
    throw new Error(`datagram lane: exporter gave ${material.length} bytes, expected ${LANE_KEY_BYTES}`);
  const c2s = Buffer.from(material.subarray(0, 32));
  const s2c = Buffer.from(material.subarray(32, 64));
  return role === 'client' ? { send: c2s, receive: s2c } : { send: s2c, receive: c2s };
}

/** A probe or answer with this side's `counter` (a safe integer, rising), signed with `key`. */
export function sealProbe(key: Buffer, kind: ProbeKind, counter: number): Buffer {
  if (!Number.isSafeInteger(counter) || counter < 0) throw new RangeError(`probe counter ${counter}`);
  const out = Buffer.alloc(PROBE_BYTES);
  out[0] = LANE_VERSION;
  out[1] = kind;
  out.writeUInt32BE(Math.floor(counter / 2 ** 32), 2);
  out.writeUInt32BE(counter >>> 0, 6);
  tagOf(key, out).copy(out, SIGNED_BYTES);
  return out;
}

export type ProbeDrop = 'short' | 'version' | 'kind' | 'auth';
export type OpenedProbe = { ok: true; kind: ProbeKind; counter: number } | { ok: false; reason: ProbeDrop };

/** A probe signed with `key` (the peer's send key), or why it is not one. */
export function openProbe(key: Buffer, msg: Buffer): OpenedProbe {
  if (msg.length !== PROBE_BYTES) return { ok: false, reason: 'short' };
  if (msg[0] !== LANE_VERSION) return { ok: false, reason: 'version' };
  const kind = msg[1];
  if (kind !== ProbeKind.PROBE && kind !== ProbeKind.ANSWER) return { ok: false, reason: 'kind' };
  if (!timingSafeEqual(tagOf(key, msg), msg.subarray(SIGNED_BYTES))) return { ok: false, reason: 'auth' };
  const counter = msg.readUInt32BE(2) * 2 ** 32 + msg.readUInt32BE(6);
  // Past 2^53 the number would round: only a peer that sent 9e15 probes gets there.
  if (!Number.isSafeInteger(counter)) return { ok: false, reason: 'auth' };
  return { ok: true, kind, counter };
}

function tagOf(key: Buffer, msg: Buffer): Buffer {
  return createHmac('sha256', key).update(msg.subarray(0, SIGNED_BYTES)).digest().subarray(0, TAG_BYTES);
}
