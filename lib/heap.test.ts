import { describe, expect, it } from 'vitest';
import { compactHeap, compactWhenQuiet } from './heap.ts';

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
});
