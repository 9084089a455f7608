/**
 * Starts a one-shot timer and returns its cancel. The rendezvous tables (relay-pairs.ts,
 * punch.ts) take one of these so their unit tests fire timeouts by hand instead of waiting.
 */
export type Schedule = (fn: () => void, ms: number) => () => void;

export const realSchedule: Schedule = (fn, ms) => {
  const t = setTimeout(fn, ms);
  return () => clearTimeout(t);
};
