import { duplexPair } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { createCA, issueIdentity } from '../../lib/tunnel/identity.ts';
import { acceptTls, connectTls } from '../../lib/tunnel/tls.ts';
import { DatagramChannel, type MessagePort } from './dgram-channel.ts';
import { EPOCH_SEQS, EXPORTER_BYTES, EXPORTER_LABEL, sealDatagram, splitExported } from './dgram-seal.ts';

const ca = createCA();
const nodeA = issueIdentity(ca, { kind: 'node', name: 'node-a' });
const nodeB = issueIdentity(ca, { kind: 'node', name: 'node-b' });

/** A TLS 1.3 session between node-a (client) and node-b, as on the reliable channel. */
async function session(): Promise<{ client: TLSSocket; server: TLSSocket }> {
  const [a, b] = duplexPair();
  const [c, s] = await Promise.all([
    connectTls({ identity: nodeA, expect: { kind: 'node', name: 'node-b' }, socket: a, timeoutMs: 3000 }),
    acceptTls({ identity: nodeB, expect: { kind: 'node', name: 'node-a' }, socket: b, timeoutMs: 3000 }),
  ]);
  return { client: c.socket, server: s.socket };
}

/** Two fake data channel ends; `deliver` decides per message (drop, reorder) in the test. */
class FakePort implements MessagePort {
  peer: FakePort | undefined;
  isOpenNow = true;
  buffered = 0;
  readonly sent: Buffer[] = [];
  #onMessage: ((m: string | Buffer | ArrayBuffer) => void) | undefined;
  #onClosed: (() => void) | undefined;
  sendMessageBinary(b: Buffer): boolean {
    this.sent.push(b);
    return true;
  }
  bufferedAmount(): number {
    return this.buffered;
  }
  isOpen(): boolean {
    return this.isOpenNow;
  }
  onMessage(cb: (m: string | Buffer | ArrayBuffer) => void): void {
    this.#onMessage = cb;
  }
  onClosed(cb: () => void): void {
    this.#onClosed = cb;
  }
  close(): void {
    this.isOpenNow = false;
    this.#onClosed?.();
  }
  /** A message arriving from the far end (or from anyone on the path). */
  arrive(m: string | Buffer | ArrayBuffer): void {
    this.#onMessage?.(m);
  }
}

const exporterOf = (s: TLSSocket) => (n: number, label: string, ctx: Buffer) =>
  s.exportKeyingMaterial(n, label, ctx);

async function pair(opts: { bundle?: boolean } = {}) {
  const tls = await session();
  const pa = new FakePort();
  const pb = new FakePort();
  const a = new DatagramChannel(pa, exporterOf(tls.client), 'client', opts);
  const b = new DatagramChannel(pb, exporterOf(tls.server), 'server', opts);
  const got: [string, number, string][] = [];
  a.onDatagram = (stream, p) => got.push(['a', stream, p.toString()]);
  b.onDatagram = (stream, p) => got.push(['b', stream, p.toString()]);
  return { tls, pa, pb, a, b, got };
}

describe('DatagramChannel', () => {
  it('carries datagrams both ways with the stream id, in whatever order they arrive, a lost one not waited for', async () => {
    const { tls, pa, pb, a, b, got } = await pair();
    for (const [i, text] of ['one', 'two', 'three', 'four'].entries())
      expect(a.send(1 + 2 * (i % 2), Buffer.from(text))).toBe(true);
    // 'two' is lost; 'four' overtakes 'three'.
    for (const i of [0, 3, 2]) pb.arrive(pa.sent[i]);
    expect(b.send(1, Buffer.from('reply'))).toBe(true);
    pa.arrive(pb.sent[0]);
    expect(got).toEqual([
      ['b', 1, 'one'],
      ['b', 3, 'four'],
      ['b', 1, 'three'],
      ['a', 1, 'reply'],
    ]);
    expect(b.counters).toEqual({ sent: 1, received: 3, bundles: 0, dropped: {} });
    tls.client.destroy();
    tls.server.destroy();
  });

  it('refuses replays, reflections, strangers of another session, and text', async () => {
    const { tls, pa, pb, a, b, got } = await pair();
    a.send(1, Buffer.from('x'));
    pb.arrive(pa.sent[0]);
    pb.arrive(pa.sent[0]); // replayed by whoever sits on the path
    pa.arrive(pa.sent[0]); // reflected back to its sender
    // The same two nodes, another TLS session (e.g. an older path): its keys open nothing here.
    const other = await session();
    const stranger = new FakePort();
    new DatagramChannel(stranger, exporterOf(other.client), 'client').send(1, Buffer.from('injected'));
    pb.arrive(stranger.sent[0]);
    pb.arrive('text');
    expect(got).toEqual([['b', 1, 'x']]);
    expect(b.counters.dropped).toEqual({ replay: 1, auth: 1, text: 1 });
    expect(a.counters.dropped).toEqual({ auth: 1 });
    for (const s of [tls.client, tls.server, other.client, other.server]) s.destroy();
  });

  it('takes the next epoch (fresh exporter keys) and nothing further ahead', async () => {
    const { tls, pb, b, got } = await pair();
    const keysAt = (epoch: number) => {
      const ctx = Buffer.alloc(4);
      ctx.writeUInt32BE(epoch);
      return splitExported(tls.client.exportKeyingMaterial(EXPORTER_BYTES, EXPORTER_LABEL, ctx), 'client')
        .send;
    };
    pb.arrive(sealDatagram(keysAt(1), 1, EPOCH_SEQS, Buffer.from('epoch 1')));
    pb.arrive(sealDatagram(keysAt(3), 1, 3 * EPOCH_SEQS, Buffer.from('epoch 3')));
    pb.arrive(sealDatagram(keysAt(0), 1, EPOCH_SEQS + 1, Buffer.from('old key, new epoch')));
    expect(got).toEqual([['b', 1, 'epoch 1']]);
    expect(b.counters.dropped).toEqual({ 'no-key': 1, auth: 1 });
    tls.client.destroy();
    tls.server.destroy();
  });

  it('drops instead of queueing when the SCTP layer holds too much or the channel closed', async () => {
    const { tls, pa, a } = await pair();
    pa.buffered = 300 * 1024;
    expect(a.send(1, Buffer.from('late'))).toBe(false);
    pa.buffered = 0;
    pa.close();
    expect(a.open).toBe(false);
    expect(a.send(1, Buffer.from('gone'))).toBe(false);
    expect(a.counters).toEqual({ sent: 0, received: 0, bundles: 0, dropped: { full: 1, closed: 1 } });
    tls.client.destroy();
    tls.server.destroy();
  });

  it("to a bundling peer: one turn's datagrams in one message, split at the size bound, opened one by one", async () => {
    const { tls, pa, pb, a, b, got } = await pair({ bundle: true });
    const big = 'x'.repeat(1500);
    for (const [i, text] of ['one', 'two', big, big, big, 'six'].entries())
      expect(a.send(1 + 2 * (i % 2), Buffer.from(text))).toBe(true);
    // The third 1,500-byte datagram does not fit beside the first four (3,600 bytes of records).
    expect(pa.sent.length).toBe(1);
    await new Promise((r) => setImmediate(r));
    expect(pa.sent.length).toBe(2);
    expect(pa.sent.every((m) => m[0] === 2)).toBe(true);
    // A datagram larger than a bundle goes alone, in version 1.
    expect(a.send(5, Buffer.alloc(4000, 'y'))).toBe(true);
    expect(pa.sent.length).toBe(3);
    expect(pa.sent[2][0]).toBe(1);
    // The second bundle arrives first (unordered channel): both open.
    for (const i of [1, 0, 2]) pb.arrive(pa.sent[i]);
    expect(got.map(([side, stream, p]) => [side, stream, p.length < 10 ? p : p.length])).toEqual([
      ['b', 1, 1500],
      ['b', 3, 'six'],
      ['b', 1, 'one'],
      ['b', 3, 'two'],
      ['b', 1, 1500],
      ['b', 3, 1500],
      ['b', 5, 4000],
    ]);
    expect(a.counters).toEqual({ sent: 7, received: 0, bundles: 2, dropped: {} });
    expect(b.counters).toEqual({ sent: 0, received: 7, bundles: 0, dropped: {} });
    pb.arrive(pa.sent[0]); // a replayed bundle
    expect(b.counters.dropped).toEqual({ replay: 1 });
    tls.client.destroy();
    tls.server.destroy();
  });

  it('bundles: the buffered bound is checked when one starts; a close before the turn drops it (counted)', async () => {
    const { tls, pa, a } = await pair({ bundle: true });
    pa.buffered = 300 * 1024;
    expect(a.send(1, Buffer.from('late'))).toBe(false);
    pa.buffered = 0;
    expect(a.send(1, Buffer.from('queued'))).toBe(true);
    pa.buffered = 300 * 1024; // joins the started bundle: one check per message
    expect(a.send(1, Buffer.from('joins'))).toBe(true);
    pa.isOpenNow = false;
    await new Promise((r) => setImmediate(r));
    expect(pa.sent.length).toBe(0);
    expect(a.counters).toEqual({ sent: 0, received: 0, bundles: 0, dropped: { full: 1, closed: 2 } });
    tls.client.destroy();
    tls.server.destroy();
  });

  it('a peer that does not bundle gets version 1 only; every channel opens bundles', async () => {
    const { tls, pa, pb, a, b, got } = await pair();
    a.send(1, Buffer.from('v1'));
    await new Promise((r) => setImmediate(r));
    expect(pa.sent.map((m) => m[0])).toEqual([1]);
    pb.arrive(pa.sent[0]);
    // b's session from a bundling end (another port, the same keys): a, which did not say it bundles, still opens it.
    const pc = new FakePort();
    new DatagramChannel(pc, exporterOf(tls.server), 'server', { bundle: true }).send(1, Buffer.from('v2'));
    await new Promise((r) => setImmediate(r));
    expect(pc.sent.map((m) => m[0])).toEqual([2]);
    pa.arrive(pc.sent[0]);
    expect(got).toEqual([
      ['b', 1, 'v1'],
      ['a', 1, 'v2'],
    ]);
    expect(b.counters.dropped).toEqual({});
    tls.client.destroy();
    tls.server.destroy();
  });

  it('prefers a second port (the datagram lane) while it is open, with its smaller bundles; both ports open the same way', async () => {
    const { tls, pa, pb, a, b, got } = await pair({ bundle: true });
    const lane = Object.assign(new FakePort(), { maxBundle: 1_200 });
    lane.isOpenNow = false;
    a.prefer(lane);
    // Lane not up: the first port carries the bundle (one message for both datagrams).
    a.send(1, Buffer.from('sctp-1'));
    a.send(1, Buffer.from('sctp-2'));
    await new Promise((r) => setImmediate(r));
    expect([pa.sent.length, lane.sent.length]).toEqual([1, 0]);
    lane.isOpenNow = true;
    // Lane up: ten 500-byte datagrams go as bundles of at most 1,200 bytes of records (2 each).
    for (let i = 0; i < 10; i++) a.send(3, Buffer.alloc(500, 48 + i));
    await new Promise((r) => setImmediate(r));
    expect(pa.sent.length).toBe(1);
    expect(lane.sent.length).toBe(5);
    expect(Math.max(...lane.sent.map((m) => m.length))).toBeLessThanOrEqual(1_200 + 25);
    for (const m of [...pa.sent, ...lane.sent]) pb.arrive(m);
    expect(got.filter(([side]) => side === 'b').length).toBe(12);
    // What the peer's lane brings is opened too (the same keys, sequence and replay window).
    const peerLane = new FakePort();
    b.prefer(peerLane);
    b.send(5, Buffer.from('back'));
    await new Promise((r) => setImmediate(r));
    lane.arrive(peerLane.sent[0]);
    lane.arrive(peerLane.sent[0]); // a replay: dropped
    expect(got.filter(([side]) => side === 'a')).toEqual([['a', 5, 'back']]);
    expect(a.counters.dropped.replay).toBe(1);
    // The lane closing does not close the channel: back to the first port.
    lane.close();
    expect(a.open).toBe(true);
    a.send(1, Buffer.from('again'));
    await new Promise((r) => setImmediate(r));
    expect(pa.sent.length).toBe(2);
    a.close();
    b.close();
    tls.client.destroy();
    tls.server.destroy();
  });
});
