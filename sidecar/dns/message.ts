import { HEADER_LEN, Rcode, Type } from './wire.ts';

/**
 * Reading upstream responses without decoding them: a bounded walk over the records that
 * checks the structure and notes where each TTL lives, so a cached answer can be served with
 * TTLs counted down by patching bytes in place. The OPT record is removed (each client gets
 * our own OPT, or none if it sent none).
 */
export interface InspectedResponse {
  rcode: number;
  truncated: boolean;
  /** The response without its OPT record (arcount adjusted). */
  bytes: Buffer;
  /** Offsets (in `bytes`) of every TTL field, with the TTL found there. */
  ttlOffsets: number[];
  ttls: number[];
  /** How long the response may be cached (RFC 2308 for negative answers); 0 = do not cache. */
  cacheTtl: number;
}

/** Skips a (possibly compressed) name at `off`; returns the offset after it, or -1. */
export function skipName(buf: Buffer, off: number): number {
  let total = 0;
  for (let guard = 0; guard < 128; guard++) {
    if (off >= buf.length) return -1;
    const l = buf[off];
    if (l === 0) return off + 1;
    if ((l & 0xc0) === 0xc0) return off + 2 <= buf.length ? off + 2 : -1;
    if (l > 63) return -1;
    total += l + 1;
    if (total > 255) return -1;
    off += 1 + l;
  }
  return -1;
}

/** True when the question at offset 12 of both messages is the same name (ignoring ASCII case), type and class. */
export function sameQuestion(a: Buffer, b: Buffer, qEnd: number): boolean {
  if (b.length < qEnd || a.length < qEnd) return false;
  for (let i = HEADER_LEN; i < qEnd; i++) {
    let x = a[i];
    let y = b[i];
    if (x >= 0x41 && x <= 0x5a) x |= 0x20;
    if (y >= 0x41 && y <= 0x5a) y |= 0x20;
    if (x !== y) return false;
  }
  return true;
}

/**
 * Validates an upstream response to a question that ends at `qEnd` and prepares it for the
 * cache. Returns undefined when the message is malformed (the caller answers SERVFAIL).
 */
export function inspectResponse(raw: Buffer, qEnd: number, maxTtl: number): InspectedResponse | undefined {
  let buf = raw;
  const len = buf.length;
  if (len < qEnd || buf.readUInt16BE(4) !== 1) return undefined;
  const flags = buf.readUInt16BE(2);
  const ancount = buf.readUInt16BE(6);
  const nscount = buf.readUInt16BE(8);
  const arcount = buf.readUInt16BE(10);
  const total = ancount + nscount + arcount;
  // Every record takes at least 11 bytes: reject impossible counts before looping.
  if (total * 11 > len - qEnd) return undefined;
  const offsets: number[] = [];
  const ttls: number[] = [];
  let minAnswerTtl = Number.POSITIVE_INFINITY;
  let negativeTtl: number | undefined;
  let optStart = -1;
  let optEnd = -1;
  let off = qEnd;
  for (let i = 0; i < total; i++) {
    const start = off;
    off = skipName(buf, off);
    if (off < 0 || off + 10 > len) return undefined;
    const type = buf.readUInt16BE(off);
    // RFC 2181 §8: a TTL with the top bit set (e.g. 0xFFFFFFFF) is to be treated as 0.
    const wireTtl = buf.readUInt32BE(off + 4);
    const ttl = wireTtl > 0x7fffffff && type !== Type.OPT ? 0 : wireTtl;
    if (ttl !== wireTtl) {
      if (buf === raw) buf = Buffer.from(raw); // never write into the caller's buffer
      buf.writeUInt32BE(0, off + 4);
    }
    const rdlen = buf.readUInt16BE(off + 8);
    const end = off + 10 + rdlen;
    if (end > len) return undefined;
    if (type === Type.OPT) {
      if (i < ancount + nscount || optStart >= 0) return undefined;
      optStart = start;
      optEnd = end;
    } else {
      offsets.push(off + 4);
      ttls.push(ttl);
      if (i < ancount + nscount) minAnswerTtl = Math.min(minAnswerTtl, ttl);
      if (type === Type.SOA && i >= ancount && i < ancount + nscount && rdlen >= 22) {
        negativeTtl = Math.min(ttl, buf.readUInt32BE(end - 4));
      }
    }
    off = end;
  }
  if (off !== len) return undefined;
  const rcode = flags & 0xf;
  let bytes = buf;
  if (optStart >= 0) {
    // Only an OPT at the very end can be cut without moving other records (and pointers).
    if (optEnd !== len) return undefined;
    bytes = Buffer.from(buf.subarray(0, optStart));
    bytes.writeUInt16BE(arcount - 1, 10);
  }
  const truncated = (flags & 0x0200) !== 0;
  let cacheTtl = 0;
  if (!truncated && rcode === Rcode.NOERROR && ancount > 0) cacheTtl = minAnswerTtl;
  else if (!truncated && (rcode === Rcode.NXDOMAIN || (rcode === Rcode.NOERROR && ancount === 0)))
    cacheTtl = negativeTtl ?? 0;
  return {
    rcode,
    truncated,
    bytes,
    ttlOffsets: offsets,
    ttls,
    cacheTtl: Math.min(cacheTtl, maxTtl),
  };
}
