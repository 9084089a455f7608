/**
 * HTTP/1.1 in the native engine (sidecar/native/l4.c, "HTTP/1.1 connections"), behind
 * EDGEMESH_HTTP1_PATH=native: a client connection on an HTTP service port whose requests need
 * nothing of JavaScript but round-robin balancing is handed to the engine's thread with its
 * endpoints; from then on a keep-alive request costs no JavaScript at all.
 *
 * Which per-request features of the JavaScript fast path (http1/fast.ts) the engine has, and
 * which keep a service in JavaScript (`eligible` says why not):
 *   round-robin balancing per request            C (its own turn per connection, started apart)
 *   other policies, ClientIP affinity, hash key  JavaScript: lb.ts's state (in-flight counts,
 *                                                rings, affinity table) lives there
 *   retries of idempotent bodiless requests      C (next endpoint, up to 3, as fast.ts)
 *   hop-by-hop lines dropped, connection: close  C (http1.c, parse.ts's rules: fuzzed against it)
 *   502 on failure                               C (the same body text as fast.ts)
 *   400/405/431 on bad requests                  JavaScript: the connection comes back (fallback)
 *   chunked request bodies, Upgrade              JavaScript: fallback at that request
 *   endpoints behind the gateway hop             JavaScript: the relay rules of fast.ts's pool
 *   per-service metrics (classes, histogram)     C counts, JavaScript adds them every second
 *   requests-by-code counter                     C (8 codes per service per second; more land
 *                                                on the 8th)
 * Endpoints are the route's at hand-over: a connection keeps them (a pod gone since fails its
 * connect and the request moves on, as a stale pooled connection in fast.ts would).
 *
 * Two ways in: JavaScript hands a connection over (take, takeFd: to this engine's thread), or,
 * with an accepting engine attached (attach; proxy.ts does it for the native L4 engine), that
 * engine takes connections to eligible destinations itself at accept, from a table this class
 * keeps up to date with the catalog: no JavaScript at all per `Connection: close` request.
 */
import type net from 'node:net';
import type { Dialer } from './dialer.ts';
import type { ProxyMetrics } from './metrics.ts';
import { type HttpAcceptor, type HttpRouteEntry, loadAddon, socketForFd } from './native-l4.ts';
import { normalizeIp, type Route, type Target } from './route.ts';
import type { Router } from './router.ts';
import type { ServiceStats } from './service-metrics.ts';

const EVENT_HTTP_FALLBACK = 8;
const EVENT_HTTP_CLOSED = 9;
/** http1.c's bounds: endpoints per connection, bytes handed over, metrics slots, endpoint ids. */
const MAX_ENDPOINTS = 64;
const MAX_BYTES = 96 * 1024;
const MAX_SERVICES = 4096;
const MAX_ENDPOINT_IDS = 65536;
/** No bytes read yet (takeFd). */
const NOTHING = Buffer.alloc(0);
/** How often the engine's counts are added to the service metrics (a scrape sees them this late at most). */
const STATS_MS = 1_000;
/** One httpStats row: svc, 5 classes, 14 buckets, sum, count, 8 × (code, count), connections taken at accept, their bytes sent and received. */
const ROW = 1 + 5 + 14 + 2 + 16 + 3;
/**
 * l4.c's bounds of the accept-time route table: entries (ClusterIP × port) and endpoints over
 * all of them. Destinations past them are left out of the table: their connections go the way
 * they went before it (an accept event, then takeFd).
 */
const MAX_ROUTES = 8192;
const MAX_ROUTE_ENDPOINTS = 16384;

export interface NativeContext {
  dstIp: string;
  dstPort: number;
  clientIp: string;
  /** Called once the engine holds the connection, before its socket is destroyed. */
  handedOver?: () => void;
}

export interface NativeHttp1Options {
  router: Router;
  dialer: Dialer;
  metrics: ProxyMetrics;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /**
   * A connection the engine gives back (a request it does not handle): JavaScript goes on with
   * it. `unsniffed`: taken straight from its fd (takeFd) and given back at its first request,
   * so nobody has checked its first bytes for the HTTP/2 preface yet.
   */
  onFallback: (socket: net.Socket, ctx: NativeContext, buffered: Buffer, unsniffed: boolean) => void;
}

interface NativeAddon {
  create(
    onEvent: (type: number, fd: number, num: number, data?: unknown, ...rest: unknown[]) => void,
    idleMs: number,
  ): object;
  httpTake(
    engine: object,
    fd: number,
    bytes: Buffer,
    endpoints: (string | number)[],
    svc: number,
    key: string,
    timeoutMs: number,
    own: boolean,
  ): number;
  httpStats(engine: object): number[];
  httpDrain(engine: object): void;
  stop(engine: object): void;
}

type ServiceRoute = Extract<Route, { kind: 'service' }>;
/** What the engine needs of an eligible route: its endpoints in the engine's form, its metrics slot. */
type Plan = { endpoints: (string | number)[]; slot: number };

/** A connection the engine holds: its context (for a fallback), its service's stats, whether taken from its fd. */
interface Held {
  ctx: NativeContext;
  stats: ServiceStats;
  unsniffed: boolean;
  /** An earlier connection on the same fd number whose last event is still on the way (#hold). */
  older: Held | undefined;
}

export class NativeHttp1 {
  readonly #opts: NativeHttp1Options;
  readonly #addon: NativeAddon;
  readonly #engine: object;
  readonly #endpointIds = new Map<string, number>();
  readonly #slots = new Map<string, number>();
  /**
   * Per metrics slot: its service port, whose stats are looked up when the engine's counts
   * come (services.of): a table entry made for a service nobody calls adds no series to /metrics.
   */
  readonly #slotRoutes: ServiceRoute[] = [];
  /** Per engine fd: the connections on it whose last event has not come yet, newest first (#hold). */
  readonly #open = new Map<number, Held>();
  #held = 0;
  readonly #timer: NodeJS.Timeout;
  /**
   * Per route (one object per service port per catalog revision): why not, or what the engine
   * gets. Built once per revision instead of per connection (short connections pay for each).
   */
  readonly #plans = new WeakMap<Route, string | Plan>();
  #stopped = false;
  /** The engine that accepts, when it carries eligible destinations itself (attach). */
  #acceptor: HttpAcceptor | undefined;
  #unsubscribe: (() => void) | undefined;
  #rebuild: NodeJS.Immediate | undefined;
  /** The `http` child of the connections counter, bound once. */
  readonly #httpConnections: { inc(n?: number): void };

  /** The engine, or why not (the addon is not built). */
  static create(opts: NativeHttp1Options): NativeHttp1 | Error {
    const addon = loadAddon();
    if (addon instanceof Error) return addon;
    if (typeof (addon as unknown as NativeAddon).httpTake !== 'function')
      return new Error(
        'native HTTP/1.1 path not available: the addon predates it (rebuild: sidecar/native/build.sh)',
      );
    return new NativeHttp1(addon as unknown as NativeAddon, opts);
  }

  private constructor(addon: NativeAddon, opts: NativeHttp1Options) {
    this.#addon = addon;
    this.#opts = opts;
    this.#engine = addon.create((type, fd, num, data, _peer, _local, sent, received) => {
      if (type === EVENT_HTTP_CLOSED) this.#closed(fd, sent as number, received as number);
      else if (type === EVENT_HTTP_FALLBACK) this.#fallback(fd, data as Buffer, num);
    }, opts.idleTimeoutMs);
    this.#timer = setInterval(() => this.flushStats(), STATS_MS).unref();
    // A scrape sees the engine's counts of this very moment: the service families ask `live`
    // first, and the by-code counter runs its collect hook (prom-client) before it is read.
    const services = opts.metrics.services;
    const live = services.live;
    services.live = () => {
      this.flushStats();
      return live.call(services);
    };
    for (const counter of [opts.metrics.httpRequests, opts.metrics.connections] as unknown as {
      collect?: () => unknown;
    }[]) {
      const collect = counter.collect;
      counter.collect = () => {
        this.flushStats();
        return collect?.call(counter);
      };
    }
    this.#httpConnections = opts.metrics.connections.labels('http');
  }

  /** Connections the engines hold: handed over by JavaScript, and taken at accept (attach). */
  get open(): number {
    return this.#held + (this.#acceptor?.httpOpen ?? 0);
  }

  /**
   * The accepting engine (the L4 engine's listener) takes eligible connections itself: it gets
   * a table of the destinations this engine would carry (ClusterIP:port → endpoints, metrics
   * slot, key) and serves a connection to one of them on its own thread, with no event to
   * JavaScript and no hand-over to this engine's thread. Everything else (not in the table,
   * a table not built yet) comes to JavaScript as an accept event, as before.
   *
   * Ordering on a catalog change: the store calls its listeners synchronously in apply(), so
   * the table is emptied before JavaScript routes any connection by the new catalog, and
   * refilled from it at setImmediate (one rebuild per burst of updates). A connection the
   * engine accepted while the old table stood keeps the old endpoints, as one handed over
   * before the change does (a pod gone since fails its connect and the request moves on).
   */
  attach(acceptor: HttpAcceptor): void {
    if (this.#stopped || this.#acceptor) return;
    this.#acceptor = acceptor;
    acceptor.onHttpEvent = (type, fd, _num, data, peer, local, _sent, _received, port) => {
      if (type === EVENT_HTTP_FALLBACK) this.#acceptedFallback(fd, data as Buffer, peer, local, port);
    };
    this.#unsubscribe = this.#opts.router.subscribe(() => this.#catalogChanged());
    this.#pushRoutes();
  }

  #catalogChanged(): void {
    if (this.#stopped || !this.#acceptor) return;
    this.#setRoutes([]);
    this.#scheduleRebuild();
  }

  #scheduleRebuild(): void {
    if (this.#stopped || !this.#acceptor) return;
    this.#rebuild ??= setImmediate(() => {
      this.#rebuild = undefined;
      this.#pushRoutes();
    });
  }

  /**
   * The table from the current catalog: every eligible HTTP destination of a service that has
   * a metrics slot, up to the bounds. A slot is given on a service's first connection through
   * JavaScript (which then asks for a rebuild): slots and endpoint ids are taken on first use,
   * as before the table, not up front for every service the store holds, and the table holds
   * what this pod calls.
   */
  #pushRoutes(): void {
    if (this.#stopped || !this.#acceptor) return;
    const entries: HttpRouteEntry[] = [];
    let endpoints = 0;
    for (const { ip, port, route } of this.#opts.router.serviceDestinations()) {
      // h2c ports keep JavaScript's sniff (as proxy.ts's takeFd); loopback is the loop check's.
      if (route.l7 !== 'http' || ip === '127.0.0.1' || ip === '::1' || !this.#slots.has(route.key)) continue;
      const plan = this.#plan(route);
      if (typeof plan === 'string') continue;
      if (entries.length >= MAX_ROUTES || endpoints + plan.endpoints.length / 3 > MAX_ROUTE_ENDPOINTS) break;
      endpoints += plan.endpoints.length / 3;
      entries.push([ip, port, plan.slot, route.key, plan.endpoints]);
    }
    this.#setRoutes(entries);
  }

  #setRoutes(entries: HttpRouteEntry[]): void {
    try {
      this.#acceptor?.httpRoutes(entries, this.#opts.connectTimeoutMs);
    } catch {
      // Refused (cannot happen within the bounds above): no table, every connection via JavaScript.
      this.#acceptor?.httpRoutes([], this.#opts.connectTimeoutMs);
    }
  }

  /** Why `route` must stay in JavaScript, or undefined when the engine can carry it. */
  eligible(route: Route): string | undefined {
    if (route.kind !== 'service') return 'not a service';
    const { service, targets } = route;
    if (targets.length === 0) return 'no ready endpoint (JavaScript answers 503)';
    if (targets.length > MAX_ENDPOINTS) return `more than ${MAX_ENDPOINTS} endpoints`;
    if (service.lbPolicy !== 'round-robin') return `lb policy ${service.lbPolicy}`;
    if (service.sessionAffinity.type !== 'None') return 'ClientIP session affinity';
    if (service.hashHeader) return 'hash header';
    for (const target of targets) {
      const raw = this.#opts.dialer.raw?.(target);
      if (raw?.via !== 'pod' || raw.handshake) return 'an endpoint behind the gateway hop';
    }
    return undefined;
  }

  /**
   * Hands `socket` (paused, with `buffered` already read from it) to the engine when its
   * service is eligible; the socket is then destroyed (the engine holds a duplicate of its fd).
   * False: JavaScript keeps it.
   */
  take(socket: net.Socket, ctx: NativeContext, buffered: Buffer | undefined): boolean {
    if (this.#stopped) return false;
    const route = this.#opts.router.resolve(ctx.dstIp, ctx.dstPort);
    const plan = this.#plan(route);
    if (typeof plan === 'string') return false;
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) return false;
    // Bytes Node read past the sniff, still in the stream's buffer.
    const queued = socket.readableLength > 0 ? (socket.read() as Buffer | null) : null;
    const bytes = queued
      ? Buffer.concat([buffered ?? Buffer.alloc(0), queued])
      : (buffered ?? Buffer.alloc(0));
    if (bytes.length > MAX_BYTES) {
      if (queued) socket.unshift(queued);
      return false;
    }
    this.#give(fd, bytes, route, plan, ctx, false, false);
    ctx.handedOver?.();
    // The engine's duplicate keeps the connection: closing Node's fd sends nothing.
    socket.destroy();
    return true;
  }

  /**
   * Hands an accepted connection's `fd` (non-blocking, as the L4 engine accepts) to the engine
   * before any byte of it was read (the engine reads the first head itself) when its service is
   * eligible: no net.Socket for it, which is most of what a `Connection: close` request costs.
   * True: the engine owns `fd` from now on (the caller must not close it; no duplicate, so no
   * dup, fcntl or close per connection). False: nothing happened, the caller goes on as before.
   * A first request the engine does not carry (the HTTP/2 preface among them) comes back with
   * `unsniffed` set (onFallback).
   */
  takeFd(fd: number, ctx: NativeContext): boolean {
    if (this.#stopped) return false;
    const route = this.#opts.router.resolve(ctx.dstIp, ctx.dstPort);
    const plan = this.#plan(route);
    if (typeof plan === 'string') return false;
    this.#give(fd, NOTHING, route, plan, ctx, true, true);
    return true;
  }

  /**
   * The engine takes `fd` (own) or a duplicate of it with `bytes` already read and carries it
   * for the route's plan; the connection is held until the engine reports it closed or given back.
   */
  #give(
    fd: number,
    bytes: Buffer,
    route: Route,
    plan: Plan,
    ctx: NativeContext,
    unsniffed: boolean,
    own: boolean,
  ): void {
    const engineFd = this.#addon.httpTake(
      this.#engine,
      fd,
      bytes,
      plan.endpoints,
      plan.slot,
      (route as ServiceRoute).key,
      this.#opts.connectTimeoutMs,
      own,
    );
    const stats = this.#opts.metrics.services.of(route as ServiceRoute);
    this.#hold(engineFd, { ctx, stats, unsniffed, older: undefined });
  }

  /** The route's plan, cached per route object. */
  #plan(route: Route): string | Plan {
    let plan = this.#plans.get(route);
    if (plan === undefined) {
      plan = this.eligible(route);
      if (plan === undefined) {
        const service = route as ServiceRoute;
        const endpoints = this.#endpoints(service.targets);
        const slot = this.#slot(service);
        plan = endpoints && slot >= 0 ? { endpoints, slot } : 'out of endpoint ids or metrics slots';
      }
      this.#plans.set(route, plan);
    }
    return plan;
  }

  /** Adds what the engine counted since the last call to the service metrics. */
  flushStats(): void {
    if (this.#stopped) return;
    this.#addStats(this.#addon.httpStats(this.#engine));
    if (this.#acceptor) this.#addStats(this.#acceptor.httpStats());
  }

  #addStats(rows: number[]): void {
    for (let at = 0; at + ROW <= rows.length; at += ROW) {
      const route = this.#slotRoutes[rows[at] as number];
      if (!route) continue;
      const stats = this.#opts.metrics.services.of(route);
      let k = at + 1;
      for (let c = 0; c < 5; c++) stats.classes[c] = (stats.classes[c] as number) + (rows[k++] as number);
      for (let b = 0; b < 14; b++) stats.buckets[b] = (stats.buckets[b] as number) + (rows[k++] as number);
      stats.durationSum += rows[k++] as number;
      stats.durationCount += rows[k++] as number;
      for (let c = 0; c < 8; c++, k += 2) {
        const code = rows[k] as number;
        const n = rows[k + 1] as number;
        if (code > 0 && n > 0) this.#opts.metrics.httpRequests.labels({ code }).inc(n);
      }
      // Connections taken at accept: what proxy.ts counts on an accept event, and their bytes.
      const conns = rows[k++] as number;
      if (conns > 0) {
        stats.connections += conns;
        this.#httpConnections.inc(conns);
      }
      stats.bytes(rows[k++] as number, rows[k++] as number);
    }
  }

  /** Keep-alive ends: idle connections close now, busy ones after their response. */
  drain(): void {
    if (this.#stopped) return;
    this.#addon.httpDrain(this.#engine);
    this.#acceptor?.httpDrain();
  }

  stop(): void {
    if (this.#stopped) return;
    this.flushStats();
    this.#unsubscribe?.();
    if (this.#rebuild) clearImmediate(this.#rebuild);
    try {
      this.#acceptor?.httpRoutes([], this.#opts.connectTimeoutMs);
    } catch {
      // The accepting engine stopped first: it accepts nothing any more.
    }
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#addon.stop(this.#engine);
  }

  /** [id, ip, port, ...] for the engine; undefined past the id space. */
  #endpoints(targets: Target[]): (string | number)[] | undefined {
    const out: (string | number)[] = [];
    for (const target of targets) {
      let id = this.#endpointIds.get(target.id);
      if (id === undefined) {
        if (this.#endpointIds.size >= MAX_ENDPOINT_IDS) return undefined;
        id = this.#endpointIds.size;
        this.#endpointIds.set(target.id, id);
      }
      out.push(id, target.ip, target.port);
    }
    return out;
  }

  /** The service's metrics slot in the engine (its route refreshed: the catalog may have replaced it). */
  #slot(route: ServiceRoute): number {
    let slot = this.#slots.get(route.key);
    if (slot === undefined) {
      if (this.#slots.size >= MAX_SERVICES) return -1;
      slot = this.#slots.size;
      this.#slots.set(route.key, slot);
      this.#scheduleRebuild(); // its next connections can be taken at accept
    }
    this.#slotRoutes[slot] = route;
    return slot;
  }

  /**
   * Records a connection the engine now holds on `fd` (its duplicate's number, or the accepted
   * fd it took). The number may still have an entry: the engine closed an earlier connection
   * on it and its CLOSED event is still on the way (the number is free as soon as the engine
   * closes it: a duplicate made here or an accept of the L4 engine's thread may reuse it). The
   * engine reports the earlier connection's end before it starts the later one, so events of
   * one fd come in order and each takes the oldest entry.
   */
  #hold(fd: number, conn: Held): void {
    conn.older = this.#open.get(fd);
    this.#open.set(fd, conn);
    this.#held++;
  }

  /** The connection an fd's last event (closed, given back) is about: the oldest entry on it. */
  #release(fd: number): Held | undefined {
    const newest = this.#open.get(fd);
    if (!newest) return undefined;
    this.#held--;
    if (!newest.older) {
      this.#open.delete(fd);
      return newest;
    }
    let at = newest;
    while (at.older?.older) at = at.older;
    const oldest = at.older as Held;
    at.older = undefined;
    return oldest;
  }

  #closed(fd: number, sent: number, received: number): void {
    this.#release(fd)?.stats.bytes(sent, received);
  }

  /** A connection taken at accept given back: JavaScript hears of it here first. */
  #acceptedFallback(fd: number, bytes: Buffer, peer?: string, dstIp?: string, dstPort?: number): void {
    const socket = socketForFd(fd);
    if (this.#stopped || !dstIp || !dstPort) {
      socket.destroy();
      return;
    }
    this.#opts.onFallback(socket, { dstIp, dstPort, clientIp: normalizeIp(peer ?? '') }, bytes, true);
  }

  #fallback(fd: number, bytes: Buffer, _length: number): void {
    const conn = this.#release(fd);
    const socket = socketForFd(fd);
    if (!conn) {
      socket.destroy();
      return;
    }
    this.#opts.onFallback(socket, conn.ctx, bytes, conn.unsniffed);
  }
}
