import { readFileSync } from 'node:fs';

/** Resident set size of a process in bytes, from /proc/<pid>/status (VmRSS). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

export const MiB = 1024 * 1024;

/**
 * Samples a process's RSS every `everyMs` until stopped; `stop()` returns the peak. For
 * memory bounds under a flood: the peak, not the value after the flood ended, is what a
 * container's memory limit would have killed.
 */
export function watchPeakRss(pid: number, everyMs = 50): { peak: () => number; stop: () => number } {
  let peak = rssBytes(pid);
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssBytes(pid));
    } catch {
      // the process exited: keep the last peak
    }
  }, everyMs);
  return {
    peak: () => peak,
    stop: () => {
      clearInterval(timer);
      return peak;
    },
  };
}
