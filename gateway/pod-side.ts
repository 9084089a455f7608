/**
 * Is an address on this node's pod side? The kernel's routing table says: a pod's IP is
 * routed to the CNI's bridge or the pod's own veth, while a host on the LAN (or beyond it) is
 * routed out of the interface that holds the node's own address. So a source whose route
 * leaves by another interface than the one the connection arrived on is a local pod's.
 *
 * Used for one decision only: whether a `HELLO` may move a pod to its source address
 * (pod-moves.ts). The tables are read from /proc/net/route and /proc/net/ipv6_route (the
 * gateway runs with hostNetwork, so these are the node's); the parsing and the longest-prefix
 * match are pure.
 */
import { readFile } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { ipToBytes } from '../lib/ip.ts';

export interface Route {
  iface: string;
  /** Network address bytes (4 or 16) and prefix length. */
  dest: Uint8Array;
  prefix: number;
  metric: number;
}

/** /proc/net/route: hex, little-endian IPv4 words; the mask's bits give the prefix. */
export function parseRoutes4(text: string): Route[] {
  const out: Route[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || !/^[0-9A-Fa-f]{8}$/.test(f[1]) || !/^[0-9A-Fa-f]{8}$/.test(f[7])) continue;
    const le = (hex: string) => {
      const n = Number.parseInt(hex, 16);
      return new Uint8Array([n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff]);
    };
    const mask = le(f[7]);
    let prefix = 0;
    for (const b of mask) prefix += popcount(b);
    out.push({ iface: f[0], dest: le(f[1]), prefix, metric: Number(f[6]) || 0 });
  }
  return out;
}

/** /proc/net/ipv6_route: dest (32 hex), prefix (hex), …, metric (field 6), …, iface (last). */
export function parseRoutes6(text: string): Route[] {
  const out: Route[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !/^[0-9a-fA-F]{32}$/.test(f[0])) continue;
    const dest = new Uint8Array(16);
    for (let i = 0; i < 16; i++) dest[i] = Number.parseInt(f[0].slice(i * 2, i * 2 + 2), 16);
    out.push({
      iface: f[9],
      dest,
      prefix: Number.parseInt(f[1], 16),
      metric: Number.parseInt(f[5], 16) || 0,
    });
  }
  return out;
}

const popcount = (b: number): number => {
  let n = 0;
  for (let x = b; x; x >>= 1) n += x & 1;
  return n;
};

function matches(addr: Uint8Array, route: Route): boolean {
  if (addr.length !== route.dest.length) return false;
  let bits = route.prefix;
  for (let i = 0; i < addr.length && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((addr[i] & mask) !== (route.dest[i] & mask)) return false;
  }
  return true;
}

/** Pure: the interface of the longest matching route (lowest metric on a tie), if any. */
export function routeInterface(routes: readonly Route[], ip: string): string | undefined {
  const addr = ipToBytes(ip);
  if (!addr) return undefined;
  let best: Route | undefined;
  for (const r of routes) {
    if (r.iface === 'lo' || !matches(addr, r)) continue;
    if (!best || r.prefix > best.prefix || (r.prefix === best.prefix && r.metric < best.metric)) best = r;
  }
  return best?.iface;
}

/** The interface holding `address` on this host. */
function interfaceOf(address: string): string | undefined {
  for (const [name, addrs] of Object.entries(networkInterfaces()))
    if (addrs?.some((a) => a.address === address)) return name;
  return undefined;
}

/**
 * True when `ip` routes out of another interface than `localAddress` (the address the
 * connection arrived on); false when the same, or when either cannot be told (unreadable
 * tables: the claim is refused, never guessed).
 */
export async function isPodSide(ip: string, localAddress: string | undefined): Promise<boolean> {
  if (!localAddress) return false;
  const local = localAddress.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
  const inbound = interfaceOf(local);
  if (!inbound) return false;
  const v4 = isIPv4(ip);
  const text = await readFile(v4 ? '/proc/net/route' : '/proc/net/ipv6_route', 'utf8').catch(() => '');
  const out = routeInterface(v4 ? parseRoutes4(text) : parseRoutes6(text), ip);
  return out !== undefined && out !== inbound;
}
