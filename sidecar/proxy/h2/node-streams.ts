/**
 * The h2c path: an app connection that opened with the HTTP/2 prior-knowledge preface is
 * served by an in-process node:http2 server (core API: streams, no compatibility layer), and
 * every stream picks its own endpoint by the service's policy, then goes out as a stream on a
 * shared upstream session (sessions.ts). So one long-lived gRPC channel spreads its calls over
 * all endpoints, and N client connections cost a few upstream sessions, not N.
 *
 * Per stream: the request's header block goes upstream as received (HTTP/2 has no hop-by-hop
 * headers to strip: nghttp2 already refused connection-specific ones), bodies are piped both
 * ways under HTTP/2 flow control, the response head as received, trailers after the body
 * (gRPC's status lives there), RST_STREAM carried both ways (a client's cancel or missed
 * deadline cancels the upstream stream).
 *
 *   no ready endpoint                      → 503 (gRPC: 200 + grpc-status 14), naming the service
 *   the endpoint refused the connection    → the next endpoint, any method (nothing was sent)
 *   REFUSED_STREAM / GOAWAY before it ran  → the next endpoint, requests without a body
 *   every attempt failed                   → 502 (gRPC: 200 + grpc-status 14) with the last error
 *   the upstream resets after the head     → the client's stream is reset with the same code
 */
import type {
  ClientHttp2Stream,
  Http2Server,
  Http2Stream,
  IncomingHttpHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import type net from 'node:net';
import { describeError } from '../../../lib/errors.ts';
import type { ConnContext, HttpProxyOptions } from '../http-proxy.ts';
import { statusCounter } from '../metrics.ts';
import type { RouteTable } from '../route.ts';
import type { ServiceRoute } from '../router.ts';
import { isGrpc, proxyAnswer } from './grpc.ts';
import { type Session, SessionPool } from './sessions.ts';

export type H2ProxyOptions = Pick<
  HttpProxyOptions,
  'router' | 'dialer' | 'connectTimeoutMs' | 'idleTimeoutMs' | 'maxAttempts' | 'log' | 'metrics'
>;

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
// RFC 9113 §7 error codes.
const NO_ERROR = 0;
const INTERNAL_ERROR = 2;
const REFUSED_STREAM = 7;
const CANCEL = 8;
const END_STREAM = 0x1;

/** One request on its way: what every attempt needs. */
interface Exchange {
  stream: ServerHttp2Stream;
  headers: IncomingHttpHeaders;
  routeKey: string;
  hasBody: boolean;
  grpc: boolean;
  started: number;
  failed: Set<string> | undefined;
  attempts: number;
  lastError: unknown;
}

interface ServerSession {
  ctx: ConnContext;
  /** Streams open on this client connection (for its idle limit). */
  active: number;
  /** The sweep tick at which `active` last dropped to 0 (or the session began). */
  idleSince: number;
}

/**
 * How often idle sessions are looked for. One coarse timer for all of them instead of
 * session.setTimeout: that one is refreshed (a timer-list insert) on every frame of every
 * stream, which measured ~6 µs of each proxied request.
 */
const SWEEP_MS = 1_000;

export class NodeStreamsProxy {
  readonly #opts: H2ProxyOptions;
  readonly #pool: SessionPool;
  #server: Http2Server | undefined;
  readonly #sessions = new Map<ServerHttp2Session, ServerSession>();
  #pending: ConnContext | undefined;
  #sweep: NodeJS.Timeout | undefined;
  /** The requests-by-code counter (metrics.ts statusCounter). */
  readonly #count: (status: number) => void;
  /** Seconds-ish clock of the sweep (ticks of SWEEP_MS): no clock read per stream. */
  #tick = 0;

  constructor(opts: H2ProxyOptions) {
    this.#opts = opts;
    this.#count = statusCounter(opts.metrics);
    this.#pool = new SessionPool({
      dialer: opts.dialer,
      connectTimeoutMs: opts.connectTimeoutMs,
      onConnectFailure: () => opts.metrics.connectFailures.inc({ via: 'pod' }),
    });
  }

  /** Takes over a client connection whose first bytes (`buffered`) were the h2c preface. */
  handle(client: net.Socket, ctx: ConnContext, buffered: Buffer): void {
    // The session's own idle limit (below) replaces the socket's: a busy session's socket sees
    // no reads through the stream API (node:http2 reads the handle itself).
    client.setTimeout(0);
    if (buffered.length > 0) client.unshift(buffered);
    this.#pending = ctx;
    this.#h2Server().emit('connection', client);
    this.#pending = undefined;
    // http2 reads the unshifted bytes itself on the next tick; do not resume here.
  }

  /** Stop taking new streams: every client session gets GOAWAY and closes after its streams. */
  drain(): void {
    for (const session of this.#sessions.keys()) session.close();
  }

  /** Upstream sessions of endpoints no longer in the catalog are closed. */
  prune(table: RouteTable): void {
    this.#pool.prune(table.targetIds);
  }

  close(): void {
    clearInterval(this.#sweep);
    for (const session of this.#sessions.keys()) session.destroy();
    this.#sessions.clear();
    this.#pool.close();
  }

  /** The HTTP/2 server, created for the first h2c client (most pods never see one). */
  #h2Server(): Http2Server {
    if (this.#server) return this.#server;
    const { metrics, log, idleTimeoutMs } = this.#opts;
    const server = process.getBuiltinModule('node:http2').createServer();
    server.on('session', (session: ServerHttp2Session) => {
      const entry: ServerSession = { ctx: this.#pending as ConnContext, active: 0, idleSince: this.#tick };
      this.#sessions.set(session, entry);
      session.on('close', () => this.#sessions.delete(session));
      session.on('error', () => undefined); // reported via sessionError; never crash the process
    });
    // Idle as for TCP: a session with no open stream for idleTimeoutMs is closed. An open
    // stream (a quiet gRPC stream) keeps it, as an open TCP connection is kept while busy.
    if (idleTimeoutMs > 0) {
      const idleTicks = Math.max(1, Math.ceil(idleTimeoutMs / SWEEP_MS));
      this.#sweep = setInterval(() => {
        this.#tick++;
        for (const [session, entry] of this.#sessions)
          if (entry.active === 0 && this.#tick - entry.idleSince >= idleTicks) session.close();
      }, SWEEP_MS);
      this.#sweep.unref();
    }
    server.on('sessionError', (err: Error) => {
      metrics.refused.inc({ reason: 'bad-http' });
      log.debug({ err: describeError(err) }, 'h2c session error');
    });
    server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      try {
        this.#onStream(stream, headers);
      } catch (err) {
        // A bug or an unexpected peer must cost one stream, never the process.
        log.error({ err: describeError(err) }, 'h2c stream handling failed');
        if (!stream.destroyed) stream.close(INTERNAL_ERROR);
      }
    });
    // No 'request' listener: node:http2 then never builds its compatibility objects.
    this.#server = server;
    return server;
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => undefined); // a reset client stream; its 'close' does the cleanup
    const entry = this.#sessions.get(stream.session as ServerHttp2Session);
    if (entry) {
      entry.active++;
      stream.on('close', () => {
        if (--entry.active === 0) entry.idleSince = this.#tick;
      });
    }
    const grpc = isGrpc(headers['content-type']);
    const route = entry ? this.#opts.router.resolve(entry.ctx.dstIp, entry.ctx.dstPort) : undefined;
    if (route?.kind !== 'service') {
      this.#answer(stream, 503, 'edgemesh: this destination is no longer a service in the catalog\n', grpc);
      return;
    }
    const stats = this.#opts.metrics.services.of(route);
    if (route.targets.length === 0) {
      stats.request(503, 0);
      this.#answer(stream, 503, `edgemesh: no ready endpoint for service ${route.key}\n`, grpc);
      return;
    }
    const ex: Exchange = {
      stream,
      headers,
      routeKey: route.key,
      hasBody: !stream.endAfterHeaders,
      grpc,
      started: performance.now(),
      failed: undefined,
      attempts: 0,
      lastError: undefined,
    };
    this.#attempt(ex, route);
  }

  /** Picks the next endpoint and sends the request there, or answers 502 when none is left. */
  #attempt(ex: Exchange, route: ServiceRoute): void {
    const { router, maxAttempts } = this.#opts;
    const balancer = router.balancer(route);
    if (ex.stream.destroyed) return; // the client gave up while we were dialing
    const choice = ex.attempts < maxAttempts ? balancer.pick(this.#key(ex, route), ex.failed) : undefined;
    if (!choice) {
      this.#opts.metrics.services.of(route).request(502, (performance.now() - ex.started) / 1000);
      this.#answer(
        ex.stream,
        502,
        `edgemesh: upstream of ${ex.routeKey} failed: ${describeError(ex.lastError)}\n`,
        ex.grpc,
      );
      return;
    }
    ex.attempts++;
    const got = this.#pool.get(choice.value);
    if (!(got instanceof Promise)) {
      this.#attemptOn(ex, route, choice, got);
      return;
    }
    got.then(
      (session) => this.#attemptOn(ex, route, choice, session),
      (err) => {
        // Nothing of the request left: any method may go to the next endpoint.
        ex.lastError = err;
        ex.failed ??= new Set();
        ex.failed.add(choice.id);
        balancer.reportFailure(choice.id);
        this.#attempt(ex, route);
      },
    );
  }

  #key(ex: Exchange, route: ServiceRoute): { clientIp: string; hashKey?: string } {
    const entry = this.#sessions.get(ex.stream.session as ServerHttp2Session);
    const clientIp = entry?.ctx.clientIp ?? '';
    const header = route.service.hashHeader;
    if (!header) return { clientIp };
    const value = ex.headers[header.toLowerCase()];
    return { clientIp, hashKey: Array.isArray(value) ? value[0] : value };
  }

  #attemptOn(ex: Exchange, route: ServiceRoute, choice: { id: string }, session: Session): void {
    const { stream } = ex;
    if (stream.destroyed) return;
    const { metrics, router } = this.#opts;
    const balancer = router.balancer(route);
    let up: ClientHttp2Stream;
    try {
      up = this.#pool.request(session, ex.headers, !ex.hasBody);
    } catch (err) {
      // The session closed between get() and now (GOAWAY, error): nothing was sent.
      ex.lastError = err;
      this.#attempt(ex, route);
      return;
    }
    balancer.acquire(choice.id);
    let responded = false;
    let trailers: IncomingHttpHeaders | undefined;
    up.on('error', (err) => {
      ex.lastError = err;
    });
    up.on('response', (head, flags) => {
      responded = true;
      balancer.reportSuccess(choice.id);
      const status = Number(head[':status']);
      this.#count(status);
      metrics.services.of(route).request(status, (performance.now() - ex.started) / 1000);
      if (stream.destroyed || stream.closed) return;
      if (flags & END_STREAM) {
        stream.respond(head, { endStream: true });
        return;
      }
      // Trailers are waited for only where they may come: the client said it takes them
      // (`te: trailers`, which every gRPC client sends) or the response is gRPC. Elsewhere the
      // body's last DATA frame ends the stream, one frame and one event fewer.
      const withTrailers = ex.headers.te === 'trailers' || isGrpc(head['content-type']);
      stream.respond(head, { waitForTrailers: withTrailers });
      if (withTrailers) stream.on('wantTrailers', () => stream.sendTrailers(trailers ?? {}));
      relay(up, stream);
    });
    up.on('trailers', (t: IncomingHttpHeaders) => {
      trailers = t;
    });
    up.on('close', () => {
      balancer.release(choice.id);
      if (responded) {
        // Reset after the head: the client's stream is reset alike (relay ended it otherwise).
        if (up.rstCode !== undefined && up.rstCode !== NO_ERROR && !stream.destroyed)
          stream.close(up.rstCode);
        return;
      }
      if (stream.destroyed) return;
      const neverRan =
        up.rstCode === REFUSED_STREAM ||
        (ex.lastError as { code?: string })?.code === 'ERR_HTTP2_GOAWAY_SESSION';
      ex.lastError ??= new Error(`stream reset with code ${up.rstCode}`);
      // It may have reached the endpoint: only a stream the server never ran is sent again.
      if (!(neverRan && !ex.hasBody && IDEMPOTENT.has(String(ex.headers[':method']))))
        ex.attempts = Number.POSITIVE_INFINITY;
      this.#attempt(ex, route);
    });
    stream.on('close', () => {
      if (!up.closed && !up.destroyed)
        up.close(stream.rstCode && stream.rstCode !== NO_ERROR ? stream.rstCode : CANCEL);
    });
    if (ex.hasBody) relay(stream, up);
  }

  /** The proxy's own answer (gRPC-aware: grpc.ts); resets the stream if the head already left. */
  #answer(stream: ServerHttp2Stream, status: number, body: string, grpc: boolean): void {
    this.#count(status);
    if (stream.destroyed) return;
    if (stream.headersSent) {
      stream.close(INTERNAL_ERROR);
      return;
    }
    const answer = proxyAnswer(status, body, grpc);
    if (answer.body === undefined) {
      stream.respond(answer.headers, { endStream: true });
    } else {
      stream.respond(answer.headers);
      stream.end(answer.body);
    }
  }
}

/**
 * Moves a body from one HTTP/2 stream to another under both sides' flow control: a full
 * destination pauses the source (so the source's window closes), its drain resumes it; the
 * source's end ends the destination. Not pipe(): that adds and removes eight listeners per
 * body, measured among the largest costs of a small proxied request.
 */
function relay(from: Http2Stream, to: Http2Stream): void {
  const onData = (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  };
  from.on('data', onData);
  to.on('drain', () => from.resume());
  from.on('end', () => {
    if (!to.destroyed) to.end();
  });
  // The destination went away first (an upstream that answered before reading the whole
  // request body, as a server may): the rest of the source is read and dropped, so its
  // window stays open and it can finish, instead of staying paused on a dead stream.
  to.on('close', () => {
    if (from.readableEnded) return;
    from.removeListener('data', onData);
    from.resume();
  });
}
