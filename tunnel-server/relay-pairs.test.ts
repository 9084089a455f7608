import { describe, expect, it } from 'vitest';
import { RELAY_PARTNER_TIMEOUT_MS, RelayPairs } from './relay-pairs.ts';
import { manualSchedule } from './testing/manual-schedule.ts';

function setup() {
  const clock = manualSchedule();
  const expired: string[][] = [];
  let n = 0;
  const pairs = new RelayPairs<string>({
    onExpired: (conns) => expired.push(conns),
    schedule: clock.schedule,
    token: () => `t${++n}`,
  });
  let released = 0;
  const release = () => released++;
  return { clock, expired, pairs, release, released: () => released };
}

describe('RelayPairs', () => {
  it('pairs the two legs of a pair whichever comes first, arrived leg first', () => {
    const s = setup();
    const p = s.pairs.open('edge-a', 'edge-b', s.release);
    expect(p).toEqual({ a: 't1', b: 't2' });
    expect(s.pairs.arrive(p.b, 'conn-b')).toEqual({ kind: 'waiting' });
    expect(s.released()).toBe(0);
    expect(s.pairs.arrive(p.a, 'conn-a')).toEqual({
      kind: 'paired',
      arrived: { node: 'edge-a', conn: 'conn-a' },
      partner: { node: 'edge-b', conn: 'conn-b' },
    });
    expect(s.released()).toBe(1);
    expect(s.pairs.size).toBe(0);
    expect(s.clock.pending()).toBe(0); // the pair's timer is cancelled
  });

  it('matches each leg only with its own pair among many', () => {
    const s = setup();
    const opened = Array.from({ length: 50 }, (_, i) => s.pairs.open(`a${i}`, `b${i}`, s.release));
    for (const p of opened) expect(s.pairs.arrive(p.a, `conn-${p.a}`).kind).toBe('waiting');
    for (const p of [...opened].reverse()) {
      const r = s.pairs.arrive(p.b, `conn-${p.b}`);
      expect(r.kind === 'paired' && [r.arrived.conn, r.partner.conn]).toEqual([`conn-${p.b}`, `conn-${p.a}`]);
    }
    expect(s.pairs.size).toBe(0);
    expect(s.released()).toBe(50);
  });

  it('refuses an unknown token, a second connection on a leg, and a used token', () => {
    const s = setup();
    const p = s.pairs.open('edge-a', 'edge-b', s.release);
    expect(s.pairs.arrive('nope', 'x')).toEqual({ kind: 'refused' });
    expect(s.pairs.arrive(p.a, 'conn-a')).toEqual({ kind: 'waiting' });
    expect(s.pairs.arrive(p.a, 'conn-a2')).toEqual({ kind: 'refused' });
    expect(s.pairs.arrive(p.b, 'conn-b').kind).toBe('paired');
    expect(s.pairs.arrive(p.b, 'conn-b2')).toEqual({ kind: 'refused' });
  });

  it('at the timeout hands back the legs that came, releases once, and kills both tokens', () => {
    const s = setup();
    const p = s.pairs.open('edge-a', 'edge-b', s.release);
    const q = s.pairs.open('edge-c', 'edge-d', s.release);
    s.pairs.arrive(p.a, 'conn-a');
    s.clock.fireAll();
    expect(s.expired).toEqual([['conn-a'], []]);
    expect(s.released()).toBe(2);
    expect(s.pairs.size).toBe(0);
    expect(s.pairs.arrive(p.b, 'conn-b')).toEqual({ kind: 'refused' });
    expect(s.pairs.arrive(q.a, 'conn-c')).toEqual({ kind: 'refused' });
  });

  it('waits 10 s for both legs by default', () => {
    let asked = 0;
    const pairs = new RelayPairs<string>({
      onExpired: () => undefined,
      schedule: (_fn, ms) => {
        asked = ms;
        return () => undefined;
      },
    });
    const p = pairs.open('a', 'b', () => undefined);
    expect(asked).toBe(RELAY_PARTNER_TIMEOUT_MS);
    expect(RELAY_PARTNER_TIMEOUT_MS).toBe(10_000);
    expect(p.a).toMatch(/^[0-9a-f]{32}$/); // what parseRawLine accepts
    expect(p.b).not.toBe(p.a);
  });
});
