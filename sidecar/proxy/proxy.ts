/**
 * The transparent outbound proxy on :15001. iptables REDIRECTs the app's TCP here; for each
 * connection we read the original destination (SO_ORIGINAL_DST), look it up in the catalog
 * and either splice bytes to one endpoint (TCP service ports, pods, passthrough) or hand the
 * connection to the HTTP layer (HTTP service ports: per-request balancing).
 *
 * Lifecycle: start() binds 0.0.0.0 and [::] (IPv6 only if the host has it); drain() stops
 * accepting, lets open connections finish and after the grace period destroys the rest.
 */
import net from 'node:net';
import type { CatalogStore } from '../../lib/catalog/store.ts';
import { describeError } from '../../lib/errors.ts';
import { type Logger, silentLogger } from '../../lib/log.ts';
import { type Dialer, type DialResult, SOCKET_HWM } from './dialer.ts';
import { type ConnContext, HttpProxy } from './http-proxy.ts';
import { createProxyMetrics, type ProxyMetrics } from './metrics.ts';
import { type OriginalDst, originalDst } from './original-dst.ts';
import { normalizeIp, type Target } from './route.ts';
import { Router } from './router.ts';
import { SlotList, splice } from './splice.ts';

export interface ProxyOptions {
  store: CatalogStore;
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
  /** Test hook: how to read the original destination (default: getsockopt). `family`: the listener's. */
  originalDst?: (socket: net.Socket, family: 4 | 6) => OriginalDst;
}

type ResolvedOptions = Required<Omit<ProxyOptions, 'hosts' | 'metrics'>> & {
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
    this.#opts.metrics.activeSource = () => this.#clients.size;
    this.#http = new HttpProxy({
      router: this.router,
      dialer: this.#opts.dialer,
      connectTimeoutMs: this.#opts.connectTimeoutMs,
      idleTimeoutMs: this.#opts.idleTimeoutMs,
      maxAttempts: this.#opts.maxAttempts,
      log: this.#opts.log,
      metrics: this.#opts.metrics,
    });
  }

  /** True once every listener is bound (the health endpoint reports it). */
  get listening(): boolean {
    return this.#servers.length > 0 && this.#servers.every((s) => s.listening);
  }

  get activeConnections(): number {
    return this.#clients.size;
  }

  async start(): Promise<void> {
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
        const code = (err as NodeJS.ErrnoException).code;
        // A pod without IPv6 cannot bind [::]: serve IPv4 only.
        if (host.includes(':') && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL')) {
          this.#opts.log.info({ host }, 'IPv6 not available: proxy listens on IPv4 only');
          continue;
        }
        throw err;
      }
      server.on('error', (err) => this.#opts.log.error({ err: describeError(err) }, 'proxy listener error'));
      this.#servers.push(server);
    }
    this.#opts.log.info({ port: this.#opts.port, hosts: this.#opts.hosts }, 'proxy listening');
  }

  /**
   * Graceful stop: no new connections; HTTP keep-alive connections close after their
   * current response; the rest may finish within `graceMs`, then are destroyed.
   */
  async drain(graceMs: number): Promise<void> {
    this.#draining = true;
    await Promise.all(this.#servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.#http.drain();
    const deadline = Date.now() + graceMs;
    while (this.#clients.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const { socket } of [...this.#clients.items]) socket.destroy();
    await this.#http.close();
  }

  #onConnection(client: net.Socket, family: 4 | 6): void {
    const { metrics, log } = this.#opts;
    if (this.#draining) {
      client.destroy();
      return;
    }
    const entry = { socket: client, slot: -1 };
    this.#clients.add(entry);
    client.once('close', () => this.#clients.remove(entry));
    client.on('error', () => client.destroy());
    let dst: OriginalDst;
    try {
      dst = this.#opts.originalDst(client, family);
    } catch (err) {
      metrics.refused.inc({ reason: 'no-original-dst' });
      log.warn({ err: describeError(err) }, 'no original destination: closing');
      client.destroy();
      return;
    }
    if (this.#isSelf(client, dst)) {
      metrics.refused.inc({ reason: 'loop' });
      log.warn({ dst: `${dst.ip}:${dst.port}` }, 'connection addressed to the proxy itself: refused (loop)');
      client.destroy();
      return;
    }
    const route = this.router.resolve(dst.ip, dst.port);
    // getpeername is a syscall: only policies keyed by the client's address need it.
    const clientIp =
      route.kind === 'service' &&
      (route.l7 ||
        route.service.lbPolicy === 'consistent-hash' ||
        route.service.sessionAffinity.type === 'ClientIP')
        ? normalizeIp(client.remoteAddress ?? '')
        : '';
    if (route.kind === 'service' && route.l7) {
      this.#routeCounters.http.inc();
      const ctx: ConnContext = { dstIp: dst.ip, dstPort: dst.port, clientIp };
      this.#http.handle(client, ctx);
      return;
    }
    this.#routeCounters[route.kind].inc();
    let dial: Promise<{ result: DialResult; release: () => void }>;
    if (route.kind === 'service') {
      dial = this.#dialService(route, clientIp, client);
    } else {
      dial = this.#dialOne(route.target, client).then((result) => ({ result, release: () => undefined }));
    }
    dial
      .then(
        ({ result, release }) => {
          if (client.destroyed) {
            result.socket.destroy();
            release();
            return;
          }
          splice(client, result.socket, this.#opts.idleTimeoutMs, release, result.sinked);
        },
        (err: unknown) => {
          metrics.refused.inc({
            reason: route.kind === 'service' && route.targets.length === 0 ? 'no-endpoint' : 'unreachable',
          });
          log.info(
            { dst: `${dst.ip}:${dst.port}`, route: route.kind, err: describeError(err) },
            'no upstream: closing',
          );
          // A reset tells the app at once that nothing answered, as a refused connect would.
          client.resetAndDestroy();
        },
      )
      .catch((err: unknown) => {
        log.error({ err: describeError(err) }, 'connection handling failed');
        client.destroy();
      });
  }

  #isSelf(client: net.Socket, dst: OriginalDst): boolean {
    if (dst.port !== this.#opts.port) return false;
    const ip = normalizeIp(dst.ip);
    return ip === normalizeIp(client.localAddress ?? '') || ip === '127.0.0.1' || ip === '::1';
  }

  async #dialOne(target: Target, sink: net.Socket): Promise<DialResult> {
    try {
      return await this.#opts.dialer.dial(target, this.#opts.connectTimeoutMs, sink);
    } catch (err) {
      this.#opts.metrics.connectFailures.inc({ via: 'pod' });
      throw err;
    }
  }

  /** Picks endpoints by policy until one connects (each failed one is excluded for this connection). */
  async #dialService(
    route: Extract<ReturnType<Router['resolve']>, { kind: 'service' }>,
    clientIp: string,
    client: net.Socket,
  ): Promise<{ result: DialResult; release: () => void }> {
    const balancer = this.router.balancer(route);
    const failed = new Set<string>();
    // Built only on failure: an Error captures a stack, measurable at thousands of connections/s.
    let lastError: unknown;
    for (let attempt = 0; attempt < this.#opts.maxAttempts; attempt++) {
      const choice = balancer.pick({ clientIp }, failed);
      if (!choice) break;
      balancer.acquire(choice.id);
      try {
        const result = await this.#dialOne(choice.value, client);
        balancer.reportSuccess(choice.id);
        return { result, release: once(() => balancer.release(choice.id)) };
      } catch (err) {
        balancer.release(choice.id);
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
