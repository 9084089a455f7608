import type { Schedule } from '../timer.ts';

/** A Schedule whose timers fire only when the test says so (no waiting, no timed asserts). */
export function manualSchedule(): { schedule: Schedule; pending: () => number; fireAll: () => void } {
  const timers = new Set<() => void>();
  return {
    schedule: (fn) => {
      const entry = () => fn();
      timers.add(entry);
      return () => {
        timers.delete(entry);
      };
    },
    pending: () => timers.size,
    fireAll: () => {
      const due = [...timers];
      timers.clear();
      for (const fn of due) fn();
    },
  };
}
