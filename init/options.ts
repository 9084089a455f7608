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
  proxyUid: 1337,
  proxyGid: 1337,
  proxyPort: 15001,
  dnsPort: 15053,
  captureDns: true,
  excludeOutboundPorts: [],
  excludeOutboundRanges: [],
  includeOutboundRanges: '*',
  ipv6: false,
});

export function captureOptions(overrides: Partial<CaptureOptions> = {}): CaptureOptions {
  return Object.freeze({ ...DEFAULT_OPTIONS, ...overrides });
}

function listItems(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

const dedupe = <T>(items: T[], key: (item: T) => string): T[] => {
  const seen = new Set<string>();
  return items.filter((item) => !seen.has(key(item)) && seen.add(key(item)) !== undefined);
};

/** "80, 443,8080" → [80, 443, 8080]. Throws an Error describing the first bad item. */
export function parsePortList(text: string): number[] {
  const ports = listItems(text).map((item) => {
    if (!/^\d{1,5}$/.test(item) || Number(item) < 1 || Number(item) > 65535) {
      throw new Error(`${JSON.stringify(item)} is not a port (1-65535)`);
    }
    return Number(item);
  });
  return dedupe(ports, String);
}

/** "10.0.0.0/8,fd00::/8" → CIDRs of either family. Throws an Error describing the first bad item. */
export function parseCidrList(text: string): Cidr[] {
  const cidrs = listItems(text).map((item) => {
    if (item === '*') throw new Error('"*" is only accepted by --include-outbound-ip-ranges');
    const parsed = parseCidr(item);
    if (typeof parsed === 'string') throw new Error(parsed);
    return parsed;
  });
  return dedupe(cidrs, (c) => c.text);
}

/** "*" → all; "" → none; otherwise a CIDR list. `*` cannot be mixed with ranges. */
export function parseIncludeRanges(text: string): '*' | Cidr[] {
  const items = listItems(text);
  if (items.includes('*')) {
    if (items.length > 1) throw new Error('"*" cannot be combined with other ranges');
    return '*';
  }
  return parseCidrList(text);
}

/** The annotation's "true"/"false" (case-insensitive). */
export function parseBooleanText(text: string): boolean {
  const t = text.trim().toLowerCase();
  if (t === 'true') return true;
  if (t === 'false') return false;
  throw new Error(`expected "true" or "false", got ${JSON.stringify(text)}`);
}

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
