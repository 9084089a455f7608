import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../../test/harness/fuzz.ts';
import {
  BUNDLE_MAX_RECORDS_BYTES,
  EPOCH_SEQS,
  eachRecord,
  epochOf,
  openBundle,
  openDatagram,
  REPLAY_WINDOW,
  ReplayWindow,
  SEAL_OVERHEAD,
  sealBundle,
  sealDatagram,
  splitExported,
} from './dgram-seal.ts';
import { FUZZ_MATERIAL, sealTarget } from './testing/dgram-seal-fuzz.ts';

// Exporter output 00 01 02 … 37: c2s key 00..0f, s2c key 10..1f, c2s IV 20..2b, s2c IV 2c..37.
const client = splitExported(FUZZ_MATERIAL, 'client');
const server = splitExported(FUZZ_MATERIAL, 'server');
const epoch0 = (e: number) => (e === 0 ? server.receive : undefined);

describe('datagram channel seal: goldens', () => {
  // The second row was checked independently: Python's cryptography AESGCM(key 00..0f)
  // .encrypt(IV 20..2b XOR seq 1, b"hello", header) gives the same bytes.
  const cases: [string, number, number, string, string][] = [
    [
      'empty datagram, stream 1, seq 0',
      1,
      0,
      '',
      '010000000100000000000000009c21179723e488942eda7c532b14f021',
    ],
    [
      '"hello", stream 3, seq 1',
      3,
      1,
      'hello',
      '010000000300000000000000017ddb00760086e73ec54f3f4b38a9525b3edd04f3ea',
    ],
    [
      'the largest stream id, first seq of epoch 1',
      0xffff_ffff,
      EPOCH_SEQS,
      'x',
      '01ffffffff0000000001000000393389bca14315483708f0bb21ff3d0932',
    ],
  ];
  for (const [name, stream, seq, text, hex] of cases) {
    it(name, () => {
      const sealed = sealDatagram(client.send, stream, seq, Buffer.from(text));
      expect(sealed.toString('hex')).toBe(hex);
      expect(sealed.length).toBe(SEAL_OVERHEAD + text.length);
      const opened = openDatagram(() => server.receive, sealed);
      expect(opened).toEqual({ ok: true, stream, seq, payload: Buffer.from(text) });
    });
  }
});

describe('datagram channel seal: what does not open', () => {
  const sealed = sealDatagram(client.send, 5, 7, Buffer.from('payload'));

  it('every changed byte (header, ciphertext or tag) fails authentication or a header check', () => {
    for (let i = 0; i < sealed.length; i++) {
      const bad = Buffer.from(sealed);
      bad[i] ^= 0x01;
      const opened = openDatagram(epoch0, bad);
      expect(opened.ok, `byte ${i}`).toBe(false);
    }
  });

  it('names the reason: short, version, stream 0, no key, wrong direction', () => {
    expect(openDatagram(epoch0, sealed.subarray(0, SEAL_OVERHEAD - 1))).toEqual({
      ok: false,
      reason: 'short',
    });
    const v2 = Buffer.from(sealed);
    v2[0] = 2;
    expect(openDatagram(epoch0, v2)).toEqual({ ok: false, reason: 'version' });
    const s0 = Buffer.from(sealed);
    s0.writeUInt32BE(0, 1);
    expect(openDatagram(epoch0, s0)).toEqual({ ok: false, reason: 'stream' });
    const later = sealDatagram(client.send, 5, EPOCH_SEQS * 3, Buffer.from('x'));
    expect(openDatagram(epoch0, later)).toEqual({ ok: false, reason: 'no-key' });
    // Reflected back to its sender: the client's receive key is the server's send key.
    expect(openDatagram(() => client.receive, sealed)).toEqual({ ok: false, reason: 'auth' });
  });

  it('refuses to seal what it could not carry', () => {
    expect(() => sealDatagram(client.send, 0, 0, Buffer.alloc(1))).toThrow(/bad stream id 0/);
    expect(() => sealDatagram(client.send, 1, -1, Buffer.alloc(1))).toThrow(/bad sequence number -1/);
    expect(() => sealDatagram(client.send, 1, 0, Buffer.alloc(65_508))).toThrow(
      /over the 65507-byte maximum/,
    );
    expect(() => splitExported(Buffer.alloc(55), 'client')).toThrow(/exporter gave 55 bytes, expected 56/);
  });

  it('epochs: 2^24 datagrams per key', () => {
    expect([0, EPOCH_SEQS - 1, EPOCH_SEQS, 5 * EPOCH_SEQS + 3].map(epochOf)).toEqual([0, 0, 1, 5]);
  });
});

describe('datagram channel seal: bundles (version 2)', () => {
  const record = (stream: number, text: string) => {
    const r = Buffer.alloc(6 + text.length);
    r.writeUInt32BE(stream, 0);
    r.writeUInt16BE(text.length, 4);
    r.write(text, 6);
    return r;
  };
  const records = Buffer.concat([record(3, 'one'), record(5, ''), record(3, 'three')]);
  const sealed = sealBundle(client.send, 9, records);

  it('opens to its records, in order, a zero-length one included', () => {
    const opened = openBundle(epoch0, sealed);
    expect(opened.ok).toBe(true);
    if (!opened.ok) return;
    expect(opened.seq).toBe(9);
    const got: [number, string][] = [];
    expect(eachRecord(opened.records, (s, p) => got.push([s, p.toString()]))).toBe(true);
    expect(got).toEqual([
      [3, 'one'],
      [5, ''],
      [3, 'three'],
    ]);
    // Not a version-1 message, and the other way round.
    expect(openDatagram(epoch0, sealed)).toEqual({ ok: false, reason: 'version' });
    expect(openBundle(epoch0, sealDatagram(client.send, 3, 10, Buffer.from('x')))).toEqual({
      ok: false,
      reason: 'version',
    });
  });

  it('every changed byte fails; reflected, too long or a later epoch: refused with the reason', () => {
    for (let i = 0; i < sealed.length; i++) {
      const bad = Buffer.from(sealed);
      bad[i] ^= 0x01;
      expect(openBundle(epoch0, bad).ok, `byte ${i}`).toBe(false);
    }
    expect(openBundle(() => client.receive, sealed)).toEqual({ ok: false, reason: 'auth' });
    expect(openBundle(epoch0, Buffer.alloc(BUNDLE_MAX_RECORDS_BYTES + 26, 2))).toEqual({
      ok: false,
      reason: 'too-long',
    });
    expect(openBundle(epoch0, sealBundle(client.send, 2 * EPOCH_SEQS, records))).toEqual({
      ok: false,
      reason: 'no-key',
    });
    expect(() => sealBundle(client.send, 1, Buffer.alloc(BUNDLE_MAX_RECORDS_BYTES + 1))).toThrow(/over 3600/);
  });

  it('records that do not parse: those before the fault are delivered, none after', () => {
    const got: number[] = [];
    const cut = Buffer.concat([record(3, 'one'), record(7, 'two').subarray(0, 8)]);
    expect(eachRecord(cut, (s) => got.push(s))).toBe(false);
    expect(eachRecord(Buffer.concat([record(0, 'zero'), record(9, 'x')]), (s) => got.push(s))).toBe(false);
    expect(eachRecord(Buffer.alloc(3), (s) => got.push(s))).toBe(false);
    expect(got).toEqual([3]);
  });
});

describe('ReplayWindow', () => {
  it('takes new numbers in any order within the window, once each', () => {
    const w = new ReplayWindow();
    expect([5, 3, 4, 3, 5, 0, 6, 6].map((s) => w.accept(s))).toEqual([
      true,
      true,
      true,
      false,
      false,
      true,
      true,
      false,
    ]);
  });

  it('refuses numbers that fell out of the window and keeps bits across word boundaries', () => {
    const w = new ReplayWindow();
    expect(w.accept(31)).toBe(true);
    expect(w.accept(33)).toBe(true); // the next word: 31's bit stays
    expect(w.accept(31)).toBe(false);
    expect(w.accept(32)).toBe(true);
    expect(w.accept(10_000)).toBe(true); // a long jump clears the whole ring
    expect(w.accept(33)).toBe(false); // far below the window
    expect(w.accept(10_000 - (REPLAY_WINDOW - 64))).toBe(true);
    expect(w.accept(10_000 - (REPLAY_WINDOW - 64))).toBe(false);
    expect(w.accept(9_999)).toBe(true);
  });

  it('matches a set of seen numbers over a long shuffled run (the window never forgets early)', () => {
    const w = new ReplayWindow();
    const seen = new Set<number>();
    let highest = -1;
    let x = 12345;
    for (let i = 0; i < 20_000; i++) {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      const seq = Math.max(0, highest + 40 - (x % 300)); // mostly ahead, some behind, some repeats
      const fresh = !seen.has(seq) && highest - seq < REPLAY_WINDOW - 32;
      expect(w.accept(seq), `seq ${seq} after ${highest}`).toBe(fresh);
      if (fresh) seen.add(seq);
      highest = Math.max(highest, seq);
    }
  });
});

describe('fuzz: datagram channel messages', () => {
  it('never throws, opens only exact sealed messages, re-seals what it opened', async () => {
    const r = await runFuzz(sealTarget, { seed: fuzzSeed(1901), count: 5_000 });
    expect(r.crashes, summary(r)).toEqual([]);
  });
});
