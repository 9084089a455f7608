/**
 * A token bucket per key (node): `bytesPerSecond` refill, a burst of one second's worth.
 * Bytes are charged after they went (the relay never holds a chunk back); a negative balance
 * is the time the sender must pause for. Pure: the clock is a parameter.
 */
export class RateLimiter {
  readonly #rate: number;
  /**
   * key → its bucket. One per node that ever relayed while a limit is set, kept for the
   * process: node names are authenticated (certificates), so the map is bounded by the mesh.
   */
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(bytesPerSecond: number) {
    if (!(bytesPerSecond > 0)) throw new RangeError(`rate limit: ${bytesPerSecond} bytes/s is not > 0`);
    this.#rate = bytesPerSecond;
  }

  /** Charges `bytes` to `key`; returns the ms to pause before sending more (0: none). */
  charge(key: string, bytes: number, now = Date.now()): number {
    const rate = this.#rate;
    const b = this.#buckets.get(key) ?? { tokens: rate, at: now };
    b.tokens = Math.min(rate, b.tokens + ((now - b.at) * rate) / 1000) - bytes;
    b.at = now;
    this.#buckets.set(key, b);
    return b.tokens >= 0 ? 0 : Math.ceil((-b.tokens * 1000) / rate);
  }
}
