/**
 * Time and chance as the tunnel's state machines see them, so tests drive them with a fake
 * clock (peer.test.ts) instead of waiting. Timers from the real clock never hold the process
 * open: a gateway shutting down does not wait for a retry planned minutes ahead.
 */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): Timer;
  clearTimeout(timer: Timer | undefined): void;
  /** In [0, 1), as Math.random. */
  random(): number;
}

/** A timer handle; only the clock that made it knows what is inside. */
export type Timer = { readonly __timer: unique symbol };

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref() as unknown as Timer,
  clearTimeout: (timer) => clearTimeout(timer as unknown as NodeJS.Timeout | undefined),
  random: () => Math.random(),
};
