/**
 * L7 handling for service ports that speak HTTP. The app's connection (already accepted by
 * the transparent listener) is handed to the HTTP/1.1 fast path (http1/fast.ts: framing
 * only, no re-serialisation; the default) or an in-process node:http server
 * (EDGEMESH_HTTP1_PATH=node, described below), or to the h2c path (h2/proxy.ts: an in-process
 * HTTP/2 server, shared upstream sessions) when its first bytes are the HTTP/2 prior-knowledge
 * preface; every request then picks an endpoint by the service's policy and goes out over a
 * pooled upstream connection (a node:http keep-alive agent per endpoint; multiplexed HTTP/2
 * sessions for h2c). So one keep-alive or multiplexed client connection spreads over all
 * endpoints instead of sticking to one.
 *
 *   no ready endpoint                → 503, plain-text body naming the service
 *   every attempt failed to connect  → 502, plain-text body with the last error
 *   connect failure, idempotent request without a body → retried on the next endpoint
 *   Upgrade (WebSocket, h2c upgrade) → raw bytes to one endpoint
 *   bytes that are not HTTP          → 400 and close
 */
import type { Agent, IncomingMessage, Server, ServerResponse } from 'node:http';
import type net from 'node:net';
import type { Readable } from 'node:stream';
import { describeError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Dialer } from './dialer.ts';
import { H2Proxy } from './h2/proxy.ts';
import { type FastOptions, Http1Fast } from './http1/fast.ts';
import type { ProxyMetrics } from './metrics.ts';
import type { HttpAcceptor } from './native-l4.ts';
import type { Target } from './route.ts';
import type { Router, ServiceRoute } from './router.ts';
import { splice } from './splice.ts';

/** What the transparent listener learnt about a connection before handing it over. */
export interface ConnContext {
  dstIp: string;
  dstPort: number;
  clientIp: string;
  /**
   * Called when the connection leaves its socket for the native HTTP/1.1 engine (the socket is
   * destroyed then, but closes only later): the proxy stops counting it as its own at once.
   */
  handedOver?: () => void;
}

export interface HttpProxyOptions {
  router: Router;
  dialer: Dialer;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  maxAttempts: number;
  log: Logger;
  metrics: ProxyMetrics;
  /**
   * HTTP/1.x clients: 'fast' frames requests and passes their bytes (http1/fast.ts), 'node'
   * re-serialises them through node:http. Default: env EDGEMESH_HTTP1_PATH, else 'fast'.
   */
  http1?: 'fast' | 'node';
  /** The fast path's upstream pool bounds (http1/fast.ts; defaults there). */
  pool?: FastOptions['pool'];
}

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
/** Per-connection headers (RFC 9110 §7.6.1) that never cross a proxy; undici refuses most of them. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'http2-settings',
  'host',
]);

type AnyRequest = IncomingMessage;
interface Upstream {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: NodeJS.ReadableStream;
}
type AnyResponse = ServerResponse;
// Not an ES import: that reads every export of node:http, and its lazy WebSocket getters load
// Node's bundled undici (~6 MB private). node:http2 (~4.5 MB) is loaded by the first h2c client.
const http = process.getBuiltinModule('node:http');

export class HttpProxy {
  readonly #opts: HttpProxyOptions;
  readonly #h1: Server;
  readonly #h2: H2Proxy;
  readonly #contexts = new WeakMap<object, ConnContext>();
  readonly #agents = new Map<string, Agent>();
  #draining = false;
  readonly #fast: Http1Fast | undefined;

  constructor(opts: HttpProxyOptions) {
    this.#opts = opts;
    this.#h1 = http.createServer({
      // The app's keep-alive connections may idle as long as TCP ones.
      keepAliveTimeout: opts.idleTimeoutMs,
      headersTimeout: 60_000,
      requestTimeout: 0,
    });
    this.#h1.on('request', (req, res) => this.#onRequest(req, res).catch((err) => this.#failed(err, res)));
    this.#h1.on('upgrade', (req: IncomingMessage, socket: net.Socket, head: Buffer) =>
      this.#onUpgrade(req, socket, head).catch((err) => this.#failed(err, socket)),
    );
    this.#h1.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
      this.#opts.metrics.refused.inc({ reason: 'bad-http' });
      if (socket.writable && socket.bytesWritten === 0) {
        const body = `edgemesh: malformed HTTP request (${err.code ?? 'parse error'})\n`;
        socket.end(
          `HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        );
      }
      socket.destroySoon?.();
    });
    // node:http stays the default: with the fast path the real-node mesh e2e still fails (after
    // a gateway restart, the client node's gateway keeps opening new streams on the relay to a
    // peer for minutes), even with the pool's bounds; docs/proxy.md has the runs.
    const http1 = opts.http1 ?? (process.env.EDGEMESH_HTTP1_PATH === 'node' ? 'node' : 'fast');
    if (http1 === 'fast')
      this.#fast = new Http1Fast({
        ...opts,
        sniff: (socket, ctx, buffered, http1) =>
          sniff(
            socket,
            (isH2, bytes) => {
              socket.pause();
              if (isH2) this.#h2.handle(socket, ctx, bytes);
              else http1(bytes);
            },
            buffered,
          ),
      });
    this.#h2 = new H2Proxy(opts);
    opts.router.onTableChange = (table) => {
      this.#fast?.prune(table);
      this.#h2.prune(table);
      for (const [id, agent] of this.#agents) {
        if (!table.targetIds.has(id)) {
          this.#agents.delete(id);
          agent.destroy();
        }
      }
    };
  }

  /** A bug or an unexpected upstream reply must cost one request, never the process. */
  #failed(err: unknown, target: { destroy(): void }): void {
    this.#opts.log.error({ err: describeError(err) }, 'HTTP request handling failed');
    target.destroy();
  }

  /** Takes over an accepted connection whose destination is an HTTP service port. */
  handle(client: net.Socket, ctx: ConnContext): void {
    // Idle limit as for TCP: also covers a client that connects and never sends a byte.
    if (this.#opts.idleTimeoutMs > 0) client.setTimeout(this.#opts.idleTimeoutMs, () => client.destroy());
    sniff(client, (isH2, buffered) => {
      client.pause();
      if (!isH2 && this.#fast) {
        this.#fast.handle(client, ctx, buffered);
        return;
      }
      if (isH2) {
        this.#h2.handle(client, ctx, buffered);
        return;
      }
      if (buffered.length > 0) client.unshift(buffered);
      this.#contexts.set(client, ctx);
      this.#h1.emit('connection', client);
      client.resume();
    });
  }

  /**
   * Takes over an accepted connection's `fd` before anything was read from it, when the native
   * HTTP/1.1 engine carries its service (http1/fast.ts takeFd). True: the engine owns `fd` now
   * (it closes it); the caller only forgets it. False: `fd` is still the caller's, which makes
   * a socket of it and calls handle().
   */
  takeFd(fd: number, ctx: ConnContext): boolean {
    return this.#fast?.takeFd(fd, ctx) ?? false;
  }

  /**
   * Lets the accepting engine carry the connections the native HTTP/1.1 engine would, from a
   * table of their destinations (../native-http1.ts attach). False: no native HTTP/1.1 engine.
   */
  attachAcceptor(acceptor: HttpAcceptor): boolean {
    const native = this.#fast?.native;
    native?.attach(acceptor);
    return native !== undefined;
  }

  /** Open connections that left the accepting proxy's sockets (the native HTTP/1.1 engine's: http1/fast.ts). */
  get heldConnections(): number {
    return this.#fast?.heldConnections ?? 0;
  }

  /** Stop keeping connections alive: idle ones close now, busy ones after their response. */
  drain(): void {
    this.#draining = true;
    this.#h1.closeIdleConnections();
    this.#fast?.drain();
    this.#h2.drain();
  }

  async close(): Promise<void> {
    this.#h1.closeAllConnections();
    this.#fast?.close();
    this.#h2.close();
    for (const agent of this.#agents.values()) agent.destroy();
    this.#agents.clear();
  }

  #context(req: AnyRequest): ConnContext | undefined {
    return this.#contexts.get(req.socket);
  }

  async #onRequest(req: AnyRequest, res: AnyResponse): Promise<void> {
    const { router, metrics } = this.#opts;
    const ctx = this.#context(req);
    const route = ctx ? router.resolve(ctx.dstIp, ctx.dstPort) : undefined;
    if (!ctx || route?.kind !== 'service') {
      this.#reply(res, 503, 'edgemesh: this destination is no longer a service in the catalog\n');
      return;
    }
    const balancer = router.balancer(route);
    const stats = metrics.services.of(route);
    const started = performance.now();
    if (route.targets.length === 0) {
      stats.request(503, 0);
      this.#reply(res, 503, `edgemesh: no ready endpoint for service ${route.key}\n`);
      return;
    }
    const method = req.method ?? 'GET';
    const headers = requestHeaders(req);
    const hasBody = requestHasBody(req);
    const retryable = IDEMPOTENT.has(method) && !hasBody;
    const hashHeader = route.service.hashHeader?.toLowerCase();
    const hashValue = hashHeader ? req.headers[hashHeader] : undefined;
    const key = { clientIp: ctx.clientIp, hashKey: Array.isArray(hashValue) ? hashValue[0] : hashValue };
    const failed = new Set<string>();
    let lastError: unknown;
    for (let attempt = 0; attempt < this.#opts.maxAttempts; attempt++) {
      const choice = balancer.pick(key, failed);
      if (!choice) break;
      balancer.acquire(choice.id);
      try {
        const upstream = await this.#forwardH1(choice.value, req, method, headers, hasBody);
        balancer.reportSuccess(choice.id);
        if (this.#draining) res.shouldKeepAlive = false;
        res.writeHead(upstream.statusCode, responseHeaders(upstream.headers));
        metrics.httpRequests.inc({ code: upstream.statusCode });
        stats.request(upstream.statusCode, (performance.now() - started) / 1000);
        await relay(upstream.body, res);
        return;
      } catch (err) {
        lastError = err;
        if (res.headersSent) {
          res.destroy?.();
          return;
        }
        // A reset on a reused keep-alive connection (the server closed it as we sent) is retried
        // like a failed connect; anything else may have reached the server: no retry.
        const staleKeepAlive = (err as { reusedSocket?: boolean }).reusedSocket === true;
        if (!isConnectFailure(err) && !staleKeepAlive) break;
        if (!staleKeepAlive) {
          metrics.connectFailures.inc({ via: 'pod' });
          failed.add(choice.id);
          balancer.reportFailure(choice.id);
        }
        if (!retryable) break;
      } finally {
        balancer.release(choice.id);
      }
    }
    stats.request(502, (performance.now() - started) / 1000);
    this.#reply(res, 502, `edgemesh: upstream of ${route.key} failed: ${describeError(lastError)}\n`);
  }

  #reply(res: AnyResponse, status: number, body: string): void {
    this.#opts.metrics.httpRequests.inc({ code: status });
    if (res.headersSent) {
      res.destroy?.();
      return;
    }
    (res as ServerResponse).writeHead(status, {
      'content-type': 'text/plain',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  }

  /**
   * HTTP/1.1 upstream over node:http keep-alive agents (one per endpoint). Measured here at
   * 16 concurrent clients: ~6× the requests/s of an undici Pool in the same position.
   */
  #forwardH1(
    target: Target,
    req: IncomingMessage,
    method: string,
    headers: Record<string, string | string[]>,
    hasBody: boolean,
  ): Promise<Upstream> {
    return new Promise((resolve, reject) => {
      const up = http.request({
        agent: this.#agent(target),
        host: target.ip,
        port: target.port,
        method,
        path: req.url ?? '/',
        headers,
        setHost: false,
      });
      let answered = false;
      up.once('response', (r) => {
        answered = true;
        resolve({ statusCode: r.statusCode ?? 502, headers: r.headers, body: r });
      });
      up.on('error', (err) => {
        if (!answered) reject(Object.assign(err, { reusedSocket: up.reusedSocket }));
      });
      if (hasBody) req.pipe(up);
      else up.end();
    });
  }

  #agent(target: Target): Agent {
    let agent = this.#agents.get(target.id);
    if (!agent) {
      const { dialer, connectTimeoutMs } = this.#opts;
      agent = new http.Agent({ keepAlive: true, maxFreeSockets: 64, scheduling: 'lifo' });
      // Async form: Agent waits for the callback when createConnection returns undefined.
      (agent as unknown as { createConnection: unknown }).createConnection = (
        _options: unknown,
        callback: (err: Error | null, socket?: net.Socket) => void,
      ) => {
        dialer.dial(target, connectTimeoutMs).then(
          ({ socket }) => {
            callback(null, socket);
            // The request attaches its readers on the next tick; a gateway socket comes back paused.
            process.nextTick(() => socket.resume());
          },
          (err: Error) => callback(err),
        );
        return undefined;
      };
      this.#agents.set(target.id, agent);
    }
    return agent;
  }

  /** Upgrade requests get a raw connection to one endpoint: the request head is replayed. */
  async #onUpgrade(req: IncomingMessage, client: net.Socket, head: Buffer): Promise<void> {
    const ctx = this.#contexts.get(client);
    const route = ctx ? this.#opts.router.resolve(ctx.dstIp, ctx.dstPort) : undefined;
    if (!ctx || route?.kind !== 'service') {
      client.destroy();
      return;
    }
    const upstream = await this.#dialService(route, ctx).catch(() => undefined);
    if (!upstream) {
      const body = `edgemesh: no reachable endpoint for service ${route.key}\n`;
      client.end(
        `HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
      return;
    }
    const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
    for (let i = 0; i < req.rawHeaders.length; i += 2)
      lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    upstream.socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head.length > 0) upstream.socket.write(head);
    splice(client, upstream.socket, this.#opts.idleTimeoutMs, upstream.release);
  }

  /** Dials one endpoint of a service with retries on the next endpoint (used for Upgrade). */
  async #dialService(
    route: ServiceRoute,
    ctx: ConnContext,
  ): Promise<{ socket: net.Socket; release: () => void }> {
    const balancer = this.#opts.router.balancer(route);
    const failed = new Set<string>();
    for (let attempt = 0; attempt < this.#opts.maxAttempts; attempt++) {
      const choice = balancer.pick({ clientIp: ctx.clientIp }, failed);
      if (!choice) break;
      try {
        const { socket } = await this.#opts.dialer.dial(choice.value, this.#opts.connectTimeoutMs);
        balancer.reportSuccess(choice.id);
        balancer.acquire(choice.id);
        return { socket, release: () => balancer.release(choice.id) };
      } catch {
        failed.add(choice.id);
        balancer.reportFailure(choice.id);
      }
    }
    throw new Error('no endpoint reachable');
  }
}

/**
 * Streams the upstream body into the response with backpressure (`pipe`), resolving when
 * the response is done either way. Not `stream.pipeline`: it builds an AbortController per
 * call and aborting it captures a DOMException stack — measured at ~9% of the L7 path's CPU.
 */
function relay(body: NodeJS.ReadableStream, res: AnyResponse): Promise<void> {
  return new Promise((resolve) => {
    let done = false;
    const finish = () => {
      if (!done) {
        done = true;
        resolve();
      }
    };
    body.once('error', () => {
      res.destroy?.();
      finish();
    });
    res.once('finish', finish);
    res.once('close', () => {
      // The client went away mid-response: stop reading the upstream (its socket is freed).
      if (!res.writableFinished) (body as Readable).destroy?.();
      finish();
    });
    body.pipe(res as NodeJS.WritableStream);
  });
}

/** Whether `bytes` open with the HTTP/2 preface: undefined while they are a shorter part of it. */
function prefaceOf(bytes: Buffer): boolean | undefined {
  const n = Math.min(bytes.length, H2_PREFACE.length);
  const matches = bytes.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
  return matches && bytes.length < H2_PREFACE.length ? undefined : matches;
}

/**
 * Reads just enough of the first bytes to tell HTTP/2 prior knowledge from HTTP/1.x: h2
 * once the whole 24-byte preface is there, h1 as soon as the bytes stop matching it.
 * `initial`: bytes already read (a connection the native engine gave back).
 */
function sniff(
  client: net.Socket,
  decide: (isH2: boolean, buffered: Buffer) => void,
  initial: Buffer = Buffer.alloc(0),
): void {
  let buffered = initial;
  const isH2 = initial.length > 0 ? prefaceOf(initial) : undefined;
  if (isH2 !== undefined) {
    decide(isH2, initial);
    return;
  }
  const onData = (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    const matches = prefaceOf(buffered);
    if (matches === undefined) return;
    client.removeListener('data', onData);
    client.removeListener('end', onEnd);
    decide(matches, buffered);
  };
  const onEnd = () => client.destroy();
  client.on('data', onData);
  client.once('end', onEnd);
  client.resume();
}

function requestHeaders(req: AnyRequest): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const connectionTokens = String(req.headers.connection ?? '')
    .toLowerCase()
    .split(',')
    .map((t) => t.trim());
  for (const [name, value] of Object.entries(req.headers)) {
    if (
      value === undefined ||
      name.startsWith(':') ||
      HOP_BY_HOP.has(name) ||
      connectionTokens.includes(name)
    )
      continue;
    out[name] = value;
  }
  // undici derives Host / :authority from this header; h2 clients send :authority instead.
  const authority = req.headers.host ?? (req.headers[':authority'] as string | undefined);
  if (authority) out.host = authority;
  if (req.headers.te === 'trailers') out.te = 'trailers'; // gRPC needs it end to end
  return out;
}

function responseHeaders(
  headers: Record<string, string | string[] | undefined>,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(':')) continue;
    if (HOP_BY_HOP.has(name) && name !== 'host') continue;
    out[name] = value;
  }
  return out;
}

function requestHasBody(req: AnyRequest): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** Errors that happened before any byte of the request left: safe to try another endpoint. */
function isConnectFailure(err: unknown): boolean {
  const e = err as { code?: string; cause?: { code?: string } };
  return (
    e?.code === 'EDGEMESH_ERR_DIAL_REFUSED' ||
    e?.code === 'UND_ERR_CONNECT_TIMEOUT' ||
    e?.code === 'ECONNREFUSED' ||
    e?.code === 'EHOSTUNREACH' ||
    e?.code === 'ENETUNREACH'
  );
}
