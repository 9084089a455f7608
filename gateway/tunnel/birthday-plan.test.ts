import { describe, expect, it } from 'vitest';
import { prng } from '../../test/harness/fuzz.ts';
import {
  ACK_REPEATS,
  BIRTHDAY_DEADLINE_MS,
  birthdayRole,
  classifyNat,
  encodePacket,
  HARD_ROUNDS,
  HARD_SOCKETS,
  hardRoundAt,
  MAX_PROBES,
  PacketKind,
  PORT_MAX,
  PORT_MIN,
  packetBudget,
  parsePacket,
  probeAt,
  probePorts,
} from './birthday-plan.ts';

describe('birthday punching: the plan', () => {
  it('runs only when exactly one side is hard', () => {
    expect(birthdayRole('hard', 'easy')).toBe('hard');
    expect(birthdayRole('easy', 'hard')).toBe('easy');
    expect(birthdayRole('hard', 'hard')).toEqual({ skip: 'both NATs are hard (symmetric)' });
    expect(birthdayRole('easy', 'easy')).toEqual({ skip: 'both NATs are easy: ICE suffices' });
    expect(birthdayRole('unknown', 'easy')).toEqual({ skip: 'NAT type unknown' });
    expect(birthdayRole('hard', 'unknown')).toEqual({ skip: 'NAT type unknown' });
  });

  it('classifies a NAT from what several servers saw one socket as', () => {
    const a = { ip: '203.0.113.70', port: 40000 };
    expect(classifyNat(40000, [a, a])).toBe('easy');
    expect(classifyNat(5000, [a, a])).toBe('easy'); // same mapping everywhere, port not kept
    expect(classifyNat(40000, [a, { ...a, port: 40001 }])).toBe('hard');
    expect(classifyNat(40000, [a, { ...a, ip: '203.0.113.71' }])).toBe('hard');
    expect(classifyNat(40000, [a])).toBe('easy'); // one server, port kept
    expect(classifyNat(5000, [a])).toBe('unknown'); // one server, port changed: cannot tell
    expect(classifyNat(40000, [])).toBe('unknown');
  });

  it('probes distinct ports in the range a symmetric NAT picks from', () => {
    const ports = probePorts(MAX_PROBES, prng(7));
    expect(ports).toHaveLength(MAX_PROBES);
    expect(new Set(ports).size).toBe(MAX_PROBES);
    expect(Math.min(...ports)).toBeGreaterThanOrEqual(PORT_MIN);
    expect(Math.max(...ports)).toBeLessThanOrEqual(PORT_MAX);
    // A broken random source cannot make it loop for ever: bounded tries, fewer ports.
    expect(probePorts(10, () => 0)).toEqual([PORT_MIN]);
    expect(probePorts(2, () => 0.999999999)).toEqual([PORT_MAX]);
  });

  it('paces the probes and the hard side rounds inside the deadline', () => {
    expect(probeAt(0)).toBe(0);
    expect(probeAt(1)).toBe(3);
    expect(probeAt(MAX_PROBES - 1)).toBe(2997);
    expect(probeAt(MAX_PROBES)).toBeUndefined();
    expect(probeAt(-1)).toBeUndefined();
    const rounds = Array.from({ length: 10 }, (_, r) => hardRoundAt(r)).filter((x) => x !== undefined);
    expect(rounds).toEqual([0, 1000, 2000, 3000, 4000]);
    for (const at of rounds) expect(at).toBeLessThan(BIRTHDAY_DEADLINE_MS);
  });

  it('bounds what each side may send', () => {
    expect(packetBudget('easy')).toBe(MAX_PROBES + ACK_REPEATS);
    expect(packetBudget('hard')).toBe(HARD_SOCKETS * HARD_ROUNDS + 2 * HARD_SOCKETS);
    expect(packetBudget('easy')).toBeLessThanOrEqual(1_005);
    expect(packetBudget('hard')).toBeLessThanOrEqual(1_792);
  });

  it('success odds: ~98 % with 256 open ports and 1,000 probes (the figure the design rests on)', () => {
    const span = PORT_MAX - PORT_MIN + 1;
    const p = 1 - (1 - HARD_SOCKETS / span) ** MAX_PROBES;
    expect(p).toBeGreaterThan(0.98);
    // Simulated with the real port choice: 1,000 attempts, each a fresh set of open ports.
    const rnd = prng(42);
    let hits = 0;
    for (let t = 0; t < 1000; t++) {
      const open = new Set(Array.from({ length: HARD_SOCKETS }, () => PORT_MIN + Math.floor(rnd() * span)));
      if (probePorts(MAX_PROBES, rnd).some((port) => open.has(port))) hits++;
    }
    expect(hits).toBeGreaterThan(960);
  });

  it('packets: ours with the secret, nothing else', () => {
    const secret = Buffer.alloc(16, 7);
    const pkt = encodePacket(PacketKind.chosen, secret);
    expect(pkt.toString('hex')).toBe(`454d423103${'07'.repeat(16)}`);
    expect(parsePacket(pkt, secret)).toBe(PacketKind.chosen);
    expect(parsePacket(pkt, Buffer.alloc(16, 8))).toBeUndefined();
    expect(parsePacket(pkt.subarray(0, 20), secret)).toBeUndefined();
    expect(parsePacket(Buffer.concat([pkt, Buffer.alloc(1)]), secret)).toBeUndefined();
    const bad = Buffer.from(pkt);
    bad[4] = 9;
    expect(parsePacket(bad, secret)).toBeUndefined();
    bad[4] = 1;
    bad[0] = 0x46;
    expect(parsePacket(bad, secret)).toBeUndefined();
    expect(() => encodePacket(PacketKind.probe, Buffer.alloc(15))).toThrow(/16 bytes/);
  });
});
