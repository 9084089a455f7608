import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../../test/harness/fuzz.ts';
import { LANE_KEY_BYTES, laneKeys, openProbe, PROBE_BYTES, ProbeKind, sealProbe } from './lane-probe.ts';
import { offeredAddresses } from './lanes.ts';
import { offerTarget, probeTarget } from './testing/lane-fuzz.ts';

// Exporter output 00 01 … 3f: client→server key 00..1f, server→client key 20..3f.
const material = Buffer.from(Array.from({ length: LANE_KEY_BYTES }, (_, i) => i));
const client = laneKeys(material, 'client');
const server = laneKeys(material, 'server');

describe('datagram lane probes', () => {
  // Checked independently: Python's hmac.new(bytes(range(32)), header, sha256).digest()[:16].
  it.each([
    ['a probe, counter 0', ProbeKind.PROBE, 0, '03010000000000000000df339f1aa89ad37026bdb6c8c0b15e26'],
    [
      'an answer, counter 0x0102030405',
      ProbeKind.ANSWER,
      0x0102030405,
      '0302000000010203040570b13bc4eb9e8b25e6d6feea6345ee56',
    ],
  ])('golden: %s', (_name, kind, counter, hex) => {
    const sealed = sealProbe(client.send, kind, counter);
    expect(sealed.toString('hex')).toBe(hex);
    expect(openProbe(server.receive, sealed)).toEqual({ ok: true, kind, counter });
  });

  it('golden: an ACK carries its report, signed with the rest', () => {
    const report = { highest: 0x1000000ff, received: 1234 };
    const sealed = sealProbe(client.send, ProbeKind.ACK, 9, report);
    // Checked independently with Python's hmac, as above.
    expect(sealed.toString('hex')).toBe(
      '0303000000000000000900000001000000ff00000000000004d2b258a98320e7bd850940a9c5e2777189',
    );
    expect(openProbe(server.receive, sealed)).toEqual({
      ok: true,
      kind: ProbeKind.ACK,
      counter: 9,
      ack: report,
    });
    for (let bit = 0; bit < sealed.length * 8; bit++) {
      const bad = Buffer.from(sealed);
      bad[bit >> 3] ^= 1 << (bit & 7);
      expect(openProbe(server.receive, bad).ok, `bit ${bit}`).toBe(false);
    }
    expect(() => sealProbe(client.send, ProbeKind.ACK, 1)).toThrow('only an ACK, carries a report');
    expect(() => sealProbe(client.send, ProbeKind.PROBE, 1, report)).toThrow('only an ACK, carries a report');
  });

  it('the keys are split by direction: a side never takes its own probes back (reflection)', () => {
    expect(client.send).toEqual(server.receive);
    expect(client.receive).toEqual(server.send);
    expect(client.send.equals(client.receive)).toBe(false);
    expect(openProbe(client.receive, sealProbe(client.send, ProbeKind.PROBE, 7))).toEqual({
      ok: false,
      reason: 'auth',
    });
  });

  it('every flipped bit is refused, with the reason named', () => {
    const sealed = sealProbe(server.send, ProbeKind.PROBE, 42);
    const reasons = new Set<string>();
    for (let bit = 0; bit < PROBE_BYTES * 8; bit++) {
      const bad = Buffer.from(sealed);
      bad[bit >> 3] ^= 1 << (bit & 7);
      const opened = openProbe(client.receive, bad);
      expect(opened.ok, `bit ${bit}`).toBe(false);
      if (!opened.ok) reasons.add(opened.reason);
    }
    // A kind flipped to ACK's is refused for its length (an ACK is 42 bytes).
    expect([...reasons].sort()).toEqual(['auth', 'kind', 'short', 'version']);
    expect(openProbe(client.receive, sealed.subarray(0, PROBE_BYTES - 1))).toEqual({
      ok: false,
      reason: 'short',
    });
    expect(openProbe(client.receive, Buffer.concat([sealed, Buffer.alloc(1)]))).toEqual({
      ok: false,
      reason: 'short',
    });
  });

  it('refuses exporter output of the wrong size and counters that are not safe integers', () => {
    expect(() => laneKeys(Buffer.alloc(56), 'client')).toThrow('exporter gave 56 bytes, expected 64');
    expect(() => sealProbe(client.send, ProbeKind.PROBE, -1)).toThrow(RangeError);
    expect(() => sealProbe(client.send, ProbeKind.PROBE, 2 ** 53)).toThrow(RangeError);
  });

  it('fuzz: never throws, opens only exact signed probes', async () => {
    const r = await runFuzz(probeTarget, { seed: fuzzSeed(1821), count: 5_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.inputs).toBe(5_000);
  });
});

describe('datagram lane offers', () => {
  it('takes reachable IPv4 addresses on unprivileged ports', () => {
    expect(
      offeredAddresses({ t: 'dgram-lane', answer: true, addrs: [{ ip: '203.0.113.7', port: 40123 }] }),
    ).toEqual({ answer: true, addrs: [{ ip: '203.0.113.7', port: 40123 }] });
  });

  it.each([
    [{ addrs: 'x' }, 'addrs must be a list of at most 8 addresses'],
    [{ addrs: Array.from({ length: 9 }, () => ({ ip: '203.0.113.7', port: 40000 })) }, 'at most 8'],
    [{ addrs: [null] }, 'an address is not an object'],
    [{ addrs: [{ ip: '2001:db8::1', port: 40000 }] }, '"2001:db8::1" is not an IPv4 address'],
    [{ addrs: [{ ip: '127.0.0.1', port: 40000 }] }, '127.0.0.1 is a loopback address'],
    [{ addrs: [{ ip: '169.254.169.254', port: 40000 }] }, 'link-local'],
    [{ addrs: [{ ip: '203.0.113.7', port: 53 }] }, 'port 53 of 203.0.113.7 is not an unprivileged UDP port'],
    [{ addrs: [{ ip: '203.0.113.7', port: 70000 }] }, 'port 70000'],
    [{ addrs: [{ ip: '203.0.113.7', port: '40000' }] }, 'port "40000"'],
  ])('refuses %j, naming why', (m, why) => {
    const offer = offeredAddresses({ t: 'dgram-lane', ...m });
    expect('error' in offer && offer.error).toContain(why);
  });

  it('fuzz: never throws, takes only reachable addresses, stable after a JSON round trip', async () => {
    const r = await runFuzz(offerTarget, { seed: fuzzSeed(1822), count: 5_000 });
    expect(r.crashes, summary(r)).toEqual([]);
    expect(r.inputs - r.rejected, 'some mutated offers are still valid').toBeGreaterThan(0);
  });
});
