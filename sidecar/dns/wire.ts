/**
 * DNS wire format (RFC 1035, EDNS0 RFC 6891): the hot-path query parser and the small
 * encoders the zone builder uses. Hand-written rather than dns-packet because the server
 * answers cluster names from pre-encoded bytes: a response is the query's own question
 * (so the client's letter case is echoed, 0x20) followed by answer records whose owner is
 * a compression pointer to that question (0xC00C). Parsing a query allocates one string.
 *
 *   header (12 bytes)
 *   +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 *   |                      ID                       |
 *   |QR|  Opcode   |AA|TC|RD|RA| Z|AD|CD|   RCODE   |
 *   |   QDCOUNT  |   ANCOUNT  |  NSCOUNT  | ARCOUNT  |
 *   +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 *   question: QNAME (labels) QTYPE(2) QCLASS(2)
 *   OPT pseudo-RR: 0x00 TYPE=41 CLASS=udp payload size TTL=extrcode|version|DO|Z RDLEN RDATA
 *
 * Every count is checked before any loop runs, so a 12-byte packet that claims 65535
 * questions is rejected in constant time.
 */
import { formatIp, ipv4Bytes, ipv6Bytes } from '../../lib/ip.ts';

export { ipv4Bytes, ipv6Bytes };

export const Type = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  IXFR: 251,
  AXFR: 252,
  ANY: 255,
} as const;

export const Rcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

export const CLASS_IN = 1;
export const HEADER_LEN = 12;
/** Plain DNS over UDP without EDNS0 (RFC 1035 4.2.1). */
export const UDP_LIMIT_PLAIN = 512;
/** The payload size we advertise and ask upstreams for (DNS flag day 2020: no fragmentation). */
export const EDNS_PAYLOAD = 1232;
/** Upper bound for UDP answers whatever the client advertises. */
export const UDP_LIMIT_MAX = 4096;
/** Largest query we accept: a question (≤ 255 + 4 bytes), an OPT with options, and slack. */
export const MAX_QUERY_LEN = 1024;

// Header flag bits (second 16-bit word).
export const FLAG_QR = 0x8000;
export const FLAG_AA = 0x0400;
export const FLAG_TC = 0x0200;
export const FLAG_RD = 0x0100;
export const FLAG_RA = 0x0080;
export const FLAG_AD = 0x0020;
export const FLAG_CD = 0x0010;

const TYPE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Type).map(([k, v]) => [v, k]));
/** A bounded label for metrics: known type names, or 'other'. */
export const typeName = (t: number): string =>
  TYPE_NAMES[t] ?? (t === 64 ? 'SVCB' : t === 65 ? 'HTTPS' : 'other');
export const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];
export const rcodeName = (r: number): string => RCODE_NAMES[r] ?? (r === 16 ? 'BADVERS' : `RCODE${r}`);

export interface Query {
  id: number;
  /** RD, CD and AD bits of the query, to echo/forward. */
  flags: number;
  /** Lower-case presentation name without the trailing dot ('' for the root). */
  name: string;
  /** True when a label holds a '.' or a byte outside printable ASCII: no cluster name can match. */
  oddName: boolean;
  qtype: number;
  qclass: number;
  /** Offset just past the question: bytes [12, questionEnd) are echoed in the response. */
  questionEnd: number;
  /** EDNS0 when the query carried an OPT record. */
  edns: { udpSize: number; dnssecOk: boolean } | undefined;
}

/** Why a packet was not a usable query; `reply` says which rcode to answer with, or to drop it. */
export interface QueryProblem {
  reason: string;
  /** undefined: drop silently (too short to carry an ID, or a response, which must never be answered). */
  rcode: number | undefined;
  id: number;
  /** Set for BADVERS so the reply carries an OPT. */
  edns?: boolean;
}

const scratch = Buffer.allocUnsafe(256);

/**
 * Parses and validates a query. Returns the query, or a problem saying whether to answer
 * FORMERR/NOTIMP/BADVERS or drop. Never throws, never loops more than the packet's length.
 */
export function parseQuery(buf: Buffer): Query | QueryProblem {
  const len = buf.length;
  if (len < HEADER_LEN) return { reason: 'short', rcode: undefined, id: 0 };
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  if (flags & FLAG_QR) return { reason: 'response', rcode: undefined, id };
  if (len > MAX_QUERY_LEN) return { reason: 'oversized', rcode: Rcode.FORMERR, id };
  const opcode = (flags >> 11) & 0xf;
  if (opcode !== 0) return { reason: 'opcode', rcode: Rcode.NOTIMP, id };
  const qdcount = buf.readUInt16BE(4);
  const ancount = buf.readUInt16BE(6);
  const nscount = buf.readUInt16BE(8);
  const arcount = buf.readUInt16BE(10);
  // A query has exactly one question, no answers or authority, and at most the OPT record.
  if (qdcount !== 1 || ancount !== 0 || nscount !== 0 || arcount > 1) {
    return { reason: 'counts', rcode: Rcode.FORMERR, id };
  }
  // QNAME: labels, no compression (nothing precedes it to point at), ≤ 255 bytes.
  let off = HEADER_LEN;
  let out = 0;
  let odd = false;
  for (;;) {
    if (off >= len) return { reason: 'name', rcode: Rcode.FORMERR, id };
    const l = buf[off];
    if (l === 0) {
      off += 1;
      break;
    }
    if (l > 63) return { reason: 'label', rcode: Rcode.FORMERR, id };
    if (off + 1 + l > len || off + 1 + l - HEADER_LEN > 254)
      return { reason: 'name', rcode: Rcode.FORMERR, id };
    if (out > 0) scratch[out++] = 0x2e;
    for (let i = off + 1; i <= off + l; i++) {
      let c = buf[i];
      if (c >= 0x41 && c <= 0x5a) c |= 0x20;
      else if (c === 0x2e || c <= 0x20 || c >= 0x7f) odd = true;
      scratch[out++] = c;
    }
    off += 1 + l;
  }
  if (off + 4 > len) return { reason: 'question', rcode: Rcode.FORMERR, id };
  const qtype = buf.readUInt16BE(off);
  const qclass = buf.readUInt16BE(off + 2);
  const questionEnd = off + 4;
  let edns: Query['edns'];
  off = questionEnd;
  if (arcount === 1) {
    // Only OPT is accepted in a query's additional section (no TSIG/SIG(0) support).
    if (off + 11 > len || buf[off] !== 0 || buf.readUInt16BE(off + 1) !== Type.OPT) {
      return { reason: 'additional', rcode: Rcode.FORMERR, id };
    }
    const udpSize = buf.readUInt16BE(off + 3);
    const version = buf[off + 6];
    const dnssecOk = (buf[off + 7] & 0x80) !== 0;
    const rdlen = buf.readUInt16BE(off + 9);
    if (off + 11 + rdlen > len) return { reason: 'opt', rcode: Rcode.FORMERR, id };
    off += 11 + rdlen;
    if (version !== 0) return { reason: 'badvers', rcode: 16, id, edns: true };
    edns = { udpSize, dnssecOk };
  }
  if (off !== len) return { reason: 'trailing', rcode: Rcode.FORMERR, id };
  return {
    id,
    flags: flags & (FLAG_RD | FLAG_CD | FLAG_AD),
    name: scratch.toString('latin1', 0, out),
    oddName: odd,
    qtype,
    qclass,
    questionEnd,
    edns,
  };
}

export const isProblem = (q: Query | QueryProblem): q is QueryProblem => 'reason' in q;

/** The UDP size limit for the answer to `q` (RFC 6891 6.2.5: below 512 means 512). */
export function udpLimit(q: Query): number {
  if (!q.edns) return UDP_LIMIT_PLAIN;
  return Math.min(Math.max(q.edns.udpSize, UDP_LIMIT_PLAIN), UDP_LIMIT_MAX);
}

/** Our OPT record: root owner, payload EDNS_PAYLOAD, extended rcode bits, version 0, no options. */
export function optRecord(extRcode = 0): Buffer {
  const b = Buffer.alloc(11);
  b.writeUInt16BE(Type.OPT, 1);
  b.writeUInt16BE(EDNS_PAYLOAD, 3);
  b[5] = extRcode;
  return b;
}
export const OPT_RECORD = optRecord();

/** Header-only error answer (no question) for packets whose question could not be parsed. */
export function errorResponse(p: QueryProblem): Buffer {
  const withOpt = p.edns === true;
  const b = Buffer.alloc(HEADER_LEN + (withOpt ? 11 : 0));
  b.writeUInt16BE(p.id, 0);
  const rcode = p.rcode ?? Rcode.FORMERR;
  b.writeUInt16BE(FLAG_QR | (rcode & 0xf), 2);
  if (withOpt) {
    b.writeUInt16BE(1, 10);
    optRecord(rcode >> 4).copy(b, HEADER_LEN);
  }
  return b;
}

// ---------------------------------------------------------------------------------------
// Encoders used when preparing records (not on the per-query path).

/** Wire form of a presentation name ('' or '.' is the root). Throws on an invalid name. */
export function encodeName(name: string): Buffer {
  const trimmed = name.endsWith('.') ? name.slice(0, -1) : name;
  if (trimmed === '') return Buffer.from([0]);
  if (trimmed.length + 2 > 255) throw new Error(`name too long: ${name}`);
  // One byte per character (latin1), written once after a length byte; then each dot's byte
  // becomes the length of the label after it: the wire form without a buffer per label.
  const out = Buffer.allocUnsafe(trimmed.length + 2);
  out.write(trimmed, 1, 'latin1');
  out[trimmed.length + 1] = 0;
  let lengthAt = 0;
  for (let i = 0; i <= trimmed.length; i++) {
    if (i < trimmed.length && trimmed.charCodeAt(i) !== 0x2e) continue;
    const length = i - lengthAt;
    if (length === 0 || length > 63) throw new Error(`invalid label in ${JSON.stringify(name)}`);
    out[lengthAt] = length;
    lengthAt = i + 1;
  }
  return out;
}

/** One resource record; `owner` is either an encoded name or the 2-byte pointer 0xC00C. */
export function encodeRecord(owner: Buffer, type: number, ttl: number, rdata: Buffer): Buffer {
  const b = Buffer.allocUnsafe(owner.length + 10 + rdata.length);
  owner.copy(b, 0);
  let o = owner.length;
  b.writeUInt16BE(type, o);
  b.writeUInt16BE(CLASS_IN, o + 2);
  b.writeUInt32BE(ttl >>> 0, o + 4);
  b.writeUInt16BE(rdata.length, o + 8);
  o += 10;
  rdata.copy(b, o);
  return b;
}

/** Compression pointer to the question name, which always starts right after the header. */
export const QNAME_POINTER = Buffer.from([0xc0, HEADER_LEN]);

/** in-addr.arpa / ip6.arpa (nibble) name of an address, lower-case, no trailing dot. */
export function reverseName(ip: string): string {
  if (ip.includes(':')) {
    const hex = ipv6Bytes(ip).toString('hex');
    return `${[...hex].reverse().join('.')}.ip6.arpa`;
  }
  return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
}

/** Canonical text of an IPv6 address (RFC 5952), for dashed names and comparisons. */
export function canonicalIPv6(ip: string): string {
  return formatIp(ipv6Bytes(ip));
}

/** TXT rdata: one or more length-prefixed character strings. */
export function txtRdata(strings: string[]): Buffer {
  return Buffer.concat(strings.flatMap((s) => [Buffer.from([s.length]), Buffer.from(s, 'latin1')]));
}

/** `target`: a name, or one already encoded (encodeName). */
export function srvRdata(priority: number, weight: number, port: number, target: string | Buffer): Buffer {
  const name = typeof target === 'string' ? encodeName(target) : target;
  const b = Buffer.allocUnsafe(6 + name.length);
  b.writeUInt16BE(priority, 0);
  b.writeUInt16BE(weight, 2);
  b.writeUInt16BE(port, 4);
  name.copy(b, 6);
  return b;
}

export function soaRdata(mname: string, rname: string, serial: number, minimum: number): Buffer {
  const nums = Buffer.alloc(20);
  nums.writeUInt32BE(serial >>> 0, 0);
  nums.writeUInt32BE(7200, 4); // refresh
  nums.writeUInt32BE(1800, 8); // retry
  nums.writeUInt32BE(86400, 12); // expire
  nums.writeUInt32BE(minimum, 16); // negative-caching TTL (RFC 2308)
  return Buffer.concat([encodeName(mname), encodeName(rname), nums]);
}
