import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Duplex, type Writable } from 'node:stream';
import { EdgemeshError, ErrorCodes } from '../errors.ts';
import { type Logger, silentLogger } from '../log.ts';
import { type BudgetHolder, ReceiveBudget } from './budget.ts';
import {
  DatagramDecoder,
  dataHeader,
  encodeDatagram,
  encodeDatagrams,
  encodeFrame,
  type Frame,
  FrameDecoder,
  FrameError,
  FrameType,
  MAX_DATA,
  MAX_DATAGRAM,
  RESUME_TOKEN_BYTES,
  ResetCode,
  type ResumePosition,
  type Target,
} from './frame.ts';
import type { ResumeBook } from './resume.ts';

/**
 * Streams multiplexed over one byte stream (a TLS connection between two gateways, or a
 * gateway's control connection to a tunnel-server).
 *
 * Flow control is per stream and credit based: each side may have at most `window` bytes
 * of DATA in flight per stream; the receiver grants more (WINDOW) as its reader consumes,
 * so a slow reader stalls only its own stream and memory per stream is bounded. Across
 * streams, what the peer's streams hold unread here counts against a per-peer budget
 * (`ReceiveBudget`, lib/tunnel/budget.ts): new streams are refused when a window would not
 * fit, and past the cap the stream holding the most is reset.
 *
 * Timeouts (all per session, one coarse timer each):
 *   - PING every `pingIntervalMs` (10 s): measures RTT and keeps NAT mappings alive (they
 *     expire after 30 s of silence on UDP, minutes on TCP).
 *   - no frame received for `idleTimeoutMs` (30 s, three missed PINGs): the path is dead;
 *     the session closes and its streams error, so callers fail over instead of hanging.
 *   - OPEN not answered (ACCEPT/RESET) within `openTimeoutMs` (10 s): the far end's dial
 *     is stuck; the stream is reset.
 */
export interface SessionOptions {
  /** 'client' numbers its streams odd, 'server' even (the TLS roles). */
  role: 'client' | 'server';
  /** Peer identity, for logs. */
  peer: string;
  log?: Logger;
  window?: number;
  maxStreams?: number;
  pingIntervalMs?: number;
  idleTimeoutMs?: number;
  openTimeoutMs?: number;
  /**
   * Bytes this session may have queued for the peer (not yet taken by the kernel) before the
   * peer counts as not reading and is cut. DATA stops at `window` bytes queued (it waits for
   * 'drain'); the frames we must answer (PONG, WINDOW, RESET, CONTROL) do not wait, so a peer
   * that sends but never reads would grow this queue without a bound.
   */
  maxQueuedBytes?: number;
  /** Called once when the session is cut for a full write queue (metrics). */
  onSlowReader?: (queued: number) => void;
  /**
   * Unread bytes this peer's streams may hold here. Share one budget among all sessions to
   * the same peer (a peer can open several); default: one of DEFAULT_PEER_BUDGET per session.
   */
  budget?: ReceiveBudget;
  /** Called for each peer stream refused because the budget is full (metrics). */
  onBudgetRefused?: () => void;
  /**
   * What this end announces when asked (MUX_FEATURES by default). Test hook: `[]` makes a
   * session that takes no datagram streams, as a peer from before them would not.
   */
  features?: readonly string[];
  /**
   * This peer's resumable streams (lib/tunnel/resume.ts), shared by its sessions. With it the
   * session announces `resume`, and the byte streams it opens to a peer that announced it too
   * outlive the session: parked when it closes, carried on by RESUME over another one.
   */
  resume?: ResumeBook;
}

/**
 * Optional frame types this end understands, told to a peer that asks (a CONTROL message
 * `{t: "mux-features", ask?: true, features: [...]}`, taken by the session, never emitted as
 * 'control'). Protocol version 1 decoders close the session on an unknown frame type, so a
 * newer type is sent only to a peer that announced it:
 *   - `datagram`: OPEN_DATAGRAM (frame.ts) — a stream of length-prefixed datagrams.
 *   - `datagram-channel`: this end has a datagram channel bound (bindDatagramChannel: the UDP
 *     path's unordered, never-retransmitted second data channel) and takes its datagram
 *     streams' datagrams there. Announced only while bound, and also unasked at the moment it
 *     is bound (the channel can come up after the first question was answered); a datagram
 *     goes on the channel only when both ends said so, else it is framed on its stream.
 * A gateway from before this asks nothing and ignores the question (gateway/pod-moves.ts
 * ignores CONTROL messages it does not know); its PONG to the PING sent right behind the
 * question then arrives first, which is the answer "none" (#peerFeatures). Asked only on
 * sessions between gateways, when the first datagram stream is opened: tunnel-server control
 * sessions never see it.
 */
export const MUX_FEATURES: readonly string[] = Object.freeze(['datagram']);
export const DATAGRAM_CHANNEL_FEATURE = 'datagram-channel';
/**
 * `resume`: RESUMABLE, RESUME and RESUMED (frame.ts) — announced by a session with a resume
 * book (SessionOptions.resume); asked at the session's start, so streams opened from the
 * answer on are resumable (those opened before it are not).
 */
export const RESUME_FEATURE = 'resume';

/**
 * What the mux needs of a session's datagram channel (gateway/tunnel/dgram-channel.ts's
 * DatagramChannel; a fake in tests). Injected, so the mux knows nothing of WebRTC or keys.
 * Ids are the session's own stream ids; what arrives is already authenticated to this session.
 */
export interface DatagramPath {
  /** Whether send can carry a datagram now (else it is framed on its stream). */
  readonly open: boolean;
  /** Sends one datagram of stream `stream`; false when dropped (full: a drop, not a queue). */
  send(stream: number, payload: Uint8Array): boolean;
  onDatagram: ((stream: number, payload: Buffer) => void) | undefined;
}

/** Datagrams of this session's datagram streams by the way they went (`edgemesh status`). */
export interface DatagramCounters {
  /** Handed to the channel. */
  sent: number;
  /** The channel dropped them (full: past its buffered bound; closed under us). */
  dropped: number;
  /** Framed on the stream: no channel, the peer takes none, or it was not open. */
  framed: number;
  /** Came in on the channel and went to their stream's reader. */
  received: number;
  /** Came in on the channel for no open datagram stream of this session: dropped. */
  refused: number;
  /** Came in on the channel while their stream held a window unread: dropped. */
  overflow: number;
}
const FEATURES_MESSAGE = 'mux-features';
const MAX_FEATURES = 16;

export const DEFAULT_WINDOW = 1024 * 1024;
/**
 * A gateway's sessions: DATA stops at one window queued, so what piles up beyond is frames
 * we answer. 8 MiB of those is ~500k PONGs — no reading peer gets there.
 */
export const DEFAULT_MAX_QUEUED_BYTES = 8 * 1024 * 1024;
/**
 * Frames queued for the socket go out at the end of the event-loop turn (setImmediate), or
 * at once when this many bytes wait: one TLS write (one SSL_write, full 16 KiB records, one
 * syscall) for what used to be two writes per DATA frame and one per control answer.
 */
export const FLUSH_BYTES = 256 * 1024;
/** Queued frames at most this long are joined into one buffer at a flush (see #flushOut). */
const SMALL_FRAME = 1024;
/**
 * TLS's largest record (plaintext bytes): a TLS read this long is one full record out of a
 * larger write of the sender, so more follows; a shorter one ended the sender's write.
 */
const FULL_RECORD = 16 * 1024;

export class MuxSession extends EventEmitter<{
  /** A peer-opened stream; call stream.accept() or stream.refuse() (within openTimeoutMs). */
  stream: [stream: MuxStream, target: Target];
  control: [message: Record<string, unknown>];
  close: [err: Error | undefined];
}> {
  readonly peer: string;
  readonly role: 'client' | 'server';
  readonly socket: Duplex;
  readonly #log: Logger;
  readonly #decoder = new FrameDecoder();
  readonly #streams = new Map<number, MuxStream>();
  readonly #pings = new Map<string, { start: number; done: (rttMs: number) => void }>();
  readonly window: number;
  readonly #maxStreams: number;
  readonly #openTimeoutMs: number;
  readonly #maxQueued: number;
  readonly #onSlowReader: ((queued: number) => void) | undefined;
  /** @internal Unread bytes the peer's streams hold here (shared per peer). */
  readonly budget: ReceiveBudget;
  readonly #onBudgetRefused: (() => void) | undefined;
  readonly #features: readonly string[];
  /** The peer's features: asked once per session, on the first datagram stream. */
  #peerFeatures: Promise<ReadonlySet<string>> | undefined;
  #onPeerFeatures: ((features: ReadonlySet<string>) => void) | undefined;
  /** The UDP path's datagram channel, once bound (bindDatagramChannel); never unbound. */
  #channel: DatagramPath | undefined;
  /** The peer announced `datagram-channel` (in its question, answer or unasked). */
  #peerTakesChannel = false;
  /** This peer's resumable streams, when this session makes and takes them. */
  readonly #book: ResumeBook | undefined;
  /** The peer announced `resume`: our byte streams to it are resumable. */
  #peerResumes = false;
  /**
   * Byte streams opened before the peer's answer (a session's first streams): made resumable
   * when it says `resume` — late, so bytes they sent before that are not kept, and a resume
   * that needs them fails as a lost path did before; once those are credited it cannot.
   */
  #lateResumable: MuxStream[] = [];
  /** The peer's features are known (its answer, or its PONG without one: an older peer). */
  #featuresSettled = false;
  readonly datagrams: DatagramCounters = {
    sent: 0,
    dropped: 0,
    framed: 0,
    received: 0,
    refused: 0,
    overflow: 0,
  };
  /** Streams with DATA waiting for the socket to drain (see #congested). */
  readonly #blocked = new Set<MuxStream>();
  /**
   * Encoded frames (DATA as header + payload view) not yet handed to the socket. The full
   * DATA frames one event-loop turn produces go out as one corked write at its end (#turn),
   * or sooner with a frame of another kind (`send`) or a short DATA frame (`sendData`): the
   * TLS layer makes full records of them and the kernel gets one write, instead of two
   * writes per DATA frame (the 12-byte header ended each 64 KiB frame in a TLS record of its
   * own, which the receiver then handled and wrote to its target as a 12-byte piece).
   */
  #out: Buffer[] = [];
  #outBytes = 0;
  /** Streams that received DATA this turn: handed to their readers at its end (#turn). */
  #arrived: MuxStream[] = [];
  #turnScheduled = false;
  /** Inside #onData: frames other than DATA go out at its end, not one write each. */
  #reading = false;
  /** A frame other than DATA is queued: the session owes an answer or a signal now. */
  #urgent = false;
  /** One closure per session for setImmediate, not one per frame. */
  readonly #onTurn = () => this.#turn();
  #nextId: number;
  #lastRx = Date.now();
  #timer: NodeJS.Timeout;
  #closed = false;
  #goingAway = false;
  /** Latest measured round trip in ms (undefined until the first PONG). */
  rttMs: number | undefined;
  /**
   * Bytes of frames received from / handed to the socket (headers and payload, inside the
   * peer TLS: what the streams and control carried, without TLS overhead). `edgemesh status`.
   */
  bytesIn = 0;
  bytesOut = 0;
  closeError: Error | undefined;

  constructor(socket: Duplex, opts: SessionOptions) {
    super();
    this.socket = socket;
    this.peer = opts.peer;
    this.role = opts.role;
    this.#log = (opts.log ?? silentLogger).child({ peer: opts.peer });
    this.window = opts.window ?? DEFAULT_WINDOW;
    this.#maxStreams = opts.maxStreams ?? 4096;
    this.#openTimeoutMs = opts.openTimeoutMs ?? 10_000;
    this.#maxQueued = opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    this.#onSlowReader = opts.onSlowReader;
    this.budget = opts.budget ?? new ReceiveBudget();
    this.#onBudgetRefused = opts.onBudgetRefused;
    this.#book = opts.resume;
    this.#features = [...(opts.features ?? MUX_FEATURES), ...(opts.resume ? [RESUME_FEATURE] : [])];
    this.#nextId = opts.role === 'client' ? 1 : 2;
    const pingEvery = opts.pingIntervalMs ?? 10_000;
    const idle = opts.idleTimeoutMs ?? 30_000;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () =>
      this.close(new EdgemeshError(ErrorCodes.UNAVAILABLE, `session to ${this.peer} ended`)),
    );
    socket.on('close', () =>
      this.close(new EdgemeshError(ErrorCodes.UNAVAILABLE, `session to ${this.peer} closed`)),
    );
    socket.on('error', (err) => this.close(err));
    socket.on('drain', () => this.#resumeBlocked());
    this.#timer = setInterval(() => {
      if (Date.now() - this.#lastRx > idle) {
        this.close(new EdgemeshError(ErrorCodes.UNAVAILABLE, `no frames from ${this.peer} for ${idle} ms`));
        return;
      }
      this.ping().catch(() => undefined);
    }, pingEvery);
    this.#timer.unref();
    // Asked now, not at the first stream: streams opened before the answer are made
    // resumable when it comes (#settleLate), or never, from a peer that does not resume.
    if (this.#book)
      this.#askFeatures().then(
        () => this.#settleLate(),
        () => this.#settleLate(),
      );
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Whether new streams may be opened here. */
  get usable(): boolean {
    return !this.#closed && !this.#goingAway;
  }

  get streamCount(): number {
    return this.#streams.size;
  }

  /**
   * Opens a stream to `target` on the far side; resolves when the far end has dialed it.
   * `transport: 'udp'` opens a datagram stream (OPEN_DATAGRAM; write and read datagrams with
   * encodeDatagram / DatagramDecoder), only to a peer that says it takes them: an older one
   * is never sent the frame, the stream fails with an error that says so.
   */
  openStream(target: Target): Promise<MuxStream> {
    if (!this.usable)
      return Promise.reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, `session to ${this.peer} is closing`));
    if (target.transport === 'udp') return this.#openDatagramStream(target);
    return this.#open(target, FrameType.OPEN);
  }

  async #openDatagramStream(target: Target): Promise<MuxStream> {
    const features = await this.#askFeatures();
    if (!features.has('datagram')) {
      throw new EdgemeshError(
        ErrorCodes.UNAVAILABLE,
        `peer gateway ${this.peer} does not take datagram streams (an edgemesh from before UDP ` +
          `across sites): UDP to ${target.ip}:${target.port} cannot be carried until it is upgraded`,
      );
    }
    if (!this.usable) throw new EdgemeshError(ErrorCodes.UNAVAILABLE, `session to ${this.peer} is closing`);
    return this.#open(target, FrameType.OPEN_DATAGRAM);
  }

  /**
   * What the peer takes, asked once: the question, then a PING. A peer that knows the
   * question answers it while handling the read it came in, so the answer is on the wire
   * before its PONG; a peer that does not know it ignores it and answers only the PING.
   */
  #askFeatures(): Promise<ReadonlySet<string>> {
    if (this.#peerFeatures) return this.#peerFeatures;
    this.#peerFeatures = new Promise<ReadonlySet<string>>((resolve) => {
      let done = false;
      this.#onPeerFeatures = (features) => {
        if (done) return;
        done = true;
        resolve(features);
      };
      this.sendControl({ t: FEATURES_MESSAGE, ask: true, features: this.#announced() });
      this.ping().then(
        () => this.#onPeerFeatures?.(new Set()),
        () => this.#onPeerFeatures?.(new Set()), // closed or no PONG: nothing can be opened anyway
      );
    });
    return this.#peerFeatures;
  }

  /** A `mux-features` message: answer a question, take an answer. Malformed lists count as none. */
  #onFeatures(message: Record<string, unknown>): void {
    const list = message.features;
    const features = new Set(
      Array.isArray(list)
        ? list.slice(0, MAX_FEATURES).filter((f): f is string => typeof f === 'string' && f.length <= 32)
        : [],
    );
    // Whatever the message, it is the peer's current list: a question carries it too, and an
    // unasked one says its channel was bound since.
    this.#peerTakesChannel = features.has(DATAGRAM_CHANNEL_FEATURE);
    this.#peerResumes = features.has(RESUME_FEATURE);
    if (this.#peerResumes) this.#settleLate();
    if (message.ask === true) this.sendControl({ t: FEATURES_MESSAGE, features: this.#announced() });
    else this.#onPeerFeatures?.(features);
  }

  /** What this end announces now: its features, plus the channel's while one is bound. */
  #announced(): string[] {
    const list = [...this.#features];
    if (this.#channel && list.includes('datagram')) list.push(DATAGRAM_CHANNEL_FEATURE);
    return list;
  }

  /**
   * Binds the UDP path's datagram channel to this session (once; gateway/tunnel/udp.ts via
   * attachDatagramChannel). Datagram streams that have not written yet then decode their
   * writes and send each datagram on it while the peer takes it and it is open; what arrives
   * on it goes to the open datagram stream with that id. Tells the peer at once (unasked): it
   * may have asked before the channel was up.
   */
  bindDatagramChannel(channel: DatagramPath): void {
    if (this.#closed || this.#channel || !this.#features.includes('datagram')) return;
    this.#channel = channel;
    channel.onDatagram = (id, payload) => this.#onChannelDatagram(id, payload);
    this.sendControl({ t: FEATURES_MESSAGE, features: this.#announced() });
  }

  /** @internal Whether a datagram stream's first write should start decoding (a channel is bound). */
  get decodesDatagrams(): boolean {
    return this.#channel !== undefined;
  }

  /** @internal The channel when a datagram may go on it now: both ends announced, open. */
  get datagramChannel(): DatagramPath | undefined {
    const ch = this.#channel;
    return ch !== undefined && this.#peerTakesChannel && ch.open ? ch : undefined;
  }

  /**
   * A datagram from the channel: only to an open datagram stream of this session (the id is
   * the peer's word, authenticated but possibly stale: a stream it FINed, or never opened).
   */
  #onChannelDatagram(id: number, payload: Buffer): void {
    const stream = this.#streams.get(id);
    if (stream === undefined || !stream.takesDatagrams) {
      this.datagrams.refused++;
      return;
    }
    if (!stream.pushDatagram(payload)) {
      this.datagrams.overflow++;
      return;
    }
    if (this.datagrams.received++ === 0)
      this.#log.info({ stream: id }, 'datagram channel: first datagram received for a datagram stream');
  }

  /** @internal A datagram stream handed one to the channel (`ok`) or it was dropped there. */
  sentOnChannel(id: number, ok: boolean): void {
    if (!ok) this.datagrams.dropped++;
    else if (this.datagrams.sent++ === 0)
      this.#log.info({ stream: id }, 'datagram channel: first datagram sent for a datagram stream');
  }

  #open(target: Target, type: typeof FrameType.OPEN | typeof FrameType.OPEN_DATAGRAM): Promise<MuxStream> {
    const id = this.#nextId;
    this.#nextId += 2;
    const stream = new MuxStream(this, id, target);
    this.#streams.set(id, stream);
    const answered = new Promise<MuxStream>((resolve, reject) => {
      const timer = setTimeout(() => {
        stream.destroy(
          new EdgemeshError(
            ErrorCodes.UNAVAILABLE,
            `${this.peer} did not answer OPEN in ${this.#openTimeoutMs} ms`,
          ),
        );
      }, this.#openTimeoutMs);
      const onError = (err: Error) => {
        clearTimeout(timer);
        reject(err);
      };
      stream.once('error', onError);
      stream.once('accepted', () => {
        clearTimeout(timer);
        stream.removeListener('error', onError);
        resolve(stream);
      });
    });
    // Listeners first: over an in-process pipe the answer can arrive inside send(). A
    // resumable stream's RESUMABLE goes in the same write as its OPEN: a path lost between
    // the two would leave the opener counting on a resume the far end knows nothing of.
    if (type === FrameType.OPEN && this.#book && this.#peerResumes) {
      this.#queue(encodeFrame({ type, stream: id, target }));
      this.#makeResumable(stream);
      this.#flushOut();
      return answered;
    }
    if (
      type === FrameType.OPEN &&
      this.#book &&
      !this.#featuresSettled &&
      this.#lateResumable.length < this.#maxStreams
    )
      this.#lateResumable.push(stream);
    this.send({ type, stream: id, target });
    return answered;
  }

  /** The peer's features are known: the streams opened before are made resumable, or let go. */
  #settleLate(): void {
    this.#featuresSettled = true;
    const late = this.#lateResumable;
    this.#lateResumable = [];
    if (!this.#peerResumes || !this.#book || this.#closed) return;
    const made = late.filter((stream) => this.#makeResumable(stream));
    // The peer holds their tokens once it has read the RESUMABLEs: its PONG to a PING sent
    // behind them says so (one ordered byte stream). Until then a RESUME on another session
    // could overtake them and be refused, so these streams neither move nor park.
    if (made.length > 0)
      this.ping().then(
        () => {
          for (const stream of made) stream.confirmResumable();
        },
        () => undefined,
      );
  }

  /** Gives a stream we opened a token and tells the peer (RESUMABLE); false if it cannot be. */
  #makeResumable(stream: MuxStream): boolean {
    const token = randomBytes(RESUME_TOKEN_BYTES);
    if (!this.#book || !stream.makeResumable(this.#book, token, true)) return false;
    this.send({ type: FrameType.RESUMABLE, stream: stream.id, token });
    return true;
  }

  /**
   * Carries on a parked stream this side opened (ResumeBook.resumeOn): a new stream id here,
   * RESUME with where we got to; the peer answers RESUMED with where it got to (then both
   * resend what the other lacks) or RESET when it no longer has the stream (then it fails).
   */
  resume(stream: MuxStream): void {
    if (!this.usable || !this.#book) return;
    // A session just up may not have the peer's answer yet: resume once it has.
    if (!this.#peerResumes) {
      this.#askFeatures().then(() => {
        if (this.#peerResumes) this.resume(stream);
      });
      return;
    }
    const token = stream.resumeToken;
    if (!token || !stream.parked || this.#book.take(token.toString('hex')) !== stream) return;
    const id = this.#nextId;
    this.#nextId += 2;
    stream.attach(this, id, 'resuming');
    this.send({ type: FrameType.RESUME, stream: id, token, position: stream.position() });
  }

  /** @internal Takes a stream that moved here from another session (resume), under `id`. */
  adopt(id: number, stream: MuxStream): void {
    this.#streams.set(id, stream);
  }

  /**
   * @internal A stream moving to another session (a RESUME came there before this one
   * noticed its path died): forgotten here without a RESET, which would end it there too.
   */
  release(id: number, stream: MuxStream): void {
    if (this.#streams.get(id) === stream) this.#streams.delete(id);
    this.#blocked.delete(stream);
    if (this.#goingAway && this.#streams.size === 0) this.close();
  }

  /**
   * Not called by the gateway yet (peer.ts add() says why: a stream the far end has finished
   * is forgotten there before its last bytes are credited, and a move would lose them).
   * Moves the resumable streams this side opened here to `to` (a better path to the same
   * peer came up): each leaves this session at once, as if its path had died, and resumes
   * there — what was in flight here is resent there, what arrives here for it afterwards is
   * dropped (the far end resends it from our position). Only when `to` takes RESUME (asked
   * first if not known yet); returns how many moved now.
   */
  moveStreams(to: MuxSession): number {
    if (to === this || !to.usable || this.#book === undefined || to.#book !== this.#book) return 0;
    // A session just up may not have the peer's answer yet: move once it has.
    if (!to.#peerResumes) {
      to.#askFeatures().then(() => {
        if (to.#peerResumes) this.moveStreams(to);
      });
      return 0;
    }
    let moved = 0;
    for (const stream of [...this.#streams.values()]) {
      if (!stream.opener || !stream.leave()) continue;
      this.#book.counted('moved');
      to.resume(stream);
      moved++;
    }
    if (moved > 0 && this.#goingAway && this.#streams.size === 0) this.close();
    return moved;
  }

  /** Sends one control message (tunnel-server control connections). */
  sendControl(message: Record<string, unknown>): void {
    this.send({ type: FrameType.CONTROL, stream: 0, message });
  }

  /** Measures one round trip. */
  ping(timeoutMs = 5000): Promise<number> {
    if (this.#closed) return Promise.reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'session closed'));
    const opaque = randomBytes(8);
    const key = opaque.toString('hex');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pings.delete(key);
        reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'PING not answered'));
      }, timeoutMs);
      timer.unref();
      this.#pings.set(key, {
        start: performance.now(),
        done: (rtt) => {
          clearTimeout(timer);
          resolve(rtt);
        },
      });
      this.send({ type: FrameType.PING, stream: 0, opaque });
    });
  }

  /** Stops new streams both ways; open streams finish where they are. */
  goAway(reason: string): void {
    if (this.#goingAway || this.#closed) return;
    this.#goingAway = true;
    this.send({ type: FrameType.GOAWAY, stream: 0, reason });
    if (this.#streams.size === 0) this.close();
  }

  /** Closes the session and every stream on it. */
  close(err?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.closeError = err;
    clearInterval(this.#timer);
    // What was queued before closing (a GOAWAY, RESETs) still goes out, as it did when every
    // frame was written at once; a cut for not reading drops it with the socket anyway.
    this.#flushOut();
    this.#out = [];
    this.#outBytes = 0;
    this.#arrived = [];
    const streamErr = err ?? new EdgemeshError(ErrorCodes.UNAVAILABLE, `session to ${this.peer} closed`);
    // A resumable stream waits for another session (resume.ts); any other one is reset. A
    // stream nobody listens to for errors is closed quietly rather than crash the process.
    for (const s of this.#streams.values()) {
      if (s.park()) continue;
      s.destroy(s.listenerCount('error') > 0 ? streamErr : undefined);
    }
    this.#streams.clear();
    this.#blocked.clear();
    this.socket.destroy();
    this.emit('close', err);
  }

  /**
   * @internal Sends one frame other than DATA. It leaves by the time this returns (with any
   * DATA queued before it, in order), as callers rely on (a reply, then `socket.end()`);
   * while a read is handled, at the read's end instead, so the answers one read provokes
   * (PONGs, WINDOWs, RESETs) leave as one write — a flood of PINGs cannot make thousands.
   */
  send(frame: Frame): void {
    if (this.#closed) return;
    this.#queue(encodeFrame(frame));
    if (this.#reading) this.#urgent = true;
    else this.#flushOut();
  }

  /**
   * @internal DATA: the payload is queued as it is (a view), behind its own header. A frame
   * shorter than the largest ends what the writer had (a socket read that found less than
   * its 64 KiB buffer: the sender is idle, not behind): flushed at once, so a request or an
   * answer waits for no turn; full frames wait for the turn's end and go out together.
   */
  sendData(id: number, data: Buffer): boolean {
    if (this.#closed) return false;
    const header = dataHeader(id, data.length);
    if (data.length < MAX_DATA && this.#out.length === 0) {
      // Nothing queued (the common case for a short frame): straight to the socket.
      this.bytesOut += header.length + data.length;
      this.socket.cork();
      this.socket.write(header);
      this.socket.write(data);
      this.socket.uncork();
      this.#checkQueue();
      return !this.#closed;
    }
    this.#queue(header);
    this.#queue(data);
    if (data.length < MAX_DATA) this.#flushOut();
    return !this.#closed;
  }

  #queue(bytes: Buffer): void {
    this.bytesOut += bytes.length;
    this.#out.push(bytes);
    this.#outBytes += bytes.length;
    // At once when the batch is big, or when it would take the queue past its bound (a peer
    // that does not read is cut as soon as that happens, not at the end of the turn).
    if (this.#outBytes >= FLUSH_BYTES || this.#outBytes + this.socket.writableLength > this.#maxQueued)
      this.#flushOut();
    else this.#scheduleTurn();
  }

  /** @internal `stream` has DATA for its reader (from #onData, which says when it goes). */
  arrived(stream: MuxStream): void {
    this.#arrived.push(stream);
  }

  #scheduleTurn(): void {
    if (this.#turnScheduled) return;
    this.#turnScheduled = true;
    setImmediate(this.#onTurn);
  }

  /**
   * End of an event-loop turn (all reads of this poll phase handled): streams hand what
   * arrived to their readers — one piece per stream instead of one per 16 KiB TLS record,
   * so the far end writes its target once per turn — then the frames this produced and
   * every other queued frame go to the socket in one write.
   */
  #turn(): void {
    this.#turnScheduled = false;
    if (this.#closed) return;
    this.#deliver();
    this.#flushOut();
  }

  #deliver(): void {
    const arrived = this.#arrived;
    if (arrived.length === 0) return;
    this.#arrived = [];
    for (const s of arrived) s.deliver();
  }

  /**
   * Hands the queue to the socket as one corked write: Node's TLS socket joins the pieces
   * once (as it did for each header + payload pair) and encrypts them in one SSL_write.
   * Consecutive small frames (control answers, DATA headers) are joined here first: a write
   * queued on a socket costs a few hundred bytes of bookkeeping besides its bytes, so a peer
   * sending thousands of PINGs per read and reading nothing would otherwise make the byte
   * bound (#checkQueue) meaningless.
   */
  #flushOut(): void {
    this.#urgent = false;
    if (this.#out.length === 0 || this.socket.destroyed) return;
    const out = this.#out;
    this.#out = [];
    this.#outBytes = 0;
    const socket = this.socket;
    socket.cork();
    let runFrom = 0;
    let runBytes = 0;
    for (let i = 0; i <= out.length; i++) {
      const b = out[i];
      if (b !== undefined && b.length <= SMALL_FRAME) {
        runBytes += b.length;
        continue;
      }
      if (i - runFrom === 1) socket.write(out[runFrom]);
      else if (i > runFrom) socket.write(Buffer.concat(out.slice(runFrom, i), runBytes));
      if (b !== undefined) socket.write(b);
      runFrom = i + 1;
      runBytes = 0;
    }
    socket.uncork();
    this.#checkQueue();
    // Streams blocked on what was queued here (not yet in the socket) resume now, unless
    // the socket itself is full: then its 'drain' resumes them.
    if (this.#blocked.size > 0 && !socket.writableNeedDrain) this.#resumeBlocked();
  }

  #resumeBlocked(): void {
    if (this.#blocked.size === 0) return;
    const waiting = [...this.#blocked];
    this.#blocked.clear();
    for (const s of waiting) s.resumeWrite();
  }

  /**
   * @internal Whether DATA should wait: a window's worth is already queued (here or in the
   * socket). The stream then waits for 'drain' or the next flush, so DATA never grows the
   * queue past about a window plus one frame, however many streams write.
   */
  congested(stream: MuxStream): boolean {
    if (this.socket.writableLength + this.#outBytes < this.window) return false;
    this.#blocked.add(stream);
    return true;
  }

  /** A peer that lets the queue grow past the bound does not read: cut it, say so. */
  #checkQueue(): void {
    if (this.#closed) return;
    const queued = this.socket.writableLength;
    if (queued <= this.#maxQueued) return;
    this.#log.warn({ queued, limit: this.#maxQueued }, 'peer does not read what it is sent: closing session');
    this.#onSlowReader?.(queued);
    this.close(
      new EdgemeshError(
        ErrorCodes.UNAVAILABLE,
        `${this.peer} does not read: ${queued} bytes queued (limit ${this.#maxQueued})`,
      ),
    );
  }

  /** @internal */
  forget(id: number): void {
    this.#streams.delete(id);
    if (this.#goingAway && this.#streams.size === 0) this.close();
  }

  #onData(chunk: Buffer): void {
    this.#lastRx = Date.now();
    this.bytesIn += chunk.length;
    let frames: Frame[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (err) {
      this.#protocolError(err as Error);
      return;
    }
    this.#reading = true;
    try {
      for (const f of frames) {
        try {
          this.#handle(f);
        } catch (err) {
          this.#protocolError(err as Error);
          return;
        }
        if (this.#closed) return;
      }
    } finally {
      this.#reading = false;
    }
    if (this.#urgent) this.#flushOut();
    // A read shorter than a full TLS record ended the sender's write: nothing more is on its
    // way now, so hand over what arrived without waiting for the turn (latency of small
    // exchanges); full records are followed by more and wait to be joined.
    if (this.#arrived.length > 0) {
      if (chunk.length < FULL_RECORD) this.#deliver();
      else this.#scheduleTurn();
    }
  }

  #protocolError(err: Error): void {
    this.#log.warn({ err: err.message }, 'tunnel protocol error: closing session');
    this.close(err);
  }

  /** A stream id the peer numbers (TLS clients odd, servers even): one it may open or resume. */
  #peerNumbered(id: number): boolean {
    return (id % 2 === 1) !== (this.role === 'client');
  }

  #handle(f: Frame): void {
    switch (f.type) {
      case FrameType.PING:
        this.send({ type: FrameType.PONG, stream: 0, opaque: f.opaque });
        return;
      case FrameType.PONG: {
        const key = f.opaque.toString('hex');
        const ping = this.#pings.get(key);
        if (ping) {
          this.rttMs = performance.now() - ping.start;
          this.#pings.delete(key);
          ping.done(this.rttMs);
        }
        return;
      }
      case FrameType.GOAWAY:
        this.#log.info({ reason: f.reason }, 'peer is going away');
        this.#goingAway = true;
        if (this.#streams.size === 0) this.close();
        return;
      case FrameType.CONTROL:
        if (f.message.t === FEATURES_MESSAGE) this.#onFeatures(f.message);
        else this.emit('control', f.message);
        return;
      case FrameType.OPEN:
      case FrameType.OPEN_DATAGRAM: {
        if (!this.#peerNumbered(f.stream) || this.#streams.has(f.stream))
          throw new FrameError(`OPEN reuses stream id ${f.stream}`);
        if (f.type === FrameType.OPEN_DATAGRAM && !this.#features.includes('datagram')) {
          // Only a peer that ignored our answer gets here; refuse the stream, keep the session.
          this.send({
            type: FrameType.RESET,
            stream: f.stream,
            code: ResetCode.REFUSED,
            reason: 'this gateway does not take datagram streams',
          });
          return;
        }
        const stream = new MuxStream(this, f.stream, f.target);
        if (this.#goingAway || this.#streams.size >= this.#maxStreams || this.listenerCount('stream') === 0) {
          this.send({
            type: FrameType.RESET,
            stream: f.stream,
            code: ResetCode.LIMIT,
            reason: 'not accepting streams',
          });
          return;
        }
        // Every new stream may fill a whole window at once: refuse it while that would not fit.
        if (!this.budget.fits(this.window)) {
          this.#onBudgetRefused?.();
          this.send({
            type: FrameType.RESET,
            stream: f.stream,
            code: ResetCode.LIMIT,
            reason: `your streams hold ${this.budget.total} bytes unread here (budget ${this.budget.limit})`,
          });
          return;
        }
        this.#streams.set(f.stream, stream);
        try {
          this.emit('stream', stream, f.target);
        } catch (err) {
          // A listener that throws (e.g. a dialer refusing synchronously) fails this stream
          // only: the session and its other streams are not the peer's fault.
          const refused = err instanceof EdgemeshError && err.code === ErrorCodes.DIAL_REFUSED;
          stream.refuse(
            refused ? ResetCode.REFUSED : ResetCode.DIAL_FAILED,
            (err as Error).message ?? String(err),
          );
        }
        return;
      }
      case FrameType.RESUMABLE: {
        const stream = this.#streams.get(f.stream);
        if (!this.#peerNumbered(f.stream)) throw new FrameError(`RESUMABLE on our stream ${f.stream}`);
        // Without a book (or a full one) the stream simply is not resumable: a later RESUME
        // for it is refused, and the opener's app sees the reset it would have seen anyway.
        if (stream && this.#book) stream.makeResumable(this.#book, f.token, false);
        return;
      }
      case FrameType.RESUME: {
        if (!this.#peerNumbered(f.stream) || this.#streams.has(f.stream))
          throw new FrameError(`RESUME reuses stream id ${f.stream}`);
        const stream = this.#book?.take(f.token.toString('hex'));
        if (!stream || stream.opener || stream.destroyed) {
          this.#book?.counted('refused');
          this.send({
            type: FrameType.RESET,
            stream: f.stream,
            code: ResetCode.CANCELLED,
            reason: 'no stream to resume (it ended, or waited too long)',
          });
          return;
        }
        stream.attach(this, f.stream, 'resumed');
        this.send({ type: FrameType.RESUMED, stream: f.stream, position: stream.position() });
        stream.resumeFrom(f.position);
        return;
      }
      default: {
        const stream = this.#streams.get(f.stream);
        // Frames for a stream we already closed are normal (they crossed our RESET/FIN).
        if (stream) stream.onFrame(f);
      }
    }
  }
}

/**
 * One proxied connection. A Duplex: write to send to the far target, read what it sends;
 * end() half-closes (FIN), destroy() resets.
 */
const EMPTY = Buffer.alloc(0);

export class MuxStream extends Duplex implements BudgetHolder {
  /** This stream's id on its session (a resumed stream gets a new one on the new session). */
  id: number;
  readonly target: Target;
  #session: MuxSession;
  #sendWindow: number;
  #pending: { chunk: Buffer; callback: (err?: Error | null) => void } | undefined;
  /**
   * DATA received this turn, not yet pushed to the reader (`deliver`, at the turn's end):
   * views of the TLS reads, joined into one chunk then, so the reader — in a gateway, the
   * socket to the target — gets one write per turn instead of one per 16 KiB TLS record.
   */
  readonly #inbox: Buffer[] = [];
  #inboxBytes = 0;
  /** Bytes received and not yet credited back to the sender. */
  #received = 0;
  #credited = 0;
  #accepted = false;
  #finSent = false;
  #finReceived = false;
  #reset = false;
  /** Unread bytes last reported to the session's budget. */
  #held = 0;
  /** Where our reader writes what it reads (see `chargeSink`): its queue counts as ours. */
  #sink: Writable | undefined;
  /**
   * A datagram stream's writes cut into datagrams for the channel: decided at the first write
   * (undefined before), so decoding starts on a datagram boundary; null: written as bytes.
   */
  #datagrams: DatagramDecoder | null | undefined;

  // --- resumable streams (lib/tunnel/resume.ts); offsets count this stream's bytes from 0 ---
  /** 'parked': its session closed, waiting for another; 'resuming': RESUME sent, no answer yet. */
  #state: 'live' | 'parked' | 'resuming' = 'live';
  /** Set while resumable: the peer's book and the stream's name in it. */
  #book: ResumeBook | undefined;
  #token: Buffer | undefined;
  #tokenHex = '';
  #opener = false;
  /**
   * The far end holds our token: it read the RESUMABLE (sent with the OPEN: its ACCEPT says
   * so; sent late: its PONG to a PING behind it). Only then may this stream park or move.
   * The far end's own copy of a stream is confirmed from the start.
   */
  #resumeConfirmed = false;
  /** Bytes handed to the session as DATA, ever (a resume rewinds it to what the peer got). */
  #sentTo = 0;
  /** Credit the peer returned (WINDOW), counted from 0 as #sentTo is. */
  #ackedTo = 0;
  /** Sent bytes kept until credited, as views, starting at offset #unackedFrom. */
  #unacked: Buffer[] = [];
  #unackedFrom = 0;
  #unackedBytes = 0;
  /** After a resume: kept bytes the peer lacks, sent before any new write. */
  #resend: Buffer[] = [];
  /** After a resume: our FIN had not reached the peer; it follows the resent bytes. */
  #refin = false;

  constructor(session: MuxSession, id: number, target: Target) {
    super({ readableHighWaterMark: session.window, writableHighWaterMark: MAX_DATA, allowHalfOpen: true });
    this.#session = session;
    this.id = id;
    this.target = target;
    this.#sendWindow = session.window;
  }

  /** Far end: the target was dialed; data may flow. */
  accept(): void {
    if (this.#accepted || this.destroyed) return;
    this.#accepted = true;
    this.#session.send({ type: FrameType.ACCEPT, stream: this.id });
  }

  /** Far end: refuse this stream with a reason the opener sees. */
  refuse(code: number, reason: string): void {
    if (this.#reset) return;
    this.#reset = true;
    this.#session.send({ type: FrameType.RESET, stream: this.id, code, reason });
    this.#session.forget(this.id);
    this.destroy();
  }

  /** @internal */
  onFrame(f: Frame): void {
    switch (f.type) {
      case FrameType.ACCEPT:
        this.#accepted = true;
        // Its RESUMABLE went in the same write as the OPEN, read before this was sent.
        if (this.#token) this.#resumeConfirmed = true;
        this.emit('accepted');
        return;
      case FrameType.DATA:
        if (this.#finReceived) throw new FrameError(`DATA after FIN on stream ${this.id}`);
        if (this.#state !== 'live') throw new FrameError(`DATA before RESUMED on stream ${this.id}`);
        if (this.#received - this.#credited + f.data.length > this.#session.window)
          throw new FrameError(`stream ${this.id} sent past its window`);
        this.#received += f.data.length;
        if (this.#inboxBytes === 0) this.#session.arrived(this);
        this.#inbox.push(f.data);
        this.#inboxBytes += f.data.length;
        // A quarter window is a grant's worth: hand it on now rather than at the turn's end,
        // so credit flows back while a long turn (a receiver behind, reading up to 2 MiB in
        // one poll) is still decoding, and the sender is not left waiting for the whole turn.
        if (this.#inboxBytes >= this.#session.window / 4) this.deliver();
        else this.#account();
        return;
      case FrameType.WINDOW:
        this.#sendWindow += f.increment;
        if (this.#sendWindow > 2 * this.#session.window)
          throw new FrameError(`stream ${this.id} window overflow`);
        this.#ackedTo += f.increment;
        if (this.#unackedBytes > 0) this.#trim(this.#ackedTo);
        this.#flush();
        return;
      case FrameType.RESUMED:
        if (this.#state !== 'resuming')
          throw new FrameError(`RESUMED on stream ${this.id}, which asked nothing`);
        this.resumeFrom(f.position);
        return;
      case FrameType.FIN:
        this.deliver(); // what arrived before the FIN goes first
        this.#finReceived = true;
        this.push(null);
        this.#maybeDone();
        return;
      case FrameType.RESET: {
        this.#reset = true;
        this.#session.forget(this.id);
        if (this.#state === 'resuming') this.#book?.counted('refused');
        const code = f.code === ResetCode.REFUSED ? ErrorCodes.DIAL_REFUSED : ErrorCodes.UNAVAILABLE;
        const what = this.#state === 'resuming' ? 'stream could not be resumed' : 'stream reset';
        this.destroy(new EdgemeshError(code, `${what} by ${this.#session.peer}: ${f.reason}`));
        return;
      }
      default:
        throw new FrameError(`unexpected frame type ${f.type} on stream ${this.id}`);
    }
  }

  // Every consumer (flowing mode, pipe, async iteration) takes data through read(), so
  // consumption is observed here rather than in _read, which Node skips while it thinks a
  // read is already in progress.
  override read(size?: number): unknown {
    const chunk = super.read(size);
    this.#grant();
    this.#account();
    return chunk;
  }

  override _read(): void {
    this.#grant();
  }

  /**
   * Far end: `sink` is where this stream's bytes go (the socket to the target). Bytes queued
   * there are the peer's too — read out of our buffer, not yet taken by the kernel (up to
   * its high-water mark plus a chunk, ~128 KiB): with thousands of streams they add up, so
   * they count against the budget with what we hold.
   */
  chargeSink(sink: Writable): void {
    this.#sink = sink;
    sink.on('drain', () => this.#account());
  }

  /**
   * @internal End of the turn: what arrived goes to the reader as one chunk. Several pieces
   * are joined (one copy, as the TLS layer already copied each record once; measured against
   * a write syscall per piece to the target in docs/tunnel.md, Throughput).
   */
  deliver(): void {
    const n = this.#inboxBytes;
    if (n === 0 || this.destroyed) return;
    const inbox = this.#inbox;
    const data = inbox.length === 1 ? this.#keepable(inbox[0]) : Buffer.concat(inbox, n);
    inbox.length = 0;
    this.#inboxBytes = 0;
    this.push(data);
    this.#account();
  }

  /**
   * DATA arrives as views of the TLS reads (no copy on the fast path). A view that will sit
   * in our buffer, though, keeps its whole read alive — with many streams interleaved in one
   * read, several times the bytes the budget counts. Copy what will wait; pass on as is what
   * a flowing reader takes at once.
   */
  #keepable(data: Buffer): Buffer {
    const waits = this.readableLength > 0 || !this.readableFlowing;
    return waits && data.buffer.byteLength > 2 * data.length ? Buffer.from(data) : data;
  }

  /** Reports what this stream holds unread to the peer's budget (which may shed us). */
  #account(): void {
    if (this.destroyed) return; // _destroy released it
    const held = this.readableLength + this.#inboxBytes + (this.#sink?.writableLength ?? 0);
    if (held === this.#held) return;
    this.#held = held;
    this.#session.budget.set(this, held);
  }

  /** @internal The peer's budget is over its cap and this stream holds the most: reset it. */
  shed(reason: string): void {
    if (this.#reset || this.destroyed) return;
    this.#reset = true;
    this.#held = 0;
    this.#inbox.length = 0;
    this.#inboxBytes = 0;
    this.#session.send({ type: FrameType.RESET, stream: this.id, code: ResetCode.LIMIT, reason });
    this.#session.forget(this.id);
    const err = new EdgemeshError(
      ErrorCodes.UNAVAILABLE,
      `stream from ${this.#session.peer} reset: ${reason}`,
    );
    // Nobody listening for errors: close quietly rather than crash the process.
    this.destroy(this.listenerCount('error') > 0 ? err : undefined);
  }

  /**
   * Grants the sender what left our buffer, in batches of a quarter window so WINDOW frames
   * stay rare (each is a TLS record and a write of its own). Never stalls: a sender out of
   * window has a whole window unconsumed or ungranted here, so whatever the reader takes
   * next brings the ungranted part past a quarter. (Granting also whenever the buffer ran
   * empty, as before, sent one WINDOW per DATA frame to a reader that keeps up.)
   */
  #grant(): void {
    if (this.#finReceived || this.destroyed) return;
    const consumed = this.#received - this.readableLength - this.#inboxBytes;
    const grant = consumed - this.#credited;
    if (grant >= this.#session.window / 4) {
      this.#credited += grant;
      this.#session.send({ type: FrameType.WINDOW, stream: this.id, increment: grant });
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.target.transport === 'udp') {
      if (this.#datagrams === undefined)
        this.#datagrams = this.#session.decodesDatagrams ? new DatagramDecoder() : null;
      if (this.#datagrams !== null) {
        try {
          chunk = this.#sendDatagrams(this.#datagrams, chunk);
        } catch (err) {
          callback(err as Error); // a length over the maximum: the writer's bug, this stream fails
          return;
        }
        if (chunk.length === 0) {
          callback();
          return;
        }
      }
    }
    this.#pending = { chunk, callback };
    this.#flush();
  }

  /**
   * Each whole datagram of `chunk` goes on the channel while it can carry it; the others are
   * framed again and returned, to go as DATA (in order among themselves; a datagram on the
   * channel may overtake them, as UDP allows). A channel that drops one (full) drops it.
   */
  #sendDatagrams(decoder: DatagramDecoder, chunk: Buffer): Buffer {
    const counters = this.#session.datagrams;
    let framed: Buffer[] | undefined;
    decoder.each(chunk, (d) => {
      const channel = this.#session.datagramChannel;
      if (channel === undefined) {
        if (framed === undefined) framed = [];
        framed.push(d);
      } else this.#session.sentOnChannel(this.id, channel.send(this.id, d));
    });
    if (framed === undefined) return EMPTY;
    counters.framed += framed.length;
    return framed.length === 1 ? encodeDatagram(framed[0]) : encodeDatagrams(framed);
  }

  /** @internal Open for datagrams from the channel: a datagram stream not ended or reset. */
  get takesDatagrams(): boolean {
    return this.target.transport === 'udp' && !this.destroyed && !this.#finReceived && !this.#reset;
  }

  /**
   * @internal One datagram from the channel, framed as the reader expects (as DATA would have
   * brought it). It bypasses the window (it was never sent as DATA), so it is dropped, not
   * held, while the reader has a window's worth unread; false then.
   */
  pushDatagram(payload: Buffer): boolean {
    if (payload.length > MAX_DATAGRAM) return false;
    if (this.readableLength + this.#inboxBytes > this.#session.window) return false;
    this.push(encodeDatagram(payload));
    this.#account();
    return true;
  }

  /** @internal The session's socket drained: carry on with the pending chunk. */
  resumeWrite(): void {
    this.#flush();
  }

  #flush(): void {
    if (this.destroyed || this.#state !== 'live') return;
    if (this.#resend.length > 0 && !this.#flushResend()) return;
    if (this.#refin) {
      this.#refin = false;
      this.#session.send({ type: FrameType.FIN, stream: this.id });
      this.#maybeDone();
    }
    const p = this.#pending;
    if (!p) return;
    while (p.chunk.length > 0 && this.#sendWindow > 0 && !this.#session.congested(this)) {
      const n = Math.min(p.chunk.length, this.#sendWindow, MAX_DATA);
      const piece = p.chunk.subarray(0, n);
      if (!this.#session.sendData(this.id, piece)) {
        // A resumable stream keeps its write: the session's close parks it, a resume goes on.
        if (this.#token) return;
        this.#pending = undefined;
        p.callback(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'session closed'));
        return;
      }
      this.#sent(piece);
      this.#sendWindow -= n;
      p.chunk = p.chunk.subarray(n);
    }
    if (p.chunk.length === 0) {
      this.#pending = undefined;
      p.callback();
    }
  }

  /** Resends what the peer lacked after a resume; true once all of it went. */
  #flushResend(): boolean {
    const queue = this.#resend;
    while (queue.length > 0) {
      if (this.#sendWindow <= 0 || this.#session.congested(this)) return false;
      const chunk = queue[0];
      const n = Math.min(chunk.length, this.#sendWindow, MAX_DATA);
      const piece = chunk.subarray(0, n);
      if (!this.#session.sendData(this.id, piece)) return false;
      this.#sent(piece);
      this.#sendWindow -= n;
      if (n === chunk.length) queue.shift();
      else queue[0] = chunk.subarray(n);
    }
    return true;
  }

  /** Counts bytes handed to the session; a resumable stream keeps them until credited. */
  #sent(piece: Buffer): void {
    this.#sentTo += piece.length;
    const book = this.#book;
    if (!book) return;
    if (!book.fits(piece.length)) {
      // Past the peer's retain bound: this stream stops being resumable rather than hold more.
      this.#dropResumable();
      book.counted('given-up');
      return;
    }
    this.#unacked.push(piece);
    this.#unackedBytes += piece.length;
    book.retained += piece.length;
  }

  /** Drops kept bytes below offset `to` (credited, or received by the peer). */
  #trim(to: number): void {
    const book = this.#book;
    while (this.#unackedFrom < to && this.#unacked.length > 0) {
      const c = this.#unacked[0];
      const drop = Math.min(c.length, to - this.#unackedFrom);
      if (drop === c.length) this.#unacked.shift();
      else this.#unacked[0] = c.subarray(drop);
      this.#unackedFrom += drop;
      this.#unackedBytes -= drop;
      if (book) book.retained -= drop;
    }
    if (this.#unacked.length === 0) this.#unackedFrom = Math.max(this.#unackedFrom, to);
  }

  #dropResumable(): void {
    if (this.#book) {
      this.#book.retained -= this.#unackedBytes;
      this.#book.remove(this.#tokenHex, this);
    }
    this.#unacked = [];
    this.#unackedBytes = 0;
    this.#book = undefined;
    this.#token = undefined;
  }

  /**
   * @internal Makes this byte stream resumable under `token` (the opener made it; the other
   * side learned it from RESUMABLE). False for a datagram stream, or when the book is full.
   * Bytes sent before this are not kept: a resume that needs them fails (the stream resets).
   */
  makeResumable(book: ResumeBook, token: Buffer, opener: boolean): boolean {
    if (this.target.transport === 'udp' || this.destroyed || this.#token) return false;
    const hex = token.toString('hex');
    if (!book.add(hex, this)) return false;
    this.#book = book;
    this.#token = token;
    this.#tokenHex = hex;
    this.#opener = opener;
    this.#resumeConfirmed = !opener;
    this.#unackedFrom = this.#sentTo;
    return true;
  }

  /** Resumable now: it has a token the far end is known to hold (it may park or move). */
  get resumable(): boolean {
    return this.#token !== undefined && this.#resumeConfirmed;
  }

  /** @internal The far end has read our late RESUMABLE (the session's PONG behind it). */
  confirmResumable(): void {
    if (this.#token) this.#resumeConfirmed = true;
  }

  /** Waiting for a new session (its last one closed). */
  get parked(): boolean {
    return this.#state === 'parked' && !this.destroyed;
  }

  /** Whether this side opened the stream (it asks for the resume). */
  get opener(): boolean {
    return this.#opener;
  }

  get resumeToken(): Buffer | undefined {
    return this.#token;
  }

  /** @internal Where this side got to, for RESUME / RESUMED. */
  position(): ResumePosition {
    return { received: this.#received, credited: this.#credited, finReceived: this.#finReceived };
  }

  /**
   * @internal Its session closed: wait in the book for another (true), or not resumable
   * (false: the caller resets it). Only an accepted stream that has not finished both ways.
   */
  park(): boolean {
    const book = this.#parkable();
    if (!book) return false;
    this.deliver(); // what arrived is ours: its bytes count in `received`
    this.#state = 'parked';
    book.park(this);
    return true;
  }

  /**
   * @internal Leaves a live session for another (moveStreams): parked as a lost path would
   * park it, but without waiting for this session to close. False when not resumable.
   */
  leave(): boolean {
    const book = this.#parkable();
    if (!book || this.#state !== 'live') return false;
    this.deliver();
    this.#session.release(this.id, this);
    this.#state = 'parked';
    book.park(this, false);
    return true;
  }

  /** Its book when it may wait for another session: a confirmed token, accepted, not finished or reset. */
  #parkable(): ResumeBook | undefined {
    if (!this.#resumeConfirmed || this.destroyed || this.#reset || !this.#accepted) return undefined;
    if (this.#finSent && this.#finReceived) return undefined;
    return this.#book;
  }

  /** @internal Moves to `session` under `id`: 'resuming' (we sent RESUME) or 'resumed' (we got it). */
  attach(session: MuxSession, id: number, how: 'resuming' | 'resumed'): void {
    const old = this.#session;
    if (old !== session) {
      if (!old.closed) old.release(this.id, this);
      if (old.budget !== session.budget) old.budget.release(this);
    }
    this.#session = session;
    this.id = id;
    this.#held = 0;
    session.adopt(id, this);
    this.#state = how === 'resuming' ? 'resuming' : 'parked';
  }

  /**
   * @internal The other side's position (its RESUME or RESUMED): drop what it has, resend
   * the rest, take its send window from what it holds uncredited, and carry on.
   */
  resumeFrom(peer: ResumePosition): void {
    if (this.destroyed) return;
    if (peer.received < this.#unackedFrom || peer.received > this.#sentTo) {
      this.#reset = true;
      this.#session.send({
        type: FrameType.RESET,
        stream: this.id,
        code: ResetCode.PROTOCOL,
        reason: `cannot resume from ${peer.received}: bytes ${this.#unackedFrom}..${this.#sentTo} are kept`,
      });
      this.#session.forget(this.id);
      this.destroy(
        new EdgemeshError(
          ErrorCodes.UNAVAILABLE,
          `stream to ${this.#session.peer} could not be resumed: the peer got ${peer.received} bytes, ` +
            `${this.#unackedFrom}..${this.#sentTo} are kept`,
        ),
      );
      return;
    }
    this.#trim(peer.received);
    this.#resend = this.#unacked;
    if (this.#book) this.#book.retained -= this.#unackedBytes;
    this.#unacked = [];
    this.#unackedBytes = 0;
    this.#sentTo = peer.received;
    this.#unackedFrom = peer.received;
    this.#ackedTo = peer.credited;
    this.#sendWindow = this.#session.window - (peer.received - peer.credited);
    this.#refin = this.#finSent && !peer.finReceived;
    this.#state = 'live';
    this.#book?.counted('resumed');
    this.#account();
    this.#flush();
    this.#grant();
  }

  /** @internal Parked too long (or the gateway stops): reset, as the lost path would have. */
  expire(reason: string): void {
    if (this.destroyed) return;
    this.#reset = true;
    const err = new EdgemeshError(
      ErrorCodes.UNAVAILABLE,
      `stream to ${this.#session.peer} lost its path: ${reason}`,
    );
    this.destroy(this.listenerCount('error') > 0 ? err : undefined);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#finSent = true;
    this.#session.send({ type: FrameType.FIN, stream: this.id });
    this.#maybeDone();
    callback();
  }

  #maybeDone(): void {
    if (this.#finSent && this.#finReceived) this.#session.forget(this.id);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (!this.#reset && !(this.#finSent && this.#finReceived)) {
      this.#reset = true;
      this.#session.send({
        type: FrameType.RESET,
        stream: this.id,
        code: ResetCode.CANCELLED,
        reason: err?.message ?? 'cancelled',
      });
    }
    this.#session.forget(this.id);
    this.#session.budget.release(this);
    this.#inbox.length = 0;
    this.#inboxBytes = 0;
    this.#dropResumable();
    this.#resend = [];
    if (this.#pending) {
      this.#pending.callback(err ?? new EdgemeshError(ErrorCodes.UNAVAILABLE, 'stream destroyed'));
      this.#pending = undefined;
    }
    callback(err);
  }
}
