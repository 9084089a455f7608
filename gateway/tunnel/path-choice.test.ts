import { describe, expect, it } from 'vitest';
import { PathHealth, rankByRtt } from './path-choice.ts';

describe('path choice: replicas by RTT', () => {
  const rank = (rtts: (number | undefined)[]) =>
    rankByRtt(
      rtts.map((rtt, i) => ({ name: `ts${i + 1}`, rtt })),
      (x) => x.rtt,
    ).map((x) => x.name);

  it('the fastest first, then the others by RTT (the fallback order)', () => {
    expect(rank([40, 5, 20])).toEqual(['ts2', 'ts3', 'ts1']);
  });

  it('ties keep the configured order (noise does not move relays)', () => {
    expect(rank([1.2, 0.4, 30])).toEqual(['ts1', 'ts2', 'ts3']); // within 2 ms
    expect(rank([110, 100, 30])).toEqual(['ts3', 'ts1', 'ts2']); // 110 vs 100: within 20 %
    expect(rank([130, 100])).toEqual(['ts2', 'ts1']);
  });

  it('unmeasured replicas go last, in configured order; none measured: configured order', () => {
    expect(rank([undefined, 50, undefined, 10])).toEqual(['ts4', 'ts2', 'ts1', 'ts3']);
    expect(rank([undefined, undefined])).toEqual(['ts1', 'ts2']);
    expect(rank([])).toEqual([]);
  });
});

describe('path choice: path health from keepalive pings', () => {
  const feed = (h: PathHealth, samples: (number | 'lost')[]) => samples.map((s) => h.sample(s));

  it('a steady path stays healthy, LAN-scale jitter included', () => {
    const h = new PathHealth();
    feed(h, [0.3, 0.4, 2.5, 0.3, 9, 0.5, 0.3]);
    expect(h.degraded).toBe(false);
  });

  it('two losses in five: degraded; three answered pings: healthy again', () => {
    const h = new PathHealth();
    expect(feed(h, [10, 'lost', 10, 'lost'])).toEqual([false, false, false, true]);
    expect(h.degraded).toBe(true);
    expect(h.reason).toBe('2 of the last 4 pings lost');
    expect(feed(h, [10, 11])).toEqual([false, false]);
    expect(h.degraded).toBe(true);
    expect(h.sample(10)).toBe(true);
    expect(h.degraded).toBe(false);
  });

  it('an RTT spike (3x and +50 ms, twice in a row) degrades; one alone does not', () => {
    const h = new PathHealth();
    feed(h, [20, 21, 20, 200, 20]);
    expect(h.degraded).toBe(false);
    feed(h, [200, 210]);
    expect(h.degraded).toBe(true);
    expect(h.reason).toMatch(/RTT 210.0 ms against a baseline of 20.0 ms/);
    // Still spiking: stays degraded; the spike does not become the baseline.
    feed(h, [220, 205, 215, 210]);
    expect(h.degraded).toBe(true);
    feed(h, [22, 21, 20]);
    expect(h.degraded).toBe(false);
  });

  it('a slow but steady path is not degraded by being slow', () => {
    const h = new PathHealth();
    feed(h, [150, 160, 155, 170, 150, 165]);
    expect(h.degraded).toBe(false);
  });
});
