/**
 * Resumable streams (issue 15 item 6): a byte stream between two gateways that outlives the
 * session it started on. When a path dies (a relay replica killed, a punched path lost), its
 * streams are parked instead of reset; the side that opened each one asks to carry on over
 * another session to the same peer (RESUME, lib/tunnel/frame.ts), and both sides resend what
 * the other did not receive. The apps at both ends see a pause, not a reset.
 *
 * What makes it possible without a second copy of the data: a sender keeps the bytes it sent
 * until the receiver credits them (WINDOW, which the receiver sends once its reader — the
 * socket to the app — took them), so what it must be able to resend is at most one window per
 * stream; a receiver's stream object, with what it holds unread, outlives the session.
 *
 * One book per peer gateway (the TLS-proven node name), shared by its sessions, as the receive
 * budget is: a token resumes only a stream of the same peer. State:
 *   - #streams: every resumable stream of this peer by token, attached or parked — a RESUME can
 *     arrive before this side noticed that the old path died.
 *   - #parked: streams whose session closed, until resumed or RESUME_WAIT_MS passes (then they
 *     are reset: a pause that long is an outage, and the app should learn of it).
 *   - retained: bytes kept for resending across the peer's streams; past `retainLimit` a
 *     stream gives up being resumable (its bytes go; a later path loss resets it) rather than
 *     let many slow streams hold a window each.
 */
import type { MuxSession, MuxStream } from './mux.ts';

/** How long a parked stream waits for a new path before it is reset. */
export const RESUME_WAIT_MS = 30_000;
/** Bytes a peer's resumable streams may keep for resending (64 windows of 1 MiB). */
export const DEFAULT_RETAIN_LIMIT = 64 * 1024 * 1024;
/** Resumable streams one peer may have (a session's maxStreams, times a few sessions). */
export const MAX_RESUMABLE = 16_384;

export type ResumeOutcome = 'parked' | 'moved' | 'resumed' | 'expired' | 'refused' | 'given-up';

export interface ResumeBookOptions {
  waitMs?: number;
  retainLimit?: number;
  /** Each stream's fate, for metrics (edgemesh_tunnel_stream_resumes_total). */
  outcome?: (what: ResumeOutcome) => void;
}

export class ResumeBook {
  readonly #waitMs: number;
  readonly #retainLimit: number;
  readonly #outcome: (what: ResumeOutcome) => void;
  readonly #streams = new Map<string, MuxStream>();
  readonly #parked = new Map<MuxStream, NodeJS.Timeout>();
  /** Bytes kept for resending by this peer's streams (MuxStream keeps it up to date). */
  retained = 0;
  #closed = false;

  constructor(opts: ResumeBookOptions = {}) {
    this.#waitMs = opts.waitMs ?? RESUME_WAIT_MS;
    this.#retainLimit = opts.retainLimit ?? DEFAULT_RETAIN_LIMIT;
    this.#outcome = opts.outcome ?? (() => undefined);
  }

  get parkedCount(): number {
    return this.#parked.size;
  }

  /** Whether `n` more bytes may be kept for resending. */
  fits(n: number): boolean {
    return this.retained + n <= this.#retainLimit;
  }

  /** A stream became resumable under `token` (hex); false when the book is full or closed. */
  add(token: string, stream: MuxStream): boolean {
    if (this.#closed || this.#streams.size >= MAX_RESUMABLE || this.#streams.has(token)) return false;
    this.#streams.set(token, stream);
    return true;
  }

  /** A stream ended, was reset or gave up being resumable. */
  remove(token: string, stream: MuxStream): void {
    if (this.#streams.get(token) === stream) this.#streams.delete(token);
    const timer = this.#parked.get(stream);
    if (timer) {
      clearTimeout(timer);
      this.#parked.delete(stream);
    }
  }

  /** The stream `token` names, attached or parked; taken off the parked list. */
  take(token: string): MuxStream | undefined {
    const stream = this.#streams.get(token);
    if (!stream) return undefined;
    const timer = this.#parked.get(stream);
    if (timer) {
      clearTimeout(timer);
      this.#parked.delete(stream);
    }
    return stream;
  }

  /** Its session closed: the stream waits here for a new one (or RESUME_WAIT_MS, then resets). */
  park(stream: MuxStream, counted = true): void {
    if (this.#parked.has(stream)) return;
    const timer = setTimeout(() => {
      this.#parked.delete(stream);
      this.#outcome('expired');
      stream.expire(`no new path to the peer within ${this.#waitMs} ms`);
    }, this.#waitMs);
    timer.unref();
    this.#parked.set(stream, timer);
    if (counted) this.#outcome('parked');
  }

  counted(what: ResumeOutcome): void {
    this.#outcome(what);
  }

  /**
   * Asks `session` to carry on every parked stream this side opened (the other side's wait
   * for our RESUME). Called when a session to the peer comes up, and when a session closes
   * while another is usable.
   */
  resumeOn(session: MuxSession): void {
    for (const stream of [...this.#parked.keys()]) if (stream.opener) session.resume(stream);
  }

  /** The gateway is stopping: parked streams are reset now, not after the wait. */
  close(): void {
    this.#closed = true;
    for (const [stream, timer] of this.#parked) {
      clearTimeout(timer);
      stream.expire('the gateway is stopping');
    }
    this.#parked.clear();
    this.#streams.clear();
  }
}
