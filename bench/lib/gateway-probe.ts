/** What the scale benchmarks read from a running gateway: its heap figures and its log. */
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/** The gateway's own V8 heap figures (its /metrics), "used / total, external" in MB. */
export async function heapFigures(metricsPort: number): Promise<string> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const mb = (name: string) =>
    (Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN) / 2 ** 20).toFixed(0);
  return `${mb('nodejs_heap_size_used_bytes')} / ${mb('nodejs_heap_size_total_bytes')}, ${mb('nodejs_external_memory_bytes')}`;
}

/** When (performance.now()) `text` first shows in the log `file`; throws past `deadline`. */
export async function waitForLog(file: string, text: string, deadline: number): Promise<number> {
  while (performance.now() < deadline) {
    if ((await readFile(file, 'utf8').catch(() => '')).includes(text)) return performance.now();
    await sleep(50);
  }
  throw new Error(`${file}: no "${text}"`);
}
