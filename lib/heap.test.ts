import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cgroupMemoryLimit, compactHeap, compactWhenQuiet, keepHeapInBudget } from './heap.ts';

describe('heap compaction', () => {
  it('collects what is only weakly held, without --expose-gc on the command line', async () => {
    let weak: WeakRef<object> | undefined;
    (() => {
      weak = new WeakRef(new Array(100_000).fill({}));
    })();
    // A WeakRef's target lives until the job that made it ends.
    await new Promise((r) => setImmediate(r));
    compactHeap();
    expect(weak?.deref()).toBeUndefined();
  });

  it('compacts at a quiet check once grown, not again until it grows more; stop() ends it', async () => {
    const compactions: number[] = [];
    const compactor = compactWhenQuiet({
      checkMs: 20,
      quietCpu: 1, // any check is quiet here
      // From nothing the process has grown that much; after one compaction not again so soon.
      growthBytes: process.memoryUsage.rss() / 2,
      onCompacted: (info) => compactions.push(info.ms),
    });
    await new Promise((r) => setTimeout(r, 200));
    compactor.stop();
    expect(compactions).toHaveLength(1);
  });

  it('over the budget, collects once the heap grew past what was live; under it, never', async () => {
    const garbage = async () => {
      for (let i = 0; i < 20; i++) {
        // ~2 MB per turn that nothing keeps: the heap grows until something collects it.
        void Array.from({ length: 20_000 }, (_, j) => ({ j, s: `x${j}` }));
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    const collected: Array<{ usedBefore: number; usedAfter: number }> = [];
    const over = keepHeapInBudget({
      budgetBytes: 0,
      growthBytes: 4 * 1024 * 1024,
      checkMs: 10,
      onCollected: (info) => collected.push(info),
    });
    await garbage();
    over.stop();
    expect(collected.length).toBeGreaterThan(0);
    for (const c of collected) expect(c.usedAfter).toBeLessThan(c.usedBefore);

    let under = 0;
    const within = keepHeapInBudget({
      budgetBytes: Number.POSITIVE_INFINITY,
      growthBytes: 1,
      checkMs: 10,
      onCollected: () => under++,
    });
    await garbage();
    within.stop();
    expect(under).toBe(0);
  });

  it('reads a cgroup v2 memory limit, none for "max" or no file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'emc-heap-'));
    try {
      writeFileSync(join(dir, 'limited'), '268435456\n');
      writeFileSync(join(dir, 'unlimited'), 'max\n');
      expect(cgroupMemoryLimit(join(dir, 'limited'))).toBe(268435456);
      expect(cgroupMemoryLimit(join(dir, 'unlimited'))).toBeUndefined();
      expect(cgroupMemoryLimit(join(dir, 'absent'))).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
