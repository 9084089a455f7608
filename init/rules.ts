import type { Cidr } from './cidr.ts';
import type { CaptureOptions } from './options.ts';

/**
 * The capture rules as data. Nothing here runs iptables: render.ts turns a Ruleset into
 * iptables-restore text, and cleanup is derived from the same ownership marks, so install
 * and uninstall cannot drift apart. Invariants (see README.md):
 *  - every chain we create starts with CHAIN_PREFIX;
 *  - every rule carries `-m comment --comment edgemesh/<slug>`, slugs unique per ruleset;
 *  - the only rules outside our chains are the hooks (jumps) from built-in chains.
 */
export const CHAIN_PREFIX = 'EDGEMESH_';
export const OUTPUT_CHAIN = 'EDGEMESH_OUTPUT';
export const REDIRECT_CHAIN = 'EDGEMESH_REDIRECT';
export const COMMENT_PREFIX = 'edgemesh/';
export const UDP_OUTPUT_CHAIN = 'EDGEMESH_UDP_OUTPUT';
export const UDP_PREROUTING_CHAIN = 'EDGEMESH_UDP_PREROUTING';
/**
 * UDP capture (off by default; docs/udp.md): a packet mark and a routing table, the values
 * Istio's TPROXY mode uses, so a reader of `ip rule` in either mesh recognises them.
 */
export const UDP_MARK = 1337;
export const UDP_ROUTE_TABLE = 133;

export type Family = 4 | 6;

export interface Rule {
  readonly chain: string;
  /** Match arguments in order, e.g. ['-p', 'udp', '--dport', '53']. */
  readonly match: readonly string[];
  /** Target arguments, e.g. ['-j', 'RETURN']. */
  readonly target: readonly string[];
  /** Unique within its ruleset; rendered as `--comment edgemesh/<slug>`. */
  readonly slug: string;
}

export interface Ruleset {
  readonly family: Family;
  readonly table: 'nat' | 'mangle';
  /** Chains this ruleset owns: created (or flushed) on install, deleted on cleanup. */
  readonly chains: readonly string[];
  /** In the order they are appended; hooks into built-in chains first. */
  readonly rules: readonly Rule[];
}

const LOOPBACK: Record<Family, string> = { 4: '127.0.0.0/8', 6: '::1/128' };

export function buildRules(options: CaptureOptions, family: Family): Ruleset {
  const rules: Rule[] = [];
  const add = (chain: string, slug: string, match: string[], target: string[]) =>
    rules.push({ chain, slug, match, target });
  const ret = ['-j', 'RETURN'];
  const ofFamily = (cidrs: readonly Cidr[]) => cidrs.filter((c) => c.family === family);

  // Every new outbound connection of the pod passes through our chain (nat OUTPUT sees only
  // the first packet of each connection; conntrack handles the rest).
  add('OUTPUT', 'hook-output', [], ['-j', OUTPUT_CHAIN]);

  // The sidecar's own traffic (its upstream DNS, its dials to endpoints and the gateway)
  // must go straight out, or it would be redirected back into itself.
  add(OUTPUT_CHAIN, 'proxy-uid', ['-m', 'owner', '--uid-owner', String(options.proxyUid)], ret);
  add(OUTPUT_CHAIN, 'proxy-gid', ['-m', 'owner', '--gid-owner', String(options.proxyGid)], ret);

  // DNS before the loopback RETURN, so queries to a local stub (127.0.0.53) are captured too.
  if (options.captureDns && options.captureAllDns) {
    for (const proto of ['udp', 'tcp']) {
      add(OUTPUT_CHAIN, `dns-${proto}`, ['-p', proto, '--dport', '53'], redirectTo(options.dnsPort));
    }
  } else if (options.captureDns) {
    // Only where the pod's resolver points: a query to another address (the user's own DNS
    // server run as a Service) is traffic like any other — its UDP goes out as sent, its TCP
    // is captured below as any TCP is. A family without nameservers has no DNS rule.
    for (const server of dnsServersOf(options, family)) {
      for (const proto of ['udp', 'tcp']) {
        add(
          OUTPUT_CHAIN,
          `dns-${proto}-${hostOf(server)}`,
          ['-d', server.text, '-p', proto, '--dport', '53'],
          redirectTo(options.dnsPort),
        );
      }
    }
  } else {
    // DNS not captured means untouched: TCP 53 must not fall into the TCP capture below.
    add(OUTPUT_CHAIN, 'dns-tcp-uncaptured', ['-p', 'tcp', '--dport', '53'], ret);
  }

  // Loopback stays local: the app talking to itself, and the app reaching the sidecar's own
  // ports (15000-15100 listen on the pod's loopback), are never redirected.
  add(OUTPUT_CHAIN, 'loopback-interface', ['-o', 'lo'], ret);
  add(OUTPUT_CHAIN, 'loopback-destination', ['-d', LOOPBACK[family]], ret);
  // A connection already addressed to a sidecar's outbound port is not sent into this one
  // again (no proxy-to-proxy chains).
  add(OUTPUT_CHAIN, 'proxy-port', ['-p', 'tcp', '--dport', String(options.proxyPort)], ret);

  for (const cidr of ofFamily(options.excludeOutboundRanges)) {
    add(OUTPUT_CHAIN, `exclude-range-${cidr.text}`, ['-d', cidr.text], ret);
  }
  for (const port of options.excludeOutboundPorts) {
    add(OUTPUT_CHAIN, `exclude-port-${port}`, ['-p', 'tcp', '--dport', String(port)], ret);
  }

  const include = options.includeOutboundRanges;
  if (include === '*') {
    add(OUTPUT_CHAIN, 'capture-tcp', ['-p', 'tcp'], ['-j', REDIRECT_CHAIN]);
  } else {
    for (const cidr of ofFamily(include)) {
      add(OUTPUT_CHAIN, `capture-range-${cidr.text}`, ['-p', 'tcp', '-d', cidr.text], ['-j', REDIRECT_CHAIN]);
    }
  }
  // Anything not matched above falls off the end of EDGEMESH_OUTPUT and goes out unchanged.

  add(REDIRECT_CHAIN, 'redirect-to-proxy', ['-p', 'tcp'], redirectTo(options.proxyPort));

  return Object.freeze({ family, table: 'nat', chains: [OUTPUT_CHAIN, REDIRECT_CHAIN], rules });
}

const dnsServersOf = (options: CaptureOptions, family: Family) =>
  options.dnsServers.filter((c) => c.family === family);
/** "10.96.0.10/32" → "10.96.0.10": the nameserver in a rule's slug. */
const hostOf = (cidr: Cidr) => cidr.text.replace(/\/\d+$/, '');

function redirectTo(port: number): string[] {
  return ['-j', 'REDIRECT', '--to-ports', String(port)];
}

/**
 * The policy routing UDP capture needs, as data: marked packets look up UDP_ROUTE_TABLE,
 * whose only route says every address is local on lo, so a marked datagram leaves OUTPUT
 * through lo and comes back in through PREROUTING, where TPROXY can hand it to the sidecar.
 * apply.ts installs and removes exactly this (`ip rule`/`ip route` argv).
 */
export interface PolicyRoute {
  readonly family: Family;
  /** `ip -4|-6 rule … <rule>`: add with `add`, remove with `del`. */
  readonly rule: readonly string[];
  /** `ip -4|-6 route … <route>`: install with `replace` (idempotent), remove with `del`. */
  readonly route: readonly string[];
}

export function udpPolicyRoute(family: Family): PolicyRoute {
  const table = String(UDP_ROUTE_TABLE);
  return Object.freeze({
    family,
    rule: ['fwmark', String(UDP_MARK), 'lookup', table],
    route: ['local', family === 4 ? '0.0.0.0/0' : '::/0', 'dev', 'lo', 'table', table],
  });
}

/**
 * UDP capture in the mangle table (only when options.captureUdp): SO_ORIGINAL_DST does not
 * exist for UDP, so instead of nat REDIRECT the datagram keeps its destination and TPROXY
 * delivers it to the sidecar's transparent socket, which reads ClusterIP:port with
 * IP_RECVORIGDSTADDR (docs/udp.md). OUTPUT marks what to capture; PREROUTING (on lo, after
 * the policy route above) hands marked datagrams to the sidecar's UDP port.
 */
export function buildUdpRules(options: CaptureOptions, family: Family): Ruleset {
  const rules: Rule[] = [];
  const add = (chain: string, slug: string, match: string[], target: string[]) =>
    rules.push({ chain, slug, match, target });
  const ret = ['-j', 'RETURN'];
  const mark = String(UDP_MARK);
  const ofFamily = (cidrs: readonly Cidr[]) => cidrs.filter((c) => c.family === family);

  add('OUTPUT', 'hook-udp-output', ['-p', 'udp'], ['-j', UDP_OUTPUT_CHAIN]);
  add('PREROUTING', 'hook-udp-prerouting', ['-p', 'udp', '-i', 'lo'], ['-j', UDP_PREROUTING_CHAIN]);

  // The sidecar's own datagrams (to endpoints, and its replies to the app sent from the
  // transparent socket bound to the ClusterIP) go straight out.
  add(UDP_OUTPUT_CHAIN, 'udp-proxy-uid', ['-m', 'owner', '--uid-owner', String(options.proxyUid)], ret);
  add(UDP_OUTPUT_CHAIN, 'udp-proxy-gid', ['-m', 'owner', '--gid-owner', String(options.proxyGid)], ret);
  // DNS the nat table captures (to the pod's nameservers) is never a UDP flow; with DNS
  // capture off or capture-all-dns, no port-53 datagram is (uncaptured DNS stays untouched).
  // DNS to any other address is UDP like any other and is marked below.
  if (options.captureDns && !options.captureAllDns) {
    for (const server of dnsServersOf(options, family)) {
      add(
        UDP_OUTPUT_CHAIN,
        `udp-dns-${hostOf(server)}`,
        ['-d', server.text, '-p', 'udp', '--dport', '53'],
        ret,
      );
    }
  } else {
    add(UDP_OUTPUT_CHAIN, 'udp-dns', ['-p', 'udp', '--dport', '53'], ret);
  }
  add(UDP_OUTPUT_CHAIN, 'udp-loopback-interface', ['-o', 'lo'], ret);
  add(UDP_OUTPUT_CHAIN, 'udp-loopback-destination', ['-d', LOOPBACK[family]], ret);
  for (const cidr of ofFamily(options.excludeOutboundRanges)) {
    add(UDP_OUTPUT_CHAIN, `udp-exclude-range-${cidr.text}`, ['-d', cidr.text], ret);
  }
  // The excluded ports are the annotation's; with UDP capture on they hold for UDP too.
  for (const port of options.excludeOutboundPorts) {
    add(UDP_OUTPUT_CHAIN, `udp-exclude-port-${port}`, ['-p', 'udp', '--dport', String(port)], ret);
  }
  const setMark = ['-j', 'MARK', '--set-mark', mark];
  const include = options.includeOutboundRanges;
  if (include === '*') {
    add(UDP_OUTPUT_CHAIN, 'udp-mark', [], setMark);
  } else {
    for (const cidr of ofFamily(include)) {
      add(UDP_OUTPUT_CHAIN, `udp-mark-range-${cidr.text}`, ['-d', cidr.text], setMark);
    }
  }

  add(
    UDP_PREROUTING_CHAIN,
    'udp-tproxy',
    ['-p', 'udp', '-m', 'mark', '--mark', mark],
    ['-j', 'TPROXY', '--on-port', String(options.udpPort), '--tproxy-mark', mark],
  );

  return Object.freeze({
    family,
    table: 'mangle',
    chains: [UDP_OUTPUT_CHAIN, UDP_PREROUTING_CHAIN],
    rules,
  });
}
