/** What a benchmark reads of another process from /proc: private memory and CPU time. */
import { readFileSync } from 'node:fs';

const MB = 1024 * 1024;
/** USER_HZ: clock ticks per second in /proc/PID/stat (100 on every Linux this runs on). */
const TICKS_PER_SECOND = 100;

/**
 * Private memory (Private_Clean + Private_Dirty from /proc/PID/smaps_rollup, i.e. USS) and
 * RSS in MB: the private part is what each extra process costs.
 */
export function memoryMB(pid: number): { privateMB: number; rssMB: number } {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? NaN);
  return {
    privateMB: ((kb('Private_Dirty') + kb('Private_Clean')) * 1024) / MB,
    rssMB: (kb('Rss') * 1024) / MB,
  };
}

/** User + system CPU seconds the process has used so far. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND; // utime, stime
}

/** Samples private memory every `everyMs` until stopped; `stop()` returns the peak. */
export function watchPeakPrivate(pid: number, everyMs = 100): { stop: () => number } {
  let peak = 0;
  const take = () => {
    try {
      peak = Math.max(peak, memoryMB(pid).privateMB);
    } catch {
      // the process exited: keep the last peak
    }
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      take();
      return peak;
    },
  };
}
