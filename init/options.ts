import { POD_CONTRACT } from '../lib/pod-contract.ts';
import * as traffic from '../lib/traffic.ts';
import { type Cidr, parseCidr } from './cidr.ts';

/**
 * Everything the rule builder needs, already validated. Values arrive from flags that take
 * the pod's `traffic.edgemesh.io/*` annotation values unchanged, so the parsers below accept
 * exactly the annotation syntax: comma-separated lists (spaces around items allowed, empty
 * items ignored), `*` for "all".
 */
export interface CaptureOptions {
  /** The sidecar's uid and gid: its own traffic is never captured. */
  readonly proxyUid: number;
  readonly proxyGid: number;
  /** Where outbound TCP is redirected (the sidecar's transparent proxy). */
  readonly proxyPort: number;
  /** Where DNS (UDP and TCP port 53) is redirected (the sidecar's DNS server). */
  readonly dnsPort: number;
  readonly captureDns: boolean;
  /**
   * With captureDns: capture every port-53 packet (the behaviour before issue 18) instead of
   * only those to dnsServers. Off by default, as Istio's `--capture-all-dns`.
   */
  readonly captureAllDns: boolean;
  /**
   * The pod's nameservers (resolv-conf.ts): with captureDns and not captureAllDns, DNS is
   * captured only to these; DNS to any other address is ordinary UDP/TCP traffic.
   */
  readonly dnsServers: readonly Cidr[];
  /**
   * Send outbound UDP (not DNS) to the sidecar's UDP port with TPROXY (docs/udp.md). Off by
   * default: it needs policy routing in the pod and a sidecar with NET_ADMIN.
   */
  readonly captureUdp: boolean;
  /** The sidecar's transparent UDP socket. */
  readonly udpPort: number;
  /** TCP destination ports that go straight out. */
  readonly excludeOutboundPorts: readonly number[];
  /** Destination ranges that go straight out (TCP; DNS is decided by captureDns alone). */
  readonly excludeOutboundRanges: readonly Cidr[];
  /** Destination ranges whose TCP is captured: `*` for all, [] for none. */
  readonly includeOutboundRanges: '*' | readonly Cidr[];
  /** Also install ip6tables rules. */
  readonly ipv6: boolean;
}

export const DEFAULT_OPTIONS: CaptureOptions = Object.freeze({
  proxyUid: POD_CONTRACT.proxyUid,
  proxyGid: POD_CONTRACT.proxyGid,
  proxyPort: POD_CONTRACT.proxyPort,
  dnsPort: POD_CONTRACT.dnsPort,
  captureDns: true,
  captureAllDns: false,
  dnsServers: [],
  captureUdp: false,
  udpPort: POD_CONTRACT.udpPort,
  excludeOutboundPorts: [],
  excludeOutboundRanges: [],
  includeOutboundRanges: '*',
  ipv6: false,
});

export function captureOptions(overrides: Partial<CaptureOptions> = {}): CaptureOptions {
  return Object.freeze({ ...DEFAULT_OPTIONS, ...overrides });
}

const dedupe = <T>(items: T[], key: (item: T) => string): T[] => {
  const seen = new Set<string>();
  return items.filter((item) => !seen.has(key(item)) && seen.add(key(item)) !== undefined);
};

/**
 * The syntax checks are lib/traffic.ts's, the same ones the webhook runs on the pod's
 * annotations, so a value admitted there is never refused here (and the other way round).
 * On top, init removes duplicates and canonicalises CIDRs for the rules.
 */

/** "80, 443,8080" → [80, 443, 8080]. Throws an Error describing the first bad item. */
export function parsePortList(text: string): number[] {
  return dedupe(traffic.parsePortList(text), String);
}

/** "10.0.0.0/8,fd00::/8" → CIDRs of either family. Throws an Error describing the first bad item. */
export function parseCidrList(text: string): Cidr[] {
  const cidrs = traffic.parseCidrList(text).map((item) => {
    const parsed = parseCidr(item);
    if (typeof parsed === 'string') throw new Error(parsed);
    return parsed;
  });
  return dedupe(cidrs, (c) => c.text);
}

/** "*" → all; "" → none; otherwise a CIDR list. `*` cannot be mixed with ranges. */
export function parseIncludeRanges(text: string): '*' | Cidr[] {
  return traffic.parseIncludeRanges(text) === '*' ? '*' : parseCidrList(text);
}

/** The annotation's "true"/"false" (case-insensitive). */
export const parseBooleanText = traffic.parseBool;

/** Runs a parser only to learn whether it accepts the text: the problem, or undefined. */
export function problemOf(parse: () => unknown): string | undefined {
  try {
    parse();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * Whether /proc/net/if_inet6 lists a global-scope address on an interface other than lo
 * (columns: address, ifindex, prefix length, scope, flags, name; scope 00 = global, which
 * includes ULA fd00::/8). `--ipv6=auto` uses this: a pod without such an address has no
 * IPv6 traffic to capture.
 */
export function hasGlobalIpv6(ifInet6: string): boolean {
  return ifInet6.split('\n').some((line) => {
    const cols = line.trim().split(/\s+/);
    return cols.length >= 6 && cols[3] === '00' && cols[5] !== 'lo';
  });
}
