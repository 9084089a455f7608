import { describe, expect, it } from 'vitest';
import { parseRoutes4, parseRoutes6, routeInterface } from './pod-side.ts';

// A node as the real-node lab makes one: its LAN on eth0 (192.168.2.11/24, default route via
// the site's router), its pods on the CNI bridge cni0 (10.2.1.0/24), a peer node's pods routed
// over the LAN. Copied from /proc/net/route and /proc/net/ipv6_route of such a node.
const ROUTE4 = `Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
cni0\t0001020A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t0002020A\t0C02A8C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0
`;
const ROUTE6 = `fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fd000002000100000000000000000000 50 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     cni0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001       lo
`;

describe('route tables', () => {
  const v4 = parseRoutes4(ROUTE4);
  const v6 = parseRoutes6(ROUTE6);
  it('parses /proc/net/route (little-endian words, masks as prefixes)', () => {
    expect(v4.map((r) => `${r.iface} ${[...r.dest].join('.')}/${r.prefix}`)).toEqual([
      'eth0 0.0.0.0/0',
      'eth0 192.168.2.0/24',
      'cni0 10.2.1.0/24',
      'eth0 10.2.2.0/24',
    ]);
  });
  const cases: Array<[string, string, string | undefined]> = [
    ['a pod on this node', '10.2.1.7', 'cni0'],
    ['a pod on the peer node', '10.2.2.7', 'eth0'],
    ['a LAN host', '192.168.2.99', 'eth0'],
    ['the internet (default route)', '203.0.113.5', 'eth0'],
    ['an IPv6 pod on this node', 'fd00:2:1::7', 'cni0'],
    ['an IPv6 LAN host', 'fd00::99', 'eth0'],
    ['IPv6 loopback (lo is never an answer)', '::1', undefined],
    ['not an address', 'cni0', undefined],
  ];
  for (const [name, ip, iface] of cases)
    it(name, () => expect(routeInterface(ip.includes(':') ? v6 : v4, ip)).toBe(iface));
  it('skips malformed lines', () => {
    expect(parseRoutes4('header\ngarbage line\neth0 zz 0 0 0 0 0 00FFFFFF')).toEqual([]);
    expect(parseRoutes6('short line\n')).toEqual([]);
  });
});
