import type { Logger } from '../lib/log.ts';
import { LogGate } from '../lib/log-gate.ts';

/** One warning per this interval for events anyone on the internet can cause. */
export const NOISY_LOG_INTERVAL_MS = 10_000;

/**
 * Warnings that anyone can trigger (refused certificates, connection caps, failed
 * enrolments): one line per interval per kind, with a count of those suppressed.
 */
export class NoisyLog {
  readonly #log: Logger;
  /** kind → its gate; one per kind named in the code, so a handful, kept for the process. */
  readonly #gates = new Map<string, LogGate>();

  constructor(log: Logger) {
    this.#log = log;
  }

  warn(kind: string, fields: Record<string, unknown>, msg: string): void {
    let g = this.#gates.get(kind);
    if (!g) {
      g = new LogGate(NOISY_LOG_INTERVAL_MS);
      this.#gates.set(kind, g);
    }
    const { log: ok, suppressed } = g.pass();
    if (ok) this.#log.warn(suppressed > 0 ? { ...fields, suppressed } : fields, msg);
  }
}
