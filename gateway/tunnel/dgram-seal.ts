/**
 * The datagram channel's wire format (docs/udp.md *Datagrams without head-of-line blocking*):
 * one UDP datagram of a datagram stream per message on the UDP path's second data channel
 * (unordered, maxRetransmits 0), sealed with keys only the two gateways' own TLS session
 * knows. Pure: no sockets, no clocks.
 *
 *    0               1               2               3               4
 *   +---------------+---------------+---------------+---------------+---------------+
 *   | version (1)   |              stream id (u32, big endian)                      |
 *   +---------------+---------------+---------------+---------------+---------------+
 *   |                      sequence number (u64, big endian)                        |
 *   +-------------------------------------------------------------------------------+
 *   |  ciphertext (the datagram, 0..MAX_DATAGRAM bytes, AES-128-GCM)  ...           |
 *   +-------------------------------------------------------------------------------+
 *   |  tag (16 bytes)                                                               |
 *   +-------------------------------------------------------------------------------+
 *
 * The 13-byte header is the AEAD's additional data: version, stream id and sequence number
 * are authenticated, so a relay cannot move a datagram to another flow or replay it under
 * another number. Stream id: the mux stream (OPEN_DATAGRAM) the datagram belongs to, in the
 * numbering of the session it is bound to (odd: opened by the TLS client). Sequence number:
 * per direction, from 0, one per message, never reused under a key.
 *
 * Keys: the TLS 1.3 exporter (RFC 8446 §7.5) of the gateways' session on the reliable
 * channel, label EXPORTER_LABEL, context the epoch (u32 BE), 56 bytes: client→server key (16),
 * server→client key (16), client→server IV (12), server→client IV (12). Epoch = seq / 2^24:
 * every 2^24 datagrams both ends derive fresh keys without a message (TLS 1.3's AES-GCM
 * limit is 2^24.5 full records per key). Nonce = IV XOR seq (TLS 1.3's record nonce).
 * Whoever relayed the signalling or the DTLS under it knows none of this: the exporter is
 * derived from the handshake that proved both node certificates.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto';
import { MAX_DATAGRAM } from '../../lib/tunnel/frame.ts';

export const CHANNEL_VERSION = 1;
export const SEAL_HEADER_BYTES = 13;
export const SEAL_TAG_BYTES = 16;
export const SEAL_OVERHEAD = SEAL_HEADER_BYTES + SEAL_TAG_BYTES;
export const EXPORTER_LABEL = 'EXPORTER-edgemesh-datagram-channel';
export const EXPORTER_BYTES = 56;
/** Datagrams per key (per direction) before the next epoch's key is used. */
export const EPOCH_SEQS = 2 ** 24;
/** Out-of-order arrivals still taken: this many sequence numbers below the highest seen. */
export const REPLAY_WINDOW = 2048;

export interface DirectionKey {
  /**
   * A KeyObject, made once per epoch: given raw bytes, every createCipheriv imports the key
   * anew (OpenSSL 3), 20-42 us per datagram on this VM against 3.5-8.5 us with a KeyObject.
   */
  key: KeyObject;
  iv: Buffer;
}

export interface EpochKeys {
  send: DirectionKey;
  receive: DirectionKey;
}

/** One epoch's exporter output → this end's send and receive keys (`role`: its TLS role). */
export function splitExported(material: Buffer, role: 'client' | 'server'): EpochKeys {
  if (material.length !== EXPORTER_BYTES)
    throw new Error(`datagram channel: exporter gave ${material.length} bytes, expected ${EXPORTER_BYTES}`);
  const c2s = { key: createSecretKey(material.subarray(0, 16)), iv: material.subarray(32, 44) };
  const s2c = { key: createSecretKey(material.subarray(16, 32)), iv: material.subarray(44, 56) };
  return role === 'client' ? { send: c2s, receive: s2c } : { send: s2c, receive: c2s };
}

export const epochOf = (seq: number): number => Math.floor(seq / EPOCH_SEQS);

function nonce(iv: Buffer, seq: number): Buffer {
  const n = Buffer.from(iv);
  const hi = Math.floor(seq / 2 ** 32);
  const lo = seq >>> 0;
  n.writeUInt32BE((n.readUInt32BE(4) ^ hi) >>> 0, 4);
  n.writeUInt32BE((n.readUInt32BE(8) ^ lo) >>> 0, 8);
  return n;
}

function writeHeader(out: Buffer, stream: number, seq: number): void {
  out[0] = CHANNEL_VERSION;
  out.writeUInt32BE(stream, 1);
  out.writeUInt32BE(Math.floor(seq / 2 ** 32), 5);
  out.writeUInt32BE(seq >>> 0, 9);
}

/** One datagram as a channel message. `seq` must be new for `key` (the caller's counter). */
export function sealDatagram(key: DirectionKey, stream: number, seq: number, payload: Uint8Array): Buffer {
  if (payload.length > MAX_DATAGRAM)
    throw new Error(
      `datagram channel: ${payload.length}-byte datagram is over the ${MAX_DATAGRAM}-byte maximum`,
    );
  if (!Number.isSafeInteger(seq) || seq < 0) throw new Error(`datagram channel: bad sequence number ${seq}`);
  if (!Number.isInteger(stream) || stream < 1 || stream > 0xffff_ffff)
    throw new Error(`datagram channel: bad stream id ${stream}`);
  const out = Buffer.allocUnsafe(SEAL_OVERHEAD + payload.length);
  writeHeader(out, stream, seq);
  const cipher = createCipheriv('aes-128-gcm', key.key, nonce(key.iv, seq));
  cipher.setAAD(out.subarray(0, SEAL_HEADER_BYTES));
  const body = cipher.update(payload);
  body.copy(out, SEAL_HEADER_BYTES);
  cipher.final(); // GCM: no bytes held back
  cipher.getAuthTag().copy(out, SEAL_HEADER_BYTES + payload.length);
  return out;
}

export type Opened =
  | { ok: true; stream: number; seq: number; payload: Buffer }
  | { ok: false; reason: 'short' | 'version' | 'stream' | 'too-long' | 'auth' | 'no-key' };

/**
 * A channel message → its datagram, or why it was dropped. Never throws: whatever arrives
 * (a stale, forged or garbled message) is dropped and counted, never fatal to the session.
 * `keyOf(epoch)` gives the receive key of an epoch, undefined for one not accepted (the
 * caller allows the current and the next). Replay is the caller's check (ReplayWindow),
 * after this one passed, so forged numbers never move its window.
 */
export function openDatagram(keyOf: (epoch: number) => DirectionKey | undefined, msg: Uint8Array): Opened {
  if (msg.length < SEAL_OVERHEAD) return { ok: false, reason: 'short' };
  const buf = Buffer.isBuffer(msg) ? msg : Buffer.from(msg.buffer, msg.byteOffset, msg.length);
  if (buf[0] !== CHANNEL_VERSION) return { ok: false, reason: 'version' };
  const stream = buf.readUInt32BE(1);
  if (stream === 0) return { ok: false, reason: 'stream' };
  const seq = buf.readUInt32BE(5) * 2 ** 32 + buf.readUInt32BE(9);
  if (!Number.isSafeInteger(seq)) return { ok: false, reason: 'auth' }; // never sent by a peer
  const length = buf.length - SEAL_OVERHEAD;
  if (length > MAX_DATAGRAM) return { ok: false, reason: 'too-long' };
  const key = keyOf(epochOf(seq));
  if (!key) return { ok: false, reason: 'no-key' };
  const decipher = createDecipheriv('aes-128-gcm', key.key, nonce(key.iv, seq));
  decipher.setAAD(buf.subarray(0, SEAL_HEADER_BYTES));
  decipher.setAuthTag(buf.subarray(SEAL_HEADER_BYTES + length));
  const payload = decipher.update(buf.subarray(SEAL_HEADER_BYTES, SEAL_HEADER_BYTES + length));
  try {
    decipher.final();
  } catch {
    return { ok: false, reason: 'auth' };
  }
  return { ok: true, stream, seq, payload };
}

/**
 * A bundle (version 2, only to a peer that announced it in the signalling, dgram-channel.ts):
 * the datagrams one gateway had for the channel in one event-loop turn, sealed once and sent
 * as one message, so the per-message costs (a cipher per datagram, the SCTP message, the DTLS
 * record and the sendto under it) are paid per turn, not per datagram.
 *
 *   | version (2) | sequence number (u64 BE) | ciphertext of records ... | tag (16) |
 *   record: | stream id (u32 BE) | length (u16 BE) | payload (length bytes) |
 *
 * The 9-byte header is the additional data; one sequence number (and one nonce) per message,
 * from the same counter as version 1's, so replay and epochs work unchanged.
 */
export const BUNDLE_VERSION = 2;
export const BUNDLE_HEADER_BYTES = 9;
export const RECORD_HEADER_BYTES = 6;
/**
 * A bundle's records at most: about three SCTP packets under DTLS. A lost packet loses the
 * whole message, so a larger bundle would turn one loss into more.
 */
export const BUNDLE_MAX_RECORDS_BYTES = 3600;

/** Records (already laid out as above) as one bundle message. `seq` must be new for `key`. */
export function sealBundle(key: DirectionKey, seq: number, records: Uint8Array): Buffer {
  if (records.length > BUNDLE_MAX_RECORDS_BYTES)
    throw new Error(`datagram channel: ${records.length}-byte bundle is over ${BUNDLE_MAX_RECORDS_BYTES}`);
  if (!Number.isSafeInteger(seq) || seq < 0) throw new Error(`datagram channel: bad sequence number ${seq}`);
  const out = Buffer.allocUnsafe(BUNDLE_HEADER_BYTES + records.length + SEAL_TAG_BYTES);
  out[0] = BUNDLE_VERSION;
  out.writeUInt32BE(Math.floor(seq / 2 ** 32), 1);
  out.writeUInt32BE(seq >>> 0, 5);
  const cipher = createCipheriv('aes-128-gcm', key.key, nonce(key.iv, seq));
  cipher.setAAD(out.subarray(0, BUNDLE_HEADER_BYTES));
  cipher.update(records).copy(out, BUNDLE_HEADER_BYTES);
  cipher.final();
  cipher.getAuthTag().copy(out, BUNDLE_HEADER_BYTES + records.length);
  return out;
}

export type OpenedBundle =
  | { ok: true; seq: number; records: Buffer }
  | { ok: false; reason: 'short' | 'version' | 'too-long' | 'auth' | 'no-key' };

/** A bundle message → its records' plaintext (eachRecord walks it), or why it was dropped. Never throws. */
export function openBundle(
  keyOf: (epoch: number) => DirectionKey | undefined,
  msg: Uint8Array,
): OpenedBundle {
  if (msg.length < BUNDLE_HEADER_BYTES + SEAL_TAG_BYTES) return { ok: false, reason: 'short' };
  const buf = Buffer.isBuffer(msg) ? msg : Buffer.from(msg.buffer, msg.byteOffset, msg.length);
  if (buf[0] !== BUNDLE_VERSION) return { ok: false, reason: 'version' };
  const length = buf.length - BUNDLE_HEADER_BYTES - SEAL_TAG_BYTES;
  if (length > BUNDLE_MAX_RECORDS_BYTES) return { ok: false, reason: 'too-long' };
  const seq = buf.readUInt32BE(1) * 2 ** 32 + buf.readUInt32BE(5);
  if (!Number.isSafeInteger(seq)) return { ok: false, reason: 'auth' };
  const key = keyOf(epochOf(seq));
  if (!key) return { ok: false, reason: 'no-key' };
  const decipher = createDecipheriv('aes-128-gcm', key.key, nonce(key.iv, seq));
  decipher.setAAD(buf.subarray(0, BUNDLE_HEADER_BYTES));
  decipher.setAuthTag(buf.subarray(BUNDLE_HEADER_BYTES + length));
  const records = decipher.update(buf.subarray(BUNDLE_HEADER_BYTES, BUNDLE_HEADER_BYTES + length));
  try {
    decipher.final();
  } catch {
    return { ok: false, reason: 'auth' };
  }
  return { ok: true, seq, records };
}

/**
 * Calls `each` per record of an opened bundle (payloads are views of `records`); false when
 * the records do not parse (a stream id 0, or a length past the end): those after the fault
 * are not delivered. Authenticated, so only a faulty peer sends such a bundle.
 */
export function eachRecord(records: Buffer, each: (stream: number, payload: Buffer) => void): boolean {
  let at = 0;
  while (at < records.length) {
    if (records.length - at < RECORD_HEADER_BYTES) return false;
    const stream = records.readUInt32BE(at);
    const length = records.readUInt16BE(at + 4);
    const end = at + RECORD_HEADER_BYTES + length;
    if (stream === 0 || end > records.length) return false;
    each(stream, records.subarray(at + RECORD_HEADER_BYTES, end));
    at = end;
  }
  return true;
}

/**
 * Sequence numbers already taken, for one direction: anything above the highest seen, or
 * within REPLAY_WINDOW below it and not seen yet (RFC 6479's bitmap, as WireGuard keeps it).
 * The channel is unordered, so later datagrams may arrive first; a replayed one is refused.
 */
export class ReplayWindow {
  readonly #bits = new Uint32Array(REPLAY_WINDOW / 32);
  #highest = -1;

  /** True (and remembered) when `seq` is new; false for a repeat or one too old. */
  accept(seq: number): boolean {
    const words = this.#bits.length;
    if (seq > this.#highest) {
      // Clear the words the window slides onto (all of them after a long jump); the highest's
      // own word keeps its bits.
      const fromWord = Math.floor(this.#highest / 32) + 1;
      const toWord = Math.floor(seq / 32);
      for (let w = fromWord; w <= toWord && w - fromWord < words; w++) this.#bits[w % words] = 0;
      this.#highest = seq;
    } else if (this.#highest - seq >= REPLAY_WINDOW - 32) {
      return false; // below the window (a word's slack keeps the ring exact)
    }
    const w = Math.floor(seq / 32) % words;
    const bit = 1 << (seq % 32);
    if (this.#bits[w] & bit) return false;
    this.#bits[w] |= bit;
    return true;
  }
}
