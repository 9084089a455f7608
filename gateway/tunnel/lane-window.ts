/**
 * The datagram lane's congestion window (docs/udp.md *The datagram lane*, "Congestion"): how
 * many of the lane's messages may be out, not yet covered by the peer's ACK, before the next
 * one is dropped here. Pure: no sockets, no clocks (`now` is given).
 *
 * Why: the lane is plain UDP between two JavaScript processes. Without a window, a UDP
 * Service's blast went out as fast as the near gateway read it, the far gateway's socket
 * overflowed, each hop after it overflowed in turn, and the near gateway, busy sending, let its
 * own socket drop the replies: measured in the NAT lab, 16–359 replies/s at max against
 * 2.3–5.5k/s over the SCTP channel (whose congestion control the lane had left behind). A
 * window drops the excess at the first hop, where it is cheapest, and keeps every queue
 * after it short.
 *
 * The rule is TCP's (RFC 5681) applied to unreliable messages, as DCCP's CCID 2 (RFC 4341)
 * does: nothing is resent, only the rate adapts. Slow start doubles the window per round trip
 * up to ssthresh, congestion avoidance adds one message per window acknowledged; a loss
 * halves it (once per round trip); a stall (no ACK for STALL_MS while messages are out: the
 * peer or the path went away) takes everything out as lost and restarts from MIN_WINDOW.
 *
 * Loss is the only signal. A queue signal as in TCP Vegas or LEDBAT (RFC 6817: a round trip
 * over the base by more than an allowance shrinks the window) was built and measured, and not
 * kept: a gateway on a busy 2-core node stalls its event loop for tens of milliseconds (GC,
 * other processes), the sender's own stall reads as a queue, and the window sat at 70–80
 * messages, or at its floor with a 10 ms allowance (433 replies/s at max; docs/udp.md). The
 * receiving socket's buffer (lanes.ts, 1 MiB) bounds the queue a loss-based window builds.
 *
 * The peer's ACK (lane-probe.ts) reports the highest channel sequence number it opened from
 * the lane and how many messages it opened from it in all. Every message sent with a sequence
 * number at or below that highest one has arrived or is lost, so the ones it covers minus the
 * ones newly delivered were lost (a reordered message counts as lost once, then as delivered).
 */

export const INITIAL_WINDOW = 32;
export const MIN_WINDOW = 4;
/** ~5 MB of 1,200-byte bundles: beyond what a 2-core edge node's gateway carries per RTT. */
export const MAX_WINDOW = 4096;
/** No ACK this long with messages out: they are all lost. */
export const STALL_MS = 250;
/** The first round trip's guess, until an ACK measures one. */
const INITIAL_RTT_MS = 20;
export interface WindowCounters {
  /** Messages the peer's ACKs said it opened. */
  delivered: number;
  /** Messages taken as lost: covered by an ACK but not delivered, or out at a stall. */
  lost: number;
  /** Halvings for a loss, and restarts after a stall. */
  decreases: number;
  stalls: number;
}

export class LaneWindow {
  #cwnd = INITIAL_WINDOW;
  #ssthresh = MAX_WINDOW;
  /** Sequence numbers and send times of the messages out, oldest first, from #head on. */
  #seqs: number[] = [];
  #times: number[] = [];
  #head = 0;
  #reported = 0;
  #lastProgress = 0;
  #recoveryUntil = 0;
  #rttMs = INITIAL_RTT_MS;
  readonly counters: WindowCounters = { delivered: 0, lost: 0, decreases: 0, stalls: 0 };

  /** The window now, in messages. */
  get window(): number {
    return Math.floor(this.#cwnd);
  }

  get inFlight(): number {
    return this.#seqs.length - this.#head;
  }

  /** The smoothed round trip (ms), from ACKs (RFC 6298's 1/8 gain). */
  get rttMs(): number {
    return this.#rttMs;
  }

  /** Whether one more message may go out now. */
  admit(now: number): boolean {
    if (this.inFlight > 0 && now - this.#lastProgress > Math.max(STALL_MS, 4 * this.#rttMs)) this.#stall();
    return this.inFlight < this.window;
  }

  /** A message with channel sequence number `seq` (rising) went out. */
  sent(seq: number, now: number): void {
    if (this.inFlight === 0) this.#lastProgress = now;
    this.#seqs.push(seq);
    this.#times.push(now);
  }

  /** The peer's ACK: highest sequence number it opened from the lane, and how many in all. */
  onAck(highest: number, received: number, now: number): void {
    if (received < this.#reported) return; // an older report than one already taken
    const delivered = received - this.#reported;
    this.#reported = received;
    let covered = 0;
    let newestSentAt: number | undefined;
    while (this.#head < this.#seqs.length && this.#seqs[this.#head] <= highest) {
      newestSentAt = this.#times[this.#head];
      this.#head++;
      covered++;
    }
    this.#compact();
    if (covered > 0 || delivered > 0) this.#lastProgress = now;
    if (newestSentAt !== undefined) this.#rttMs += (Math.max(0, now - newestSentAt) - this.#rttMs) / 8;
    this.counters.delivered += delivered;
    const lost = covered - delivered;
    if (lost > 0) {
      this.counters.lost += lost;
      this.#decrease(now);
    } else if (delivered > 0) {
      // Slow start below ssthresh, then one message per window's worth delivered.
      this.#cwnd += this.#cwnd < this.#ssthresh ? delivered : delivered / this.#cwnd;
      if (this.#cwnd > MAX_WINDOW) this.#cwnd = MAX_WINDOW;
    }
  }

  /** Once per round trip: the losses of one window are one congestion event (RFC 5681 §3.1). */
  #decrease(now: number): void {
    if (now < this.#recoveryUntil) return;
    this.#ssthresh = Math.max(MIN_WINDOW, this.#cwnd / 2);
    this.#cwnd = this.#ssthresh;
    this.#recoveryUntil = now + this.#rttMs;
    this.counters.decreases++;
  }

  #stall(): void {
    this.counters.lost += this.inFlight;
    this.counters.stalls++;
    this.#seqs = [];
    this.#times = [];
    this.#head = 0;
    this.#ssthresh = Math.max(MIN_WINDOW, this.#cwnd / 2);
    this.#cwnd = MIN_WINDOW;
  }

  /** Drops the covered prefix once it is large (amortised: no shift per ACK). */
  #compact(): void {
    if (this.#head === this.#seqs.length) {
      this.#seqs.length = 0;
      this.#times.length = 0;
      this.#head = 0;
      return;
    }
    if (this.#head < 1024 || this.#head * 2 < this.#seqs.length) return;
    this.#seqs = this.#seqs.slice(this.#head);
    this.#times = this.#times.slice(this.#head);
    this.#head = 0;
  }
}
