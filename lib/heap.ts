/**
 * Giving memory back after a burst. V8 collects when JavaScript allocates; a process that goes
 * quiet after a burst (a gateway that has listed and built a 10,000-service catalog, a sidecar
 * after its start) keeps the burst's garbage and half-empty heap pages, and the external
 * buffers only a full GC frees (the feed's 30 MB snapshot line, held weakly), until it next
 * allocates enough: measured in docs/scale.md at about half of a settled gateway's heap.
 */
import { readFileSync } from 'node:fs';
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

/** The container limit the gateway ships with (manifests/base/gateway.yaml), when no cgroup says one. */
export const SHIPPED_MEMORY_LIMIT = 256 * 1024 * 1024;

/** This process's cgroup v2 memory limit (memory.max), or undefined when there is none or it is unreadable. */
export function cgroupMemoryLimit(file = '/sys/fs/cgroup/memory.max'): number | undefined {
  try {
    const text = readFileSync(file, 'utf8').trim();
    const bytes = Number(text);
    return text !== 'max' && Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
  } catch {
    return undefined;
  }
}

export interface HeapBudgetOptions {
  /** Above this RSS the heap is kept close to what is live. Default 5/8 of the cgroup's limit (or the shipped one). */
  budgetBytes?: number;
  /** Collect once the heap holds this much more than after the last collection. Default 24 MiB. */
  growthBytes?: number;
  /** How often to look. Default 100 ms. */
  checkMs?: number;
  /** Told after each collection (for logs and tests). */
  onCollected?: (info: { ms: number; usedBefore: number; usedAfter: number }) => void;
}

/**
 * Keeps a burst inside the container's memory limit. V8 lets the old space grow to about twice
 * what its last full GC found live before it collects again: a gateway listing 10,000 slices with
 * ~110 MB live let its heap reach ~210 MB, and its private memory ~300 MB, over a 256 Mi limit
 * (docs/scale.md), though what was live never came near it. Once RSS is over `budgetBytes`, this
 * runs a full GC whenever the heap used has grown `growthBytes` past what the last collection
 * (its own or V8's) left, so the heap stays near what is live plus `growthBytes`. Below the
 * budget it does nothing but look. Each collection costs a full mark (~0.1–0.25 s at 100,000
 * endpoints), so the budget keeps it to the bursts that need it. Timers do not run inside one
 * synchronous piece of work: what one allocates between checks is not bounded here.
 */
export function keepHeapInBudget(opts: HeapBudgetOptions = {}): { stop: () => void } {
  const budget = opts.budgetBytes ?? ((cgroupMemoryLimit() ?? SHIPPED_MEMORY_LIMIT) * 5) / 8;
  const growth = opts.growthBytes ?? 24 * 1024 * 1024;
  let live = Number.POSITIVE_INFINITY;
  const timer = setInterval(() => {
    const { heapUsed: used, rss } = memoryUsage();
    live = Math.min(live, used); // a collection by V8 itself shows as the heap shrinking
    if (used < live + growth || rss < budget) return;
    const started = performance.now();
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as NodeJS.GCFunction;
    gc({ type: 'major', execution: 'sync' });
    live = memoryUsage().heapUsed;
    opts.onCollected?.({ ms: performance.now() - started, usedBefore: used, usedAfter: live });
  }, opts.checkMs ?? 100);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
