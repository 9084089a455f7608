/**
 * The native L4 data path (sidecar/native/l4.c) as the proxy sees it: an engine that accepts
 * on the proxy's port, reports each connection's original destination, and splices the ones
 * the proxy sends on (to a pod or passthrough address, or through the gateway's CONNECT
 * handshake) on its own thread. A connection the proxy handles in JavaScript (HTTP ports)
 * becomes a net.Socket (adopt).
 *
 * Measured (bench/proxy.ts): a spliced short connection costs the sidecar a few µs of its
 * own CPU instead of ~50 µs of JavaScript per connection through net.Socket; see docs/proxy.md.
 *
 * fds are the connections' ids: an fd is unique while open, and the engine's events arrive
 * in the order it produced them (a CLOSED fd is reported before an accept reuses its number).
 */
import { createRequire } from 'node:module';
import net from 'node:net';
import { constants } from 'node:os';
import { SOCKET_HWM } from './dialer.ts';
import type { OriginalDst } from './original-dst.ts';

const EVENT_ACCEPTED = 1;
const EVENT_CONNECTED = 2;
const EVENT_CONNECT_FAILED = 3;
const EVENT_CLOSED = 4;
const EVENT_ACCEPT_ERROR = 5;
const EVENT_FATAL = 6;
const EVENT_REPLY = 7;
/** 8 and 9: an HTTP/1.1 connection taken at accept given back, or closed (native-http1.ts). */
const EVENT_HTTP_FALLBACK = 8;

type Engine = object;
/** One event from the engine's thread: `num` is a port, an errno or a close reason by type; CLOSED carries the bytes carried each way. */
type EngineEvent = (
  type: number,
  fd: number,
  num: number,
  dst?: string,
  peer?: string,
  local?: string,
  sent?: number,
  received?: number,
  port?: number,
) => void;
interface Addon {
  create(onEvent: EngineEvent, idleMs: number): Engine;
  listen(engine: Engine, host: string, port: number, backlog: number): void;
  connect(engine: Engine, fd: number, ip: string, port: number, timeoutMs: number, hello?: string): void;
  proceed(engine: Engine, fd: number): void;
  abandon(engine: Engine, fd: number): void;
  detach(engine: Engine, fd: number): void;
  reset(engine: Engine, fd: number): void;
  closeListeners(engine: Engine): void;
  closeAll(engine: Engine): void;
  stop(engine: Engine): void;
  /** The C HTTP/1.1 framing (http1.c), for the tests that hold it to parse.ts. */
  httpParse(buf: Buffer, response: boolean, headRequest: boolean): NativeHead | undefined;
  httpChunked(buf: Buffer, cuts: number[]): number | string;
  /** The accept-time route table of the HTTP/1.1 path (native-http1.ts attach); absent in older builds. */
  httpRoutes?(engine: Engine, entries: HttpRouteEntry[], timeoutMs: number): void;
  httpOpen?(engine: Engine): number;
  httpStats(engine: Engine): number[];
  httpDrain(engine: Engine): void;
}

/** One accept-time route: original destination ip and port, metrics slot, service key, [id, ip, port, ...]. */
export type HttpRouteEntry = [string, number, number, string, (string | number)[]];

/**
 * What the HTTP/1.1 path (native-http1.ts) needs of the engine that accepts: a table of
 * destinations it carries at accept without telling JavaScript, their counts, and the
 * events of those connections (a fallback names its destination: JavaScript never saw it).
 */
export interface HttpAcceptor {
  httpRoutes(entries: HttpRouteEntry[], timeoutMs: number): void;
  /** Connections taken at accept, open now. */
  readonly httpOpen: number;
  httpStats(): number[];
  httpDrain(): void;
  onHttpEvent: HttpEngineEvent | undefined;
}

/** An HTTP connection's event: FALLBACK carries its unhandled bytes (a Buffer) as `data`, and its destination as `local`, `port`. */
export type HttpEngineEvent = (
  type: number,
  fd: number,
  num: number,
  data: unknown,
  peer?: string,
  local?: string,
  sent?: number,
  received?: number,
  port?: number,
) => void;

/** What http1.c makes of a head: parse.ts's Head framing fields, or the refusal. */
export type NativeHead =
  | { error: string; status: number }
  | {
      error?: undefined;
      status: number;
      method?: string;
      target?: string;
      minor: number;
      headEnd: number;
      contentLength: number;
      keepAliveMs: number;
      chunked: boolean;
      close: boolean;
      upgrade: boolean;
      untilClose: boolean;
      drop: number[];
      /** The head as forwarded: its bytes without the dropped lines (h1_rewrite). */
      rewritten: Buffer;
    };

let addon: Addon | Error | undefined;

/** The compiled addon, or why it is not available (not built: no C compiler at install). */
export function loadAddon(): Addon | Error {
  if (addon === undefined) {
    try {
      // EDGEMESH_L4_ADDON: a test hook for another build of the same source, e.g. the
      // sanitizer build (sidecar/native/build.sh, EDGEMESH_NATIVE_SANITIZE=1).
      const path = process.env.EDGEMESH_L4_ADDON || '../native/build/l4.node';
      addon = createRequire(import.meta.url)(path) as Addon;
    } catch (err) {
      addon = new Error(
        `native L4 path not available (sidecar/native/build.sh builds it): ${(err as Error).message}`,
      );
    }
  }
  return addon;
}

export interface AcceptedConnection {
  fd: number;
  /** Undefined when the kernel had none for it (`dstError` says why). */
  dst: OriginalDst | undefined;
  dstError: string | undefined;
  peerIp: string;
  /** The local address, given only when the destination port is the listener's own (loop check). */
  localIp: string | undefined;
}

export interface NativeL4Options {
  idleTimeoutMs: number;
  onAccepted: (conn: AcceptedConnection) => void;
  onAcceptError: (code: string) => void;
}

/** A handshake after connecting (the gateway hop): send `hello`, judge the reply line. */
export interface Handshake {
  hello: string;
  /** The error to fail the connect with, or undefined to splice. */
  check: (line: string) => Error | undefined;
}

interface Waiting {
  resolve: () => void;
  reject: (err: Error) => void;
  /** Bytes client → upstream and back, as the engine carried them (0 when it never spliced). */
  onClose: (sent: number, received: number) => void;
  handshake: Handshake | undefined;
  connected: boolean;
}

export class NativeL4 implements HttpAcceptor {
  readonly #addon: Addon;
  readonly #engine: Engine;
  readonly #opts: NativeL4Options;
  /** Per fd: the connect in flight or the spliced connection (sparse array: fds are small ints). */
  readonly #waiting: (Waiting | undefined)[] = [];
  #open = 0;
  #stopped = false;
  /** Events of HTTP connections this engine took at accept (types 8 and 9): native-http1.ts's. */
  onHttpEvent: HttpEngineEvent | undefined;

  constructor(options: NativeL4Options) {
    const loaded = loadAddon();
    if (loaded instanceof Error) throw loaded;
    this.#addon = loaded;
    this.#opts = options;
    this.#engine = loaded.create(
      (type, fd, num, dst, peer, local, sent, received, port) =>
        type >= EVENT_HTTP_FALLBACK
          ? this.onHttpEvent?.(type, fd, num, dst, peer, local, sent, received, port)
          : this.#onEvent(type, fd, num, dst, peer, local, sent, received),
      options.idleTimeoutMs,
    );
  }

  /** Connections accepted and not yet closed, reset or adopted. */
  get open(): number {
    return this.#open;
  }

  /** Whether this build has the accept-time route table (httpRoutes). */
  get acceptsHttp(): boolean {
    return typeof this.#addon.httpRoutes === 'function';
  }

  /** Replaces the accept-time route table (throws past its bounds; the table before stays). */
  httpRoutes(entries: HttpRouteEntry[], timeoutMs: number): void {
    if (!this.#stopped) this.#addon.httpRoutes?.(this.#engine, entries, timeoutMs);
  }

  get httpOpen(): number {
    return this.#addon.httpOpen?.(this.#engine) ?? 0;
  }

  httpStats(): number[] {
    return this.#addon.httpStats(this.#engine);
  }

  /** Keep-alive of the connections taken at accept ends; new ones go to JavaScript. */
  httpDrain(): void {
    if (!this.#stopped) this.#addon.httpDrain(this.#engine);
  }

  /** Binds now (throws with the errno's code, e.g. EADDRINUSE); the engine accepts from then on. */
  listen(host: string, port: number, backlog: number): void {
    this.#addon.listen(this.#engine, host, port, backlog);
  }

  /**
   * Dials ip:port for the accepted `fd` (and runs `handshake`, if given) and splices the two.
   * Resolves once connected (then `onClose` runs when both are closed, with the bytes carried); rejects when the
   * connect or handshake fails, and the fd is the caller's again (try another endpoint, adopt
   * or reset it).
   */
  connect(
    fd: number,
    ip: string,
    port: number,
    timeoutMs: number,
    onClose: (sent: number, received: number) => void,
    handshake?: Handshake,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#waiting[fd] = { resolve, reject, onClose, handshake, connected: false };
      this.#addon.connect(this.#engine, fd, ip, port, timeoutMs, handshake?.hello);
    });
  }

  /** A Node socket for the accepted `fd`, paused as a server's pauseOnConnect one; the engine forgets it. */
  adopt(fd: number): net.Socket {
    this.#addon.detach(this.#engine, fd);
    this.#open--;
    return socketForFd(fd);
  }

  /**
   * The accepted `fd` went to the engine's HTTP/1.1 path, which owns it from now on
   * (native-http1.ts takeFd): this engine forgets it; nobody here closes it.
   */
  handedOver(fd: number): void {
    this.#addon.detach(this.#engine, fd);
    this.#open--;
  }

  /** Refuses the accepted `fd` with a reset, as a refused connect would. */
  reset(fd: number): void {
    this.#addon.reset(this.#engine, fd);
    this.#open--;
  }

  closeListeners(): void {
    if (!this.#stopped) this.#addon.closeListeners(this.#engine);
  }

  /** Closes every spliced connection; connects in flight fail (ECANCELED). */
  closeAll(): void {
    if (!this.#stopped) this.#addon.closeAll(this.#engine);
  }

  /** Ends the engine's thread; every fd it still held is closed. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#addon.stop(this.#engine);
  }

  #connected(fd: number): void {
    const waiting = this.#waiting[fd];
    if (!waiting) return;
    waiting.connected = true;
    waiting.resolve();
  }

  #onEvent: EngineEvent = (type, fd, num, dst, peer, local, sent = 0, received = 0) => {
    switch (type) {
      case EVENT_ACCEPTED:
        this.#open++;
        this.#opts.onAccepted({
          fd,
          dst: num >= 0 && dst ? { ip: dst, port: num, family: dst.includes(':') ? 6 : 4 } : undefined,
          dstError: num < 0 ? `getsockopt(SO_ORIGINAL_DST) failed: ${errnoName(-num)}` : undefined,
          peerIp: peer ?? '',
          localIp: local,
        });
        return;
      case EVENT_CONNECTED:
        this.#connected(fd);
        return;
      case EVENT_REPLY: {
        const waiting = this.#waiting[fd];
        const err = waiting?.handshake?.check(dst ?? '');
        if (err === undefined) {
          this.#addon.proceed(this.#engine, fd);
          this.#connected(fd);
        } else {
          this.#addon.abandon(this.#engine, fd);
          this.#waiting[fd] = undefined;
          waiting?.reject(err);
        }
        return;
      }
      case EVENT_CONNECT_FAILED: {
        const waiting = this.#waiting[fd];
        this.#waiting[fd] = undefined;
        if (waiting?.connected) {
          // closeAll overtook a proceed: the connection is over, the fd is ours to close.
          this.reset(fd);
          waiting.onClose(0, 0);
          return;
        }
        waiting?.reject(Object.assign(new Error(errnoName(num)), { code: errnoName(num) }));
        return;
      }
      case EVENT_CLOSED: {
        const waiting = this.#waiting[fd];
        this.#waiting[fd] = undefined;
        this.#open--;
        waiting?.onClose(sent, received);
        return;
      }
      case EVENT_ACCEPT_ERROR:
        this.#opts.onAcceptError(errnoName(num));
        return;
      case EVENT_FATAL:
        // The engine's thread ended (epoll failed): nothing would be accepted or carried any
        // more. Crash, so the container restarts, rather than run without a data path.
        throw new Error(`native L4 engine stopped: epoll_wait failed (${errnoName(num)})`);
    }
  };
}

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));
const errnoName = (n: number): string => errnoNames.get(n) ?? `errno ${n}`;

/**
 * A Node socket for a connected TCP `fd` an engine gives back (adopted, or an HTTP/1.1
 * connection returned at a request boundary): paused as a server's pauseOnConnect one, Nagle
 * off, the proxy's high-water mark.
 */
export function socketForFd(fd: number): net.Socket {
  const socket = new net.Socket({
    fd,
    readable: true,
    writable: true,
    allowHalfOpen: true,
    highWaterMark: SOCKET_HWM,
    pauseOnCreate: true,
  } as net.SocketConstructorOpts);
  socket.setNoDelay(true);
  return socket;
}
