/**
 * The h2c frame relay: the h2c path without node:http2's stream objects. A client connection
 * is read as frames (conn.ts); each request's header block is HPACK-decoded only to route it
 * (the service from the connection's original destination, the endpoint per stream by the
 * service's policy), re-encoded for an upstream connection (upstream.ts) under a stream id of
 * that connection, and from then on DATA frames pass both ways as they came, re-framed with
 * the other leg's stream id, under both legs' flow control. Responses come back the same way.
 *
 *   client stream cid  ⇄  Exchange  ⇄  upstream stream uid (on a shared connection)
 *
 * Kept from the node:http2 path (proxy.ts there, "h2c and gRPC" in docs/proxy.md):
 *
 *   no ready endpoint                      → 503 (gRPC: 200 + grpc-status 14), naming the service
 *   the endpoint refused the connection    → the next endpoint, any method (nothing was sent)
 *   REFUSED_STREAM / GOAWAY before it ran  → the next endpoint, requests without a body
 *   every attempt failed                   → 502 (gRPC: 200 + grpc-status 14) with the last error
 *   the upstream resets after the head     → the client's stream is reset with the same code
 *   the client resets (cancel, deadline)   → the upstream stream is reset (CANCEL)
 *   a response complete before the request → RST_STREAM(NO_ERROR) both ways (§8.1)
 *
 * Limits: 256 concurrent streams per client connection (SETTINGS_MAX_CONCURRENT_STREAMS; more
 * are refused with REFUSED_STREAM), request heads up to 64 KiB decoded (431 beyond), idle client
 * connections closed after idleTimeoutMs (GOAWAY), upstream limits in upstream.ts.
 */
import type net from 'node:net';
import { describeError } from '../../../lib/errors.ts';
import type { ConnContext } from '../http-proxy.ts';
import { statusCounter } from '../metrics.ts';
import type { RouteTable } from '../route.ts';
import type { ServiceRoute } from '../router.ts';
import type { ServiceStats } from '../service-metrics.ts';
import { adjustWindow, Conn, Flow, MAX_HEADER_LIST, STREAM_WINDOW } from './conn.ts';
import { fieldValue, parseRequest, type RequestHead, responseStatus } from './fields.ts';
import {
  CANCEL,
  ENHANCE_YOUR_CALM,
  FLOW_CONTROL_ERROR,
  H2Error,
  INTERNAL_ERROR,
  MAX_WINDOW,
  NO_ERROR,
  PROTOCOL_ERROR,
  REFUSED_STREAM,
  S_INITIAL_WINDOW_SIZE,
  S_MAX_CONCURRENT_STREAMS,
  S_MAX_HEADER_LIST_SIZE,
  STREAM_CLOSED,
} from './frames.ts';
import { isGrpc, proxyAnswer } from './grpc.ts';
import { encodeBlock } from './hpack.ts';
import type { H2ProxyOptions } from './node-streams.ts';
import { MAX_STREAMS } from './sessions.ts';
import { type UpConn, type UpStream, UpstreamPool } from './upstream.ts';

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
/** Idle client connections are looked for by one coarse timer (as the node path). */
const SWEEP_MS = 1_000;
/**
 * Client resets per connection per sweep tick (1 s) beyond which the connection ends with
 * ENHANCE_YOUR_CALM: every reset stream may have cost an upstream stream (and a dial), so
 * open-and-reset loops would turn a client's cheap frames into upstream work. gRPC cancels a
 * call per deadline or user cancel, far below this.
 */
const MAX_RESETS_PER_TICK = 1_000;

/** One client connection: its streams by client stream id. */
class ClientConn {
  readonly conn: Conn;
  readonly ctx: ConnContext;
  readonly streams = new Map<number, Exchange>();
  lastStream = 0;
  active = 0;
  idleSince: number;
  goingAway = false;
  /** Streams the client reset since the last sweep tick ("rapid reset", CVE-2023-44487). */
  resets = 0;

  constructor(conn: Conn, ctx: ConnContext, tick: number) {
    this.conn = conn;
    this.ctx = ctx;
    this.idleSince = tick;
  }
}

class Exchange implements UpStream {
  readonly relay: FrameRelay;
  readonly client: ClientConn;
  readonly cid: number;
  readonly req: Flow;
  /** Upstream → client; its src is the upstream stream once one is open. */
  readonly res: Flow;
  readonly head: RequestHead;
  readonly fields: string[];
  /** The request head encoded for upstream connections (stateless encoding: reusable on a retry). */
  block: Buffer | undefined;
  readonly hasBody: boolean;
  readonly grpc: boolean;
  route: ServiceRoute | undefined;
  stats: ServiceStats | undefined;
  started = performance.now();
  failed: Set<string> | undefined;
  attempts = 0;
  lastError: unknown;
  choiceId: string | undefined;
  up: UpConn | undefined;
  uid = 0;
  /** The final response head went to the client. */
  responded = false;
  /** The upstream stream is over for us (both ends, or reset): up.finish was called. */
  upDone = true;
  /** The upstream stream was reset (by either side): nothing more is sent on it. */
  upReset = false;
  /** The client stream was reset (by either side). */
  clientReset = false;
  done = false;

  constructor(
    relay: FrameRelay,
    client: ClientConn,
    cid: number,
    head: RequestHead,
    fields: string[],
    endStream: boolean,
  ) {
    this.relay = relay;
    this.client = client;
    this.cid = cid;
    this.head = head;
    this.fields = fields;
    this.hasBody = !endStream;
    this.grpc = isGrpc(head.contentType);
    this.req = new Flow(client.conn, cid);
    this.req.ended = endStream;
    this.req.onEndSent = () => this.#checkUp();
    this.res = new Flow(undefined, 0);
    this.res.attach(client.conn, cid);
    this.res.onEndSent = () => this.#responseSent();
  }

  // --- upstream side (UpStream) ---

  opened(up: UpConn, id: number): void {
    this.up = up;
    this.uid = id;
    this.upDone = false;
    this.upReset = false;
    if (this.done || this.clientReset) {
      // The client left while the stream waited for room: nothing is sent on it.
      this.upReset = true;
      this.#finishUp();
      return;
    }
    const res = this.res;
    res.src = up.conn;
    res.srcId = id;
    res.recvWin = STREAM_WINDOW;
    res.credit = 0;
    res.unacked = 0;
    this.block ??= encodeBlock(this.fields);
    const req = this.req;
    const endNow = req.ended && req.queue.length === 0 && !req.trailers;
    up.conn.writeHeaders(id, this.block, endNow);
    req.attach(up.conn, id);
    if (endNow) req.endSent = true;
    else req.pump();
  }

  headers(fields: string[], endStream: boolean): void {
    if (this.upReset) return;
    const status = responseStatus(fields);
    if (!this.responded) {
      if (status === undefined) {
        this.#upstreamBroke('upstream response without a valid :status');
        return;
      }
      if (status < 200) {
        if (!this.clientReset) this.client.conn.writeHeaders(this.cid, encodeBlock(fields), false);
        return;
      }
      this.responded = true;
      if (this.choiceId && this.route) this.relay.balancer(this.route).reportSuccess(this.choiceId);
      this.relay.count(status);
      this.stats?.request(status, (performance.now() - this.started) / 1000);
      if (this.clientReset) return;
      if (endStream) this.res.ended = true;
      this.client.conn.writeHeaders(this.cid, encodeBlock(fields), endStream);
      if (endStream) {
        this.res.endSent = true;
        this.#checkUp();
        this.#responseSent();
      }
      return;
    }
    if (!endStream) {
      this.#upstreamBroke('upstream trailers without END_STREAM');
      return;
    }
    this.res.trailers = encodeBlock(fields);
    this.res.ended = true;
    this.#checkUp();
    if (!this.clientReset) this.res.pump();
  }

  data(content: Buffer, endStream: boolean, frameLen: number): void {
    const res = this.res;
    if (this.upReset || res.ended) {
      res.src?.creditConnection(frameLen);
      return;
    }
    if (!this.responded) {
      res.src?.creditConnection(frameLen);
      this.#upstreamBroke('upstream DATA before its response head');
      return;
    }
    if (frameLen > content.length) res.forwarded(frameLen - content.length); // padding
    if (content.length > 0) res.queue.push(content);
    if (endStream) {
      res.ended = true;
      this.#checkUp();
    }
    if (this.clientReset) res.discard();
    else res.pump();
  }

  reset(code: number, neverRan: boolean, cause: string): void {
    if (this.upDone) return;
    this.upReset = true;
    this.req.discard();
    this.lastError = new Error(cause);
    if (this.responded) {
      if (this.res.ended) {
        // The response is whole (maybe still on its way out): the upstream only stopped the body.
        this.#checkUp();
        return;
      }
      this.#finishUp();
      this.res.discard();
      this.#resetClient(code === NO_ERROR ? INTERNAL_ERROR : code);
      return;
    }
    this.#finishUp();
    if (this.done || this.clientReset) return;
    // It may have reached the endpoint: only a stream the server never ran is sent again.
    if (!(neverRan && !this.hasBody && IDEMPOTENT.has(this.head.method)))
      this.attempts = Number.POSITIVE_INFINITY;
    this.req.dst = undefined;
    this.req.dstId = 0;
    this.req.endSent = false;
    this.res.src = undefined;
    this.relay.attempt(this);
  }

  notOpened(cause: string): void {
    if (this.choiceId && this.route) this.relay.balancer(this.route).release(this.choiceId);
    this.choiceId = undefined;
    this.lastError = new Error(cause);
    this.relay.attempt(this);
  }

  /** The upstream broke the protocol on this stream: reset it; the client gets a 502 or a reset. */
  #upstreamBroke(why: string): void {
    if (this.up && !this.upReset) this.up.conn.rst(this.uid, PROTOCOL_ERROR);
    this.attempts = Number.POSITIVE_INFINITY;
    this.reset(PROTOCOL_ERROR, false, why);
  }

  #checkUp(): void {
    if (!this.upDone && (this.req.endSent || this.upReset) && (this.res.ended || this.upReset))
      this.#finishUp();
  }

  #finishUp(): void {
    if (this.upDone) return;
    this.upDone = true;
    this.up?.finish(this.uid, this.relay.tick);
    if (this.choiceId && this.route) this.relay.balancer(this.route).release(this.choiceId);
  }

  // --- client side ---

  /** END_STREAM (or our own answer) went to the client. */
  #responseSent(): void {
    if (!this.req.ended && !this.clientReset) {
      // The response is complete before the request (§8.1): the rest of the body is not wanted.
      this.client.conn.rst(this.cid, NO_ERROR);
      this.clientReset = true;
      this.req.discard();
      if (!this.upDone && !this.upReset && this.up) {
        this.up.conn.rst(this.uid, CANCEL);
        this.upReset = true;
      }
      this.#checkUp();
    }
    this.#finishClient();
  }

  /** The client reset the stream, or its connection went: the upstream stream is cancelled. */
  clientGone(code: number): void {
    if (this.clientReset && this.done) return;
    this.clientReset = true;
    this.req.discard();
    this.res.discard();
    if (!this.upDone && this.up) {
      if (!this.upReset) this.up.conn.rst(this.uid, code === NO_ERROR ? CANCEL : code);
      this.upReset = true;
      this.#finishUp();
    }
    this.#finishClient();
  }

  #resetClient(code: number): void {
    if (!this.clientReset) this.client.conn.rst(this.cid, code);
    this.clientGone(code);
  }

  #finishClient(): void {
    if (this.done) return;
    this.done = true;
    const c = this.client;
    c.streams.delete(this.cid);
    if (--c.active === 0) {
      c.idleSince = this.relay.tick;
      if (c.goingAway) this.relay.closeClient(c);
    }
  }

  /** The proxy's own answer (gRPC-aware: grpc.ts); a reset if the head already left. */
  answer(status: number, body: string): void {
    this.relay.count(status);
    if (this.done || this.clientReset) return;
    if (this.responded) {
      this.#resetClient(INTERNAL_ERROR);
      return;
    }
    this.responded = true;
    const a = proxyAnswer(status, body, this.grpc);
    const fields: string[] = [];
    for (const [k, v] of Object.entries(a.headers)) fields.push(k, String(v));
    const block = encodeBlock(fields);
    if (a.body === undefined) {
      this.client.conn.writeHeaders(this.cid, block, true);
      this.res.ended = true;
      this.res.endSent = true;
      this.#responseSent();
      return;
    }
    this.client.conn.writeHeaders(this.cid, block, false);
    this.res.src = undefined;
    this.res.queue.push(Buffer.from(a.body));
    this.res.ended = true;
    this.res.pump();
  }
}

export class FrameRelay {
  readonly #opts: H2ProxyOptions;
  readonly #pool: UpstreamPool;
  readonly #clients = new Set<ClientConn>();
  #sweep: NodeJS.Timeout | undefined;
  readonly count: (status: number) => void;
  tick = 0;

  constructor(opts: H2ProxyOptions) {
    this.#opts = opts;
    this.count = statusCounter(opts.metrics);
    this.#pool = new UpstreamPool({
      dialer: opts.dialer,
      connectTimeoutMs: opts.connectTimeoutMs,
      onConnectFailure: () => opts.metrics.connectFailures.inc({ via: 'pod' }),
      onBug: (err) => opts.log.error({ err: describeError(err) }, 'h2c upstream connection handling failed'),
    });
  }

  /** Takes over a client connection whose first bytes (`buffered`) were the h2c preface. */
  handle(socket: net.Socket, ctx: ConnContext, buffered: Buffer): void {
    socket.setTimeout(0); // the idle sweep below replaces the socket's own
    const conn = new Conn(socket, 'server');
    const c = new ClientConn(conn, ctx, this.tick);
    this.#clients.add(c);
    this.#startSweep();
    conn.start(
      this.#clientHooks(c),
      [
        [S_MAX_CONCURRENT_STREAMS, MAX_STREAMS],
        [S_INITIAL_WINDOW_SIZE, STREAM_WINDOW],
        [S_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST],
      ],
      buffered,
    );
  }

  drain(): void {
    for (const c of this.#clients) {
      c.goingAway = true;
      c.conn.goaway(c.lastStream);
      c.conn.flush();
      if (c.active === 0) this.closeClient(c);
    }
  }

  prune(table: RouteTable): void {
    this.#pool.prune(table.targetIds);
  }

  close(): void {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    for (const c of [...this.#clients]) c.conn.destroy();
    this.#clients.clear();
    this.#pool.close();
  }

  closeClient(c: ClientConn): void {
    if (c.conn.closed) return;
    c.conn.goaway(c.lastStream);
    c.conn.flush();
    c.conn.socket.end();
  }

  balancer(route: ServiceRoute) {
    return this.#opts.router.balancer(route);
  }

  #startSweep(): void {
    if (this.#sweep) return;
    const idleMs = this.#opts.idleTimeoutMs;
    const idleTicks = idleMs > 0 ? Math.max(1, Math.ceil(idleMs / SWEEP_MS)) : Number.POSITIVE_INFINITY;
    this.#sweep = setInterval(() => {
      this.tick++;
      this.#pool.tick = this.tick;
      for (const c of this.#clients)
        if (c.active === 0 && this.tick - c.idleSince >= idleTicks) this.closeClient(c);
    }, SWEEP_MS);
    this.#sweep.unref();
  }

  #clientHooks(c: ClientConn) {
    const { metrics, log } = this.#opts;
    const conn = c.conn;
    return {
      known: (id: number) => id % 2 === 1 && id <= c.lastStream,
      bug: (err: unknown) => log.error({ err: describeError(err) }, 'h2c client connection handling failed'),
      headers: (id: number, endStream: boolean, fields: string[], listSize: number) => {
        const ex = c.streams.get(id);
        if (ex) {
          // Trailers (§8.1): a second header block, which must end the stream.
          if (ex.req.ended) throw new H2Error(STREAM_CLOSED, `HEADERS on half-closed stream ${id}`);
          if (!endStream) {
            conn.rst(id, PROTOCOL_ERROR);
            ex.clientGone(PROTOCOL_ERROR);
            return;
          }
          ex.req.trailers = encodeBlock(fields);
          ex.req.ended = true;
          ex.req.pump();
          return;
        }
        if (id <= c.lastStream) {
          if (id % 2 === 1)
            conn.rst(id, STREAM_CLOSED); // a stream we already closed
          else throw new H2Error(PROTOCOL_ERROR, `HEADERS on even stream ${id}`);
          return;
        }
        if (id % 2 === 0) throw new H2Error(PROTOCOL_ERROR, `client opened even stream ${id}`);
        c.lastStream = id;
        conn.lastPeerStream = id;
        if (c.goingAway || c.active >= MAX_STREAMS) {
          conn.rst(id, REFUSED_STREAM);
          return;
        }
        const head = parseRequest(fields);
        if (typeof head === 'string') {
          log.debug({ why: head }, 'h2c malformed request');
          conn.rst(id, PROTOCOL_ERROR);
          return;
        }
        const ex2 = new Exchange(this, c, id, head, fields, endStream);
        c.streams.set(id, ex2);
        c.active++;
        if (listSize > MAX_HEADER_LIST) {
          ex2.answer(431, `edgemesh: request header list of ${listSize} octets above ${MAX_HEADER_LIST}\n`);
          return;
        }
        try {
          this.#start(ex2);
        } catch (err) {
          // A bug or an unexpected peer must cost one stream, never the process.
          log.error({ err: describeError(err) }, 'h2c stream handling failed');
          ex2.clientGone(INTERNAL_ERROR);
          conn.rst(id, INTERNAL_ERROR);
        }
      },
      data: (id: number, endStream: boolean, content: Buffer, frameLen: number) => {
        const ex = c.streams.get(id);
        if (!ex) {
          if (id % 2 === 0 || id > c.lastStream)
            throw new H2Error(PROTOCOL_ERROR, `DATA on idle stream ${id}`);
          conn.creditConnection(frameLen); // a stream we closed or reset: dropped, its window given back
          return;
        }
        const req = ex.req;
        if (req.ended) throw new H2Error(STREAM_CLOSED, `DATA after END_STREAM on stream ${id}`);
        req.recvWin -= frameLen;
        if (req.recvWin < 0)
          throw new H2Error(FLOW_CONTROL_ERROR, `client sent beyond stream ${id}'s window`);
        if (frameLen > content.length) req.forwarded(frameLen - content.length); // padding
        if (content.length > 0) req.queue.push(content);
        if (endStream) req.ended = true;
        if (ex.clientReset) req.discard();
        else req.pump();
      },
      rst: (id: number, code: number) => {
        if (++c.resets > MAX_RESETS_PER_TICK)
          throw new H2Error(ENHANCE_YOUR_CALM, `more than ${MAX_RESETS_PER_TICK} stream resets in a second`);
        const ex = c.streams.get(id);
        if (!ex) return;
        ex.clientReset = true; // no RST back (§5.4.2)
        ex.clientGone(code);
      },
      window: (id: number, inc: number) => {
        const ex = c.streams.get(id);
        if (!ex) return;
        if (inc === 0) {
          conn.rst(id, PROTOCOL_ERROR);
          ex.clientGone(PROTOCOL_ERROR);
          return;
        }
        ex.res.sendWin += inc;
        if (ex.res.sendWin > MAX_WINDOW)
          throw new H2Error(FLOW_CONTROL_ERROR, `stream ${id} window above 2^31-1`);
        ex.res.pump();
      },
      goaway: () => {
        c.goingAway = true;
        if (c.active === 0) this.closeClient(c);
      },
      settings: (delta: number) => {
        if (delta === 0) return;
        for (const ex of c.streams.values()) {
          adjustWindow(ex.res, delta);
          if (delta > 0) ex.res.pump();
        }
      },
      closed: (err: Error | undefined) => {
        this.#clients.delete(c);
        if (err instanceof H2Error) {
          metrics.refused.inc({ reason: 'bad-http' });
          log.debug({ err: describeError(err) }, 'h2c session error');
        }
        for (const ex of [...c.streams.values()]) ex.clientGone(CANCEL);
      },
    };
  }

  #start(ex: Exchange): void {
    const route = this.#opts.router.resolve(ex.client.ctx.dstIp, ex.client.ctx.dstPort);
    if (route?.kind !== 'service') {
      ex.answer(503, 'edgemesh: this destination is no longer a service in the catalog\n');
      return;
    }
    ex.route = route;
    ex.stats = this.#opts.metrics.services.of(route);
    if (route.targets.length === 0) {
      ex.stats.request(503, 0);
      ex.answer(503, `edgemesh: no ready endpoint for service ${route.key}\n`);
      return;
    }
    this.attempt(ex);
  }

  /** Picks the next endpoint and opens the stream there, or answers 502 when none is left. */
  attempt(ex: Exchange): void {
    const route = ex.route as ServiceRoute;
    if (ex.done || ex.clientReset) return;
    const balancer = this.balancer(route);
    const header = route.service.hashHeader;
    const key = {
      clientIp: ex.client.ctx.clientIp,
      hashKey: header ? fieldValue(ex.fields, header.toLowerCase()) : undefined,
    };
    const choice = ex.attempts < this.#opts.maxAttempts ? balancer.pick(key, ex.failed) : undefined;
    if (!choice) {
      ex.stats?.request(502, (performance.now() - ex.started) / 1000);
      ex.answer(502, `edgemesh: upstream of ${route.key} failed: ${describeError(ex.lastError)}\n`);
      return;
    }
    ex.attempts++;
    ex.choiceId = undefined;
    const got = this.#pool.get(choice.value);
    const onUp = (up: UpConn) => {
      if (ex.done || ex.clientReset) return;
      ex.choiceId = choice.id;
      balancer.acquire(choice.id);
      if (!up.open(ex)) {
        // The connection stopped taking streams between get() and now: nothing was sent.
        balancer.release(choice.id);
        ex.choiceId = undefined;
        ex.lastError = new Error('upstream connection going away');
        this.attempt(ex);
      }
    };
    if (!(got instanceof Promise)) {
      onUp(got);
      return;
    }
    got
      .then(onUp, (err) => {
        // Nothing of the request left: any method may go to the next endpoint.
        ex.lastError = err;
        ex.failed ??= new Set();
        ex.failed.add(choice.id);
        balancer.reportFailure(choice.id);
        this.attempt(ex);
      })
      .catch((err) => {
        // A bug costs this stream, never the process (an unhandled rejection would end it).
        this.#opts.log.error({ err: describeError(err) }, 'h2c stream handling failed');
        if (!ex.done && !ex.clientReset) ex.client.conn.rst(ex.cid, INTERNAL_ERROR);
        ex.clientGone(INTERNAL_ERROR);
      });
  }
}
