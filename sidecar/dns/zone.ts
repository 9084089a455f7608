import { isIPv4, isIPv6 } from 'node:net';
import type { Catalog, ServiceEntry } from '../../lib/catalog/types.ts';
import {
  canonicalIPv6,
  encodeName,
  encodeRecord,
  ipv4Bytes,
  ipv6Bytes,
  QNAME_POINTER,
  Rcode,
  reverseName,
  soaRdata,
  srvRdata,
  Type,
  txtRdata,
} from './wire.ts';

/**
 * The cluster zone as lookup tables, built once per catalog change (not per query), per the
 * Kubernetes DNS-Based Service Discovery spec 1.1.0:
 *
 *   <svc>.<ns>.svc.<zone>                A/AAAA  ClusterIPs, or each ready endpoint (headless)
 *   <host>.<svc>.<ns>.svc.<zone>         A/AAAA  headless endpoint (hostname, else dashed IP)
 *   _<port>._<proto>.<svc>.<ns>.svc.<zone> SRV   named ports (target: service, or each host)
 *   <reversed ip>.in-addr.arpa / ip6.arpa PTR    ClusterIPs and headless endpoints
 *   <svc>.<ns>.svc.<zone>                CNAME   ExternalName
 *   <dashed ip>.<ns>.pod.<zone>          A/AAAA  pods the catalog knows (verified pod records)
 *   dns-version.<zone>                   TXT     "1.1.0"
 *
 * Every ancestor of a name inside the zone exists (an empty non-terminal, e.g. <ns>.svc.<zone>)
 * and answers NODATA. Answers are pre-encoded: owner = pointer to the question (0xC00C).
 */
export const SPEC_VERSION = '1.1.0';
export const DEFAULT_TTL = 5;

export interface ZoneOptions {
  /** The cluster domain, e.g. 'cluster.local' (lower-case, no trailing dot). */
  domain: string;
  ttl?: number;
}

/** Records ready to send: `count` answer records and `glueCount` additional records. */
export interface RRSet {
  count: number;
  bytes: Buffer;
  glueCount: number;
  glue: Buffer;
}

/** What the zone says about a name: an answer or a negative answer with its SOA. */
export interface LocalAnswer {
  rcode: number;
  answer?: RRSet;
  /** One SOA record (full owner name) for NXDOMAIN/NODATA. */
  authority?: Buffer;
  /** Set when the answer is a CNAME to a name the client must still resolve. */
  cnameTarget?: string;
}

export interface Zone {
  readonly domain: string;
  readonly revision: number;
  readonly size: number;
  /**
   * The local answer for a lower-case name, or undefined when the name is not ours (outside
   * the zone, and not a reverse name we hold): forward it.
   */
  lookup(name: string, qtype: number, oddName?: boolean): LocalAnswer | undefined;
}

type Authority = 'zone' | 'in-addr' | 'ip6';

const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/;

function validDomain(name: string): boolean {
  return name.length > 0 && name.length <= 253 && name.split('.').every((l) => LABEL.test(l));
}

/** The label used for an endpoint without a hostname (CoreDNS style): 10-0-0-1, 2001-db8--1. */
function dashedIP(ip: string): string {
  return isIPv6(ip) ? canonicalIPv6(ip).replace(/:/g, '-') : ip.replace(/\./g, '-');
}

/** One record a service contributes: owner name, type, the record encoded with owner 0xC00C, glue. */
interface Contribution {
  name: string;
  type: number;
  rr: Buffer;
  /** Additional-section records (full owner names) sent with this one. */
  glue?: Buffer[];
}

/**
 * Per-service contributions from earlier builds. The catalog store shares unchanged
 * ServiceEntry objects between revisions, so after an update only changed services are
 * encoded again. Pass the same memo to every build (the Resolver keeps one).
 */
export type ZoneMemo = WeakMap<ServiceEntry, { key: string; records: Contribution[]; problems: string[] }>;
export const createZoneMemo = (): ZoneMemo => new WeakMap();

/** Builds the zone's tables from a catalog. Pure; invalid catalog entries are skipped and listed. */
export function buildZone(
  catalog: Catalog,
  opts: ZoneOptions & { memo?: ZoneMemo },
): { zone: Zone; problems: string[] } {
  const domain = opts.domain.toLowerCase().replace(/\.$/, '');
  const ttl = opts.ttl ?? DEFAULT_TTL;
  const memoKey = `${domain}/${ttl}`;
  const problems: string[] = [];
  interface Pending {
    auth: Authority;
    records: Contribution[];
    /** Record bytes → position, kept once a name has many records (big headless services). */
    index?: Map<string, number>;
  }
  const pending = new Map<string, Pending>();
  const dotDomain = `.${domain}`;

  const node = (name: string, auth: Authority): Pending => {
    let n = pending.get(name);
    if (n) return n;
    n = { auth, records: [] };
    pending.set(name, n);
    // Every ancestor down to the apex exists, as an empty non-terminal if nothing else.
    for (let rest = name; auth === 'zone' && rest !== domain && rest.includes('.'); ) {
      rest = rest.slice(rest.indexOf('.') + 1);
      if (pending.has(rest)) break; // its ancestors exist already
      pending.set(rest, { auth, records: [] });
    }
    return n;
  };
  const merge = (c: Contribution) => {
    const auth: Authority = c.name.endsWith('.in-addr.arpa')
      ? 'in-addr'
      : c.name.endsWith('.ip6.arpa')
        ? 'ip6'
        : 'zone';
    const n = node(c.name, auth);
    // Identical records from two sources (e.g. one IP in two headless services) are kept once.
    if (!n.index && n.records.length >= 16) {
      n.index = new Map(n.records.map((r, i) => [r.rr.toString('latin1'), i]));
    }
    const i = n.index
      ? (n.index.get(c.rr.toString('latin1')) ?? -1)
      : n.records.findIndex((r) => r.rr.equals(c.rr));
    if (i < 0) {
      n.index?.set(c.rr.toString('latin1'), n.records.length);
      n.records.push(c);
    } else if (c.glue) {
      // Contributions are memoized across builds: combine into a new object, never mutate.
      const same = n.records[i];
      n.records[i] = { ...same, glue: [...(same.glue ?? []), ...c.glue] };
    }
  };

  node(domain, 'zone');
  merge(contribution(`dns-version.${domain}`, Type.TXT, ttl, txtRdata([SPEC_VERSION])));

  for (const [key, entry] of Object.entries(catalog.services)) {
    let done = opts.memo?.get(entry);
    if (!done || done.key !== `${memoKey}/${key}`) {
      const own: string[] = [];
      done = {
        key: `${memoKey}/${key}`,
        records: serviceRecords(entry, key, domain, ttl, own),
        problems: own,
      };
      opts.memo?.set(entry, done);
    }
    problems.push(...done.problems);
    for (const c of done.records) merge(c);
    // The namespace exists once it has a service: <ns>.svc.<zone> answers NODATA.
    if (done.records.length > 0 || done.problems.length === 0)
      node(`${entry.service.namespace}.svc.${domain}`, 'zone');
  }

  for (const pod of Object.values(catalog.pods)) {
    if (!LABEL.test(pod.namespace) || !(isIPv4(pod.ip) || isIPv6(pod.ip))) {
      problems.push(`pod ${pod.namespace}/${pod.name}: invalid namespace or IP`);
      continue;
    }
    merge(addressContribution(`${dashedIP(pod.ip)}.${pod.namespace}.pod.${domain}`, pod.ip, ttl));
  }

  // Encode: one answer per (name, type), the NODATA answer per authority.
  const soaFor = (auth: Authority): Buffer => {
    const owner = auth === 'zone' ? domain : auth === 'in-addr' ? 'in-addr.arpa' : 'ip6.arpa';
    return encodeRecord(
      encodeName(owner),
      Type.SOA,
      ttl,
      soaRdata(`ns.dns.${domain}`, `hostmaster.${domain}`, catalog.revision, ttl),
    );
  };
  const soa = { zone: soaFor('zone'), 'in-addr': soaFor('in-addr'), ip6: soaFor('ip6') };
  const nodata = {
    zone: { rcode: Rcode.NOERROR, authority: soa.zone },
    'in-addr': { rcode: Rcode.NOERROR, authority: soa['in-addr'] },
    ip6: { rcode: Rcode.NOERROR, authority: soa.ip6 },
  };
  const nxdomain: LocalAnswer = { rcode: Rcode.NXDOMAIN, authority: soa.zone };
  // The apex answers SOA queries with its SOA (owner = the question name, as everywhere).
  pending
    .get(domain)
    ?.records.push(contribution(domain, Type.SOA, ttl, soa.zone.subarray(encodeName(domain).length + 10)));

  interface Node {
    answers: Map<number, LocalAnswer>;
    nodata: LocalAnswer;
    cname?: LocalAnswer;
    /** All records, for ANY (rare): assembled on first use. */
    all: Contribution[];
    any?: LocalAnswer;
  }
  const nodes = new Map<string, Node>();
  for (const [name, p] of pending) {
    const answers = new Map<number, LocalAnswer>();
    const byType = new Map<number, Contribution[]>();
    for (const r of p.records) {
      const list = byType.get(r.type);
      if (list) list.push(r);
      else byType.set(r.type, [r]);
    }
    for (const [type, records] of byType)
      answers.set(type, { rcode: Rcode.NOERROR, answer: encodeSet(records) });
    const cnameRecord = byType.get(Type.CNAME)?.[0];
    const cname = cnameRecord
      ? { ...answers.get(Type.CNAME)!, cnameTarget: decodePlainName(cnameRecord.rr.subarray(12)) }
      : undefined;
    if (cname) answers.set(Type.CNAME, cname);
    nodes.set(name, { answers, nodata: nodata[p.auth], cname, all: p.records });
  }

  const zone: Zone = {
    domain,
    revision: catalog.revision,
    size: nodes.size,
    lookup(name, qtype, oddName = false) {
      const inZone = name === domain || name.endsWith(dotDomain);
      // A dot or odd byte inside a label: its text form could equal another name's.
      if (oddName) return inZone ? nxdomain : undefined;
      const n = nodes.get(name);
      if (!n) return inZone ? nxdomain : undefined;
      if (qtype === Type.ANY && n.all.length > 0) {
        n.any ??= { rcode: Rcode.NOERROR, answer: encodeSet(n.all) };
        return n.any;
      }
      return n.answers.get(qtype) ?? n.cname ?? n.nodata;
    },
  };
  return { zone, problems };
}

function contribution(name: string, type: number, ttl: number, rdata: Buffer, glue?: Buffer[]): Contribution {
  return { name, type, rr: encodeRecord(QNAME_POINTER, type, ttl, rdata), glue };
}

function addressContribution(name: string, ip: string, ttl: number): Contribution {
  return isIPv4(ip)
    ? contribution(name, Type.A, ttl, ipv4Bytes(ip))
    : contribution(name, Type.AAAA, ttl, ipv6Bytes(ip));
}

/** What one service puts in the zone (pure; problems are appended to `problems`). */
function serviceRecords(
  entry: ServiceEntry,
  key: string,
  domain: string,
  ttl: number,
  problems: string[],
): Contribution[] {
  const svc = entry.service;
  const out: Contribution[] = [];
  if (!LABEL.test(svc.namespace) || !LABEL.test(svc.name)) {
    problems.push(`service ${key}: namespace/name is not a DNS label`);
    return out;
  }
  const base = `${svc.name}.${svc.namespace}.svc.${domain}`;
  if (svc.type === 'ExternalName') {
    const target = (svc.externalName ?? '').toLowerCase().replace(/\.$/, '');
    if (!validDomain(target)) {
      problems.push(`service ${key}: externalName ${JSON.stringify(svc.externalName)} is not a DNS name`);
      return out;
    }
    out.push(contribution(base, Type.CNAME, ttl, encodeName(target)));
    return out;
  }
  const clusterIPs = svc.headless ? [] : svc.clusterIPs.filter((ip) => isIPv4(ip) || isIPv6(ip));
  if (!svc.headless && clusterIPs.length !== svc.clusterIPs.length) {
    problems.push(`service ${key}: invalid clusterIP in ${JSON.stringify(svc.clusterIPs)}`);
  }
  if (clusterIPs.length > 0) {
    const baseName = encodeName(base);
    for (const ip of clusterIPs) {
      out.push(addressContribution(base, ip, ttl));
      out.push(contribution(reverseName(ip), Type.PTR, ttl, baseName));
    }
    for (const port of namedPorts(svc.ports, key, problems)) {
      const srv = `_${port.name}._${port.protocol.toLowerCase()}.${base}`;
      out.push(contribution(srv, Type.SRV, ttl, srvRdata(0, 100, port.port, base)));
    }
    return out;
  }
  // Headless: the ready endpoints (all of them with publishNotReadyAddresses).
  const seen = new Set<string>();
  for (const ep of entry.endpoints) {
    if (!(ep.ready || svc.publishNotReadyAddresses)) continue;
    if (!isIPv4(ep.ip) && !isIPv6(ep.ip)) {
      problems.push(`service ${key}: endpoint IP ${JSON.stringify(ep.ip)} is invalid`);
      continue;
    }
    let host = ep.hostname ?? dashedIP(ep.ip);
    if (ep.hostname !== undefined && !LABEL.test(ep.hostname)) {
      problems.push(`service ${key}: endpoint hostname ${JSON.stringify(ep.hostname)} is not a DNS label`);
      host = dashedIP(ep.ip);
    }
    const hostName = `${host}.${base}`;
    // One address listed in two slices (or twice) gives its records once.
    const dedupeKey = `${ep.ip}/${hostName}`;
    if (seen.has(dedupeKey)) continue;
    seen.add(dedupeKey);
    const address = addressContribution(hostName, ep.ip, ttl);
    out.push(address);
    out.push(addressContribution(base, ep.ip, ttl));
    out.push(contribution(reverseName(ep.ip), Type.PTR, ttl, encodeName(hostName)));
    const glue = [Buffer.concat([encodeName(hostName), address.rr.subarray(2)])];
    for (const port of namedPorts(ep.ports, key, problems)) {
      const srv = `_${port.name}._${port.protocol.toLowerCase()}.${base}`;
      out.push(contribution(srv, Type.SRV, ttl, srvRdata(0, 100, port.port, hostName), glue));
    }
  }
  return out;
}

function namedPorts<P extends { name: string; port: number; protocol: string }>(
  ports: P[],
  key: string,
  problems: string[],
): P[] {
  return ports.filter((p) => {
    if (p.name === '') return false; // unnamed ports get no SRV record (spec 1.1.0)
    const ok = PORT_NAME.test(p.name) && p.port > 0 && p.port < 65536 && /^(TCP|UDP|SCTP)$/.test(p.protocol);
    if (!ok) problems.push(`service ${key}: port ${JSON.stringify(p.name)} is invalid`);
    return ok;
  });
}

function encodeSet(records: Contribution[]): RRSet {
  // Glue is per target name: several SRV records (ports) of one host share one A/AAAA.
  const glue = [
    ...new Map(records.flatMap((r) => r.glue ?? []).map((g) => [g.toString('latin1'), g])).values(),
  ];
  return {
    count: records.length,
    bytes: records.length === 1 ? records[0].rr : Buffer.concat(records.map((r) => r.rr)),
    glueCount: glue.length,
    glue: Buffer.concat(glue),
  };
}

/** Presentation form of an uncompressed encoded name. */
function decodePlainName(b: Buffer): string {
  const labels: string[] = [];
  for (let o = 0; b[o] !== 0; o += 1 + b[o]) labels.push(b.toString('latin1', o + 1, o + 1 + b[o]));
  return labels.join('.');
}
