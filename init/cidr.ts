import { isIPv4, isIPv6 } from 'node:net';

/** An address range in the canonical text iptables itself prints (host bits cleared). */
export interface Cidr {
  family: 4 | 6;
  /** e.g. "10.0.0.0/8" or "fd00::/8". */
  text: string;
}

/**
 * Parses "a.b.c.d/len", "v6addr/len" or a bare address (a single host: /32 or /128).
 * Host bits are cleared so the rule text matches what iptables-save shows and two spellings
 * of one range produce one rule. Returns a problem description instead of throwing.
 */
export function parseCidr(input: string): Cidr | string {
  const slash = input.indexOf('/');
  const addr = slash === -1 ? input : input.slice(0, slash);
  const lenText = slash === -1 ? undefined : input.slice(slash + 1);
  const family = isIPv4(addr) ? 4 : isIPv6(addr) && !addr.includes('%') ? 6 : undefined;
  if (family === undefined) return `${JSON.stringify(input)} is not an IPv4 or IPv6 address or CIDR`;
  const bits = family === 4 ? 32 : 128;
  let len = bits;
  if (lenText !== undefined) {
    if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > bits) {
      return `${JSON.stringify(input)} has an invalid prefix length (0-${bits} for IPv${family})`;
    }
    len = Number(lenText);
  }
  const value = family === 4 ? v4ToBigInt(addr) : v6ToBigInt(addr);
  const mask = len === 0 ? 0n : ((1n << BigInt(len)) - 1n) << BigInt(bits - len);
  const network = value & mask;
  const text = family === 4 ? v4FromBigInt(network) : v6FromBigInt(network);
  return { family, text: `${text}/${len}` };
}

function v4ToBigInt(addr: string): bigint {
  return addr.split('.').reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n);
}

function v4FromBigInt(n: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((n >> shift) & 0xffn)).join('.');
}

function v6ToBigInt(addr: string): bigint {
  let text = addr;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hextets.
  const v4Tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4Tail) {
    const v4 = v4ToBigInt(v4Tail[1]);
    text = `${text.slice(0, v4Tail.index)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const headParts = head ? head.split(':') : [];
  const tailParts = tail ? tail.split(':') : [];
  const missing = 8 - headParts.length - tailParts.length;
  const parts = tail === undefined ? headParts : [...headParts, ...Array(missing).fill('0'), ...tailParts];
  return parts.reduce((acc, h) => (acc << 16n) | BigInt(Number.parseInt(h, 16)), 0n);
}

/** RFC 5952 text: lower case, longest run (≥ 2) of zero hextets as "::". */
function v6FromBigInt(n: bigint): string {
  const hextets = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt((7 - i) * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (hextets[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && hextets[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = hextets.map((h) => h.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}
