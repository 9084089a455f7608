/**
 * Giving memory back after a burst. V8 collects when JavaScript allocates; a process that goes
 * quiet after a burst (a gateway that has listed and built a 10,000-service catalog, a sidecar
 * after its start) keeps the burst's garbage and half-empty heap pages, and the external
 * buffers only a full GC frees (the feed's 30 MB snapshot line, held weakly), until it next
 * allocates enough: measured in docs/scale.md at about half of a settled gateway's heap.
 */
import { cpuUsage, memoryUsage } from 'node:process';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * A compacting, memory-reducing GC ("last resort": what V8 does on a low-memory notification),
 * synchronous: ~25 ms for a sidecar, a few hundred ms for a gateway holding 100,000 endpoints.
 * The gc function comes from a fresh context, where the flag set here exposes it (the main
 * context was built without it; no `--expose-gc` on the command line); the context is garbage
 * for the next collection.
 */
export function compactHeap(): void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as NodeJS.GCFunction;
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
}

export interface QuietCompactorOptions {
  /** How often to look. Default 5 s. */
  checkMs?: number;
  /** Quiet: less CPU than this fraction of one core over the last check. Default 0.05. */
  quietCpu?: number;
  /** Worth a compaction: RSS grew this much since the last one. Default 16 MiB. */
  growthBytes?: number;
  /** Told after each compaction (for logs). */
  onCompacted?: (info: { ms: number; rssBefore: number; rssAfter: number }) => void;
}

/**
 * Compacts at the first quiet check after the process grew by `growthBytes` since the last
 * compaction (from nothing, at start): never while busy (a full GC of a large heap stalls the
 * event loop for its duration), at most once per quiet period, and not again until there is
 * something to give back. `stop()` ends the checks.
 */
export function compactWhenQuiet(opts: QuietCompactorOptions = {}): { stop: () => void } {
  const checkMs = opts.checkMs ?? 5_000;
  const quietMicros = checkMs * 1000 * (opts.quietCpu ?? 0.05);
  const growth = opts.growthBytes ?? 16 * 1024 * 1024;
  let baseline = 0;
  let cpu = cpuUsage();
  const timer = setInterval(() => {
    const used = cpuUsage(cpu);
    cpu = cpuUsage();
    if (used.user + used.system > quietMicros) return;
    const rssBefore = memoryUsage.rss();
    if (rssBefore < baseline + growth) return;
    const started = performance.now();
    compactHeap();
    baseline = memoryUsage.rss();
    cpu = cpuUsage(); // the GC's own CPU is not the process being busy
    opts.onCompacted?.({ ms: performance.now() - started, rssBefore, rssAfter: baseline });
  }, checkMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
