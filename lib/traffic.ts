import { isIP } from 'node:net';

/**
 * Per-pod traffic options: the pod annotations the webhook reads and the `edgemesh init`
 * flags they become. One table, so the annotation names, the flag names and the value
 * syntax cannot drift apart; the same validators run in the webhook (to deny a bad pod with
 * a clear message at admission) and in init (to refuse a bad flag).
 */
export const TRAFFIC_OPTIONS = [
  {
    annotation: 'traffic.edgemesh.io/exclude-outbound-ports',
    flag: 'exclude-outbound-ports',
    parse: parsePortList,
  },
  {
    annotation: 'traffic.edgemesh.io/exclude-outbound-ip-ranges',
    flag: 'exclude-outbound-ip-ranges',
    parse: parseCidrList,
  },
  {
    annotation: 'traffic.edgemesh.io/include-outbound-ip-ranges',
    flag: 'include-outbound-ip-ranges',
    parse: parseIncludeRanges,
  },
  { annotation: 'traffic.edgemesh.io/capture-dns', flag: 'capture-dns', parse: parseBool },
  // DNS to every address, not only to the pod's nameservers (the old rules; Istio's capture-all-dns).
  { annotation: 'traffic.edgemesh.io/capture-all-dns', flag: 'capture-all-dns', parse: parseBool },
] as const;

export type TrafficOptionFlag = (typeof TRAFFIC_OPTIONS)[number]['flag'];

/** "15001,8080" → [15001, 8080]; throws with the offending item. Empty string → []. */
export function parsePortList(text: string): number[] {
  return splitList(text).map((item) => {
    const n = Number(item);
    if (!/^\d{1,5}$/.test(item) || n < 1 || n > 65535)
      throw new Error(`${JSON.stringify(item)} is not a port (1-65535)`);
    return n;
  });
}

/** "10.0.0.0/8,fd00::/8" → normalised CIDRs; a bare address becomes /32 or /128. */
export function parseCidrList(text: string): string[] {
  return splitList(text).map(parseCidr);
}

/** `*` (capture everything) or a CIDR list. */
export function parseIncludeRanges(text: string): '*' | string[] {
  return text.trim() === '*' ? '*' : parseCidrList(text);
}

export function parseBool(text: string): boolean {
  const t = text.trim().toLowerCase();
  if (t === 'true') return true;
  if (t === 'false') return false;
  throw new Error(`${JSON.stringify(text)} is not true or false`);
}

export function parseCidr(item: string): string {
  const [addr, bits, extra] = item.split('/');
  const family = isIP(addr);
  // A zone index (fe80::1%eth0) is an address of one link, not a range iptables can match.
  if (family === 0 || extra !== undefined || addr.includes('%'))
    throw new Error(`${JSON.stringify(item)} is not an IP address or CIDR`);
  const max = family === 4 ? 32 : 128;
  if (bits === undefined) return `${addr}/${max}`;
  const n = Number(bits);
  if (!/^\d{1,3}$/.test(bits) || n > max)
    throw new Error(`${JSON.stringify(item)} has a prefix length outside 0-${max}`);
  return `${addr}/${n}`;
}

function splitList(text: string): string[] {
  const items = text.split(',').map((s) => s.trim());
  if (items.length === 1 && items[0] === '') return [];
  if (items.some((s) => s === '')) throw new Error(`${JSON.stringify(text)} has an empty item`);
  return items;
}
