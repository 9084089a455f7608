/**
 * Path choice by measurement, the pure part (peer.ts applies it):
 *
 *   rankByRtt   which tunnel-server replica to ask for a relay: the one whose control link
 *               answers PINGs fastest, then the others in that order (fallback). RTTs within
 *               RTT_TIE_MS or RTT_TIE_RATIO of each other count as equal and keep the
 *               configured order, so noise does not move relays between replicas.
 *   PathHealth  whether a session's path has degraded, from the tunnel's keepalive PINGs:
 *               losses or an RTT spike against the path's own baseline. A degraded path keeps
 *               its open streams; new streams take the next best path (peer.ts best()).
 *
 * The relay's RTT is this gateway's leg to the replica plus the peer's; only the first is
 * measured here (the peer's leg would need the peer to tell it). Replicas near both ends are
 * the common case in a cloud region; a replica near only one end may still be chosen.
 */

/** RTTs closer than this (ms) are a tie: a LAN-scale difference is noise, not a reason. */
export const RTT_TIE_MS = 2;
/** ... or closer than 20 % of the smaller one. */
export const RTT_TIE_RATIO = 0.2;

/**
 * `items` (in configured order, the preferred first) ordered best first by `rttOf`: the
 * fastest measured, ties in given order; unmeasured ones last, in given order. Pure.
 */
export function rankByRtt<T>(items: readonly T[], rttOf: (item: T) => number | undefined): T[] {
  const left = [...items];
  const out: T[] = [];
  while (left.length > 0) {
    let min = Number.POSITIVE_INFINITY;
    for (const it of left) {
      const r = rttOf(it);
      if (r !== undefined && r < min) min = r;
    }
    // The first (configured order) among those that tie with the fastest; none measured: first.
    const i = left.findIndex((it) => {
      const r = rttOf(it);
      if (min === Number.POSITIVE_INFINITY) return true;
      return r !== undefined && r - min <= Math.max(RTT_TIE_MS, min * RTT_TIE_RATIO);
    });
    out.push(left.splice(i, 1)[0]);
  }
  return out;
}

// --- path health ---------------------------------------------------------------------------

/**
 * The health check's PING: every 5 s on each session of a peer (the mux's own keepalive is
 * 10 s; one more PING in 5 s is 16 bytes each way), answered within 2 s or counted lost.
 * A NAT or link that throttles or drops shows as losses before the mux's 30 s idle timeout
 * would call the path dead.
 */
export const HEALTH_PING_INTERVAL_MS = 5_000;
/**
 * The first health PING 1 s after a path comes up: a spike is judged against the path's own
 * baseline, so the baseline must be measured before trouble can start (one sample suffices).
 */
export const HEALTH_FIRST_PING_MS = 1_000;
export const HEALTH_PING_TIMEOUT_MS = 2_000;
/** The last samples judged: 2 losses among 5 (40 %) is loss worth moving for. */
export const HEALTH_WINDOW = 5;
export const HEALTH_MAX_LOSSES = 2;
/** A spike: RTT above 3× the baseline and at least 50 ms more, twice in a row. */
export const SPIKE_RATIO = 3;
export const SPIKE_MIN_MS = 50;
export const SPIKE_SAMPLES = 2;
/** The baseline: the smallest RTT among the last 24 answered samples (2 min at 5 s). */
export const BASELINE_SAMPLES = 24;
/** Back to healthy: the last 3 samples answered and none a spike. */
export const RECOVERY_SAMPLES = 3;

export type HealthSample = number | 'lost';

/** Why a path is degraded, as data for /status (`reason` is the same in words). */
export type DegradedWhy =
  | { kind: 'loss'; lost: number; of: number }
  | { kind: 'rtt-spike'; rttMs: number; baselineMs: number };

export class PathHealth {
  /** Newest last; bounded by BASELINE_SAMPLES. */
  readonly #samples: HealthSample[] = [];
  #degraded = false;
  /** Why the path was last judged degraded (logs, status). */
  reason: string | undefined;
  #why: DegradedWhy | undefined;

  get degraded(): boolean {
    return this.#degraded;
  }

  /** While degraded: why, as data (read-only; for /status). */
  get why(): DegradedWhy | undefined {
    return this.#why;
  }

  /** The newest sample: an RTT in ms, 'lost', or undefined before the first (read-only). */
  get lastSample(): HealthSample | undefined {
    return this.#samples.at(-1);
  }

  /** One PING's outcome; returns whether the verdict changed. */
  sample(s: HealthSample): boolean {
    this.#samples.push(s);
    if (this.#samples.length > BASELINE_SAMPLES) this.#samples.shift();
    const was = this.#degraded;
    if (!was) {
      const why = this.#whyDegraded();
      if (why) {
        this.#degraded = true;
        this.#why = why;
        this.reason =
          why.kind === 'loss'
            ? `${why.lost} of the last ${why.of} pings lost`
            : `RTT ${why.rttMs.toFixed(1)} ms against a baseline of ${why.baselineMs.toFixed(1)} ms`;
      }
    } else if (this.#recovered()) {
      this.#degraded = false;
      this.reason = undefined;
      this.#why = undefined;
    }
    return was !== this.#degraded;
  }

  /** The smallest answered RTT kept, before the newest SPIKE_SAMPLES (a spike is not its own baseline). */
  baseline(): number | undefined {
    const older = this.#samples.slice(0, Math.max(0, this.#samples.length - SPIKE_SAMPLES));
    let min: number | undefined;
    for (const s of older) if (s !== 'lost' && (min === undefined || s < min)) min = s;
    return min;
  }

  #isSpike(s: HealthSample, base: number | undefined): boolean {
    return s !== 'lost' && base !== undefined && s > base * SPIKE_RATIO && s - base >= SPIKE_MIN_MS;
  }

  #whyDegraded(): DegradedWhy | undefined {
    const recent = this.#samples.slice(-HEALTH_WINDOW);
    const lost = recent.filter((s) => s === 'lost').length;
    if (lost >= HEALTH_MAX_LOSSES) return { kind: 'loss', lost, of: recent.length };
    const base = this.baseline();
    const last = this.#samples.slice(-SPIKE_SAMPLES);
    if (last.length === SPIKE_SAMPLES && last.every((s) => this.#isSpike(s, base)))
      return { kind: 'rtt-spike', rttMs: last.at(-1) as number, baselineMs: base as number };
    return undefined;
  }

  #recovered(): boolean {
    const last = this.#samples.slice(-RECOVERY_SAMPLES);
    if (last.length < RECOVERY_SAMPLES || last.some((s) => s === 'lost')) return false;
    // Judged against the baseline before the trouble: the samples of the trouble are not it.
    let base: number | undefined;
    for (const s of this.#samples) if (s !== 'lost' && (base === undefined || s < base)) base = s;
    return !last.some((s) => this.#isSpike(s, base));
  }
}
