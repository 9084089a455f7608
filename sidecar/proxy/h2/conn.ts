/**
 * One HTTP/2 connection of the frame relay (either leg: a client's, where we are the server,
 * or an upstream one, where we are the client) and the flow of one stream's bytes from one
 * connection to another.
 *
 * Conn owns what is per connection and the same on both legs (RFC 9113): the preface, frame
 * validation, SETTINGS (validated, acknowledged, applied), PING answered here, the connection
 * send window, header blocks joined across CONTINUATION and HPACK-decoded, GOAWAY on a
 * connection error. What a stream means is the subclass's (relay.ts, upstream.ts).
 *
 * Flow control, both legs alike (§5.2, §6.9):
 *   receive   we advertise STREAM_WINDOW per stream and CONN_WINDOW per connection; a DATA
 *             frame's full length (padding too) is counted against both; a peer that goes
 *             beyond is a FLOW_CONTROL_ERROR
 *   credit    given back (WINDOW_UPDATE) only when the bytes were written to the other leg's
 *             socket and that socket is not congested (more than CONGESTED octets queued):
 *             so what a peer may send is what the other side takes, and the relay holds at
 *             most one connection window of a peer's bytes. Credits are batched: a stream's
 *             once a quarter of its window, the connection's once an eighth of its window
 *   send      per stream the peer's SETTINGS_INITIAL_WINDOW_SIZE (changes applied to open
 *             streams, §6.9.2) and per connection 65,535 plus its WINDOW_UPDATEs; a DATA frame
 *             that does not fit is split, the rest waits for a WINDOW_UPDATE
 *
 * Writes of one turn of the event loop are gathered and written once (a microtask), so a
 * read's worth of frames costs one socket write, not one per frame.
 */
import type net from 'node:net';
import {
  COMPRESSION_ERROR,
  contentRange,
  DEFAULT_MAX_FRAME,
  DEFAULT_WINDOW,
  ENHANCE_YOUR_CALM,
  F_ACK,
  F_END_HEADERS,
  F_END_STREAM,
  FLOW_CONTROL_ERROR,
  FRAME_SIZE_ERROR,
  FrameReader,
  frameHeader,
  goaway,
  H2Error,
  headersFrames,
  INTERNAL_ERROR,
  MAX_WINDOW,
  PREFACE,
  PROTOCOL_ERROR,
  parseSettings,
  pingAck,
  rstStream,
  S_INITIAL_WINDOW_SIZE,
  S_MAX_CONCURRENT_STREAMS,
  S_MAX_FRAME_SIZE,
  SETTINGS_ACK,
  settingsFrame,
  T_CONTINUATION,
  T_DATA,
  T_GOAWAY,
  T_HEADERS,
  T_PING,
  T_PRIORITY,
  T_PUSH_PROMISE,
  T_RST_STREAM,
  T_SETTINGS,
  T_WINDOW_UPDATE,
  windowUpdate,
} from './frames.ts';
import { HpackDecoder, HpackError } from './hpack.ts';

/** Receive window we advertise per stream: a 256 KiB body in flight without a stall. */
export const STREAM_WINDOW = 256 * 1024;
/** Receive window per connection: the most of one peer's bytes the relay holds. */
export const CONN_WINDOW = 4 * 1024 * 1024;
/** Our SETTINGS_MAX_HEADER_LIST_SIZE: a larger request is answered 431 (§10.5.1). */
export const MAX_HEADER_LIST = 64 * 1024;
/** Encoded header block bound (CONTINUATION flood): beyond it the connection ends (ENHANCE_YOUR_CALM). */
const MAX_BLOCK = 256 * 1024;
/** Octets queued in a socket above which it counts as congested (dialer.ts SOCKET_HWM). */
export const CONGESTED = 256 * 1024;
const EMPTY = Buffer.alloc(0);

/**
 * The bytes of one stream direction: from `src` (stream `srcId`) to `dst` (stream `dstId`,
 * 0 while that stream is not open yet: the bytes wait in `queue`).
 */
export class Flow {
  /** Undefined for the proxy's own answers: nothing to credit. */
  src: Conn | undefined;
  srcId: number;
  dst: Conn | undefined;
  dstId = 0;
  /** Receive window left on the src stream. */
  recvWin = STREAM_WINDOW;
  /** Send window on the dst stream. */
  sendWin = 0;
  readonly queue: Buffer[] = [];
  /** END_STREAM received from src. */
  ended = false;
  /** END_STREAM sent to dst. */
  endSent = false;
  /** Encoded trailers (a header block) to send after the queue, with END_STREAM. */
  trailers: Buffer | undefined;
  /** Octets forwarded and not yet credited to src (held while dst is congested). */
  credit = 0;
  /** Octets credited but not yet announced in a stream WINDOW_UPDATE (batching). */
  unacked = 0;
  /** Called once END_STREAM went to dst. */
  onEndSent: (() => void) | undefined;

  constructor(src: Conn | undefined, srcId: number) {
    this.src = src;
    this.srcId = srcId;
  }

  /** Connects the flow to its destination stream (its send window starts at the peer's initial). */
  attach(dst: Conn, dstId: number): void {
    this.dst = dst;
    this.dstId = dstId;
    this.sendWin = dst.peerInitialWindow;
  }

  /** Sends what the windows allow; the rest waits for a WINDOW_UPDATE (dst.blocked). */
  pump(): void {
    const dst = this.dst;
    if (!dst || this.dstId === 0 || this.endSent || dst.closed) return;
    const q = this.queue;
    while (q.length > 0) {
      const chunk = q[0] as Buffer;
      const allowed = Math.min(this.sendWin, dst.sendWindow);
      if (allowed <= 0) {
        dst.blocked.add(this);
        return;
      }
      const n = chunk.length <= allowed ? chunk.length : allowed;
      const last = n === chunk.length && q.length === 1 && this.ended && !this.trailers;
      dst.writeData(this.dstId, n === chunk.length ? chunk : chunk.subarray(0, n), last);
      this.sendWin -= n;
      dst.sendWindow -= n;
      if (n === chunk.length) q.shift();
      else q[0] = chunk.subarray(n);
      this.forwarded(n);
      if (last) {
        this.#ended();
        return;
      }
    }
    if (this.ended) {
      if (this.trailers) dst.writeHeaders(this.dstId, this.trailers, true);
      else dst.writeData(this.dstId, EMPTY, true);
      this.#ended();
    }
  }

  #ended(): void {
    this.endSent = true;
    this.dst?.blocked.delete(this);
    this.onEndSent?.();
  }

  /** `n` octets left for dst: credited to src now, or once dst's socket drains. */
  forwarded(n: number): void {
    this.credit += n;
    const dst = this.dst;
    if (dst?.congested) dst.waitingCredit.add(this);
    else this.releaseCredit();
  }

  releaseCredit(): void {
    const n = this.credit;
    const src = this.src;
    if (n === 0 || !src) return;
    this.credit = 0;
    if (!this.ended && !src.closed) {
      this.unacked += n;
      if (this.unacked >= STREAM_WINDOW / 4) {
        src.write(windowUpdate(this.srcId, this.unacked));
        this.recvWin += this.unacked;
        this.unacked = 0;
      }
    }
    src.creditConnection(n);
  }

  /** Everything queued is dropped (the stream ended): the src connection's window gets it back. */
  discard(): void {
    let n = this.credit;
    for (const b of this.queue) n += b.length;
    this.queue.length = 0;
    this.credit = 0;
    this.dst?.blocked.delete(this);
    this.dst?.waitingCredit.delete(this);
    if (n > 0) this.src?.creditConnection(n);
  }
}

interface HeaderBlock {
  stream: number;
  endStream: boolean;
  parts: Buffer[];
  len: number;
}

export interface ConnHooks {
  /** A complete, decoded header block. `listSize` per RFC 7541 §4.1. */
  headers(stream: number, endStream: boolean, fields: string[], listSize: number): void;
  /** DATA content (padding removed); `frameLen` counts against flow control. */
  data(stream: number, endStream: boolean, content: Buffer, frameLen: number): void;
  rst(stream: number, code: number): void;
  /** A stream WINDOW_UPDATE (connection ones are Conn's). */
  window(stream: number, increment: number): void;
  goaway(lastStream: number, code: number): void;
  /** The peer's SETTINGS changed its initial window by `delta`, or MAX_CONCURRENT_STREAMS. */
  settings(windowDelta: number, maxStreams: number | undefined): void;
  /** The socket closed (after an error of ours or the peer's). */
  closed(err: Error | undefined): void;
  /** A stream id a frame other than HEADERS may name (open or recently closed). */
  known(stream: number): boolean;
  /** An unexpected exception while handling the peer's bytes (logged; the connection ends). */
  bug(err: unknown): void;
}

export class Conn {
  readonly socket: net.Socket;
  readonly #reader = new FrameReader(DEFAULT_MAX_FRAME);
  /** Lists between MAX_HEADER_LIST and 4× it are answered 431; beyond, the connection ends. */
  readonly decoder = new HpackDecoder(4096, 4 * MAX_HEADER_LIST);
  #hooks!: ConnHooks;
  #out: Buffer[] = [];
  #outLen = 0;
  #flushQueued = false;
  /** Preface octets still expected from the peer (server role: 24, client role: 0). */
  #prefaceLeft: number;
  #gotSettings = false;
  /** A header block being joined: its stream, END_STREAM, fragments. */
  #block: HeaderBlock | undefined;
  /** Connection send window (§6.9.1). */
  sendWindow = DEFAULT_WINDOW;
  /** Connection receive window left. */
  #recvWindow = CONN_WINDOW;
  #connUnacked = 0;
  /** The peer's SETTINGS_INITIAL_WINDOW_SIZE. */
  peerInitialWindow = DEFAULT_WINDOW;
  peerMaxFrame = DEFAULT_MAX_FRAME;
  /** Flows to this connection waiting for send window. */
  readonly blocked = new Set<Flow>();
  /** Flows whose credit waits for this socket to drain. */
  readonly waitingCredit = new Set<Flow>();
  congested = false;
  closed = false;
  /** The highest stream id the peer opened (for our GOAWAY). */
  lastPeerStream = 0;

  constructor(socket: net.Socket, role: 'server' | 'client') {
    this.socket = socket;
    this.#prefaceLeft = role === 'server' ? PREFACE.length : 0;
    socket.setNoDelay(true);
    socket.on('drain', () => this.#drained());
  }

  /** Starts reading; `first` holds bytes already read (the sniffed preface). */
  start(hooks: ConnHooks, settings: [number, number][], first?: Buffer): void {
    this.#hooks = hooks;
    this.write(settingsFrame(settings));
    this.write(windowUpdate(0, CONN_WINDOW - DEFAULT_WINDOW));
    this.socket.on('data', (chunk: Buffer) => this.#read(chunk));
    this.socket.on('error', (err) => this.#close(err));
    this.socket.on('close', () => this.#close(undefined));
    this.socket.on('end', () => this.socket.end());
    if (first && first.length > 0) this.#read(first);
    if (!this.closed) this.socket.resume();
  }

  write(buf: Buffer): void {
    if (this.closed) return;
    this.#out.push(buf);
    this.#outLen += buf.length;
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => this.flush());
    }
  }

  writeData(stream: number, data: Buffer, endStream: boolean): void {
    this.write(frameHeader(data.length, T_DATA, endStream ? F_END_STREAM : 0, stream));
    if (data.length > 0) this.write(data);
  }

  writeHeaders(stream: number, block: Buffer, endStream: boolean): void {
    this.write(headersFrames(stream, block, endStream, this.peerMaxFrame));
  }

  rst(stream: number, code: number): void {
    this.write(rstStream(stream, code));
  }

  flush(): void {
    this.#flushQueued = false;
    if (this.closed || this.#outLen === 0) return;
    const out = this.#out;
    const len = this.#outLen;
    this.#out = [];
    this.#outLen = 0;
    if (out.length === 1) this.socket.write(out[0] as Buffer);
    else if (len <= 64 * 1024) this.socket.write(Buffer.concat(out, len));
    else {
      this.socket.cork();
      for (const b of out) this.socket.write(b);
      this.socket.uncork();
    }
    if (!this.congested && this.socket.writableLength > CONGESTED) {
      // Our own writes pile up: stop reading this peer (its PINGs, SETTINGS, frames for the
      // other leg) until the socket drains, and hold credits for what went into it.
      this.congested = true;
      this.socket.pause();
    }
  }

  #drained(): void {
    if (!this.congested) return;
    this.congested = false;
    if (!this.closed) this.socket.resume();
    const waiting = [...this.waitingCredit];
    this.waitingCredit.clear();
    for (const f of waiting) f.releaseCredit();
  }

  /** `n` octets of this peer's DATA are consumed: the connection window gets them back. */
  creditConnection(n: number): void {
    if (this.closed) return;
    this.#connUnacked += n;
    if (this.#connUnacked >= CONN_WINDOW / 8) {
      this.write(windowUpdate(0, this.#connUnacked));
      this.#recvWindow += this.#connUnacked;
      this.#connUnacked = 0;
    }
  }

  /** A connection error: GOAWAY with `code`, then the socket ends. */
  fail(code: number, message: string): void {
    if (this.closed) return;
    this.#reader.stopped = true;
    this.write(goaway(this.lastPeerStream, code, message));
    this.flush();
    this.socket.end();
    // A peer that never reads does not keep the socket: it goes after a grace period.
    setTimeout(() => this.socket.destroy(), 2000).unref();
    this.#close(new H2Error(code, message));
  }

  /** A graceful end: GOAWAY(NO_ERROR) naming the last stream we will serve. */
  goaway(lastStream: number): void {
    this.write(goaway(lastStream, 0));
  }

  destroy(): void {
    this.socket.destroy();
    this.#close(undefined);
  }

  #close(err: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.#reader.stopped = true;
    this.blocked.clear();
    this.waitingCredit.clear();
    if (!this.socket.destroyed && err && !(err instanceof H2Error)) this.socket.destroy();
    this.#hooks?.closed(err);
  }

  #read(chunk: Buffer): void {
    if (this.closed) return;
    try {
      if (this.#prefaceLeft > 0) {
        const n = Math.min(this.#prefaceLeft, chunk.length);
        const at = PREFACE.length - this.#prefaceLeft;
        if (!chunk.subarray(0, n).equals(PREFACE.subarray(at, at + n)))
          throw new H2Error(PROTOCOL_ERROR, 'bad connection preface');
        this.#prefaceLeft -= n;
        chunk = chunk.subarray(n);
        if (chunk.length === 0) return;
      }
      this.#reader.push(chunk, this.#onFrame);
    } catch (err) {
      if (err instanceof H2Error) this.fail(err.code, err.message);
      else if (err instanceof HpackError) this.fail(COMPRESSION_ERROR, err.message);
      else {
        // A bug (ours, or a peer we did not foresee) costs this connection, never the process.
        this.#hooks.bug(err);
        this.fail(INTERNAL_ERROR, 'internal error');
      }
    }
    if (this.#outLen > 0) this.flush();
  }

  readonly #onFrame = (type: number, flags: number, stream: number, payload: Buffer): void => {
    if (!this.#gotSettings) {
      if (type !== T_SETTINGS || flags & F_ACK)
        throw new H2Error(PROTOCOL_ERROR, 'the first frame is not SETTINGS');
      this.#gotSettings = true;
    }
    if (this.#block && type !== T_CONTINUATION)
      throw new H2Error(PROTOCOL_ERROR, `frame type ${type} inside a header block`);
    switch (type) {
      case T_DATA:
        this.#data(flags, stream, payload);
        return;
      case T_HEADERS: {
        if (stream === 0) throw new H2Error(PROTOCOL_ERROR, 'HEADERS on stream 0');
        const [start, end] = contentRange(type, flags, payload);
        this.#startBlock(stream, (flags & F_END_STREAM) !== 0, payload.subarray(start, end), flags);
        return;
      }
      case T_CONTINUATION: {
        const b = this.#block;
        if (!b || b.stream !== stream)
          throw new H2Error(PROTOCOL_ERROR, 'CONTINUATION without a header block');
        b.parts.push(payload);
        b.len += payload.length;
        if (b.len > MAX_BLOCK) throw new H2Error(ENHANCE_YOUR_CALM, `header block above ${MAX_BLOCK} octets`);
        if (flags & F_END_HEADERS) this.#endBlock();
        return;
      }
      case T_PRIORITY:
        if (stream === 0) throw new H2Error(PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (payload.length !== 5) throw new H2Error(FRAME_SIZE_ERROR, 'PRIORITY not 5 octets');
        return; // advice only: the relay forwards in arrival order
      case T_RST_STREAM:
        if (stream === 0) throw new H2Error(PROTOCOL_ERROR, 'RST_STREAM on stream 0');
        if (payload.length !== 4) throw new H2Error(FRAME_SIZE_ERROR, 'RST_STREAM not 4 octets');
        if (!this.#hooks.known(stream))
          throw new H2Error(PROTOCOL_ERROR, `RST_STREAM on idle stream ${stream}`);
        this.#hooks.rst(stream, payload.readUInt32BE(0));
        return;
      case T_SETTINGS:
        this.#settings(flags, stream, payload);
        return;
      case T_PUSH_PROMISE:
        // Clients may not push; we told upstreams SETTINGS_ENABLE_PUSH 0 (§8.4).
        throw new H2Error(PROTOCOL_ERROR, 'PUSH_PROMISE');
      case T_PING:
        if (stream !== 0) throw new H2Error(PROTOCOL_ERROR, 'PING on a stream');
        if (payload.length !== 8) throw new H2Error(FRAME_SIZE_ERROR, 'PING not 8 octets');
        if (!(flags & F_ACK)) this.write(pingAck(payload));
        return;
      case T_GOAWAY:
        if (stream !== 0) throw new H2Error(PROTOCOL_ERROR, 'GOAWAY on a stream');
        if (payload.length < 8) throw new H2Error(FRAME_SIZE_ERROR, 'GOAWAY shorter than 8 octets');
        this.#hooks.goaway(payload.readUInt32BE(0) & 0x7fffffff, payload.readUInt32BE(4));
        return;
      case T_WINDOW_UPDATE: {
        if (payload.length !== 4) throw new H2Error(FRAME_SIZE_ERROR, 'WINDOW_UPDATE not 4 octets');
        const inc = payload.readUInt32BE(0) & 0x7fffffff;
        if (stream === 0) {
          if (inc === 0) throw new H2Error(PROTOCOL_ERROR, 'connection WINDOW_UPDATE of 0');
          this.sendWindow += inc;
          if (this.sendWindow > MAX_WINDOW)
            throw new H2Error(FLOW_CONTROL_ERROR, 'connection window above 2^31-1');
          this.pumpBlocked();
          return;
        }
        if (!this.#hooks.known(stream))
          throw new H2Error(PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${stream}`);
        this.#hooks.window(stream, inc);
        return;
      }
      default:
        return; // unknown frame types are ignored (§5.5)
    }
  };

  /** Flows that waited for connection window: each gets its turn while it lasts. */
  pumpBlocked(): void {
    if (this.blocked.size === 0) return;
    const flows = [...this.blocked];
    this.blocked.clear();
    for (const f of flows) {
      if (this.sendWindow <= 0) {
        this.blocked.add(f);
        continue;
      }
      f.pump();
    }
  }

  #data(flags: number, stream: number, payload: Buffer): void {
    if (stream === 0) throw new H2Error(PROTOCOL_ERROR, 'DATA on stream 0');
    this.#recvWindow -= payload.length;
    if (this.#recvWindow < 0) throw new H2Error(FLOW_CONTROL_ERROR, 'peer sent beyond the connection window');
    const [start, end] = contentRange(T_DATA, flags, payload);
    this.#hooks.data(stream, (flags & F_END_STREAM) !== 0, payload.subarray(start, end), payload.length);
  }

  #startBlock(stream: number, endStream: boolean, fragment: Buffer, flags: number): void {
    if (flags & F_END_HEADERS) {
      this.#decoded(stream, endStream, fragment);
      return;
    }
    this.#block = { stream, endStream, parts: [fragment], len: fragment.length };
  }

  #endBlock(): void {
    const b = this.#block as HeaderBlock;
    this.#block = undefined;
    this.#decoded(b.stream, b.endStream, Buffer.concat(b.parts, b.len));
  }

  #decoded(stream: number, endStream: boolean, block: Buffer): void {
    const fields = this.decoder.decode(block); // HpackError → COMPRESSION_ERROR (#read)
    this.#hooks.headers(stream, endStream, fields, this.decoder.listSize);
  }

  #settings(flags: number, stream: number, payload: Buffer): void {
    if (stream !== 0) throw new H2Error(PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (flags & F_ACK) {
      if (payload.length !== 0) throw new H2Error(FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
      return;
    }
    let delta = 0;
    let maxStreams: number | undefined;
    for (const [id, value] of parseSettings(payload)) {
      if (id === S_INITIAL_WINDOW_SIZE) {
        delta += value - this.peerInitialWindow;
        this.peerInitialWindow = value;
      } else if (id === S_MAX_FRAME_SIZE) this.peerMaxFrame = value;
      else if (id === S_MAX_CONCURRENT_STREAMS) maxStreams = value;
      // HEADER_TABLE_SIZE: our encoder keeps no table. MAX_HEADER_LIST_SIZE: advice.
    }
    this.write(SETTINGS_ACK);
    if (delta !== 0 || maxStreams !== undefined) this.#hooks.settings(delta, maxStreams);
  }
}

/** Applies a SETTINGS_INITIAL_WINDOW_SIZE change to a flow's send window (§6.9.2). */
export function adjustWindow(flow: Flow, delta: number): void {
  flow.sendWin += delta;
  if (flow.sendWin > MAX_WINDOW)
    throw new H2Error(FLOW_CONTROL_ERROR, 'stream window above 2^31-1 after SETTINGS');
}
