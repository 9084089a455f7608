/**
 * The L7 fast path for HTTP/1.1 service ports: requests are framed, not re-serialised. For
 * each request the head is parsed (parse.ts) only to find its end, its body's length and the
 * hop-by-hop lines to drop; an endpoint is picked by the service's balancer (lb.ts) and the
 * head's own bytes go out on a pooled keep-alive connection to it. Bodies pass through as the
 * Buffers they were read in: Content-Length bodies are counted, chunked ones scanned for chunk
 * sizes only. Responses come back the same way.
 *
 *   one request at a time per client connection; pipelined requests wait in the read buffer
 *     (at most MAX_HEAD + one read: reading stops beyond that)
 *   backpressure both ways: a full destination pauses its source (no buffering in between)
 *   idle upstream connections: at most POOL_MAX per endpoint, closed after POOL_IDLE_MS (or
 *     sooner when the server's Keep-Alive hint says so), at once when the server closes them;
 *     connections through the gateway on the tunnel's relay are not reused past RELAY_REUSE_MS
 *     nor once a newer one to the same node came back on a better path
 *   retries: idempotent requests without a body, on a failed connect or a reused connection
 *     closed before any response byte
 *   Upgrade (WebSocket, h2c upgrade): a fresh upstream connection; after 101 both are spliced
 *   errors: 400/405/431 (bad request, then close), 502 (no endpoint answered), 503 (none ready)
 */
import type net from 'node:net';
import { describeError } from '../../../lib/errors.ts';
import type { Logger } from '../../../lib/log.ts';
import type { ChunkReader, Dialer, DialResult } from '../dialer.ts';
import type { Balancer } from '../lb.ts';
import { type ProxyMetrics, statusCounter } from '../metrics.ts';
import { NativeHttp1 } from '../native-http1.ts';
import type { RouteTable, Target } from '../route.ts';
import type { Router } from '../router.ts';
import type { ServiceStats } from '../service-metrics.ts';
import { SlotList, splice } from '../splice.ts';
import {
  ChunkedScanner,
  type Head,
  HttpError,
  MAX_HEAD,
  parseRequestHead,
  parseResponseHead,
  rewriteHead,
} from './parse.ts';

export interface FastContext {
  dstIp: string;
  dstPort: number;
  clientIp: string;
  /** Called when the native engine takes the connection over (../native-http1.ts). */
  handedOver?: () => void;
}

export interface FastOptions {
  router: Router;
  dialer: Dialer;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  maxAttempts: number;
  log: Logger;
  metrics: ProxyMetrics;
  /** Pool bounds (defaults POOL_IDLE_MS, RELAY_REUSE_MS); tests shorten them. */
  pool?: { idleMs?: number; relayReuseMs?: number };
  /**
   * Connections of services the native engine can carry go there (../native-http1.ts).
   * Default: on, unless env EDGEMESH_HTTP1_PATH (the sidecar container's, read here as
   * http-proxy.ts reads its 'node' value) is `fast` (HTTP/1.1 in JavaScript) or `node`; off
   * when the addon is not built (logged).
   */
  native?: boolean;
  /**
   * A connection the native engine took straight from its fd and gave back at its first
   * request: its first bytes still need the HTTP/2-preface check (http-proxy.ts); `http1`
   * continues it here. Without it such a connection goes on as HTTP/1.1.
   */
  sniff?: (socket: net.Socket, ctx: FastContext, buffered: Buffer, http1: (buffered: Buffer) => void) => void;
}

/** Idle upstream connections kept per endpoint. */
export const POOL_MAX = 64;
/**
 * An idle upstream connection is closed after this long, or 1 s before the server's own
 * `Keep-Alive: timeout` if that is sooner (what Node's http.Agent does). Below the shortest
 * common server keep-alive timeouts (Node.js and Apache httpd 5 s; nginx 75 s by default, 5 s
 * in the mesh e2e; HAProxy purges idle server connections every 5 s by default), so the pool
 * ends idle connections rather than the server: a request never goes out on a connection the
 * server is closing (a POST could not be retried), and the pool does not depend on the
 * server's FIN crossing the gateway and the tunnel to learn of it. A connection through the
 * gateway carries its tunnel stream on the path the stream started on: after a quiet spell the
 * next request dials again and takes the path the gateway has now.
 */
export const POOL_IDLE_MS = 4_000;
/**
 * A connection whose gateway stream rides the tunnel's relay is not reused after this long:
 * under steady traffic it never idles, and would keep the relay (the cloud's bandwidth, an
 * extra hop) for as long as the traffic lasts even once the gateways have a direct or
 * hole-punched path. The tunnel looks for one right after the relay comes up (LAN 1 s, TCP
 * punch 3 s, UDP 8 s: docs/tunnel.md), so 10 s lets a new path be found; a peer that has only
 * the relay costs one new stream per endpoint per 10 s of traffic.
 */
export const RELAY_REUSE_MS = 10_000;
/** How often idle connections are checked for expiry (taking one from the pool checks too). */
const SWEEP_MS = 1_000;
/** How long a closed client connection may take to send its FIN before it is destroyed. */
const LINGER_MS = 2_000;
/**
 * A response head whose lines change is copied with the body bytes that came with it when
 * those are at most this long: one write instead of a corked writev of two buffers.
 */
const COPY_MAX = 16 * 1024;
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** A connection to one endpoint; owned by one exchange at a time, or idle in its pool. */
class Upstream {
  readonly socket: net.Socket;
  readonly targetId: string;
  /** How the bytes travel ('pod', or the gateway's path) and to which node (gateway hops). */
  readonly via: DialResult['via'];
  readonly node: string | undefined;
  readonly openedAt = Date.now();
  owner: Exchange | undefined;
  idleSince = 0;
  /** How long it may idle in the pool: POOL_IDLE_MS, or less if the server's hint says so. */
  idleLimit: number;
  used = false;
  constructor(
    socket: net.Socket,
    targetId: string,
    via: DialResult['via'],
    node: string | undefined,
    idleLimit: number,
  ) {
    this.socket = socket;
    this.targetId = targetId;
    this.via = via;
    this.node = node;
    this.idleLimit = idleLimit;
  }
}

/**
 * An upstream connection's bytes from the dialer's reused read buffer (ChunkReader): no Buffer
 * per read for the GC (measured ~10% of the sidecar's CPU on 1 MiB responses). Bound to its
 * Upstream once the dial resolves, before any read can run.
 */
class UpstreamReader implements ChunkReader {
  up: Upstream | undefined;
  readonly #onRead: (up: Upstream, chunk: Buffer) => boolean;
  constructor(onRead: (up: Upstream, chunk: Buffer) => boolean) {
    this.#onRead = onRead;
  }
  read(chunk: Buffer): boolean {
    return this.up ? this.#onRead(this.up, chunk) : false;
  }
}

/** State of one request/response on a client connection. */
interface Exchange {
  conn: ClientConn;
  head: Head;
  /** The bytes of the request head as forwarded (kept for a retry). */
  out: Buffer;
  balancer: Balancer<Target>;
  choiceId: string;
  up: Upstream | undefined;
  failed: Set<string> | undefined;
  attempt: number;
  retryable: boolean;
  lastError: unknown;
  /** Request body still to forward: bytes (Content-Length) or a scanner (chunked). */
  reqRemaining: number;
  reqScanner: ChunkedScanner | undefined;
  reqDone: boolean;
  /** Response parsing. */
  respBuf: Buffer | undefined;
  resp: Head | undefined;
  respRemaining: number;
  respScanner: ChunkedScanner | undefined;
  respStarted: boolean;
  key: { clientIp: string; hashKey: string | undefined };
  route: string;
  /** Per-service metrics, and when the request head was parsed (performance.now(), ms). */
  stats: ServiceStats;
  started: number;
}

class ClientConn {
  readonly socket: net.Socket;
  readonly ctx: FastContext;
  buf: Buffer | undefined;
  ex: Exchange | undefined;
  ended = false;
  closing = false;
  tunnel = false;
  slot = -1;
  constructor(socket: net.Socket, ctx: FastContext) {
    this.socket = socket;
    this.ctx = ctx;
  }
}

/**
 * The native engine carries HTTP/1.1 unless the sidecar is told otherwise: it measured at or
 * under the JavaScript fast path's CPU and latency on every figure (docs/proxy.md, 2026-12-07).
 */
function nativeByDefault(): boolean {
  const path = process.env.EDGEMESH_HTTP1_PATH;
  return path !== 'fast' && path !== 'node';
}

export class Http1Fast {
  readonly #opts: FastOptions;
  readonly #pools = new Map<string, Upstream[]>();
  readonly #conns = new SlotList<ClientConn>();
  /** Node → when a connection to it last came back from the gateway on a path other than the relay. */
  readonly #offRelayAt = new Map<string, number>();
  /** Node → open connections whose stream rides the relay (most nodes have none: no scan then). */
  readonly #onRelay = new Map<string, number>();
  readonly #idleMs: number;
  readonly #relayReuseMs: number;
  #sweep: NodeJS.Timeout | undefined;
  #draining = false;
  /** Connections the native engine gave back (#takeBack) still open. */
  #returned = 0;

  /** The requests-by-code counter (metrics.ts statusCounter). */
  readonly #count: (status: number) => void;
  /** The native engine's HTTP/1.1 path, when switched on and built. */
  readonly #native: NativeHttp1 | undefined;

  constructor(opts: FastOptions) {
    this.#opts = opts;
    if (opts.native ?? nativeByDefault()) {
      const native = NativeHttp1.create({
        ...opts,
        onFallback: (socket, ctx, buffered, unsniffed) => this.#takeBack(socket, ctx, buffered, unsniffed),
      });
      if (native instanceof Error) opts.log.warn({ err: native.message }, 'HTTP/1.1 stays in JavaScript');
      else this.#native = native;
    }
    this.#count = statusCounter(opts.metrics);
    this.#idleMs = opts.pool?.idleMs ?? POOL_IDLE_MS;
    this.#relayReuseMs = opts.pool?.relayReuseMs ?? RELAY_REUSE_MS;
  }

  /** The native HTTP/1.1 engine, when switched on and built (proxy.ts attaches the accepting engine to it). */
  get native(): NativeHttp1 | undefined {
    return this.#native;
  }

  get openConnections(): number {
    return this.#conns.size + (this.#native?.open ?? 0);
  }

  /**
   * Open connections the accepting proxy no longer has as its own sockets: held by the native
   * engine, or given back by it on new sockets. The proxy's active gauge and drain() add these
   * to the sockets it tracks (a connection handed over leaves those at once: no double count).
   */
  get heldConnections(): number {
    return this.#returned + (this.#native?.open ?? 0);
  }

  /** Takes over an accepted client connection; `buffered`: bytes already read from it. */
  handle(socket: net.Socket, ctx: FastContext, buffered: Buffer | undefined): void {
    if (this.#native?.take(socket, ctx, buffered)) return;
    this.#handle(socket, ctx, buffered);
  }

  /**
   * Takes over an accepted connection's `fd` (nothing read from it yet) when the native engine
   * carries its service (../native-http1.ts takeFd). True: the engine owns `fd` now (it closes
   * it). False: `fd` is still the caller's, which goes on with a socket (handle).
   */
  takeFd(fd: number, ctx: FastContext): boolean {
    return this.#native?.takeFd(fd, ctx) ?? false;
  }

  /** A connection the native engine gave back (a request it does not carry): on in JavaScript. */
  #takeBack(socket: net.Socket, ctx: FastContext, buffered: Buffer, unsniffed: boolean): void {
    this.#returned++;
    socket.once('close', () => this.#returned--);
    socket.on('error', () => socket.destroy());
    if (this.#opts.idleTimeoutMs > 0) socket.setTimeout(this.#opts.idleTimeoutMs, () => socket.destroy());
    if (unsniffed && this.#opts.sniff)
      this.#opts.sniff(socket, ctx, buffered, (rest) => this.#handle(socket, ctx, rest));
    else this.#handle(socket, ctx, buffered);
  }

  #handle(socket: net.Socket, ctx: FastContext, buffered: Buffer | undefined): void {
    const conn = new ClientConn(socket, ctx);
    this.#conns.add(conn);
    conn.buf = buffered && buffered.length > 0 ? buffered : undefined;
    socket.on('data', (chunk: Buffer) => this.#onClientData(conn, chunk));
    socket.on('end', () => this.#onClientEnd(conn));
    socket.once('close', () => this.#onClientClose(conn));
    // A reset from the client (wrk ends that way) must cost this connection only.
    if (socket.listenerCount('error') === 0) socket.on('error', () => socket.destroy());
    if (conn.buf) this.#nextRequest(conn);
    socket.resume();
  }

  /** Keep-alive ends: idle client connections close now, busy ones after their response. */
  drain(): void {
    this.#draining = true;
    this.#native?.drain();
    for (const conn of [...this.#conns.items]) if (!conn.ex && !conn.tunnel) this.#endClient(conn);
    for (const list of this.#pools.values()) for (const up of list) up.socket.destroy();
    this.#pools.clear();
  }

  close(): void {
    this.#native?.stop();
    for (const conn of [...this.#conns.items]) conn.socket.destroy();
    for (const list of this.#pools.values()) for (const up of list) up.socket.destroy();
    this.#pools.clear();
    if (this.#sweep) clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  /** Endpoints gone from the catalog: their idle connections close. */
  prune(table: RouteTable): void {
    for (const [id, list] of this.#pools) {
      if (table.targetIds.has(id)) continue;
      this.#pools.delete(id);
      for (const up of list) up.socket.destroy();
    }
  }

  // ---- client side ----

  #onClientData(conn: ClientConn, chunk: Buffer): void {
    const ex = conn.ex;
    if (ex && !ex.reqDone && ex.up && !conn.buf) {
      this.#forwardBody(ex, chunk);
      return;
    }
    conn.buf = conn.buf ? Buffer.concat([conn.buf, chunk]) : chunk;
    if (!ex) this.#nextRequest(conn);
    // Waiting for a dial or a response: pipelined bytes wait, bounded.
    else if (conn.buf.length > MAX_HEAD) conn.socket.pause();
  }

  #onClientEnd(conn: ClientConn): void {
    conn.ended = true;
    const ex = conn.ex;
    if (!ex) {
      // A FIN between requests (or bytes of an unfinished head): nothing more will come.
      this.#endClient(conn);
    } else if (!ex.reqDone) {
      // The request body was cut short: the upstream cannot be answered sensibly.
      conn.socket.destroy();
    }
    // Otherwise the response is delivered, then the connection closes.
  }

  #onClientClose(conn: ClientConn): void {
    this.#conns.remove(conn);
    const ex = conn.ex;
    if (ex && !conn.tunnel) {
      conn.ex = undefined;
      ex.up?.socket.destroy();
      this.#releaseSlot(ex);
    }
  }

  #endClient(conn: ClientConn): void {
    if (conn.closing) return;
    conn.closing = true;
    conn.socket.pause();
    // Our FIN, then close once the client's comes (or at once if it already did). Closing
    // before it would answer bytes still in flight from the client with a reset, which can
    // destroy the response before the client read it (the lingering-close problem).
    const socket = conn.socket;
    if (conn.ended || socket.readableEnded) socket.end(() => socket.destroy());
    else {
      socket.end();
      socket.removeAllListeners('data');
      socket.on('data', () => undefined);
      socket.once('end', () => socket.destroy());
      socket.resume();
      setTimeout(() => socket.destroy(), LINGER_MS).unref();
    }
  }

  /** Parses the next request from the client's buffer and starts it. */
  #nextRequest(conn: ClientConn): void {
    const buf = conn.buf;
    if (!buf || conn.closing || conn.ex) return;
    const route = this.#opts.router.resolve(conn.ctx.dstIp, conn.ctx.dstPort);
    const hashHeader = route.kind === 'service' ? route.service.hashHeader?.toLowerCase() : undefined;
    let head: Head | undefined;
    try {
      head = parseRequestHead(buf, hashHeader);
    } catch (err) {
      this.#badRequest(conn, err);
      return;
    }
    if (!head) {
      if (conn.socket.isPaused()) conn.socket.resume();
      return;
    }
    if (route.kind !== 'service') {
      this.#localReply(conn, head, 503, 'edgemesh: this destination is no longer a service in the catalog\n');
      return;
    }
    const stats = this.#opts.metrics.services.of(route);
    if (route.targets.length === 0) {
      stats.request(503, 0);
      this.#localReply(conn, head, 503, `edgemesh: no ready endpoint for service ${route.key}\n`);
      return;
    }
    const hasBody = head.chunked || head.contentLength > 0;
    // Upgrade requests go out with their Connection/Upgrade lines: the endpoint must see them.
    const out = head.upgrade ? buf.subarray(0, head.headEnd) : rewriteHead(buf, head);
    const rest = buf.subarray(head.headEnd);
    conn.buf = rest.length > 0 ? rest : undefined;
    const ex: Exchange = {
      conn,
      head,
      out,
      balancer: this.#opts.router.balancer(route),
      choiceId: '',
      up: undefined,
      failed: undefined,
      attempt: 0,
      retryable: IDEMPOTENT.has(head.method) && !hasBody,
      lastError: undefined,
      reqRemaining: head.chunked ? 0 : Math.max(0, head.contentLength),
      reqScanner: head.chunked ? new ChunkedScanner(400) : undefined,
      reqDone: !hasBody,
      respBuf: undefined,
      resp: undefined,
      respRemaining: 0,
      respScanner: undefined,
      respStarted: false,
      key: { clientIp: conn.ctx.clientIp, hashKey: head.picked },
      route: route.key,
      stats,
      started: performance.now(),
    };
    conn.ex = ex;
    this.#attempt(ex);
  }

  /** Picks an endpoint and sends the head there (from the pool, or over a new connection). */
  #attempt(ex: Exchange): void {
    const choice = ex.attempt < this.#opts.maxAttempts ? ex.balancer.pick(ex.key, ex.failed) : undefined;
    if (!choice) {
      this.#upstreamFailed(ex);
      return;
    }
    ex.attempt++;
    ex.choiceId = choice.id;
    ex.balancer.acquire(choice.id);
    const pooled = ex.head.upgrade ? undefined : this.#take(choice.id);
    if (pooled) {
      this.#send(ex, pooled);
      return;
    }
    const conn = ex.conn;
    conn.socket.pause();
    // Upgrades are spliced after their 101 (splice.ts reads 'data' events): no reader for them.
    const reader = ex.head.upgrade ? undefined : new UpstreamReader(this.#onUpstreamRead);
    this.#opts.dialer.dial(choice.value, this.#opts.connectTimeoutMs, undefined, reader).then(
      ({ socket, via, read }) => {
        const up = this.#adoptUpstream(
          socket,
          choice.id,
          via,
          choice.value.nodeName,
          read ? reader : undefined,
        );
        if (up.node && via !== 'relay' && via !== 'pod') this.#leftRelay(up.node);
        if (conn.ex !== ex) {
          // The client went away while we dialled: keep the connection for the next one.
          this.#give(up);
          return;
        }
        ex.balancer.reportSuccess(choice.id);
        this.#send(ex, up);
        if (!conn.closing) conn.socket.resume();
      },
      (err: unknown) => {
        ex.balancer.release(choice.id);
        if (conn.ex !== ex) return;
        this.#opts.metrics.connectFailures.inc({ via: 'pod' });
        ex.balancer.reportFailure(choice.id);
        this.#exclude(ex, choice.id);
        ex.lastError = err;
        ex.choiceId = '';
        // A connect failure: nothing reached the endpoint, any request may go to the next one
        // as long as its body is still here in full (none yet forwarded).
        if (ex.retryable || ex.head.upgrade || this.#bodyHeld(ex)) this.#attempt(ex);
        else this.#upstreamFailed(ex);
      },
    );
  }

  /** True when nothing of the request has been forwarded yet (its body still waits in conn.buf). */
  #bodyHeld(ex: Exchange): boolean {
    return ex.up === undefined && !ex.respStarted;
  }

  #send(ex: Exchange, up: Upstream): void {
    ex.up = up;
    up.owner = ex;
    ex.respBuf = undefined;
    const conn = ex.conn;
    const socket = up.socket;
    if (ex.reqDone) {
      socket.write(ex.out);
      return;
    }
    const buffered = conn.buf;
    conn.buf = undefined;
    // Head and the body bytes already here in one writev.
    socket.cork();
    socket.write(ex.out);
    if (buffered) this.#forwardBody(ex, buffered);
    socket.uncork();
    if (!conn.closing && !ex.reqDone) conn.socket.resume();
  }

  /** Request body bytes: forwarded as they are; what follows the body stays for the next request. */
  #forwardBody(ex: Exchange, chunk: Buffer): void {
    const conn = ex.conn;
    const up = ex.up as Upstream;
    let end: number;
    if (ex.reqScanner) {
      try {
        end = ex.reqScanner.feed(chunk);
      } catch (err) {
        up.socket.destroy();
        this.#badRequest(conn, err);
        return;
      }
      if (end >= 0) ex.reqDone = true;
      else end = chunk.length;
    } else {
      end = Math.min(ex.reqRemaining, chunk.length);
      ex.reqRemaining -= end;
      if (ex.reqRemaining === 0) ex.reqDone = true;
    }
    const body = end === chunk.length ? chunk : chunk.subarray(0, end);
    if (end < chunk.length) conn.buf = chunk.subarray(end);
    if (body.length > 0 && !up.socket.write(body) && !ex.reqDone) {
      conn.socket.pause();
      up.socket.once('drain', () => {
        if (conn.ex === ex && !conn.closing) conn.socket.resume();
      });
    }
  }

  // ---- upstream side ----

  #adoptUpstream(
    socket: net.Socket,
    targetId: string,
    via: DialResult['via'],
    node: string | undefined,
    reader: UpstreamReader | undefined,
  ): Upstream {
    const up = new Upstream(socket, targetId, via, node, this.#idleMs);
    if (reader) reader.up = up;
    else
      socket.on('data', (chunk: Buffer) => {
        const ex = up.owner;
        if (ex) this.#onUpstreamData(ex, chunk);
        else socket.destroy(); // bytes on an idle connection: it cannot be reused
      });
    socket.on('end', () => {
      const ex = up.owner;
      if (ex) this.#onUpstreamEnd(ex, up);
      else socket.destroy();
    });
    socket.on('error', () => socket.destroy());
    if (via === 'relay' && node !== undefined) {
      this.#onRelay.set(node, (this.#onRelay.get(node) ?? 0) + 1);
      socket.once('close', () => {
        const left = (this.#onRelay.get(node) ?? 1) - 1;
        if (left > 0) this.#onRelay.set(node, left);
        else this.#onRelay.delete(node);
      });
    }
    socket.once('close', () => {
      this.#forget(up);
      const ex = up.owner;
      if (ex && ex.up === up) this.#onUpstreamEnd(ex, up);
    });
    socket.resume();
    return up;
  }

  /** A read from a reused buffer (UpstreamReader): true when `chunk` is still referenced after it. */
  #onUpstreamRead = (up: Upstream, chunk: Buffer): boolean => {
    const ex = up.owner;
    if (!ex) {
      up.socket.destroy(); // bytes on an idle connection: it cannot be reused
      return false;
    }
    const client = ex.conn.socket;
    this.#onUpstreamData(ex, chunk);
    // A write of it still queued on the client's socket, or a partial head kept for the next read.
    return client.writableLength > 0 || ex.respBuf !== undefined;
  };

  #take(targetId: string): Upstream | undefined {
    const list = this.#pools.get(targetId);
    if (!list) return undefined;
    const now = Date.now();
    while (list.length > 0) {
      const up = list.pop() as Upstream;
      if (up.socket.destroyed) continue;
      // The sweep runs every SWEEP_MS: one past its limit since then is closed here, unused.
      if (this.#expired(up, now)) {
        up.socket.destroy();
        continue;
      }
      up.used = true;
      return up;
    }
    return undefined;
  }

  /** Whether an idle connection must not be reused: idle too long, or pinned to the relay. */
  #expired(up: Upstream, now: number): boolean {
    return now - up.idleSince >= up.idleLimit || this.#stale(up, now);
  }

  /** A relay connection that is old, or older than the last one to its node that came back off the relay. */
  #stale(up: Upstream, now: number): boolean {
    if (up.via !== 'relay') return false;
    if (now - up.openedAt >= this.#relayReuseMs) return true;
    const off = up.node === undefined ? undefined : this.#offRelayAt.get(up.node);
    return off !== undefined && off >= up.openedAt;
  }

  /**
   * The gateway now reaches `node` off the relay: idle relay connections to it close at once
   * (busy ones are closed when their response is done, see #give), so the next requests dial
   * again and their streams take the better path.
   */
  #leftRelay(node: string): void {
    this.#offRelayAt.set(node, Date.now());
    if (!this.#onRelay.get(node)) return;
    for (const list of this.#pools.values()) {
      for (let i = list.length - 1; i >= 0; i--) {
        const up = list[i] as Upstream;
        if (up.via === 'relay' && up.node === node) {
          list.splice(i, 1);
          up.socket.destroy();
        }
      }
    }
  }

  /** Back to the pool (bounded), or closed. */
  #give(up: Upstream): void {
    up.owner = undefined;
    if (this.#draining || up.socket.destroyed || up.idleLimit <= 0 || this.#stale(up, Date.now())) {
      up.socket.destroy();
      return;
    }
    // A response that ended with the client's socket full left this one paused (#toClient);
    // that client's 'drain' no longer resumes it. Paused, it would not see the server's FIN.
    up.socket.resume();
    let list = this.#pools.get(up.targetId);
    if (!list) {
      list = [];
      this.#pools.set(up.targetId, list);
    }
    if (list.length >= POOL_MAX) {
      up.socket.destroy();
      return;
    }
    up.idleSince = Date.now();
    list.push(up);
    this.#sweep ??= setInterval(() => this.#sweepIdle(), Math.min(SWEEP_MS, this.#idleMs / 4)).unref();
  }

  #forget(up: Upstream): void {
    const list = this.#pools.get(up.targetId);
    if (!list) return;
    const at = list.indexOf(up);
    if (at >= 0) list.splice(at, 1);
  }

  #sweepIdle(): void {
    const now = Date.now();
    for (const [id, list] of this.#pools) {
      // Limits differ per connection (server hints, relay age): the whole list is checked.
      let kept = 0;
      for (const up of list) {
        if (this.#expired(up, now)) up.socket.destroy();
        else list[kept++] = up;
      }
      list.length = kept;
      if (list.length === 0) this.#pools.delete(id);
    }
    if (this.#pools.size === 0 && this.#sweep) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
  }

  #onUpstreamData(ex: Exchange, chunk: Buffer): void {
    const conn = ex.conn;
    if (ex.resp === undefined || ex.respBuf !== undefined) {
      // Head (or a 1xx followed by more): parse.
      const buf = ex.respBuf ? Buffer.concat([ex.respBuf, chunk]) : chunk;
      let head: Head | undefined;
      try {
        head = parseResponseHead(buf, ex.head.method);
      } catch (err) {
        this.#badResponse(ex, err);
        return;
      }
      if (!head) {
        ex.respBuf = buf;
        if (buf.length > MAX_HEAD) this.#badResponse(ex, new HttpError(502, 'response head too large'));
        return;
      }
      ex.respBuf = undefined;
      ex.respStarted = true;
      const rest = buf.subarray(head.headEnd);
      if (head.status < 200) {
        if (head.status === 101 && ex.head.upgrade) {
          this.#toTunnel(ex, buf);
          return;
        }
        // 100 Continue and other interim responses: passed on; the final one follows.
        conn.socket.write(buf.subarray(0, head.headEnd));
        if (rest.length > 0) this.#onUpstreamData(ex, rest);
        return;
      }
      ex.resp = head;
      // The server's keep-alive hint: idle no longer than 1 s short of it (Node's agent does the same).
      if (head.keepAliveMs >= 0) {
        const up = ex.up as Upstream;
        up.idleLimit = Math.min(up.idleLimit, head.keepAliveMs - 1000);
      }
      ex.respRemaining = head.chunked ? 0 : Math.max(0, head.contentLength);
      ex.respScanner = head.chunked ? new ChunkedScanner(502) : undefined;
      const clientCloses =
        ex.head.close || head.untilClose || this.#draining || conn.ended || ex.head.upgrade || !ex.reqDone;
      if (clientCloses) conn.closing = true;
      const extra = clientCloses ? 'connection: close\r\n' : undefined;
      this.#count(head.status);
      ex.stats.request(head.status, (performance.now() - ex.started) / 1000);
      const end = rest.length === 0 ? 0 : this.#responseBodyEnd(ex, rest);
      if (end < 0) return;
      // Head and the body bytes that came with it in one write: the head's own bytes when it
      // keeps all its lines, else one copy of both (small bodies) or a writev of the two.
      const body = rest.subarray(0, end);
      if (head.drop.length === 0 && !extra) this.#toClient(ex, buf.subarray(0, head.headEnd + end));
      else if (end <= COPY_MAX) this.#toClient(ex, rewriteHead(buf, head, extra, body));
      else {
        conn.socket.cork();
        this.#toClient(ex, rewriteHead(buf, head, extra));
        this.#toClient(ex, body);
        conn.socket.uncork();
      }
      if (this.#responseComplete(ex)) this.#finish(ex);
      return;
    }
    const end = this.#responseBodyEnd(ex, chunk);
    if (end < 0) return;
    if (end > 0) this.#toClient(ex, end === chunk.length ? chunk : chunk.subarray(0, end));
    if (this.#responseComplete(ex)) this.#finish(ex);
  }

  /**
   * How much of `chunk` belongs to the response body, the framing state moved past it; bytes
   * beyond it mark the upstream as not reusable. -1: bad framing, already answered.
   */
  #responseBodyEnd(ex: Exchange, chunk: Buffer): number {
    const resp = ex.resp as Head;
    let end = chunk.length;
    if (resp.untilClose) {
      // Runs until the upstream's FIN.
    } else if (ex.respScanner) {
      try {
        const at = ex.respScanner.feed(chunk);
        if (at >= 0) {
          end = at;
          ex.respScanner = undefined;
          ex.respRemaining = 0;
          resp.chunked = false;
        }
      } catch (err) {
        this.#badResponse(ex, err);
        return -1;
      }
    } else {
      end = Math.min(ex.respRemaining, chunk.length);
      ex.respRemaining -= end;
    }
    if (end < chunk.length) {
      // Bytes past the response: the upstream broke framing; it is not reused.
      resp.close = true;
    }
    return end;
  }

  #responseComplete(ex: Exchange): boolean {
    const resp = ex.resp as Head;
    return !resp.untilClose && !resp.chunked && ex.respRemaining === 0;
  }

  #toClient(ex: Exchange, bytes: Buffer): void {
    const conn = ex.conn;
    const up = ex.up as Upstream;
    if (!conn.socket.write(bytes)) {
      up.socket.pause();
      conn.socket.once('drain', () => {
        if (up.owner === ex) up.socket.resume();
      });
    }
  }

  #onUpstreamEnd(ex: Exchange, up: Upstream): void {
    if (ex.up !== up || up.owner !== ex) return;
    const resp = ex.resp;
    if (resp?.untilClose) {
      up.owner = undefined;
      up.socket.destroy();
      ex.up = undefined;
      this.#done(ex, false);
      return;
    }
    up.owner = undefined;
    up.socket.destroy();
    ex.up = undefined;
    if (ex.respStarted) {
      // Cut mid-response: the client cannot be told otherwise.
      ex.conn.socket.destroy();
      return;
    }
    // Closed before any response byte. A reused connection the server closed as we sent, or
    // a new one: retried when nothing depends on what reached the endpoint.
    this.#opts.log.debug({ route: ex.route, reused: up.used }, 'upstream closed before responding');
    ex.balancer.release(ex.choiceId);
    ex.choiceId = '';
    ex.lastError = new Error(
      up.used ? 'upstream closed a reused connection' : 'upstream closed the connection',
    );
    if (ex.retryable) {
      if (!up.used) this.#exclude(ex, up.targetId);
      this.#attempt(ex);
    } else this.#upstreamFailed(ex);
  }

  /** The response is complete: the upstream goes back to its pool, the client reads on. */
  #finish(ex: Exchange): void {
    const up = ex.up as Upstream;
    const resp = ex.resp as Head;
    ex.up = undefined;
    up.owner = undefined;
    // A client's `Connection: close` is its own connection's business: the line was not
    // forwarded, so the upstream still expects more requests (an HTTP/1.0 request, forwarded as
    // 1.0, leaves it closing). Reusing it spares a connect per request for such clients.
    if (ex.reqDone && !resp.close && ex.head.minor === 1 && !ex.head.upgrade) this.#give(up);
    else up.socket.destroy();
    this.#done(ex, !ex.reqDone);
  }

  #done(ex: Exchange, cutShort: boolean): void {
    const conn = ex.conn;
    this.#releaseSlot(ex);
    conn.ex = undefined;
    // cutShort: the response came before the whole request, whose rest cannot be skipped reliably.
    if (cutShort || conn.closing || conn.ended || this.#draining) {
      conn.closing = false;
      this.#endClient(conn);
      return;
    }
    if (conn.buf) this.#nextRequest(conn);
    if (!conn.ex && conn.socket.isPaused() && !conn.closing) conn.socket.resume();
  }

  #exclude(ex: Exchange, id: string): void {
    if (!ex.failed) ex.failed = new Set();
    ex.failed.add(id);
  }

  #releaseSlot(ex: Exchange): void {
    if (ex.choiceId) ex.balancer.release(ex.choiceId);
    ex.choiceId = '';
  }

  #toTunnel(ex: Exchange, buf: Buffer): void {
    const conn = ex.conn;
    const up = ex.up as Upstream;
    this.#count(101);
    ex.stats.request(101, (performance.now() - ex.started) / 1000);
    conn.tunnel = true;
    conn.ex = undefined;
    up.owner = undefined;
    const client = conn.socket;
    const socket = up.socket;
    client.removeAllListeners('data');
    client.removeAllListeners('end');
    socket.removeAllListeners('data');
    socket.removeAllListeners('end');
    client.write(buf);
    if (conn.buf) socket.write(conn.buf);
    conn.buf = undefined;
    const choiceId = ex.choiceId;
    ex.choiceId = '';
    splice(client, socket, this.#opts.idleTimeoutMs, () => ex.balancer.release(choiceId));
  }

  // ---- answers of our own ----

  #badRequest(conn: ClientConn, err: unknown): void {
    const status = err instanceof HttpError ? err.status : 400;
    this.#opts.metrics.refused.inc({ reason: 'bad-http' });
    const why = err instanceof Error ? err.message : String(err);
    const ex = conn.ex;
    if (ex) {
      ex.up?.socket.destroy();
      if (ex.up) ex.up.owner = undefined;
      this.#releaseSlot(ex);
      conn.ex = undefined;
      if (ex.respStarted) {
        conn.socket.destroy();
        return;
      }
    }
    conn.buf = undefined;
    this.#writeReply(conn, status, `edgemesh: malformed HTTP request (${why})\n`, true);
  }

  #badResponse(ex: Exchange, err: unknown): void {
    const up = ex.up as Upstream;
    up.owner = undefined;
    up.socket.destroy();
    ex.up = undefined;
    this.#releaseSlot(ex);
    if (ex.resp) {
      ex.conn.socket.destroy();
      return;
    }
    ex.lastError = err;
    ex.conn.ex = undefined;
    this.#replyFailed(ex);
  }

  #upstreamFailed(ex: Exchange): void {
    this.#releaseSlot(ex);
    ex.conn.ex = undefined;
    this.#replyFailed(ex);
  }

  #replyFailed(ex: Exchange): void {
    const conn = ex.conn;
    const body = `edgemesh: upstream of ${ex.route} failed: ${describeError(ex.lastError ?? new Error('no endpoint reachable'))}\n`;
    ex.stats.request(502, (performance.now() - ex.started) / 1000);
    // The request's body may be half sent or still unread: the connection cannot go on.
    this.#writeReply(conn, 502, body, !ex.reqDone || ex.up !== undefined || ex.head.close);
    if (ex.reqDone && !conn.closing) this.#done({ ...ex, choiceId: '' }, false);
  }

  /** A local answer; a request with a body is answered, then the connection closed. */
  #localReply(conn: ClientConn, head: Head, status: number, body: string): void {
    const rest = conn.buf?.subarray(head.headEnd);
    conn.buf = rest && rest.length > 0 ? rest : undefined;
    const close = head.close || head.chunked || head.contentLength > 0 || head.upgrade;
    this.#writeReply(conn, status, body, close);
    if (!close && conn.buf) this.#nextRequest(conn);
  }

  #writeReply(conn: ClientConn, status: number, body: string, close: boolean): void {
    this.#count(status);
    if (!conn.socket.writable) {
      conn.socket.destroy();
      return;
    }
    const reason = REASONS[status] ?? 'Error';
    conn.socket.write(
      `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${close || this.#draining ? 'connection: close\r\n' : ''}\r\n${body}`,
    );
    if (close || this.#draining) {
      conn.buf = undefined;
      this.#endClient(conn);
    }
  }
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  405: 'Method Not Allowed',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
};
