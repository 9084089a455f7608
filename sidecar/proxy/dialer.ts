/**
 * How the proxy reaches a target. Two ways, behind one interface so the proxy (and undici's
 * pools, through `connector`) never care which:
 *
 *   direct   net.connect to the pod IP: endpoints on this node, pods whose node is
 *            unknown, and passthrough destinations
 *   gateway  one TCP connection to this node's gateway (hostIP:15080) that names the target
 *            (`EDGEMESH/1 CONNECT <node> <ip> <port>`, lib/gateway-protocol.ts); after the
 *            gateway's `OK <path>` line the socket is a raw pipe to the target
 *
 * Both honour a connect timeout; a failure rejects with a coded EdgemeshError so the caller
 * can retry on another endpoint.
 */
import net from 'node:net';
import { EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import { formatRequest, type PathKind, parseReply, takeLine } from '../../lib/gateway-protocol.ts';
import type { Target } from './route.ts';

/**
 * Per-socket buffer bound for spliced bytes. Node's default (16 KiB) is smaller than one
 * 64 KiB read, so every read would pause the reader until the writer drained; 256 KiB
 * keeps both directions streaming while still bounding memory per connection.
 */
export const SOCKET_HWM = 256 * 1024;

export interface DialResult {
  /** Connected, and possibly paused: attach readers, then resume(). */
  socket: net.Socket;
  /** How the bytes travel: 'pod' for a direct dial, else the gateway's path. */
  via: 'pod' | PathKind;
  /** True when the socket's incoming bytes already go straight into the `sink` given to dial. */
  sinked?: boolean;
  /** True when the socket's incoming bytes go to the `reader` given to dial (no 'data' events). */
  read?: boolean;
}

/**
 * Takes a connection's incoming bytes from a reused read buffer instead of 'data' events (no
 * Buffer per read for the GC). `chunk` is valid only during the call: `read` returns true when
 * something still references it afterwards (a write of it queued on a socket, bytes kept for
 * later), and the next read then goes into a fresh buffer. Backpressure: pause() the socket.
 */
export interface ChunkReader {
  read(chunk: Buffer): boolean;
}

export interface Dialer {
  /**
   * `sink`: a socket the caller will splice with; a dialer that can (the direct one) writes
   * the upstream's bytes into it from a reused read buffer instead of the stream machinery.
   * `reader`: the same for a caller that frames the bytes itself (the HTTP/1.1 fast path);
   * DialResult.read says whether it was used (else the bytes come as 'data' events).
   */
  dial(target: Target, timeoutMs: number, sink?: net.Socket, reader?: ChunkReader): Promise<DialResult>;
  /** How dial() reaches `target` in plain bytes, so the native engine can do the same itself. */
  raw?(target: Target): RawRoute | undefined;
}

/**
 * A dial in plain bytes: connect to ip:port; for the gateway hop, send `hello` (the CONNECT
 * line) and pass the reply line to `check`, which returns the error to fail with, if any.
 */
export interface RawRoute {
  ip: string;
  port: number;
  via: 'pod' | 'gateway';
  handshake?: { hello: string; check: (line: string) => Error | undefined };
}

export function connectError(target: Target, why: string, cause?: unknown): EdgemeshError {
  return new EdgemeshError(ErrorCodes.DIAL_REFUSED, `connect to ${target.id} failed: ${why}`, { cause });
}

/** Opens a TCP connection with a timeout; half-open allowed so the proxy can carry FINs both ways. */
function tcpConnect(
  host: string,
  port: number,
  timeoutMs: number,
  target: Target,
  sink?: net.Socket,
  reader?: ChunkReader,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const forward = sink
      ? forwardInto(sink, (): net.Socket => socket)
      : reader
        ? readInto(reader)
        : undefined;
    const socket: net.Socket = net.connect({
      host,
      port,
      allowHalfOpen: true,
      noDelay: true,
      highWaterMark: SOCKET_HWM,
      ...(forward ? { onread: forward } : {}),
    } as net.NetConnectOpts);
    if (forward) socket.once('close', forward.release);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(connectError(target, `no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeListener('error', onError);
      resolve(socket);
    });
    const onError = (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      reject(connectError(target, err.code ?? err.message, err));
    };
    socket.once('error', onError);
  });
}

/**
 * `onread` options that write every chunk read from the upstream straight into `sink`. The
 * 64 KiB read buffer is reused whenever the write completed synchronously (nothing left
 * queued on the sink, so the kernel already has the bytes); otherwise the queued write keeps
 * it and the next read gets a fresh one. Backpressure: a full sink pauses the upstream until
 * it drains. Measured on 500 MB transfers: half the CPU of pipe() (no buffer per read for
 * the GC, and fresh pages are not faulted in for every read). `release` (on close) returns
 * the buffer the socket held to a small shared pool, so short connections do not allocate
 * 64 KiB each either.
 *
 * A connection starts with a 4 KiB buffer and moves to 64 KiB after its first read that fills
 * it: an open connection that carries small messages (most of them) holds 4 KiB instead of
 * 64 KiB plus the pages its reads touched (measured ~3.5 KB less per connection), while a
 * bulk transfer pays one small read.
 */
function forwardInto(sink: net.Socket, upstream: () => net.Socket) {
  /** A buffer no queued write references: the last one read into, once its write completed. */
  let spare: Buffer | undefined;
  /** Handed to the socket for its next read and not filled yet (cleared by the callback). */
  let current: Buffer | undefined;
  let waiting = false;
  let bulk = false;
  const onDrain = () => {
    waiting = false;
    upstream().resume();
  };
  return {
    buffer: (): Buffer => {
      current =
        spare ??
        (bulk
          ? (bufferPool.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER))
          : (firstBufferPool.pop() ?? Buffer.allocUnsafeSlow(FIRST_READ_BUFFER)));
      spare = undefined;
      return current;
    },
    callback: (n: number, buf: Buffer): boolean => {
      // From here `buf` belongs to the write below, unless the write completes at once.
      current = undefined;
      if (sink.destroyed) return false;
      const ok = sink.write(buf.subarray(0, n));
      if (!bulk && n === buf.length) {
        bulk = true; // later reads get 64 KiB; this small buffer is left to the write and the GC
      } else if (sink.writableLength === 0) {
        spare = buf;
      }
      if (ok) return true;
      if (!waiting) {
        waiting = true;
        sink.once('drain', onDrain);
      }
      return false;
    },
    release: (): void => {
      // Only a buffer no queued write still holds: pooling one that a pending write references
      // would let the next connection read over bytes not yet sent.
      const free = spare ?? current;
      spare = current = undefined;
      if (!free) return;
      const pool = free.length === READ_BUFFER ? bufferPool : firstBufferPool;
      if (pool.length < BUFFER_POOL_MAX) pool.push(free);
    },
  };
}
/**
 * `onread` options that hand every chunk to `reader` (ChunkReader), with forwardInto's buffer
 * scheme: 4 KiB first, 64 KiB after a read that fills it, the same buffer again while the
 * reader keeps nothing of it, returned to the shared pools on close.
 */
function readInto(reader: ChunkReader) {
  let spare: Buffer | undefined;
  let current: Buffer | undefined;
  let bulk = false;
  return {
    buffer: (): Buffer => {
      current =
        spare ??
        (bulk
          ? (bufferPool.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER))
          : (firstBufferPool.pop() ?? Buffer.allocUnsafeSlow(FIRST_READ_BUFFER)));
      spare = undefined;
      return current;
    },
    callback: (n: number, buf: Buffer): boolean => {
      current = undefined;
      const kept = reader.read(buf.subarray(0, n));
      if (!bulk && n === buf.length)
        bulk = true; // this small buffer is left to the GC
      else if (!kept) spare = buf;
      return true;
    },
    release: (): void => {
      const free = spare ?? current;
      spare = current = undefined;
      if (!free) return;
      const pool = free.length === READ_BUFFER ? bufferPool : firstBufferPool;
      if (pool.length < BUFFER_POOL_MAX) pool.push(free);
    },
  };
}
const READ_BUFFER = 64 * 1024;
const FIRST_READ_BUFFER = 4 * 1024;
/**
 * Read buffers of closed connections, kept for the next ones (at most 16 of each size: 1 MiB +
 * 64 KiB): a fresh ArrayBuffer per connection measured ~3 µs in a loop (allocation plus the
 * GC work V8 schedules for external memory).
 */
const BUFFER_POOL_MAX = 16;
const bufferPool: Buffer[] = [];
const firstBufferPool: Buffer[] = [];

export const directDialer: Dialer = {
  async dial(target, timeoutMs, sink, reader) {
    const socket = await tcpConnect(target.ip, target.port, timeoutMs, target, sink, reader);
    return { socket, via: 'pod', sinked: sink !== undefined, read: !sink && reader !== undefined };
  },
  raw: (target) => ({ ip: target.ip, port: target.port, via: 'pod' }),
};

/**
 * Dials through the local gateway. The connect timeout covers the whole exchange (TCP to the
 * gateway plus its reply, which arrives once the far side has connected to the target).
 */
export class GatewayDialer implements Dialer {
  readonly host: string;
  readonly port: number;

  constructor(address: { host: string; port: number }) {
    this.host = address.host;
    this.port = address.port;
  }

  raw(target: Target): RawRoute | undefined {
    const node = target.nodeName;
    if (!node) return undefined;
    return {
      ip: this.host,
      port: this.port,
      via: 'gateway',
      handshake: {
        hello: formatRequest({ kind: 'connect', node, ip: target.ip, port: target.port }),
        check: (line) => {
          // The engine hands over the raw bytes before the "\n": the same checks as readReply.
          let taken: ReturnType<typeof takeLine>;
          try {
            taken = takeLine(Buffer.from(`${line}\n`, 'latin1'));
          } catch (err) {
            return connectError(target, `bad gateway reply: ${(err as Error).message}`);
          }
          const verdict = judgeReply(taken?.line ?? '', target);
          return verdict instanceof Error ? verdict : undefined;
        },
      },
    };
  }

  async dial(target: Target, timeoutMs: number): Promise<DialResult> {
    if (!target.nodeName) throw connectError(target, 'gateway hop needs the node name of the target');
    const deadline = Date.now() + timeoutMs;
    const socket = await tcpConnect(this.host, this.port, timeoutMs, target);
    socket.write(formatRequest({ kind: 'connect', node: target.nodeName, ip: target.ip, port: target.port }));
    try {
      const { path, rest } = await readReply(socket, Math.max(1, deadline - Date.now()), target);
      if (rest.length > 0) socket.unshift(rest);
      return { socket, via: path };
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }
}

/** The gateway's reply line judged: the path it took, or the error to fail the dial with. */
function judgeReply(line: string, target: Target): PathKind | EdgemeshError {
  let reply: ReturnType<typeof parseReply>;
  try {
    reply = parseReply(line);
  } catch (err) {
    return connectError(target, `bad gateway reply: ${(err as Error).message}`);
  }
  return reply.ok ? reply.path : connectError(target, `gateway refused: ${reply.code} ${reply.message}`);
}

function readReply(
  socket: net.Socket,
  timeoutMs: number,
  target: Target,
): Promise<{ path: PathKind; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buffer: Buffer = Buffer.alloc(0);
    const done = (err: Error | undefined, value?: { path: PathKind; rest: Buffer }) => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      socket.removeListener('error', onError);
      socket.pause();
      if (err) reject(err);
      else if (value) resolve(value);
    };
    const timer = setTimeout(
      () => done(connectError(target, `gateway gave no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      let taken: ReturnType<typeof takeLine>;
      try {
        taken = takeLine(buffer);
      } catch (err) {
        done(connectError(target, `bad gateway reply: ${(err as Error).message}`));
        return;
      }
      if (!taken) return;
      const verdict = judgeReply(taken.line, target);
      if (verdict instanceof Error) done(verdict);
      else done(undefined, { path: verdict, rest: taken.rest });
    };
    const onEnd = () => done(connectError(target, 'gateway closed the connection before replying'));
    const onError = (err: NodeJS.ErrnoException) =>
      done(connectError(target, `gateway: ${err.code ?? err.message}`));
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', onError);
  });
}

/**
 * Chooses per target: a target on another known node goes through the gateway (when one is
 * configured); everything else is dialled directly.
 */
export class RoutingDialer implements Dialer {
  readonly #nodeName: string | undefined;
  readonly #gateway: Dialer | undefined;

  constructor(options: { nodeName?: string; gateway?: Dialer }) {
    this.#nodeName = options.nodeName;
    this.#gateway = options.gateway;
  }

  viaGateway(target: Target): boolean {
    return (
      this.#gateway !== undefined &&
      target.nodeName !== undefined &&
      this.#nodeName !== undefined &&
      target.nodeName !== this.#nodeName
    );
  }

  raw(target: Target): RawRoute | undefined {
    return this.viaGateway(target) ? this.#gateway?.raw?.(target) : directDialer.raw?.(target);
  }

  dial(target: Target, timeoutMs: number, sink?: net.Socket, reader?: ChunkReader): Promise<DialResult> {
    return this.viaGateway(target) && this.#gateway
      ? this.#gateway.dial(target, timeoutMs)
      : directDialer.dial(target, timeoutMs, sink, reader);
  }
}
