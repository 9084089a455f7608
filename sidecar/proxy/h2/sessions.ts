/**
 * Upstream HTTP/2 sessions for the h2c path: per endpoint, a few node:http2 client sessions
 * kept open and shared by every client connection, each carrying many streams at once.
 *
 *   get(target)     a session with room for one more stream: at once when one is open, else
 *                   after a dial (concurrent callers share that dial)
 *   room            min(the peer's SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS); when every
 *                   session is full a new one is dialed, up to MAX_SESSIONS per endpoint, then
 *                   the least busy one takes the stream (nghttp2 queues it)
 *   GOAWAY / error  the session takes no new stream; its streams finish; the next request dials
 *   idle            a session with no stream for IDLE_MS is closed (below common server idle
 *                   limits, so the pool, not the server, ends it: grpc-go's default
 *                   MaxConnectionIdle is infinite, Node's http2 server has none, Envoy 1 h)
 *   prune(ids)      sessions of endpoints gone from the catalog are closed gracefully
 *
 * The socket comes from the Dialer (direct or through the gateway) and is handed to
 * http2.connect as it comes, never resumed here: node:http2 takes the socket's handle and reads
 * what is already buffered itself (a gateway socket may hold the target's SETTINGS).
 */
import type { ClientHttp2Session, ClientHttp2Stream, OutgoingHttpHeaders } from 'node:http2';
import type { Dialer } from '../dialer.ts';
import type { Target } from '../route.ts';

export const MAX_STREAMS = 256;
export const MAX_SESSIONS = 8;
export const IDLE_MS = 30_000;
/**
 * Idle sessions are looked for by one coarse timer, not session.setTimeout (refreshed, a
 * timer-list insert, on every frame: ~6 µs of each proxied request).
 */
const SWEEP_MS = 1_000;

interface Session {
  session: ClientHttp2Session;
  /** Streams opened on it and not yet closed (ours: session.state costs a call into C++). */
  active: number;
  /** Streams it may carry: the peer's SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS at most. */
  room: number;
  /** Set on GOAWAY, error or close: takes no new stream. */
  done: boolean;
  /** The sweep tick at which `active` last dropped to 0 (or the session began). */
  idleSince: number;
}

interface Endpoint {
  sessions: Session[];
  dialing: Promise<Session> | undefined;
}

export interface SessionPoolOptions {
  dialer: Dialer;
  connectTimeoutMs: number;
  /** Told of every failed dial (for the connect-failure metric). */
  onConnectFailure?: () => void;
}

// Loaded with the first h2c client (node:http2 costs ~4.5 MB that most pods never need).
const http2 = () => process.getBuiltinModule('node:http2');

export class SessionPool {
  readonly #opts: SessionPoolOptions;
  readonly #endpoints = new Map<string, Endpoint>();
  #sweep: NodeJS.Timeout | undefined;
  #tick = 0;

  constructor(opts: SessionPoolOptions) {
    this.#opts = opts;
  }

  /** A session to `target` with room for a stream; a Promise only when one must be dialed. */
  get(target: Target): Session | Promise<Session> {
    let ep = this.#endpoints.get(target.id);
    if (!ep) {
      ep = { sessions: [], dialing: undefined };
      this.#endpoints.set(target.id, ep);
    }
    let least: Session | undefined;
    for (const s of ep.sessions) {
      if (s.active < s.room) return s;
      if (!least || s.active < least.active) least = s;
    }
    if (ep.dialing) return ep.dialing;
    if (least && ep.sessions.length >= MAX_SESSIONS) return least;
    const dialing = this.#dial(target, ep);
    ep.dialing = dialing;
    const clear = () => {
      if (ep.dialing === dialing) ep.dialing = undefined;
    };
    dialing.then(clear, clear);
    return dialing;
  }

  /** Opens a stream on `s` and keeps its count; the caller handles the stream's events. */
  request(s: Session, headers: OutgoingHttpHeaders, endStream: boolean): ClientHttp2Stream {
    const stream = s.session.request(headers, { endStream });
    s.active++;
    stream.on('close', () => {
      if (--s.active === 0) s.idleSince = this.#tick;
    });
    return stream;
  }

  /** Closes (gracefully) the sessions of endpoints whose id is not in `keep`. */
  prune(keep: ReadonlySet<string>): void {
    for (const [id, ep] of this.#endpoints) {
      if (keep.has(id)) continue;
      this.#endpoints.delete(id);
      for (const s of ep.sessions) s.session.close();
    }
  }

  close(): void {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    for (const ep of this.#endpoints.values()) for (const s of ep.sessions) s.session.destroy();
    this.#endpoints.clear();
  }

  #startSweep(): void {
    if (this.#sweep) return;
    const idleTicks = Math.ceil(IDLE_MS / SWEEP_MS);
    this.#sweep = setInterval(() => {
      this.#tick++;
      for (const ep of this.#endpoints.values())
        for (const s of [...ep.sessions])
          if (s.active === 0 && this.#tick - s.idleSince >= idleTicks) {
            s.done = true;
            ep.sessions.splice(ep.sessions.indexOf(s), 1);
            s.session.close();
          }
    }, SWEEP_MS);
    this.#sweep.unref();
  }

  async #dial(target: Target, ep: Endpoint): Promise<Session> {
    const { dialer, connectTimeoutMs, onConnectFailure } = this.#opts;
    let socket: Awaited<ReturnType<Dialer['dial']>>['socket'];
    try {
      ({ socket } = await dialer.dial(target, connectTimeoutMs));
    } catch (err) {
      onConnectFailure?.();
      throw err;
    }
    const session = http2().connect(`http://${target.id}`, { createConnection: () => socket });
    // Until the peer's SETTINGS arrive, node:http2 assumes 100 (its peerMaxConcurrentStreams).
    const s: Session = { session, active: 0, room: 100, done: false, idleSince: this.#tick };
    session.on('remoteSettings', (settings) => {
      const peer = settings.maxConcurrentStreams;
      s.room = peer !== undefined && peer < MAX_STREAMS ? peer : MAX_STREAMS;
    });
    const retire = () => {
      if (s.done) return;
      s.done = true;
      const i = ep.sessions.indexOf(s);
      if (i >= 0) ep.sessions.splice(i, 1);
    };
    session.on('goaway', retire);
    session.on('close', retire);
    // A session error also errors its streams (the requests report it); never the process.
    session.on('error', retire);
    ep.sessions.push(s);
    this.#startSweep();
    return s;
  }
}

export type { Session };
