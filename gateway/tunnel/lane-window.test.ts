import { describe, expect, it } from 'vitest';
import { INITIAL_WINDOW, LaneWindow, MAX_WINDOW, MIN_WINDOW, STALL_MS } from './lane-window.ts';

/** Sends while the window admits, from sequence number `seq` on; returns the next one. */
function fill(w: LaneWindow, seq: number, now: number): number {
  while (w.admit(now)) w.sent(seq++, now);
  return seq;
}

describe('the lane congestion window', () => {
  it('admits INITIAL_WINDOW messages, then nothing until an ACK', () => {
    const w = new LaneWindow();
    expect(fill(w, 0, 0)).toBe(INITIAL_WINDOW);
    expect(w.inFlight).toBe(INITIAL_WINDOW);
    expect(w.admit(1)).toBe(false);
  });

  it('slow start: the window grows by what was delivered, up to MAX_WINDOW', () => {
    const w = new LaneWindow();
    let seq = fill(w, 0, 0);
    let received = 0;
    for (let t = 2; w.window < MAX_WINDOW; t += 2) {
      received += w.inFlight;
      w.onAck(seq - 1, received, t);
      expect(w.inFlight).toBe(0);
      seq = fill(w, seq, t);
      expect(t).toBeLessThan(40); // doubling: 32 → 4096 in 7 round trips
    }
    expect(w.window).toBe(MAX_WINDOW);
    expect(w.counters).toMatchObject({ lost: 0, decreases: 0, stalls: 0 });
  });

  it('a loss halves the window once per round trip, then it grows by one per window', () => {
    const w = new LaneWindow();
    let seq = fill(w, 0, 0); // 32 out, seqs 0..31
    // The peer opened 30 of them: 2 lost.
    w.onAck(31, 30, 10);
    expect(w.counters.lost).toBe(2);
    expect(w.window).toBe(INITIAL_WINDOW / 2);
    // A second loss in the same round trip is the same event: no second halving.
    seq = fill(w, seq, 10);
    w.onAck(seq - 1, 30 + 15, 11);
    expect(w.window).toBe(INITIAL_WINDOW / 2);
    expect(w.counters.decreases).toBe(1);
    // Congestion avoidance: +1 per window's worth delivered.
    let received = 45;
    for (let round = 0; round < 4; round++) {
      seq = fill(w, seq, 100 + round * 10);
      received += w.inFlight;
      w.onAck(seq - 1, received, 101 + round * 10);
    }
    expect(w.window).toBe(INITIAL_WINDOW / 2 + 4);
  });

  it('a stall (no ACK while messages are out) takes them all as lost and restarts at MIN_WINDOW', () => {
    const w = new LaneWindow();
    fill(w, 0, 0);
    expect(w.admit(STALL_MS)).toBe(false);
    expect(w.admit(STALL_MS + 1)).toBe(true);
    expect(w.counters).toMatchObject({ lost: INITIAL_WINDOW, stalls: 1 });
    expect(w.window).toBe(MIN_WINDOW);
    expect(w.inFlight).toBe(0);
  });

  it('an ACK older than one taken, or for nothing out, changes nothing', () => {
    const w = new LaneWindow();
    const seq = fill(w, 0, 0);
    w.onAck(seq - 1, seq, 1);
    const window = w.window;
    w.onAck(seq - 1, seq - 5, 2); // an older report
    w.onAck(seq + 1000, seq, 3); // nothing new delivered, nothing out
    expect(w.window).toBe(window);
    expect(w.counters.lost).toBe(0);
  });

  it('stays bounded: 20,000 round trips on a path that loses every 10th message keep what is out within the window', () => {
    const w = new LaneWindow();
    let seq = 0;
    let received = 0;
    for (let t = 0; t < 20_000; t++) {
      const first = seq;
      seq = fill(w, seq, t);
      // Every 10th message is lost on the way.
      for (let s = first; s < seq; s++) if (s % 10 !== 0) received++;
      w.onAck(seq - 1, received, t + 1);
      expect(w.inFlight).toBeLessThanOrEqual(MAX_WINDOW);
    }
    expect(w.window).toBeGreaterThanOrEqual(MIN_WINDOW);
    expect(w.counters.lost).toBeGreaterThan(0);
    expect(w.counters.delivered).toBe(received);
  });
});
