/**
 * At most one log line per `intervalMs` for a noisy event (failed enrolments, refused
 * connections): anyone on the internet can cause them, and a line per attempt lets a
 * flood fill the disk and hide everything else. The first occurrence is logged at once;
 * the next allowed line says how many were suppressed in between. Metrics still count each.
 */
export class LogGate {
  readonly #intervalMs: number;
  #nextAt = 0;
  #suppressed = 0;

  constructor(intervalMs: number) {
    this.#intervalMs = intervalMs;
  }

  /** Whether to log now; when true, `suppressed` is how many were dropped since the last line. */
  pass(now = Date.now()): { log: boolean; suppressed: number } {
    if (now < this.#nextAt) {
      this.#suppressed++;
      return { log: false, suppressed: 0 };
    }
    this.#nextAt = now + this.#intervalMs;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    return { log: true, suppressed };
  }
}
