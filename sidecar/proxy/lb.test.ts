import { describe, expect, it } from 'vitest';
import { Balancer, type Choice, EJECT_BASE_MS, EJECT_MAX_MS } from './lb.ts';

const endpoints = (n: number): Choice<number>[] =>
  Array.from({ length: n }, (_, i) => ({ id: `10.0.0.${i + 1}:80`, value: i }));

function counts<T>(picks: (Choice<T> | undefined)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of picks) if (p) out[p.id] = (out[p.id] ?? 0) + 1;
  return out;
}

/** A seeded PRNG (mulberry32) so the random policy is tested exactly. */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('round robin', () => {
  it('cycles through endpoints in order', () => {
    const b = new Balancer<number>({ policy: 'round-robin' });
    b.setChoices(endpoints(3));
    expect(Array.from({ length: 7 }, () => b.pick()?.value)).toEqual([0, 1, 2, 0, 1, 2, 0]);
  });

  it('skips excluded endpoints and returns undefined when all are excluded', () => {
    const b = new Balancer<number>({ policy: 'round-robin' });
    b.setChoices(endpoints(3));
    const failed = new Set(['10.0.0.1:80']);
    expect(b.pick({}, failed)?.value).toBe(1);
    expect(b.pick({}, failed)?.value).toBe(2);
    expect(b.pick({}, failed)?.value).toBe(1);
    expect(b.pick({}, new Set(endpoints(3).map((e) => e.id)))).toBeUndefined();
  });

  it('returns undefined with no endpoints and keeps working after the set changes', () => {
    const b = new Balancer<number>({ policy: 'round-robin' });
    expect(b.pick()).toBeUndefined();
    b.setChoices(endpoints(4));
    b.pick();
    b.pick();
    b.pick();
    b.setChoices(endpoints(2));
    expect([b.pick()?.value, b.pick()?.value, b.pick()?.value]).toEqual([0, 1, 0]);
  });
});

describe('random', () => {
  it('spreads picks over all endpoints', () => {
    const b = new Balancer<number>({ policy: 'random', random: seeded(7) });
    b.setChoices(endpoints(4));
    const c = counts(Array.from({ length: 4000 }, () => b.pick()));
    expect(Object.keys(c)).toHaveLength(4);
    for (const n of Object.values(c)) expect(n).toBeGreaterThan(850); // expected 1000 each
  });

  it('never picks an excluded endpoint', () => {
    const b = new Balancer<number>({ policy: 'random', random: seeded(1) });
    b.setChoices(endpoints(3));
    const c = counts(Array.from({ length: 300 }, () => b.pick({}, new Set(['10.0.0.2:80']))));
    expect(c['10.0.0.2:80']).toBeUndefined();
    expect(c['10.0.0.1:80'] + c['10.0.0.3:80']).toBe(300);
  });
});

describe('least connections', () => {
  it('picks the endpoint with the fewest open connections', () => {
    const b = new Balancer<number>({ policy: 'least-connections' });
    b.setChoices(endpoints(3));
    b.acquire('10.0.0.1:80');
    b.acquire('10.0.0.1:80');
    b.acquire('10.0.0.2:80');
    expect(b.pick()?.id).toBe('10.0.0.3:80');
    b.acquire('10.0.0.3:80');
    b.acquire('10.0.0.3:80');
    expect(b.pick()?.id).toBe('10.0.0.2:80');
    b.release('10.0.0.1:80');
    b.release('10.0.0.1:80');
    expect(b.pick()?.id).toBe('10.0.0.1:80');
    expect(b.active('10.0.0.1:80')).toBe(0);
    b.release('10.0.0.1:80'); // an extra release never goes negative
    expect(b.active('10.0.0.1:80')).toBe(0);
  });

  it('breaks ties in turn so equal endpoints share the load', () => {
    const b = new Balancer<number>({ policy: 'least-connections' });
    b.setChoices(endpoints(3));
    expect(Array.from({ length: 6 }, () => b.pick()?.value)).toEqual([0, 1, 2, 0, 1, 2]);
  });
});

describe('consistent hash with bounded load', () => {
  it('maps the same key to the same endpoint, and different keys across endpoints', () => {
    const b = new Balancer<number>({ policy: 'consistent-hash' });
    b.setChoices(endpoints(4));
    const first = b.pick({ hashKey: 'user-42' })?.id;
    for (let i = 0; i < 20; i++) expect(b.pick({ hashKey: 'user-42' })?.id).toBe(first);
    const c = counts(Array.from({ length: 400 }, (_, i) => b.pick({ hashKey: `user-${i}` })));
    expect(Object.keys(c)).toHaveLength(4);
    for (const n of Object.values(c)) expect(n).toBeGreaterThan(50); // 100 expected each
  });

  it('moves only the keys of a removed endpoint', () => {
    const b = new Balancer<number>({ policy: 'consistent-hash' });
    b.setChoices(endpoints(4));
    const before = Array.from({ length: 200 }, (_, i) => b.pick({ clientIp: `192.168.1.${i}` })?.id);
    b.setChoices(endpoints(4).filter((e) => e.id !== '10.0.0.4:80'));
    const after = Array.from({ length: 200 }, (_, i) => b.pick({ clientIp: `192.168.1.${i}` })?.id);
    for (let i = 0; i < 200; i++) {
      if (before[i] !== '10.0.0.4:80') expect(after[i]).toBe(before[i]);
      else expect(after[i]).not.toBe('10.0.0.4:80');
    }
  });

  it('spills a hot key to the next endpoint once its owner exceeds the load bound', () => {
    const b = new Balancer<number>({ policy: 'consistent-hash', loadFactor: 1.25 });
    b.setChoices(endpoints(4));
    const picks: string[] = [];
    for (let i = 0; i < 40; i++) {
      const p = b.pick({ hashKey: 'hot' });
      if (!p) throw new Error('no pick');
      b.acquire(p.id);
      picks.push(p.id);
    }
    const c = counts(picks.map((id) => ({ id, value: 0 })));
    // Without the bound all 40 would land on one endpoint; with c = 1.25 none exceeds ceil(1.25 × 40 / 4) = 13.
    expect(Object.keys(c).length).toBeGreaterThan(1);
    for (const n of Object.values(c)) expect(n).toBeLessThanOrEqual(13);
  });

  it('falls back to round robin when no key is given', () => {
    const b = new Balancer<number>({ policy: 'consistent-hash' });
    b.setChoices(endpoints(2));
    expect([b.pick()?.value, b.pick()?.value, b.pick()?.value]).toEqual([0, 1, 0]);
  });
});

describe('session affinity (ClientIP)', () => {
  it('keeps a client on one endpoint until the timeout passes without use', () => {
    let now = 1_000_000;
    const b = new Balancer<number>({ policy: 'round-robin', affinityTimeoutMs: 10_000, now: () => now });
    b.setChoices(endpoints(3));
    const first = b.pick({ clientIp: '10.1.0.5' })?.id;
    for (let i = 0; i < 10; i++) {
      now += 5_000; // each use refreshes the timer
      expect(b.pick({ clientIp: '10.1.0.5' })?.id).toBe(first);
    }
    // Other clients are spread over the endpoints.
    const c = counts(Array.from({ length: 90 }, (_, i) => b.pick({ clientIp: `10.2.0.${i}` })));
    expect(Object.keys(c)).toHaveLength(3);
  });

  it('re-picks when the sticky endpoint failed or left, and after expiry', () => {
    let now = 0;
    const b = new Balancer<number>({ policy: 'round-robin', affinityTimeoutMs: 1_000, now: () => now });
    b.setChoices(endpoints(3));
    const first = b.pick({ clientIp: '10.1.0.5' })?.id as string;
    const second = b.pick({ clientIp: '10.1.0.5' }, new Set([first]))?.id;
    expect(second).not.toBe(first);
    expect(b.pick({ clientIp: '10.1.0.5' })?.id).toBe(second); // sticks to the new one
    b.setChoices(endpoints(3).filter((e) => e.id !== second));
    const third = b.pick({ clientIp: '10.1.0.5' })?.id;
    expect(third).toBeDefined();
    expect(third).not.toBe(second);
    now += 1_001;
    expect(b.pick({ clientIp: '10.1.0.5' })).toBeDefined();
  });

  it('bounds the number of remembered clients', () => {
    const b = new Balancer<number>({
      policy: 'round-robin',
      affinityTimeoutMs: 60_000,
      maxAffinityEntries: 100,
    });
    b.setChoices(endpoints(3));
    const first = b.pick({ clientIp: '10.9.9.9' })?.id;
    for (let i = 0; i < 1000; i++) b.pick({ clientIp: `10.3.${i >> 8}.${i & 255}` });
    expect(b.affinityEntries).toBe(100);
    // The oldest entry was dropped; the client is placed again by the ring, which gives the same endpoint.
    expect(b.pick({ clientIp: '10.9.9.9' })?.id).toBe(first);
  });
});

describe('outlier ejection', () => {
  it('skips an endpoint after a failed connect, longer after each failure, until a success', () => {
    let now = 0;
    const b = new Balancer<number>({ policy: 'round-robin', now: () => now });
    b.setChoices(endpoints(3));
    b.reportFailure('10.0.0.1:80');
    expect(b.ejected('10.0.0.1:80')).toBe(true);
    expect(Array.from({ length: 4 }, () => b.pick()?.value)).toEqual([1, 2, 1, 2]);
    now += EJECT_BASE_MS; // ejection over: back in rotation
    expect(b.ejected('10.0.0.1:80')).toBe(false);
    expect(new Set(Array.from({ length: 3 }, () => b.pick()?.value))).toEqual(new Set([0, 1, 2]));
    b.reportFailure('10.0.0.1:80'); // second failure in a row: twice as long
    now += EJECT_BASE_MS;
    expect(b.ejected('10.0.0.1:80')).toBe(true);
    now += EJECT_BASE_MS;
    expect(b.ejected('10.0.0.1:80')).toBe(false);
    for (let i = 0; i < 10; i++) b.reportFailure('10.0.0.1:80');
    now += EJECT_MAX_MS - 1; // capped
    expect(b.ejected('10.0.0.1:80')).toBe(true);
    b.reportSuccess('10.0.0.1:80');
    expect(b.ejected('10.0.0.1:80')).toBe(false);
  });

  it('ignores ejection when every endpoint is ejected (trying beats refusing)', () => {
    const b = new Balancer<number>({ policy: 'round-robin', now: () => 0 });
    b.setChoices(endpoints(2));
    b.reportFailure('10.0.0.1:80');
    b.reportFailure('10.0.0.2:80');
    expect([b.pick()?.value, b.pick()?.value]).toEqual([0, 1]);
    // …but what the caller excluded for this connection stays excluded.
    expect(b.pick({}, new Set(['10.0.0.1:80']))?.value).toBe(1);
  });

  it('forgets endpoints that left the set', () => {
    const b = new Balancer<number>({ policy: 'round-robin', now: () => 0 });
    b.setChoices(endpoints(2));
    b.reportFailure('10.0.0.2:80');
    b.setChoices(endpoints(1));
    b.setChoices(endpoints(2));
    expect(b.ejected('10.0.0.2:80')).toBe(false);
  });
});
