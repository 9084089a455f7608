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
 * An ACK (the lane's congestion window, lane-window.ts) carries two more u64 before its tag,
 * signed with the rest: the highest datagram-channel sequence number its sender has opened
 * from this lane, and how many messages it has opened from it so far (42 bytes in all).
 *
 * Version 3 sits beside the datagram channel's versions 1 and 2 (dgram-seal.ts) on the same
 * socket, so one byte tells a probe from sealed datagrams. Kind: PROBE asks for an ANSWER; an
 * ANSWER and an ACK ask for nothing (no loop, and no packet is ever sent in reply to one that did not
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
export const ACK_BYTES = 42;
const SIGNED_BYTES = 10;
const ACK_SIGNED_BYTES = 26;
const TAG_BYTES = 16;

export const ProbeKind = { PROBE: 1, ANSWER: 2, ACK: 3 } as const;
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

/** What an ACK reports of the messages its sender opened from the lane. */
export interface AckReport {
  highest: number;
  received: number;
}

/**
 * A probe or answer (or, with `ack`, an ACK) with this side's `counter` (a safe integer,
 * rising across all three), signed with `key`.
 */
export function sealProbe(key: Buffer, kind: ProbeKind, counter: number, ack?: AckReport): Buffer {
  if (!safe(counter)) throw new RangeError(`probe counter ${counter}`);
  const isAck = kind === ProbeKind.ACK;
  if (isAck !== (ack !== undefined)) throw new RangeError('an ACK, and only an ACK, carries a report');
  const signed = isAck ? ACK_SIGNED_BYTES : SIGNED_BYTES;
  const out = Buffer.alloc(signed + TAG_BYTES);
  out[0] = LANE_VERSION;
  out[1] = kind;
  writeU64(out, 2, counter);
  if (ack) {
    if (!safe(ack.highest) || !safe(ack.received))
      throw new RangeError(`ACK report ${ack.highest}/${ack.received}`);
    writeU64(out, 10, ack.highest);
    writeU64(out, 18, ack.received);
  }
  tagOf(key, out, signed).copy(out, signed);
  return out;
}

export type ProbeDrop = 'short' | 'version' | 'kind' | 'auth';
export type OpenedProbe =
  | { ok: true; kind: ProbeKind; counter: number; ack?: AckReport }
  | { ok: false; reason: ProbeDrop };

/** A probe, answer or ACK signed with `key` (the peer's send key), or why it is not one. */
export function openProbe(key: Buffer, msg: Buffer): OpenedProbe {
  if (msg.length < 2) return { ok: false, reason: 'short' };
  if (msg[0] !== LANE_VERSION) return { ok: false, reason: 'version' };
  const kind = msg[1];
  if (kind !== ProbeKind.PROBE && kind !== ProbeKind.ANSWER && kind !== ProbeKind.ACK)
    return { ok: false, reason: 'kind' };
  const signed = kind === ProbeKind.ACK ? ACK_SIGNED_BYTES : SIGNED_BYTES;
  if (msg.length !== signed + TAG_BYTES) return { ok: false, reason: 'short' };
  if (!timingSafeEqual(tagOf(key, msg, signed), msg.subarray(signed))) return { ok: false, reason: 'auth' };
  // Past 2^53 a number would round: only a peer that sent 9e15 messages gets there.
  const counter = readU64(msg, 2);
  if (!safe(counter)) return { ok: false, reason: 'auth' };
  if (kind !== ProbeKind.ACK) return { ok: true, kind, counter };
  const ack = { highest: readU64(msg, 10), received: readU64(msg, 18) };
  if (!safe(ack.highest) || !safe(ack.received)) return { ok: false, reason: 'auth' };
  return { ok: true, kind, counter, ack };
}

const safe = (n: number) => Number.isSafeInteger(n) && n >= 0;
const readU64 = (b: Buffer, at: number) => b.readUInt32BE(at) * 2 ** 32 + b.readUInt32BE(at + 4);

function writeU64(b: Buffer, at: number, n: number): void {
  b.writeUInt32BE(Math.floor(n / 2 ** 32), at);
  b.writeUInt32BE(n >>> 0, at + 4);
}

function tagOf(key: Buffer, msg: Buffer, signed: number): Buffer {
  return createHmac('sha256', key).update(msg.subarray(0, signed)).digest().subarray(0, TAG_BYTES);
}
