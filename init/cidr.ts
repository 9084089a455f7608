import { isIPv4, isIPv6 } from 'node:net';
import { formatIp, ipToBytes } from '../lib/ip.ts';

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
  // Clear the host bits in the address bytes, then print them canonically.
  const bytes = ipToBytes(addr) as Buffer;
  for (let bit = len; bit < bits; bit++) bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
  return { family, text: `${formatIp(bytes)}/${len}` };
}
