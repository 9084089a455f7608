/**
 * Upstream connections of the frame relay: per endpoint, a few HTTP/2 connections of our own
 * (Conn, client role) shared by every client connection, each carrying many streams. The same
 * policy as sessions.ts (the node:http2 path):
 *
 *   get(target)     a connection with room for one more stream: at once when one is open,
 *                   else after a dial (concurrent callers share that dial)
 *   room            min(the peer's SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS), 100 until
 *                   the peer's SETTINGS come; when every connection is full a new one is
 *                   dialed, up to MAX_SESSIONS per endpoint, then the least busy one takes the
 *                   stream and it waits there for room
 *   GOAWAY / error  the connection takes no new stream; streams above GOAWAY's last id never
 *                   ran (their exchange may retry); the rest finish; closed when none is left
 *   idle            no stream for IDLE_MS: GOAWAY and close
 *   prune(ids)      connections of endpoints gone from the catalog close once their streams end
 */
import type { Dialer } from '../dialer.ts';
import type { Target } from '../route.ts';
import { adjustWindow, Conn, type Flow, STREAM_WINDOW } from './conn.ts';
import {
  FLOW_CONTROL_ERROR,
  H2Error,
  MAX_WINDOW,
  PREFACE,
  PROTOCOL_ERROR,
  REFUSED_STREAM,
  S_ENABLE_PUSH,
  S_INITIAL_WINDOW_SIZE,
} from './frames.ts';
import { IDLE_MS, MAX_SESSIONS, MAX_STREAMS } from './sessions.ts';

/** What an upstream connection needs of the exchange riding one of its streams (relay.ts). */
export interface UpStream {
  /** Client → upstream bytes: attached to the upstream stream when it opens. */
  readonly req: Flow;
  /** Upstream → client bytes; its src is set when the stream opens. */
  res: Flow | undefined;
  /** The stream is open on `up` as `id`: the request's head goes out now. */
  opened(up: UpConn, id: number): void;
  headers(fields: string[], endStream: boolean): void;
  data(content: Buffer, endStream: boolean, frameLen: number): void;
  /** Reset by the upstream, or ended by its connection; `neverRan`: RFC 9113 §8.7 says it was not processed. */
  reset(code: number, neverRan: boolean, cause: string): void;
  /** Waited for room on a connection that stopped taking streams: nothing was sent. */
  notOpened(cause: string): void;
}

const SWEEP_MS = 1_000;
const MAX_STREAM_ID = 0x7fffffff;

export class UpConn {
  readonly conn: Conn;
  readonly streams = new Map<number, UpStream>();
  readonly waiting: UpStream[] = [];
  #nextId = 1;
  active = 0;
  room = 100;
  /** Takes no new stream (GOAWAY, error, ids used up, pruned). */
  done = false;
  idleSince: number;
  readonly #retire: (c: UpConn) => void;
  /** Told of an unexpected exception on this connection (the relay logs it). */
  readonly #onBug: (err: unknown) => void;

  constructor(conn: Conn, tick: number, retire: (c: UpConn) => void, onBug: (err: unknown) => void) {
    this.conn = conn;
    this.idleSince = tick;
    this.#retire = retire;
    this.#onBug = onBug;
    conn.write(PREFACE);
    conn.start(this.#hooks, [
      [S_ENABLE_PUSH, 0],
      [S_INITIAL_WINDOW_SIZE, STREAM_WINDOW],
    ]);
  }

  /** Opens `x` now, or when a stream ends; false when this connection takes no more. */
  open(x: UpStream): boolean {
    if (this.done) return false;
    if (this.active >= this.room) this.waiting.push(x);
    else this.#start(x);
    return true;
  }

  #start(x: UpStream): void {
    const id = this.#nextId;
    this.#nextId += 2;
    if (this.#nextId > MAX_STREAM_ID) this.#stop();
    this.streams.set(id, x);
    this.active++;
    x.opened(this, id);
  }

  /** The exchange on stream `id` is over (both ways, or reset). */
  finish(id: number, tick: number): void {
    if (!this.streams.delete(id)) return;
    if (--this.active === 0) this.idleSince = tick;
    while (this.waiting.length > 0 && this.active < this.room && !this.done)
      this.#start(this.waiting.shift() as UpStream);
    if (this.done && this.active === 0) this.close();
  }

  /** No new streams; the connection closes once its streams are done. */
  #stop(): void {
    if (this.done) return;
    this.done = true;
    this.#retire(this);
    for (const x of this.waiting.splice(0)) x.notOpened('upstream connection going away');
  }

  retire(): void {
    this.#stop();
    if (this.active === 0) this.close();
  }

  close(): void {
    this.#stop();
    if (this.conn.closed) return;
    this.conn.goaway(0);
    this.conn.flush();
    this.conn.socket.end();
  }

  readonly #hooks = {
    known: (id: number) => id % 2 === 1 && id < this.#nextId,
    bug: (err: unknown) => this.#onBug(err),
    headers: (id: number, endStream: boolean, fields: string[]) => {
      const x = this.streams.get(id);
      if (x) x.headers(fields, endStream);
      else if (!(id % 2 === 1 && id < this.#nextId))
        throw new H2Error(PROTOCOL_ERROR, `HEADERS on stream ${id} we never opened`);
    },
    data: (id: number, endStream: boolean, content: Buffer, frameLen: number) => {
      const x = this.streams.get(id);
      if (!x?.res) {
        if (!(id % 2 === 1 && id < this.#nextId))
          throw new H2Error(PROTOCOL_ERROR, `DATA on stream ${id} we never opened`);
        this.conn.creditConnection(frameLen); // a stream we reset: its bytes are dropped
        return;
      }
      x.res.recvWin -= frameLen;
      if (x.res.recvWin < 0)
        throw new H2Error(FLOW_CONTROL_ERROR, `upstream sent beyond stream ${id}'s window`);
      x.data(content, endStream, frameLen);
    },
    rst: (id: number, code: number) => {
      this.streams.get(id)?.reset(code, code === REFUSED_STREAM, `upstream reset the stream (code ${code})`);
    },
    window: (id: number, inc: number) => {
      const x = this.streams.get(id);
      if (!x) return;
      if (inc === 0) throw new H2Error(PROTOCOL_ERROR, `WINDOW_UPDATE of 0 on stream ${id}`);
      x.req.sendWin += inc;
      if (x.req.sendWin > MAX_WINDOW)
        throw new H2Error(FLOW_CONTROL_ERROR, `stream ${id} window above 2^31-1`);
      x.req.pump();
    },
    goaway: (last: number) => {
      this.#stop();
      for (const [id, x] of this.streams)
        if (id > last) x.reset(REFUSED_STREAM, true, 'upstream sent GOAWAY');
      if (this.active === 0) this.close();
    },
    settings: (delta: number, maxStreams: number | undefined) => {
      if (maxStreams !== undefined) this.room = Math.min(maxStreams, MAX_STREAMS);
      for (const x of this.streams.values()) {
        if (x.req.dst !== this.conn) continue;
        adjustWindow(x.req, delta);
        if (delta > 0) x.req.pump();
      }
      while (this.waiting.length > 0 && this.active < this.room && !this.done)
        this.#start(this.waiting.shift() as UpStream);
    },
    closed: (err: Error | undefined) => {
      this.#stop();
      const why = err ? `upstream connection failed: ${err.message}` : 'upstream connection closed';
      for (const x of [...this.streams.values()]) x.reset(0x2, false, why);
    },
  };
}

interface Endpoint {
  conns: UpConn[];
  dialing: Promise<UpConn> | undefined;
}

export interface UpstreamPoolOptions {
  dialer: Dialer;
  connectTimeoutMs: number;
  onConnectFailure?: () => void;
  /** An unexpected exception on an upstream connection (it is closed; the process goes on). */
  onBug?: (err: unknown) => void;
}

export class UpstreamPool {
  readonly #opts: UpstreamPoolOptions;
  readonly #endpoints = new Map<string, Endpoint>();
  #sweep: NodeJS.Timeout | undefined;
  tick = 0;

  constructor(opts: UpstreamPoolOptions) {
    this.#opts = opts;
  }

  get(target: Target): UpConn | Promise<UpConn> {
    let ep = this.#endpoints.get(target.id);
    if (!ep) {
      ep = { conns: [], dialing: undefined };
      this.#endpoints.set(target.id, ep);
    }
    let least: UpConn | undefined;
    for (const c of ep.conns) {
      if (c.active < c.room) return c;
      if (!least || c.active + c.waiting.length < least.active + least.waiting.length) least = c;
    }
    if (ep.dialing) return ep.dialing;
    if (least && ep.conns.length >= MAX_SESSIONS) return least;
    const dialing = this.#dial(target, ep);
    ep.dialing = dialing;
    const clear = () => {
      if (ep.dialing === dialing) ep.dialing = undefined;
    };
    dialing.then(clear, clear);
    return dialing;
  }

  prune(keep: ReadonlySet<string>): void {
    for (const [id, ep] of this.#endpoints) {
      if (keep.has(id)) continue;
      this.#endpoints.delete(id);
      for (const c of [...ep.conns]) c.retire();
    }
  }

  close(): void {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    for (const ep of this.#endpoints.values()) for (const c of [...ep.conns]) c.conn.destroy();
    this.#endpoints.clear();
  }

  async #dial(target: Target, ep: Endpoint): Promise<UpConn> {
    const { dialer, connectTimeoutMs, onConnectFailure } = this.#opts;
    let socket: Awaited<ReturnType<Dialer['dial']>>['socket'];
    try {
      ({ socket } = await dialer.dial(target, connectTimeoutMs));
    } catch (err) {
      onConnectFailure?.();
      throw err;
    }
    const retire = (c: UpConn) => {
      const i = ep.conns.indexOf(c);
      if (i >= 0) ep.conns.splice(i, 1);
    };
    const up = new UpConn(
      new Conn(socket, 'client'),
      this.tick,
      retire,
      this.#opts.onBug ?? (() => undefined),
    );
    ep.conns.push(up);
    this.#startSweep();
    return up;
  }

  #startSweep(): void {
    if (this.#sweep) return;
    const idleTicks = Math.ceil(IDLE_MS / SWEEP_MS);
    this.#sweep = setInterval(() => {
      this.tick++;
      for (const ep of this.#endpoints.values())
        for (const c of [...ep.conns]) if (c.active === 0 && this.tick - c.idleSince >= idleTicks) c.retire();
    }, SWEEP_MS);
    this.#sweep.unref();
  }
}
