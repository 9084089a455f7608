import { describe, expect, it } from 'vitest';
import { type Punch, Punches } from './punch.ts';
import { manualSchedule } from './testing/manual-schedule.ts';

function setup() {
  const clock = manualSchedule();
  const timedOut: Punch[] = [];
  let n = 0;
  const punches = new Punches({
    onTimeout: (p) => timedOut.push(p),
    schedule: clock.schedule,
    token: () => `p${++n}`,
  });
  let released = 0;
  return { clock, timedOut, punches, release: () => released++, released: () => released };
}
const A = { ip: '198.51.100.10', port: 40001 };
const B = { ip: '203.0.113.20', port: 50002 };

describe('Punches', () => {
  it('sends go with both observed mappings once both probes came', () => {
    const s = setup();
    const p = s.punches.start('req-1', 'edge-a', 'edge-b', s.release);
    expect(p.nodes).toEqual(['edge-a', 'edge-b']);
    expect(p.tokens).toEqual(['p1', 'p2']);
    expect(s.punches.probe('p2', B)).toEqual({ kind: 'waiting' });
    const r = s.punches.probe('p1', A);
    expect(r.kind === 'go' && { id: r.punch.id, observed: r.observed }).toEqual({
      id: 'req-1',
      observed: [A, B],
    });
    expect(s.released()).toBe(1);
    expect(s.clock.pending()).toBe(0);
    expect(s.punches.tokens).toBe(0);
  });

  it('takes each token once', () => {
    const s = setup();
    s.punches.start('req-1', 'edge-a', 'edge-b', s.release);
    expect(s.punches.probe('p1', A).kind).toBe('waiting');
    expect(s.punches.probe('p1', A)).toEqual({ kind: 'refused' });
    expect(s.punches.probe('unknown', A)).toEqual({ kind: 'refused' });
  });

  it('at the timeout kills the tokens left, releases and reports the punch', () => {
    const s = setup();
    s.punches.start('req-1', 'edge-a', 'edge-b', s.release);
    s.punches.probe('p1', A);
    s.clock.fireAll();
    expect(s.timedOut.map((p) => p.id)).toEqual(['req-1']);
    expect(s.released()).toBe(1);
    expect(s.punches.tokens).toBe(0);
    expect(s.punches.probe('p2', B)).toEqual({ kind: 'refused' });
  });
});
