import { isIPv4, isIPv6 } from 'node:net';
import type { Catalog, Endpoint, Service } from '../../lib/catalog/types.ts';
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
  /** Whether `name` (lower-case) is at or below the cluster domain. */
  contains(name: string): boolean;
  /**
   * The local answer for a lower-case name, or undefined when the name is not ours (outside
   * the zone, and not a reverse name we hold): forward it.
   */
  lookup(name: string, qtype: number, oddName?: boolean): LocalAnswer | undefined;
}

type Authority = 'zone' | 'in-addr' | 'ip6';

interface PendingRecord {
  type: number;
  rdata: Buffer;
  /** Additional-section records (already encoded with full owner names). */
  glue: Buffer[];
}

const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/;

export function validDomain(name: string): boolean {
  return name.length > 0 && name.length <= 253 && name.split('.').every((l) => LABEL.test(l));
}

/** The label used for an endpoint without a hostname (CoreDNS style): 10-0-0-1, 2001-db8--1. */
export function dashedIP(ip: string): string {
  return isIPv6(ip) ? canonicalIPv6(ip).replace(/:/g, '-') : ip.replace(/\./g, '-');
}

/** Builds the zone's tables from a catalog. Pure; invalid catalog entries are skipped and listed. */
export function buildZone(catalog: Catalog, opts: ZoneOptions): { zone: Zone; problems: string[] } {
  const domain = opts.domain.toLowerCase().replace(/\.$/, '');
  const ttl = opts.ttl ?? DEFAULT_TTL;
  const problems: string[] = [];
  const pending = new Map<
    string,
    { auth: Authority; records: PendingRecord[]; index: Map<string, PendingRecord> }
  >();
  const dotDomain = `.${domain}`;

  const node = (name: string, auth: Authority) => {
    let n = pending.get(name);
    if (n) return n;
    n = { auth, records: [], index: new Map() };
    pending.set(name, n);
    // Every ancestor down to the apex exists, as an empty non-terminal if nothing else.
    for (let rest = name; auth === 'zone' && rest !== domain && rest.includes('.'); ) {
      rest = rest.slice(rest.indexOf('.') + 1);
      if (pending.has(rest)) break; // its ancestors exist already
      pending.set(rest, { auth, records: [], index: new Map() });
    }
    return n;
  };
  const add = (name: string, type: number, rdata: Buffer, glue: Buffer[] = []) => {
    const auth: Authority = name.endsWith('.in-addr.arpa')
      ? 'in-addr'
      : name.endsWith('.ip6.arpa')
        ? 'ip6'
        : 'zone';
    const n = node(name, auth);
    const key = `${type}:${rdata.toString('latin1')}`;
    let record = n.index.get(key);
    if (!record) {
      record = { type, rdata, glue: [] };
      n.records.push(record);
      n.index.set(key, record);
    }
    record.glue.push(...glue);
  };
  const addrRecord = (name: string, ip: string) => {
    if (isIPv4(ip)) add(name, Type.A, ipv4Bytes(ip));
    else add(name, Type.AAAA, ipv6Bytes(ip));
  };
  const glueFor = (name: string, ip: string) =>
    encodeRecord(
      encodeName(name),
      isIPv4(ip) ? Type.A : Type.AAAA,
      ttl,
      isIPv4(ip) ? ipv4Bytes(ip) : ipv6Bytes(ip),
    );

  node(domain, 'zone');
  add(`dns-version.${domain}`, Type.TXT, txtRdata([SPEC_VERSION]));

  for (const [key, entry] of Object.entries(catalog.services)) {
    const svc = entry.service;
    if (!LABEL.test(svc.namespace) || !LABEL.test(svc.name)) {
      problems.push(`service ${key}: namespace/name is not a DNS label`);
      continue;
    }
    const base = `${svc.name}.${svc.namespace}.svc.${domain}`;
    if (svc.type === 'ExternalName') {
      const target = (svc.externalName ?? '').toLowerCase().replace(/\.$/, '');
      if (!validDomain(target)) {
        problems.push(`service ${key}: externalName ${JSON.stringify(svc.externalName)} is not a DNS name`);
        continue;
      }
      add(base, Type.CNAME, encodeName(target));
      continue;
    }
    const clusterIPs = svc.headless ? [] : svc.clusterIPs.filter((ip) => isIPv4(ip) || isIPv6(ip));
    if (!svc.headless && clusterIPs.length !== svc.clusterIPs.length) {
      problems.push(`service ${key}: invalid clusterIP in ${JSON.stringify(svc.clusterIPs)}`);
    }
    if (clusterIPs.length > 0) {
      for (const ip of clusterIPs) {
        addrRecord(base, ip);
        add(reverseName(ip), Type.PTR, encodeName(base));
      }
      for (const port of namedPorts(svc.ports, key, problems)) {
        add(
          `_${port.name}._${port.protocol.toLowerCase()}.${base}`,
          Type.SRV,
          srvRdata(0, 100, port.port, base),
        );
      }
    } else {
      headlessRecords(svc, entry.endpoints, base, key);
    }
    // The namespace exists once it has a service: <ns>.svc.<zone> answers NODATA.
    node(`${svc.namespace}.svc.${domain}`, 'zone');
  }

  function headlessRecords(svc: Service, endpoints: Endpoint[], base: string, key: string) {
    const seen = new Set<string>();
    for (const ep of endpoints) {
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
      const dedupeKey = `${ep.ip}/${hostName}`;
      addrRecord(hostName, ep.ip);
      if (!seen.has(dedupeKey)) {
        seen.add(dedupeKey);
        addrRecord(base, ep.ip);
        add(reverseName(ep.ip), Type.PTR, encodeName(hostName));
      }
      for (const port of namedPorts(ep.ports, key, problems)) {
        add(
          `_${port.name}._${port.protocol.toLowerCase()}.${base}`,
          Type.SRV,
          srvRdata(0, 100, port.port, hostName),
          [glueFor(hostName, ep.ip)],
        );
      }
    }
  }

  for (const pod of Object.values(catalog.pods)) {
    if (!LABEL.test(pod.namespace) || !(isIPv4(pod.ip) || isIPv6(pod.ip))) {
      problems.push(`pod ${pod.namespace}/${pod.name}: invalid namespace or IP`);
      continue;
    }
    addrRecord(`${dashedIP(pod.ip)}.${pod.namespace}.pod.${domain}`, pod.ip);
  }

  // Encode: one RRSet per (name, type), the NODATA answer per authority.
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
    ?.records.push({ type: Type.SOA, rdata: soa.zone.subarray(encodeName(domain).length + 10), glue: [] });

  interface Node {
    answers: Map<number, LocalAnswer>;
    nodata: LocalAnswer;
    cname?: LocalAnswer;
  }
  const nodes = new Map<string, Node>();
  for (const [name, p] of pending) {
    const answers = new Map<number, LocalAnswer>();
    const byType = new Map<number, PendingRecord[]>();
    for (const r of p.records) byType.set(r.type, [...(byType.get(r.type) ?? []), r]);
    for (const [type, records] of byType)
      answers.set(type, { rcode: Rcode.NOERROR, answer: encodeSet(records, ttl) });
    if (p.records.length > 0)
      answers.set(Type.ANY, { rcode: Rcode.NOERROR, answer: encodeSet(p.records, ttl) });
    const cnameRecord = byType.get(Type.CNAME)?.[0];
    const cname = cnameRecord
      ? { ...answers.get(Type.CNAME)!, cnameTarget: decodePlainName(cnameRecord.rdata) }
      : undefined;
    if (cname) answers.set(Type.CNAME, cname);
    nodes.set(name, { answers, nodata: nodata[p.auth], cname });
  }

  const zone: Zone = {
    domain,
    revision: catalog.revision,
    size: nodes.size,
    contains: (name) => name === domain || name.endsWith(dotDomain),
    lookup(name, qtype, oddName = false) {
      const inZone = name === domain || name.endsWith(dotDomain);
      if (inZone && oddName) return nxdomain;
      const n = nodes.get(name);
      if (!n) return inZone ? nxdomain : undefined;
      return n.answers.get(qtype) ?? n.cname ?? n.nodata;
    },
  };
  return { zone, problems };
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

function encodeSet(records: PendingRecord[], ttl: number): RRSet {
  const glue = [...new Map(records.flatMap((r) => r.glue).map((g) => [g.toString('latin1'), g])).values()];
  return {
    count: records.length,
    bytes: Buffer.concat(records.map((r) => encodeRecord(QNAME_POINTER, r.type, ttl, r.rdata))),
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
