/**
 * IP addresses: text ⇄ bytes and the one canonical text form. The only place the project
 * parses or formats addresses (tunnel frames, DNS records, original destinations, CIDRs,
 * catalog validation and route tables all use it).
 *
 * Canonical text: IPv4 dotted quad; IPv6 lower case, hex groups, the longest run of two or
 * more zero groups compressed (RFC 5952 §4), as the URL parser writes it. Node prints socket
 * addresses the same way except for an IPv4-mapped address's dotted tail (`::ffff:1.2.3.4`):
 * `formatIp(b, { mappedDotted: true })` gives that form.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** Canonical text of an IP address, or undefined when `text` is not one (zone ids refused). */
export function canonicalIP(text: string): string | undefined {
  if (isIPv4(text)) return text;
  if (!isIPv6(text) || text.includes('%')) return undefined;
  return formatIp(ipv6Bytes(text));
}

/** 4 or 16 bytes of an address; undefined when `text` is not an IP address. */
export function ipToBytes(text: string): Buffer | undefined {
  if (isIPv4(text)) return ipv4Bytes(text);
  if (isIPv6(text) && !text.includes('%')) return ipv6Bytes(text);
  return undefined;
}

/**
 * 4 bytes of a dotted quad. The caller has checked it is one (isIPv4). Read digit by digit:
 * an A record per service an on-demand sidecar learns is built from one, and split/map/from
 * made three arrays and a copy for four bytes.
 */
export function ipv4Bytes(ip: string): Buffer {
  const b = Buffer.allocUnsafe(4);
  let at = 0;
  let octet = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 0x2e) {
      b[at++] = octet;
      octet = 0;
    } else octet = octet * 10 + (c - 0x30);
  }
  b[at] = octet;
  return b;
}

/** 16 bytes of an IPv6 address ("::" and a trailing dotted IPv4 accepted). The caller has checked it (isIPv6). */
export function ipv6Bytes(ip: string): Buffer {
  let text = ip;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    const v4 = ipv4Bytes(text.slice(lastColon + 1));
    tail.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
    text = text.slice(0, lastColon + 1);
    if (!text.endsWith('::')) text = text.slice(0, -1);
  }
  const groups = (s: string) => (s === '' ? [] : s.split(':').map((g) => Number.parseInt(g, 16)));
  let words: number[];
  if (text.includes('::')) {
    const [head, rest] = text.split('::');
    const h = groups(head);
    const r = groups(rest);
    words = [...h, ...new Array(8 - h.length - r.length - tail.length).fill(0), ...r, ...tail];
  } else {
    words = [...groups(text), ...tail];
  }
  const b = Buffer.alloc(16);
  words.forEach((w, i) => {
    b.writeUInt16BE(w, i * 2);
  });
  return b;
}

/**
 * Canonical text of 4 or 16 address bytes. `mappedDotted` keeps an IPv4-mapped address's
 * dotted tail as Node prints socket addresses (default: hex groups, the canonical form).
 */
export function formatIp(b: Uint8Array, opts: { mappedDotted?: boolean } = {}): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) throw new Error(`an IP address has 4 or 16 bytes, not ${b.length}`);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (opts.mappedDotted && bestStart === 0 && bestLen === 5 && groups[5] === 0xffff)
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}
