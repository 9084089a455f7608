import { ageTtls, type CacheHit } from './cache.ts';
import { FLAG_AA, FLAG_QR, FLAG_RA, FLAG_TC, HEADER_LEN, OPT_RECORD, type Query } from './wire.ts';
import type { LocalAnswer } from './zone.ts';

/**
 * Response assembly: header + the query's own question bytes (letter case preserved) +
 * pre-encoded sections + our OPT when the client used EDNS0. When the result exceeds the
 * transport limit, glue is dropped first (RFC 2181 9), then the answer is replaced by an
 * empty one with TC set so the client retries over TCP.
 */
export interface ExtraRecords {
  count: number;
  bytes: Buffer;
}

export function localResponse(
  src: Buffer,
  q: Query,
  a: LocalAnswer,
  limit: number,
  authoritative = true,
  chased?: ExtraRecords,
): Buffer {
  const qlen = q.questionEnd - HEADER_LEN;
  const opt = q.edns ? OPT_RECORD.length : 0;
  const an = a.answer;
  const ansLen = (an?.bytes.length ?? 0) + (chased?.bytes.length ?? 0);
  const nsLen = a.authority?.length ?? 0;
  let glueLen = an?.glue.length ?? 0;
  let size = HEADER_LEN + qlen + ansLen + nsLen + glueLen + opt;
  if (size > limit && glueLen > 0) {
    size -= glueLen;
    glueLen = 0;
  }
  const flags = FLAG_QR | (authoritative ? FLAG_AA : 0) | FLAG_RA | (q.flags & 0x0110) | (a.rcode & 0xf);
  if (size > limit) return truncated(src, q, flags);
  const out = Buffer.allocUnsafe(size);
  out.writeUInt16BE(q.id, 0);
  out.writeUInt16BE(flags, 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE((an?.count ?? 0) + (chased?.count ?? 0), 6);
  out.writeUInt16BE(a.authority ? 1 : 0, 8);
  out.writeUInt16BE((glueLen > 0 ? an!.glueCount : 0) + (opt ? 1 : 0), 10);
  src.copy(out, HEADER_LEN, HEADER_LEN, q.questionEnd);
  let o = q.questionEnd;
  if (an) o += an.bytes.copy(out, o);
  if (chased) o += chased.bytes.copy(out, o);
  if (a.authority) o += a.authority.copy(out, o);
  if (glueLen > 0) o += an!.glue.copy(out, o);
  if (opt) OPT_RECORD.copy(out, o);
  return out;
}

/** An answer with no records: rcode only (SERVFAIL, NXDOMAIN without authority, REFUSED, NOTIMP). */
export function emptyResponse(src: Buffer, q: Query, rcode: number, limit = 65535): Buffer {
  return localResponse(src, q, { rcode }, limit, false);
}

/**
 * An upstream (or cached) response re-addressed to this client: its ID, its question's case,
 * its OPT; a cache hit also gets its TTLs counted down.
 */
export function forwardedResponse(
  src: Buffer,
  q: Query,
  upstream: Buffer,
  limit: number,
  hit?: CacheHit,
): Buffer {
  const opt = q.edns ? OPT_RECORD.length : 0;
  const size = upstream.length + opt;
  // We recurse for the client (through the upstream), so RA is set whatever the upstream said.
  const flags = upstream.readUInt16BE(2) | FLAG_RA;
  if (size > limit) return truncated(src, q, flags);
  const out = Buffer.allocUnsafe(size);
  upstream.copy(out, 0);
  if (hit) ageTtls(out, hit);
  out.writeUInt16BE(q.id, 0);
  out.writeUInt16BE(flags, 2);
  src.copy(out, HEADER_LEN, HEADER_LEN, q.questionEnd);
  if (opt) {
    OPT_RECORD.copy(out, upstream.length);
    out.writeUInt16BE(out.readUInt16BE(10) + 1, 10);
  }
  return out;
}

/** TC set, no records: the client retries over TCP (RFC 1035 4.2.1, RFC 7766). */
function truncated(src: Buffer, q: Query, flags: number): Buffer {
  const opt = q.edns ? OPT_RECORD.length : 0;
  const out = Buffer.allocUnsafe(q.questionEnd + opt);
  out.writeUInt16BE(q.id, 0);
  out.writeUInt16BE(flags | FLAG_TC, 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt32BE(0, 6);
  out.writeUInt16BE(opt ? 1 : 0, 10);
  src.copy(out, HEADER_LEN, HEADER_LEN, q.questionEnd);
  if (opt) OPT_RECORD.copy(out, q.questionEnd);
  return out;
}
