import { isIPv4, isIPv6 } from 'node:net';
import type {
  Catalog,
  CatalogUpdate,
  NamespaceInfo,
  PodInfo,
  ServiceEntry,
} from '../../lib/catalog/types.ts';
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

/** One source of records (a service, a pod, the zone's own records) as last applied. */
interface Source {
  /** The catalog object it came from: unchanged identity means unchanged records. */
  from: object;
  records: Contribution[];
  /** Names that exist because of this source even without records (<ns>.svc.<zone>). */
  marks: string[];
  problems: string[];
}

/** A name in the zone. It exists while `refs` > 0: its records and marks, and its children that exist. */
interface NameState {
  auth: Authority;
  /** As contributed; identical records from several sources are merged when encoding. */
  records: Contribution[];
  refs: number;
  /** Encoded answers, built on the first lookup after a change. */
  encoded?: Encoded;
}

/** Negative answers: NODATA per authority, NXDOMAIN; each with its SOA. */
interface Negative {
  nodata: Record<Authority, LocalAnswer>;
  nxdomain: LocalAnswer;
}

/**
 * A name's encoded answers. Most names have records of one type (a service's A, its SRV, a
 * PTR): that answer is a field, not a one-entry Map (two Maps and their iterators per first
 * query before, docs/scale.md round 10); `answers` only when there are several types.
 */
interface Encoded {
  type: number;
  answer: LocalAnswer | undefined;
  answers: Map<number, LocalAnswer> | undefined;
  cname?: LocalAnswer;
  any?: LocalAnswer;
}

/**
 * The zone's tables, updated in place from each new catalog: the catalog store shares
 * unchanged ServiceEntry/PodInfo objects between revisions, so an update touches only the
 * names of services and pods whose objects changed, and their answers are re-encoded on the
 * next lookup. Beyond one identity check per service and pod, an update costs in proportion
 * to what changed.
 */
export class ZoneTables implements Zone {
  readonly domain: string;
  readonly #dotDomain: string;
  readonly #ttl: number;
  readonly #names = new Map<string, NameState>();
  readonly #sources = new Map<string, Source>();
  #revision = -1;
  /** The revision the SOA records carry: brought up to #revision only when an answer needs them. */
  #soaRevision = -1;
  /** The SOA records with serial 0 and where the serial sits in each (setRevision patches copies). */
  readonly #soaTemplates: Record<Authority, { record: Buffer; serialAt: number }>;
  #negative: Negative = {
    nodata: { zone: { rcode: 0 }, 'in-addr': { rcode: 0 }, ip6: { rcode: 0 } },
    nxdomain: { rcode: Rcode.NXDOMAIN },
  };

  constructor(opts: ZoneOptions) {
    this.domain = opts.domain.toLowerCase().replace(/\.$/, '');
    this.#dotDomain = `.${this.domain}`;
    this.#ttl = opts.ttl ?? DEFAULT_TTL;
    const soaFor = (auth: Authority) => {
      const owner = encodeName(
        auth === 'zone' ? this.domain : auth === 'in-addr' ? 'in-addr.arpa' : 'ip6.arpa',
      );
      const rdata = soaRdata(`ns.dns.${this.domain}`, `hostmaster.${this.domain}`, 0, this.#ttl);
      // The serial is the first of the five numbers that end the rdata.
      return {
        record: encodeRecord(owner, Type.SOA, this.#ttl, rdata),
        serialAt: owner.length + 10 + rdata.length - 20,
      };
    };
    this.#soaTemplates = { zone: soaFor('zone'), 'in-addr': soaFor('in-addr'), ip6: soaFor('ip6') };
    const dnsVersion = contribution(
      `dns-version.${this.domain}`,
      Type.TXT,
      this.#ttl,
      txtRdata([SPEC_VERSION]),
    );
    this.#replace('zone', { from: this, records: [dnsVersion], marks: [this.domain], problems: [] });
  }

  get revision(): number {
    return this.#revision;
  }

  get size(): number {
    return this.#names.size;
  }

  /** Every name in the zone (for tests and debugging). */
  names(): IterableIterator<string> {
    return this.#names.keys();
  }

  /** Brings the tables to `catalog`. Returns the problems of every invalid catalog entry. */
  update(catalog: Catalog): string[] {
    this.#revision = catalog.revision;
    const seen = new Set<string>();
    for (const [key, entry] of Object.entries(catalog.services)) {
      seen.add(`svc:${key}`);
      this.#service(key, entry);
    }
    for (const pod of Object.values(catalog.pods)) {
      seen.add(`pod:${pod.ip}`);
      this.#pod(pod.ip, pod);
    }
    for (const ns of Object.values(catalog.namespaces ?? {})) {
      seen.add(`ns:${ns.name}`);
      this.#namespace(ns.name, ns);
    }
    for (const id of [...this.#sources.keys()]) {
      if (/^(svc|pod|ns):/.test(id) && !seen.has(id)) this.#replace(id, undefined);
    }
    return [...this.#sources.values()].flatMap((src) => src.problems);
  }

  /**
   * Applies one increment (the catalog store's update) without looking at the rest of the
   * catalog: what an on-demand sidecar does for every answer, so a first query costs the same
   * whether it holds ten services or a thousand. Returns the problems of what changed.
   */
  apply(update: CatalogUpdate): string[] {
    if (update.type === 'snapshot') return this.update(update.catalog);
    this.#revision = update.revision;
    const id =
      update.type === 'service'
        ? this.#service(update.key, update.entry)
        : update.type === 'pod'
          ? this.#pod(update.ip, update.pod)
          : update.type === 'namespace'
            ? this.#namespace(update.name, update.namespace)
            : undefined;
    return (id && this.#sources.get(id)?.problems) || [];
  }

  /** A service's records (null: gone); unchanged identity: nothing to do. Returns its source id. */
  #service(key: string, entry: ServiceEntry | null): string {
    const id = `svc:${key}`;
    if (!entry) this.#replace(id, undefined);
    else if (this.#sources.get(id)?.from !== entry) {
      const problems: string[] = [];
      // An exact-size copy of serviceRecords' scratch list: held as long as the service.
      const records = serviceRecords(entry, key, this.domain, this.#ttl, problems).slice();
      // The namespace exists once it has a (valid) service: <ns>.svc.<zone> answers NODATA.
      const marks =
        records.length > 0 || problems.length === 0 ? [`${entry.service.namespace}.svc.${this.domain}`] : [];
      this.#replace(id, { from: entry, records, marks, problems });
    }
    return id;
  }

  #pod(ip: string, pod: PodInfo | null): string {
    const id = `pod:${ip}`;
    if (!pod) this.#replace(id, undefined);
    else if (this.#sources.get(id)?.from !== pod) {
      const ok = LABEL.test(pod.namespace) && (isIPv4(pod.ip) || isIPv6(pod.ip));
      this.#replace(id, {
        from: pod,
        records: ok
          ? [
              addressContribution(
                `${dashedIP(pod.ip)}.${pod.namespace}.pod.${this.domain}`,
                pod.ip,
                this.#ttl,
              ),
            ]
          : [],
        marks: [],
        problems: ok ? [] : [`pod ${pod.namespace}/${pod.name}: invalid namespace or IP`],
      });
    }
    return id;
  }

  /** A namespace the catalog lists exists without services too: <ns>.svc.<zone> answers NODATA. */
  #namespace(name: string, ns: NamespaceInfo | null): string {
    const id = `ns:${name}`;
    if (!ns) this.#replace(id, undefined);
    else if (this.#sources.get(id)?.from !== ns) {
      const ok = LABEL.test(ns.name);
      this.#replace(id, {
        from: ns,
        records: [],
        marks: ok ? [`${ns.name}.svc.${this.domain}`] : [],
        problems: ok ? [] : [`namespace ${JSON.stringify(ns.name)}: not a DNS label`],
      });
    }
    return id;
  }

  lookup(name: string, qtype: number, oddName = false): LocalAnswer | undefined {
    const inZone = name === this.domain || name.endsWith(this.#dotDomain);
    // A dot or odd byte inside a label: its text form could equal another name's.
    if (oddName) return inZone ? this.#soa().nxdomain : undefined;
    if (name === this.domain) this.#soa(); // the apex holds the SOA record itself
    const n = this.#names.get(name);
    if (!n) return inZone ? this.#soa().nxdomain : undefined;
    n.encoded ??= encodeNode(n.records);
    const e = n.encoded;
    if (qtype === Type.ANY && n.records.length > 0) {
      e.any ??= { rcode: Rcode.NOERROR, answer: encodeSet(dedupe(n.records)) };
      return e.any;
    }
    const typed = e.answers !== undefined ? e.answers.get(qtype) : qtype === e.type ? e.answer : undefined;
    return typed ?? e.cname ?? this.#soa().nodata[n.auth];
  }

  /**
   * The zone with its SOA records at the current revision. Built on the first answer that
   * needs them (negative answers, the apex), not on every update: an on-demand sidecar
   * applies one update per first query, and most of those are answered with records.
   */
  #soa(): Negative {
    if (this.#soaRevision !== this.#revision) this.#setRevision(this.#revision);
    return this.#negative;
  }

  /** The SOA carries the catalog revision as its serial: negative answers and the apex change. */
  #setRevision(revision: number): void {
    this.#soaRevision = revision;
    const soaFor = (auth: Authority): Buffer => {
      const { record, serialAt } = this.#soaTemplates[auth];
      const b = Buffer.from(record);
      b.writeUInt32BE(revision >>> 0, serialAt);
      return b;
    };
    const soa = { zone: soaFor('zone'), 'in-addr': soaFor('in-addr'), ip6: soaFor('ip6') };
    this.#negative = {
      nodata: {
        zone: { rcode: Rcode.NOERROR, authority: soa.zone },
        'in-addr': { rcode: Rcode.NOERROR, authority: soa['in-addr'] },
        ip6: { rcode: Rcode.NOERROR, authority: soa.ip6 },
      },
      nxdomain: { rcode: Rcode.NXDOMAIN, authority: soa.zone },
    };
    // The apex answers SOA queries with its SOA (owner = the question name, as everywhere).
    const rdata = soa.zone.subarray(encodeName(this.domain).length + 10);
    this.#replace('soa', {
      from: soa,
      records: [contribution(this.domain, Type.SOA, this.#ttl, rdata)],
      marks: [],
      problems: [],
    });
  }

  /** Swaps a source's records for new ones (or none). */
  #replace(id: string, next: Source | undefined): void {
    const prev = this.#sources.get(id);
    if (prev) {
      const byName = new Map<string, Set<Contribution>>();
      for (const c of prev.records) {
        const set = byName.get(c.name);
        if (set) set.add(c);
        else byName.set(c.name, new Set([c]));
      }
      for (const [name, gone] of byName) {
        const n = this.#names.get(name)!;
        n.records = n.records.filter((r) => !gone.has(r));
        n.encoded = undefined;
      }
      for (const c of prev.records) this.#ref(c.name, -1);
      for (const m of prev.marks) this.#ref(m, -1);
    }
    if (next) {
      // Indexed loops: this runs per first query, and an array iterator is an allocation
      // until the function is optimized.
      const records = next.records;
      for (let i = 0; i < records.length; i++) {
        const c = records[i];
        const n = this.#ref(c.name, 1)!;
        // Most names have one record: an exact one-item array, not push's room for 17 (152
        // bytes per name held in an on-demand sidecar's young generation, docs/scale.md round 6).
        if (n.records.length === 0) n.records = [c];
        else n.records.push(c);
        n.encoded = undefined;
      }
      for (let i = 0; i < next.marks.length; i++) this.#ref(next.marks[i], 1);
      this.#sources.set(id, next);
    } else {
      this.#sources.delete(id);
    }
  }

  /**
   * Counts a record or mark at `name` (+1 or -1). A name counts its own records and marks
   * and, inside the zone, its children that exist; so only a name that comes into existence
   * or ceases to exist changes its parent's count, and a new service under an existing
   * namespace touches its own names only. Returns the name's state (undefined once gone).
   */
  #ref(name: string, delta: 1 | -1): NameState | undefined {
    let n = this.#names.get(name);
    if (!n) {
      const auth: Authority = name.endsWith('.in-addr.arpa')
        ? 'in-addr'
        : name.endsWith('.ip6.arpa')
          ? 'ip6'
          : 'zone';
      n = { auth, records: [], refs: 0 };
      this.#names.set(name, n);
    }
    const existed = n.refs > 0;
    n.refs += delta;
    const exists = n.refs > 0;
    if (!exists) this.#names.delete(name);
    if (exists !== existed && n.auth === 'zone' && name !== this.domain && name.includes('.'))
      this.#ref(name.slice(name.indexOf('.') + 1), exists ? 1 : -1);
    return exists ? n : undefined;
  }
}

/** Builds the zone's tables from a catalog in one go (pure). */
export function buildZone(catalog: Catalog, opts: ZoneOptions): { zone: ZoneTables; problems: string[] } {
  const zone = new ZoneTables(opts);
  const problems = zone.update(catalog);
  return { zone, problems };
}

/** Identical records from several sources (one IP in two headless services) are sent once, glue combined. */
function dedupe(records: Contribution[]): Contribution[] {
  if (records.length < 2) return records;
  const out: Contribution[] = [];
  const index = new Map<string, number>();
  for (const c of records) {
    const key = c.rr.toString('latin1');
    const i = index.get(key);
    if (i === undefined) {
      index.set(key, out.length);
      out.push(c);
    } else if (c.glue) {
      out[i] = { ...out[i], glue: [...(out[i].glue ?? []), ...c.glue] };
    }
  }
  return out;
}

function encodeNode(all: Contribution[]): Encoded {
  const records = dedupe(all);
  let oneType = true;
  for (let i = 1; i < records.length; i++) if (records[i].type !== records[0].type) oneType = false;
  if (oneType) {
    if (records.length === 0) return { type: -1, answer: undefined, answers: undefined };
    const type = records[0].type;
    const answer: LocalAnswer = { rcode: Rcode.NOERROR, answer: encodeSet(records) };
    if (type !== Type.CNAME) return { type, answer, answers: undefined };
    const cname = { ...answer, cnameTarget: decodePlainName(records[0].rr.subarray(12)) };
    return { type, answer: cname, answers: undefined, cname };
  }
  const answers = new Map<number, LocalAnswer>();
  const byType = new Map<number, Contribution[]>();
  for (const r of records) {
    const list = byType.get(r.type);
    if (list) list.push(r);
    else byType.set(r.type, [r]);
  }
  for (const [type, records] of byType)
    answers.set(type, { rcode: Rcode.NOERROR, answer: encodeSet(records) });
  const cnameRecord = byType.get(Type.CNAME)?.[0];
  let cname: LocalAnswer | undefined;
  if (cnameRecord) {
    cname = { ...answers.get(Type.CNAME)!, cnameTarget: decodePlainName(cnameRecord.rr.subarray(12)) };
    answers.set(Type.CNAME, cname);
  }
  return { type: -1, answer: undefined, answers, cname };
}

function contribution(name: string, type: number, ttl: number, rdata: Buffer, glue?: Buffer[]): Contribution {
  return { name, type, rr: encodeRecord(QNAME_POINTER, type, ttl, rdata), glue };
}

function addressContribution(name: string, ip: string, ttl: number): Contribution {
  return isIPv4(ip)
    ? contribution(name, Type.A, ttl, ipv4Bytes(ip))
    : contribution(name, Type.AAAA, ttl, ipv6Bytes(ip));
}

const SCRATCH: Contribution[] = [];

/**
 * What one service puts in the zone (problems are appended to `problems`). The list returned
 * is a scratch one, valid until the next call: copy it to keep it.
 */
function serviceRecords(
  entry: ServiceEntry,
  key: string,
  domain: string,
  ttl: number,
  problems: string[],
): Contribution[] {
  const svc = entry.service;
  // A scratch list (pure and not re-entered): the caller keeps an exact-size copy, and push
  // onto a fresh [] reserved 17 slots per first query only to be copied and dropped.
  const out = SCRATCH;
  out.length = 0;
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
  const clusterIPs = svc.headless ? [] : validIPs(svc.clusterIPs);
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
      out.push(contribution(srv, Type.SRV, ttl, srvRdata(0, 100, port.port, baseName)));
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

/** The addresses that are IPs: `ips` itself when all are (no copy per first query). */
function validIPs(ips: string[]): string[] {
  for (let i = 0; i < ips.length; i++)
    if (!isIPv4(ips[i]) && !isIPv6(ips[i])) return ips.filter((a) => isIPv4(a) || isIPv6(a));
  return ips;
}

const namedPort = (p: { name: string; port: number; protocol: string }): boolean =>
  p.name !== '' &&
  PORT_NAME.test(p.name) &&
  p.port > 0 &&
  p.port < 65536 &&
  /^(TCP|UDP|SCTP)$/.test(p.protocol);

function namedPorts<P extends { name: string; port: number; protocol: string }>(
  ports: P[],
  key: string,
  problems: string[],
): P[] {
  // The usual list has every port named and valid: itself, not a filtered copy.
  let all = true;
  for (let i = 0; i < ports.length; i++) if (!namedPort(ports[i])) all = false;
  if (all) return ports;
  return ports.filter((p) => {
    if (p.name === '') return false; // unnamed ports get no SRV record (spec 1.1.0)
    const ok = PORT_NAME.test(p.name) && p.port > 0 && p.port < 65536 && /^(TCP|UDP|SCTP)$/.test(p.protocol);
    if (!ok) problems.push(`service ${key}: port ${JSON.stringify(p.name)} is invalid`);
    return ok;
  });
}

const NO_GLUE = Buffer.alloc(0);

function encodeSet(records: Contribution[]): RRSet {
  const bytes = records.length === 1 ? records[0].rr : Buffer.concat(records.map((r) => r.rr));
  // Most sets (A/AAAA, PTR, a ClusterIP service's SRV) have no glue: built on every first answer.
  let glued = false;
  for (const r of records) if (r.glue) glued = true;
  if (!glued) return { count: records.length, bytes, glueCount: 0, glue: NO_GLUE };
  // Glue is per target name: several SRV records (ports) of one host share one A/AAAA.
  const glue = [
    ...new Map(records.flatMap((r) => r.glue ?? []).map((g) => [g.toString('latin1'), g])).values(),
  ];
  return {
    count: records.length,
    bytes,
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
