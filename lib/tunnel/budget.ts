/**
 * A peer's receive budget: how many bytes its streams may hold in our memory, unread, across
 * all its streams and sessions (issue 16 item 8).
 *
 * Why a budget and not a connection window: every stream starts with a full window of credit
 * (1 MiB, implicit in protocol version 1), so without a bound across streams a peer that opens
 * 4,096 streams to targets that do not read may pin 4 GiB here (200 such streams took a
 * gateway from 146 to 355 MiB RSS). HTTP/2 and QUIC bound this with a connection-level window
 * the sender must also respect (HTTP/2: WINDOW_UPDATE on stream 0, 65,535 bytes unless raised,
 * Node's `http2session.setLocalWindowSize`; quic-go: MAX_DATA, a connection receive window
 * auto-tuned up to 15 MiB beside stream windows of up to 6 MiB, and 100 incoming streams).
 * Doing that here would change the protocol on both gateways at once, and a connection window
 * makes a few unread streams stall every stream of the connection (HTTP/2's head-of-line
 * problem: its window is shared and the unread bytes keep it full). Enforced by the receiver
 * alone, a budget keeps the wire format and every older peer working, stops only the streams
 * that do not drain, and bounds memory as hard:
 *
 *   - a new stream is refused (RESET code LIMIT) while a fresh window would not fit;
 *   - past the cap, the stream holding the most unread bytes is reset (code LIMIT) until the
 *     total fits again — a stream that reads holds little, so it is never the one reset.
 *
 * What a stream holds: its unread buffer plus what waits in the socket to its target (read
 * from us, not yet taken by the kernel). The size, 16 MiB per peer, is quic-go's connection
 * window (15 MiB): sixteen streams whose targets stopped reading, each with a full window.
 *
 * Pure bookkeeping: holders report what they hold; the budget says whom to shed.
 */
export interface BudgetHolder {
  /** Drops this holder's buffered bytes (resets its stream); it has left the budget already. */
  shed(reason: string): void;
}

/** 16 MiB per peer (see above); a gateway idles at ~120–150 MiB of its 256Mi limit. */
export const DEFAULT_PEER_BUDGET = 16 * 1024 * 1024;

export class ReceiveBudget {
  readonly limit: number;
  readonly #held = new Map<BudgetHolder, number>();
  readonly #onShed: ((bytes: number) => void) | undefined;
  #total = 0;

  constructor(limit = DEFAULT_PEER_BUDGET, onShed?: (bytes: number) => void) {
    if (!(limit > 0)) throw new RangeError(`receive budget must be > 0 bytes, got ${limit}`);
    this.limit = limit;
    this.#onShed = onShed;
  }

  /** Bytes held by every holder. */
  get total(): number {
    return this.#total;
  }

  /** Whether a new stream, which may fill `window` bytes at once, fits. */
  fits(window: number): boolean {
    return this.#total + window <= this.limit;
  }

  /** A holder now holds `bytes` (0 or leaving: `release`). Sheds the largest past the cap. */
  set(holder: BudgetHolder, bytes: number): void {
    const before = this.#held.get(holder) ?? 0;
    if (bytes === before) return;
    this.#held.set(holder, bytes);
    this.#total += bytes - before;
    while (this.#total > this.limit && this.#shedLargest());
  }

  /** The holder is gone (stream closed): its bytes no longer count. */
  release(holder: BudgetHolder): void {
    const before = this.#held.get(holder);
    if (before === undefined) return;
    this.#held.delete(holder);
    this.#total -= before;
  }

  #shedLargest(): boolean {
    let worst: BudgetHolder | undefined;
    let most = 0;
    for (const [holder, bytes] of this.#held) {
      if (bytes > most) {
        worst = holder;
        most = bytes;
      }
    }
    if (!worst) return false; // unreachable: total > limit > 0 means someone holds bytes
    this.release(worst);
    this.#onShed?.(most);
    worst.shed(`peer's streams hold more than ${this.limit} bytes unread here; this one held ${most}`);
    return true;
  }
}
