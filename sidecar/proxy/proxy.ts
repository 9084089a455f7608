/**
 * The transparent outbound proxy on :15001. iptables REDIRECTs the app's TCP here; for each
 * connection we read the original destination (SO_ORIGINAL_DST), look it up in the catalog
 * and either splice bytes to one endpoint (TCP service ports, pods, passthrough) or hand the
 * connection to the HTTP layer (HTTP service ports: per-request balancing).
 *
 * Two engines accept and splice, with the same routing (this file) and the same behaviour:
 *   native  the addon (native-l4.ts): accepts, and splices plain TCP (to pods, passthrough
 *           addresses, and through the gateway hop) on its own thread; connections on HTTP
 *           ports become net.Sockets, or go as fds to the native HTTP/1.1 engine when it
 *           carries the service (native-http1.ts takeFd). The default when the addon is built.
 *   node    net.Server and splice.ts: the fallback (no C compiler at install) and the engine
 *           of in-process tests that fake the original destination.
 *
 * Lifecycle: start() binds 0.0.0.0 and [::] (IPv6 only if the host has it); drain() stops
 * accepting, lets open connections finish and after the grace period destroys the rest.
 */
import net from 'node:net';
import type { CatalogStore } from '../../lib/catalog/store.ts';
import { describeError } from '../../lib/errors.ts';
import { type Logger, silentLogger } from '../../lib/log.ts';
import { type CatalogLookup, HOLDS_EVERYTHING } from '../catalog/lookup.ts';
import { type Dialer, SOCKET_HWM } from './dialer.ts';
import { type ConnContext, HttpProxy } from './http-proxy.ts';
import { createProxyMetrics, type ProxyMetrics } from './metrics.ts';
import { type AcceptedConnection, loadAddon, NativeL4 } from './native-l4.ts';
import { type OriginalDst, originalDst } from './original-dst.ts';
import { normalizeIp, type Target } from './route.ts';
import { Router, type ServiceRoute } from './router.ts';
import type { ServiceStats } from './service-metrics.ts';
import { SlotList, splice } from './splice.ts';

export interface ProxyOptions {
  store: CatalogStore;
  /** Makes the store hold what a destination needs (on-demand); default: it holds everything. */
  lookup?: CatalogLookup;
  dialer: Dialer;
  port: number;
  /** Addresses to listen on; default 0.0.0.0 and :: (IPv6-only socket, skipped if unsupported). */
  hosts?: string[];
  connectTimeoutMs?: number;
  /** Close a connection after this long without a byte either way (Istio's default: 1 h). */
  idleTimeoutMs?: number;
  /** Endpoints tried per connection/request before giving up. */
  maxAttempts?: number;
  log?: Logger;
  metrics?: ProxyMetrics;
  /** Test hook: how to read the original destination (default: getsockopt). `family`: the listener's. Implies the node engine. */
  originalDst?: (socket: net.Socket, family: 4 | 6) => OriginalDst;
  /** 'native' (default when the addon is built and no originalDst hook is given) or 'node'. */
  engine?: ProxyEngine;
}

export type ProxyEngine = 'native' | 'node';

/** An accepted connection: an fd the native engine holds until something needs a Node socket for it. */
interface Client {
  fd: number;
  socket: net.Socket | undefined;
  /** Stops counting `socket` as open (set with it): its connection went to the native HTTP/1.1 engine. */
  untrack?: () => void;
}

type ResolvedOptions = Required<Omit<ProxyOptions, 'hosts' | 'metrics' | 'engine' | 'lookup'>> & {
  lookup: CatalogLookup;
  hosts: string[];
  metrics: ProxyMetrics;
};

export class OutboundProxy {
  readonly router: Router;
  readonly #opts: ResolvedOptions;
  readonly #http: HttpProxy;
  readonly #servers: net.Server[] = [];
  /** Open client sockets (for drain and the active gauge); a SlotList, not a Set: see splice.ts. */
  readonly #clients = new SlotList<{ socket: net.Socket; slot: number }>();
  /** Label children bound once: a labelled inc() hashes its labels on every call. */
  readonly #routeCounters: Record<'service' | 'pod' | 'passthrough' | 'http', { inc(): void }>;
  readonly #native: NativeL4 | undefined;
  #nativeListening = false;
  #acceptPauses = 0;
  #acceptPauseLoggedAt = 0;
  #draining = false;

  constructor(options: ProxyOptions) {
    this.#opts = {
      hosts: ['0.0.0.0', '::'],
      connectTimeoutMs: 5_000,
      idleTimeoutMs: 3_600_000,
      maxAttempts: 3,
      log: silentLogger,
      originalDst,
      ...options,
      lookup: options.lookup ?? HOLDS_EVERYTHING,
      metrics: options.metrics ?? createProxyMetrics(),
    } as ResolvedOptions;
    this.router = new Router(options.store);
    const { connections } = this.#opts.metrics;
    this.#routeCounters = {
      service: connections.labels('service'),
      pod: connections.labels('pod'),
      passthrough: connections.labels('passthrough'),
      http: connections.labels('http'),
    };
    this.#native = this.#chooseEngine(options) === 'native' ? this.#startNative() : undefined;
    this.#opts.metrics.activeSource = () => this.activeConnections;
    this.#opts.metrics.services.live = () => this.router.table?.serviceKeys;
    this.#http = new HttpProxy({
      router: this.router,
      dialer: this.#opts.dialer,
      connectTimeoutMs: this.#opts.connectTimeoutMs,
      idleTimeoutMs: this.#opts.idleTimeoutMs,
      maxAttempts: this.#opts.maxAttempts,
      log: this.#opts.log,
      metrics: this.#opts.metrics,
    });
    // Connections to HTTP services the native HTTP/1.1 engine carries: taken by the accepting
    // engine itself, with no accept event here (native-http1.ts attach; older addon builds: no).
    if (this.#native?.acceptsHttp) this.#http.attachAcceptor(this.#native);
  }

  /** True once every listener is bound (the health endpoint reports it). */
  get listening(): boolean {
    if (this.#native) return this.#nativeListening;
    return this.#servers.length > 0 && this.#servers.every((s) => s.listening);
  }

  get engine(): ProxyEngine {
    return this.#native ? 'native' : 'node';
  }

  /**
   * Client connections open: Node sockets, connections the L4 engine splices, and those the
   * HTTP layer holds apart from a Node socket of ours (the native HTTP/1.1 engine's). A
   * connection handed to that engine leaves #clients at hand-over, so none counts twice.
   */
  get activeConnections(): number {
    return this.#clients.size + (this.#native?.open ?? 0) + this.#http.heldConnections;
  }

  /** The node engine never loads the addon (its thread and pages would be paid for nothing). */
  #chooseEngine(options: ProxyOptions): ProxyEngine {
    if (options.engine === 'node' || (!options.engine && options.originalDst)) return 'node';
    const addon = loadAddon();
    if (!(addon instanceof Error)) return 'native';
    if (options.engine === 'native') throw addon;
    this.#opts.log.warn({ err: addon.message }, 'proxy falls back to the node engine');
    return 'node';
  }

  #startNative(): NativeL4 {
    return new NativeL4({
      idleTimeoutMs: this.#opts.idleTimeoutMs,
      onAccepted: (conn) => this.#onNativeAccepted(conn),
      onAcceptError: (code) => this.#acceptPaused(code),
    });
  }

  /** The engine paused accepting (fd limit, EMFILE): connections wait in the backlog. Logged once per 10 s. */
  #acceptPaused(code: string): void {
    this.#acceptPauses++;
    const now = Date.now();
    if (now - this.#acceptPauseLoggedAt < 10_000) return;
    this.#opts.log.warn(
      { code, pauses: this.#acceptPauses },
      'proxy paused accepting (file descriptors or memory short): new connections wait in the backlog',
    );
    this.#acceptPauseLoggedAt = now;
    this.#acceptPauses = 0;
  }

  async start(): Promise<void> {
    if (this.#native) this.#startNativeListeners(this.#native);
    else await this.#startServers();
    this.#opts.log.info(
      { port: this.#opts.port, hosts: this.#opts.hosts, engine: this.engine },
      'proxy listening',
    );
  }

  #startNativeListeners(native: NativeL4): void {
    for (const host of this.#opts.hosts) {
      try {
        native.listen(host, this.#opts.port, 4096);
      } catch (err) {
        if (this.#skipsIPv6(host, err)) continue;
        throw err;
      }
    }
    this.#nativeListening = true;
  }

  /** A pod without IPv6 cannot bind [::]: serve IPv4 only. */
  #skipsIPv6(host: string, err: unknown): boolean {
    const code = (err as NodeJS.ErrnoException).code;
    if (host.includes(':') && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL')) {
      this.#opts.log.info({ host }, 'IPv6 not available: proxy listens on IPv4 only');
      return true;
    }
    return false;
  }

  async #startServers(): Promise<void> {
    for (const host of this.#opts.hosts) {
      // The listener's family is the accepted sockets' (IPv6 listeners are IPv6-only): asking
      // each socket (localFamily) would cost a getsockname(2) per connection.
      const family = host.includes(':') ? 6 : 4;
      const server = net.createServer(
        { allowHalfOpen: true, pauseOnConnect: true, noDelay: true, highWaterMark: SOCKET_HWM },
        (socket) => this.#onConnection(socket, family),
      );
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ port: this.#opts.port, host, ipv6Only: host.includes(':'), backlog: 4096 }, () => {
            server.removeListener('error', reject);
            resolve();
          });
        });
      } catch (err) {
        if (this.#skipsIPv6(host, err)) continue;
        throw err;
      }
      server.on('error', (err) => this.#opts.log.error({ err: describeError(err) }, 'proxy listener error'));
      this.#servers.push(server);
    }
  }

  /**
   * Graceful stop: no new connections; HTTP keep-alive connections close after their
   * current response; the rest may finish within `graceMs`, then are destroyed.
   */
  async drain(graceMs: number): Promise<void> {
    this.#draining = true;
    this.#native?.closeListeners();
    this.#nativeListening = false;
    await Promise.all(this.#servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.#http.drain();
    const deadline = Date.now() + graceMs;
    while (this.activeConnections > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const { socket } of [...this.#clients.items]) socket.destroy();
    if (this.#native) {
      this.#native.closeAll();
      // closeAll's events (closed, cancelled connects) come back through the event loop.
      const until = Date.now() + 1_000;
      while (this.#native.open > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      this.#native.stop();
    }
    await this.#http.close();
  }

  /** Node engine: a connection accepted by a net.Server. */
  #onConnection(socket: net.Socket, family: 4 | 6): void {
    if (this.#draining) {
      socket.destroy();
      return;
    }
    let dst: OriginalDst;
    try {
      dst = this.#opts.originalDst(socket, family);
    } catch (err) {
      this.#refuseNoDst(describeError(err));
      socket.destroy();
      return;
    }
    const localIp = dst.port === this.#opts.port ? socket.localAddress : undefined;
    const client: Client = { fd: -1, socket: undefined };
    this.#watch(client, socket);
    this.#route(client, dst, localIp, () => socket.remoteAddress ?? '');
  }

  /** Native engine: a connection accepted by the addon. */
  #onNativeAccepted(conn: AcceptedConnection): void {
    const native = this.#native as NativeL4;
    if (this.#draining) {
      native.reset(conn.fd);
      return;
    }
    if (!conn.dst) {
      this.#refuseNoDst(conn.dstError);
      native.reset(conn.fd);
      return;
    }
    this.#route({ fd: conn.fd, socket: undefined }, conn.dst, conn.localIp, () => conn.peerIp);
  }

  #refuseNoDst(why: unknown): void {
    this.#opts.metrics.refused.inc({ reason: 'no-original-dst' });
    this.#opts.log.warn({ err: why }, 'no original destination: closing');
  }

  /** Tracks a Node client socket (drain, the active gauge) as `client`'s. */
  #watch(client: Client, socket: net.Socket): net.Socket {
    const entry = { socket, slot: -1 };
    this.#clients.add(entry);
    const untrack = () => this.#clients.remove(entry);
    socket.once('close', untrack);
    socket.on('error', () => socket.destroy());
    client.socket = socket;
    client.untrack = untrack;
    return socket;
  }

  /** The client as a Node socket: the native engine hands its fd over on first need. */
  #socketOf(client: Client): net.Socket {
    return client.socket ?? this.#watch(client, (this.#native as NativeL4).adopt(client.fd));
  }

  #refuse(client: Client): void {
    // A reset tells the app at once that nothing answered, as a refused connect would.
    if (client.socket) client.socket.resetAndDestroy();
    else this.#native?.reset(client.fd);
  }

  #route(
    client: Client,
    dst: OriginalDst,
    localIp: string | undefined,
    peerIp: () => string,
    asked = false,
  ): void {
    const { metrics, log } = this.#opts;
    if (this.#isSelf(dst, localIp)) {
      metrics.refused.inc({ reason: 'loop' });
      log.warn({ dst: `${dst.ip}:${dst.port}` }, 'connection addressed to the proxy itself: refused (loop)');
      this.#refuse(client);
      return;
    }
    // A ClusterIP or pod IP the sidecar does not hold: asked for first (unavailable: passthrough).
    const pending = asked ? undefined : this.#opts.lookup.ensure({ kind: 'ip', ip: normalizeIp(dst.ip) });
    if (pending) {
      pending.then(() => this.#route(client, dst, localIp, peerIp, true));
      return;
    }
    const route = this.router.resolve(dst.ip, dst.port);
    // The node engine's peer address is a getpeername(2): only policies keyed by it ask.
    const clientIp =
      route.kind === 'service' &&
      (route.l7 ||
        route.service.lbPolicy === 'consistent-hash' ||
        route.service.sessionAffinity.type === 'ClientIP')
        ? normalizeIp(peerIp())
        : '';
    const stats = route.kind === 'service' ? metrics.services.of(route) : undefined;
    stats?.connection();
    if (route.kind === 'service' && route.l7) {
      this.#routeCounters.http.inc();
      // Straight from the fd to the native HTTP/1.1 engine when it carries this service: no
      // net.Socket, no first read in JavaScript (most of a `Connection: close` request's cost).
      // h2c ports keep the sniff: their prior-knowledge clients would only come back from it.
      if (
        route.l7 === 'http' &&
        !client.socket &&
        this.#native &&
        this.#http.takeFd(client.fd, { dstIp: dst.ip, dstPort: dst.port, clientIp })
      ) {
        this.#native.handedOver(client.fd);
        return;
      }
      const socket = this.#socketOf(client);
      const ctx: ConnContext = { dstIp: dst.ip, dstPort: dst.port, clientIp, handedOver: client.untrack };
      socket.once('close', () => stats?.bytes(socket.bytesRead, socket.bytesWritten));
      this.#http.handle(socket, ctx);
      return;
    }
    this.#routeCounters[route.kind].inc();
    const connected =
      route.kind === 'service'
        ? this.#connectService(client, route, clientIp, stats)
        : this.#connect(client, route.target, () => undefined);
    connected.catch((err: unknown) => {
      metrics.refused.inc({
        reason: route.kind === 'service' && route.targets.length === 0 ? 'no-endpoint' : 'unreachable',
      });
      log.info(
        { dst: `${dst.ip}:${dst.port}`, route: route.kind, err: describeError(err) },
        'no upstream: closing',
      );
      this.#refuse(client);
    });
  }

  #isSelf(dst: OriginalDst, localIp: string | undefined): boolean {
    if (dst.port !== this.#opts.port) return false;
    const ip = normalizeIp(dst.ip);
    return ip === normalizeIp(localIp ?? '') || ip === '127.0.0.1' || ip === '::1';
  }

  /**
   * Connects `client` to `target` and splices the two; resolves once connected, and `onClose`
   * runs when both sides are closed. The native engine dials what the dialer can describe in
   * plain bytes (pods directly, and the gateway hop's CONNECT line); a client already adopted
   * goes through the dialer and splice.ts.
   */
  async #connect(
    client: Client,
    target: Target,
    onClose: (sent: number, received: number) => void,
  ): Promise<void> {
    const { dialer, connectTimeoutMs, idleTimeoutMs, metrics } = this.#opts;
    const raw = this.#native && !client.socket ? dialer.raw?.(target) : undefined;
    try {
      if (this.#native && raw) {
        await this.#native.connect(client.fd, raw.ip, raw.port, connectTimeoutMs, onClose, raw.handshake);
        return;
      }
      const socket = this.#socketOf(client);
      const result = await dialer.dial(target, connectTimeoutMs, socket);
      if (socket.destroyed) {
        result.socket.destroy();
        onClose(0, 0);
        return;
      }
      // The client socket's own counts: what the app sent and what came back to it.
      splice(
        socket,
        result.socket,
        idleTimeoutMs,
        () => onClose(socket.bytesRead, socket.bytesWritten),
        result.sinked,
      );
    } catch (err) {
      metrics.connectFailures.inc({ via: (raw ?? dialer.raw?.(target))?.via ?? 'pod' });
      throw err;
    }
  }

  /** Picks endpoints by policy until one connects (each failed one is excluded for this connection). */
  async #connectService(
    client: Client,
    route: ServiceRoute,
    clientIp: string,
    stats: ServiceStats | undefined,
  ): Promise<void> {
    const balancer = this.router.balancer(route);
    const failed = new Set<string>();
    // Built only on failure: an Error captures a stack, measurable at thousands of connections/s.
    let lastError: unknown;
    for (let attempt = 0; attempt < this.#opts.maxAttempts; attempt++) {
      const choice = balancer.pick({ clientIp }, failed);
      if (!choice) break;
      balancer.acquire(choice.id);
      const release = once(() => balancer.release(choice.id));
      try {
        await this.#connect(client, choice.value, (sent, received) => {
          release();
          stats?.bytes(sent, received);
        });
        balancer.reportSuccess(choice.id);
        return;
      } catch (err) {
        release();
        balancer.reportFailure(choice.id);
        failed.add(choice.id);
        lastError = err;
      }
    }
    throw lastError ?? new Error(`no ready endpoint for service ${route.key}`);
  }
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (!done) {
      done = true;
      fn();
    }
  };
}
