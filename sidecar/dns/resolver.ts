import type DnsPacket from 'dns-packet';
import { keyString, type LookupKey } from '../../lib/catalog/lookup-protocol.ts';
import type { CatalogStore } from '../../lib/catalog/store.ts';
import type { CatalogUpdate } from '../../lib/catalog/types.ts';
import { describeError } from '../../lib/errors.ts';
import { type Logger, silentLogger } from '../../lib/log.ts';
import type { Registry } from '../../lib/metrics.ts';
import { keyForName } from '../catalog/keys.ts';
import { type CatalogLookup, HOLDS_EVERYTHING, type LookupResult } from '../catalog/lookup.ts';
import { type CacheOptions, ResponseCache } from './cache.ts';
import { Forwarder, type Upstream } from './forwarder.ts';
import { inspectResponse } from './message.ts';
import { type ExtraRecords, emptyResponse, forwardedResponse, localResponse } from './response.ts';
import { createDnsMetrics, type DnsMetrics, type Source } from './stats.ts';
import {
  CLASS_IN,
  encodeName,
  errorResponse,
  isProblem,
  parseQuery,
  type Query,
  Rcode,
  Type,
  udpLimit,
} from './wire.ts';
import { type LocalAnswer, type Zone, ZoneTables } from './zone.ts';

/**
 * The decision for each query, independent of sockets (so tests and the fuzz loop drive it
 * directly):
 *
 *   malformed header/question        → FORMERR / NOTIMP / BADVERS, or dropped (responses, < 12 bytes)
 *   name in the cluster zone         → SERVFAIL until the catalog synced, then the zone's answer
 *                                      (on-demand: a name whose service the sidecar does not
 *                                      hold is asked for first, catalog/lookup.ts; the gateway
 *                                      unreachable → SERVFAIL)
 *   reverse name of a cluster IP     → PTR from the zone (asked for the same way)
 *   <cluster name>.<search domain>   → NXDOMAIN (an ndots search expansion; never leaves the pod)
 *   anything else                    → cache, else the upstream resolvers
 */
export interface ResolverOptions {
  store: CatalogStore;
  /** Makes the store hold what a cluster name needs (on-demand); default: it holds everything. */
  lookup?: CatalogLookup;
  clusterDomain?: string;
  /** Upstream resolvers for names outside the cluster; none: such names are REFUSED. */
  upstreams: Upstream[];
  /** The pod's search list; expansions of cluster names under its non-cluster entries answer NXDOMAIN. */
  searchDomains?: string[];
  ttl?: number;
  cache?: CacheOptions;
  /** Longest time an upstream answer is cached, seconds. */
  maxCacheTtl?: number;
  upstreamTimeoutMs?: number;
  maxInFlight?: number;
  log?: Logger;
  registry?: Registry;
}

export type Transport = 'udp' | 'tcp';
export type Reply = (response: Buffer) => void;

const TCP_LIMIT = 65535;

export class Resolver {
  readonly #store: CatalogStore;
  readonly #lookup: CatalogLookup;
  /**
   * Query name → its lookup key (null: none), so the hot path does not parse names again; the
   * entry is also the lookup's memo for the key (what answers it again without a map lookup).
   */
  readonly #keys = new Map<string, NameKey | null>();
  readonly #domain: string;
  readonly #dotDomain: string;
  readonly #ttl: number | undefined;
  readonly #searchSuffixes: string[];
  readonly #cache: ResponseCache;
  /** Absent when no upstream is configured: names outside the cluster are REFUSED. */
  readonly #forwarder: Forwarder | undefined;
  readonly #maxCacheTtl: number;
  readonly #log: Logger;
  readonly #metrics: DnsMetrics;
  readonly #unsubscribe: () => void;
  #zone: ZoneTables | undefined;
  /**
   * What the zone lacks of the store: nothing, the store's updates since the last build (applied
   * one by one: an on-demand answer costs what it changed), or a full update (a snapshot came).
   */
  #pending: 'none' | 'full' | CatalogUpdate[] = 'full';
  #lastProblems = '';
  #oddSeq = 0;

  constructor(opts: ResolverOptions) {
    this.#store = opts.store;
    this.#lookup = opts.lookup ?? HOLDS_EVERYTHING;
    this.#domain = (opts.clusterDomain ?? opts.store.current?.clusterDomain ?? 'cluster.local')
      .toLowerCase()
      .replace(/\.$/, '');
    this.#dotDomain = `.${this.#domain}`;
    this.#ttl = opts.ttl;
    this.#searchSuffixes = (opts.searchDomains ?? [])
      .map((s) => s.toLowerCase().replace(/\.$/, ''))
      .filter((s) => s !== '' && s !== this.#domain && !s.endsWith(this.#dotDomain))
      .map((s) => `.${s}`);
    this.#log = opts.log ?? silentLogger;
    this.#cache = new ResponseCache(opts.cache);
    this.#maxCacheTtl = opts.maxCacheTtl ?? 3600;
    this.#metrics = createDnsMetrics(opts.registry, {
      cacheEntries: () => this.#cache.size,
      upstreamInFlight: () => this.#forwarder?.inFlight ?? 0,
    });
    this.#forwarder =
      opts.upstreams.length === 0
        ? undefined
        : new Forwarder({
            upstreams: opts.upstreams,
            timeoutMs: opts.upstreamTimeoutMs,
            maxInFlight: opts.maxInFlight,
            log: this.#log,
            onEvent: (e) => this.#metrics.upstream.labels(e).inc(),
          });
    // Rebuild lazily (the next query) and soon (next tick), so a burst of updates costs one build.
    this.#unsubscribe = this.#store.subscribe((_catalog, update) => {
      const wasClean = this.#pending === 'none';
      if (update.type === 'snapshot' || this.#pending === 'full') this.#pending = 'full';
      else if (this.#pending === 'none') this.#pending = [update];
      else if (this.#pending.length >= MAX_INCREMENTS) this.#pending = 'full';
      else this.#pending.push(update);
      if (wasClean) setImmediate(this.#rebuild);
    });
  }

  /** One function for every scheduled rebuild (a first query schedules one). */
  readonly #rebuild = (): void => {
    this.#currentZone();
  };

  close(): void {
    this.#unsubscribe();
    this.#forwarder?.close();
  }

  /**
   * Answers one DNS message. Never throws; `reply` is called exactly once, now or later,
   * unless the message is dropped (responses, fragments under 12 bytes): then it returns false.
   */
  handle(msg: Buffer, transport: Transport, reply: Reply): boolean {
    const start = performance.now();
    let q: Query | undefined;
    let replied = false;
    const once: Reply = (response) => {
      if (replied) return;
      replied = true;
      reply(response);
    };
    try {
      const parsed = parseQuery(msg);
      if (isProblem(parsed)) {
        this.#metrics.malformed.labels(parsed.reason).inc();
        if (parsed.rcode === undefined) return false;
        once(errorResponse(parsed));
        return true;
      }
      q = parsed;
      this.#answer(msg, q, transport === 'udp' ? udpLimit(q) : TCP_LIMIT, start, once);
      return true;
    } catch (err) {
      // A bug, not bad input: answer SERVFAIL (unless already answered) rather than leave the client waiting.
      this.#log.error({ err: describeError(err) }, 'DNS query failed');
      this.#metrics.malformed.labels('internal').inc();
      if (!q) return false;
      once(emptyResponse(msg, q, Rcode.SERVFAIL));
      return true;
    }
  }

  #answer(msg: Buffer, q: Query, limit: number, start: number, reply: Reply): void {
    const local = this.#local(msg, q, limit, start, reply);
    if (local) this.#done(q, 'local', start, reply, local);
  }

  /**
   * The answer when it is known now; otherwise starts the asynchronous part and returns
   * undefined. `asked`: the catalog lookup for this name is done (its result).
   */
  #local(
    msg: Buffer,
    q: Query,
    limit: number,
    start: number,
    reply: Reply,
    asked?: 'found' | 'missing' | 'unavailable',
  ): Buffer | undefined {
    const name = q.name;
    if (q.qtype === Type.AXFR || q.qtype === Type.IXFR) return emptyResponse(msg, q, Rcode.NOTIMP, limit);
    if (name === this.#domain || name.endsWith(this.#dotDomain)) {
      if (q.qclass !== CLASS_IN) return emptyResponse(msg, q, Rcode.REFUSED, limit);
      if (!asked && this.#ensure(msg, q, limit, start, reply)) return undefined;
      if (asked === 'unavailable') return emptyResponse(msg, q, Rcode.SERVFAIL, limit);
      const zone = this.#currentZone();
      if (!zone) return emptyResponse(msg, q, Rcode.SERVFAIL, limit);
      const a = zone.lookup(name, q.qtype, q.oddName)!;
      if (a.cnameTarget && q.qtype !== Type.CNAME && q.qtype !== Type.ANY) {
        return this.#chase(msg, q, a, limit, start, reply);
      }
      return localResponse(msg, q, a, limit);
    }
    if (q.qclass === CLASS_IN && name.endsWith('.arpa')) {
      // Unavailable: the address may not be ours at all; upstream answers as it would.
      if (!asked && this.#ensure(msg, q, limit, start, reply)) return undefined;
      const a = this.#currentZone()?.lookup(name, q.qtype, q.oddName);
      if (a) return localResponse(msg, q, a, limit);
    }
    for (const suffix of q.oddName ? [] : this.#searchSuffixes) {
      if (!name.endsWith(suffix)) continue;
      const stem = name.slice(0, -suffix.length);
      if (stem === this.#domain || stem.endsWith(this.#dotDomain)) {
        return emptyResponse(msg, q, Rcode.NXDOMAIN, limit);
      }
    }
    if (!this.#forwarder) return emptyResponse(msg, q, Rcode.REFUSED, limit);
    // A cache hit is answered now, without a promise.
    const hit = q.oddName ? undefined : this.#cache.get(this.#cacheKey(q));
    if (hit) {
      this.#done(q, 'cache', start, reply, forwardedResponse(msg, q, hit.bytes, limit, hit));
      return undefined;
    }
    this.#forward(msg, q).then(
      ({ response, source }) =>
        this.#complete(msg, q, limit, start, reply, () => [
          source,
          forwardedResponse(msg, q, response, limit),
        ]),
      () =>
        this.#complete(msg, q, limit, start, reply, () => [
          'upstream',
          emptyResponse(msg, q, Rcode.SERVFAIL, limit),
        ]),
    );
    return undefined;
  }

  /**
   * Starts the catalog lookup a cluster or reverse name needs and answers once it is done;
   * false when what is held answers it now (the hot path: one map lookup).
   */
  #ensure(msg: Buffer, q: Query, limit: number, start: number, reply: Reply): boolean {
    if (q.oddName || this.#lookup === HOLDS_EVERYTHING) return false;
    let memo = this.#keys.get(q.name);
    if (memo === undefined) {
      const key = keyForName(q.name, this.#domain);
      memo = key ? { key, id: keyString(key), held: undefined } : null;
      // Bounded: a pod asking for endless distinct names only costs re-parsing.
      if (this.#keys.size >= MAX_KEY_MEMO) this.#keys.clear();
      this.#keys.set(q.name, memo);
    }
    if (!memo) return false;
    const done = (result: LookupResult) => this.#asked(msg, q, limit, start, reply, result);
    const lookup = this.#lookup;
    if (lookup.ensureThen) return lookup.ensureThen(memo.key, memo.id, memo, done);
    const pending = lookup.ensure(memo.key, memo.id, memo);
    if (!pending) return false;
    pending.then(done);
    return true;
  }

  /** Answers a query once the catalog lookup its name needed is done. */
  #asked(msg: Buffer, q: Query, limit: number, start: number, reply: Reply, result: LookupResult): void {
    let response: Buffer | undefined;
    try {
      response = this.#local(msg, q, limit, start, reply, result);
    } catch (err) {
      this.#log.error({ err: describeError(err), name: q.name }, 'DNS answer failed');
      response = emptyResponse(msg, q, Rcode.SERVFAIL, limit);
    }
    if (response) this.#done(q, 'gateway', start, reply, response);
  }

  #cacheKey(q: Query): string {
    return ResponseCache.key(q.name, q.qtype, q.qclass, q.flags, q.edns?.dnssecOk ?? false);
  }

  /** Cached or upstream answer (OPT removed) for the query's question. Rejects → SERVFAIL. */
  #forward(msg: Buffer, q: Query): Promise<{ response: Buffer; source: Source }> {
    const dnssecOk = q.edns?.dnssecOk ?? false;
    // A name whose labels hold dots or odd bytes has an ambiguous text form: never cached or shared.
    const key = q.oddName ? `odd:${this.#oddSeq++}` : this.#cacheKey(q);
    const hit = q.oddName ? undefined : this.#cache.copy(key);
    if (hit) return Promise.resolve({ response: hit, source: 'cache' as const });
    const question = msg.subarray(12, q.questionEnd);
    if (!this.#forwarder) return Promise.reject(new Error('no upstream resolvers'));
    return this.#forwarder.resolve(key, question, q.flags, dnssecOk).then((raw) => {
      const r = inspectResponse(raw, q.questionEnd, this.#maxCacheTtl);
      if (!r) {
        this.#metrics.upstream.labels('malformed').inc();
        throw new Error('malformed upstream response');
      }
      if (!q.oddName) this.#cache.put(key, r);
      return { response: r.bytes, source: 'upstream' as const };
    });
  }

  /**
   * ExternalName: the CNAME plus the target's records, as CoreDNS does, so stub resolvers
   * that do not chase CNAMEs themselves (glibc, musl) still get addresses. A target in the
   * zone is looked up locally (one level); any other goes upstream. A failed chase still
   * returns the CNAME.
   */
  #chase(
    msg: Buffer,
    q: Query,
    a: LocalAnswer,
    limit: number,
    start: number,
    reply: Reply,
  ): Buffer | undefined {
    const target = a.cnameTarget!;
    if (target === this.#domain || target.endsWith(this.#dotDomain)) {
      const t = this.#currentZone()?.lookup(target, q.qtype);
      const extra = t?.answer && !t.cnameTarget ? renamed(t.answer.bytes, t.answer.count, target) : undefined;
      return localResponse(msg, q, a, limit, true, extra);
    }
    const question = Buffer.concat([
      encodeName(target),
      Buffer.from([q.qtype >> 8, q.qtype & 0xff, 0, CLASS_IN]),
    ]);
    const tq: Query = { ...q, name: target, qclass: CLASS_IN, questionEnd: 12 + question.length };
    const tmsg = Buffer.concat([msg.subarray(0, 12), question]);
    Promise.all([this.#forward(tmsg, tq), loadDnsPacket()]).then(
      ([{ response }, dnsPacket]) =>
        this.#complete(msg, q, limit, start, reply, () => {
          let extra: ExtraRecords | undefined;
          try {
            // Upstream records may use compression pointers into their own message: re-encode them whole.
            const records = (dnsPacket.decode(response).answers ?? []).filter((r) => r.type !== 'OPT');
            // dns-packet encodes single records (uncompressed); its types do not declare it.
            const encode = (dnsPacket as unknown as { answer: { encode(a: DnsPacket.Answer): Buffer } })
              .answer.encode;
            extra = { count: records.length, bytes: Buffer.concat(records.map((r) => encode(r))) };
          } catch {
            extra = undefined; // records dns-packet cannot handle: the CNAME alone
          }
          return ['upstream', localResponse(msg, q, a, limit, true, extra)];
        }),
      () => this.#complete(msg, q, limit, start, reply, () => ['upstream', localResponse(msg, q, a, limit)]),
    );
    return undefined;
  }

  /**
   * Finishes an asynchronous answer. A bug in `build` answers SERVFAIL rather than becoming
   * an unhandled rejection (which would end the process).
   */
  #complete(
    msg: Buffer,
    q: Query,
    limit: number,
    start: number,
    reply: Reply,
    build: () => [Source, Buffer],
  ): void {
    let result: [Source, Buffer];
    try {
      result = build();
    } catch (err) {
      this.#log.error({ err: describeError(err), name: q.name }, 'DNS answer failed');
      this.#metrics.malformed.labels('internal').inc();
      result = ['upstream', emptyResponse(msg, q, Rcode.SERVFAIL, limit)];
    }
    this.#done(q, result[0], start, reply, result[1]);
  }

  #done(q: Query, source: Source, start: number, reply: Reply, response: Buffer): void {
    try {
      reply(response);
    } catch (err) {
      // The transport went away (server closing): nothing to answer to.
      this.#log.debug({ err: describeError(err) }, 'DNS reply not sent');
    }
    this.#metrics.stats.record(
      q.qtype,
      response[3] & 0xf,
      SOURCE_INDEX[source],
      (performance.now() - start) / 1000,
    );
  }

  #currentZone(): Zone | undefined {
    if (this.#pending === 'none') return this.#zone;
    const catalog = this.#store.current;
    if (!catalog) return undefined;
    const pending = this.#pending;
    this.#pending = 'none';
    const t0 = performance.now();
    let problems: string[];
    try {
      if (pending !== 'full' && this.#zone) {
        const zone = this.#zone;
        problems = pending.flatMap((u) => zone.apply(u));
        // Only what changed is known here: its problems are logged, the summary kept for full builds.
        if (problems.length > 0)
          this.#log.warn(
            { problems: problems.slice(0, 20), count: problems.length },
            'catalog entries skipped in DNS',
          );
        return zone;
      }
      this.#zone ??= new ZoneTables({ domain: this.#domain, ttl: this.#ttl });
      problems = this.#zone.update(catalog);
    } catch (err) {
      // A bug, not bad input: tables updated half-way cannot be trusted. Start over once;
      // if that fails too, cluster names answer SERVFAIL until the next catalog change.
      this.#log.error({ err: describeError(err) }, 'DNS zone update failed; rebuilding');
      try {
        this.#zone = new ZoneTables({ domain: this.#domain, ttl: this.#ttl });
        problems = this.#zone.update(catalog);
      } catch (again) {
        this.#log.error({ err: describeError(again) }, 'DNS zone rebuild failed');
        this.#zone = undefined;
        return undefined;
      }
    }
    this.#metrics.zoneBuilds.inc();
    const ms = Math.round((performance.now() - t0) * 10) / 10;
    this.#log.debug({ revision: catalog.revision, names: this.#zone.size, ms }, 'DNS zone updated');
    // Logged when the set of problems changes, not on every update.
    const summary = problems.slice(0, 20).join('; ');
    if (problems.length > 0 && summary !== this.#lastProblems) {
      this.#log.warn(
        { problems: problems.slice(0, 20), count: problems.length },
        'catalog entries skipped in DNS',
      );
    }
    this.#lastProblems = summary;
    return this.#zone;
  }
}

/** A query name's lookup key, its text, and the lookup's memo slot (LookupMemo). */
interface NameKey {
  key: LookupKey;
  id: string;
  held: unknown;
}

const MAX_KEY_MEMO = 4096;
/** More updates than this between two queries: one full update is cheaper. */
const MAX_INCREMENTS = 1000;

const SOURCE_INDEX: Record<Source, number> = { local: 0, cache: 1, upstream: 2, gateway: 3 };

// dns-packet is needed only for ExternalName targets answered upstream: loaded on first use.
let dnsPacketModule: Promise<typeof DnsPacket> | undefined;
const loadDnsPacket = () => {
  dnsPacketModule ??= import('dns-packet').then((m) => m.default);
  return dnsPacketModule;
};

/** Pre-encoded records (owner 0xC00C) re-owned by `name`, for records appended after a CNAME. */
function renamed(bytes: Buffer, count: number, name: string): ExtraRecords {
  const owner = encodeName(name);
  const parts: Buffer[] = [];
  let o = 0;
  for (let i = 0; i < count; i++) {
    const rdlen = bytes.readUInt16BE(o + 10);
    parts.push(owner, bytes.subarray(o + 2, o + 12 + rdlen));
    o += 12 + rdlen;
  }
  return { count, bytes: Buffer.concat(parts) };
}
