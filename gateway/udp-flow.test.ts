import dgram from 'node:dgram';
import { duplexPair } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../lib/catalog/store.ts';
import { type EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import { splice } from '../lib/splice.ts';
import { DatagramDecoder, encodeDatagram, ResetCode } from '../lib/tunnel/frame.ts';
import { MuxSession } from '../lib/tunnel/mux.ts';
import { LocalDialer } from './streams.ts';
import { loopbackCatalog } from './test-fixtures.ts';
import {
  DEFAULT_MAX_QUEUED_BYTES,
  DEFAULT_MAX_QUEUED_DATAGRAMS,
  DEFAULT_UDP_IDLE_MS,
  dialUdpFlow,
  FlowSweeper,
  REPLY_HIGH_WATER_BYTES,
  type UdpFlow,
  udpFlowCounters,
} from './udp-flow.ts';
import { followUdpIdle } from './udp-idle.ts';

/** A UDP echo server on 127.0.0.3 answering "echo:<datagram>" (empty stays empty). */
let echo: dgram.Socket;
let port: number;
let dialer: LocalDialer;

beforeAll(async () => {
  echo = dgram.createSocket('udp4');
  echo.on('message', (msg, from) =>
    echo.send(msg.length === 0 ? msg : Buffer.concat([Buffer.from('echo:'), msg]), from.port, from.address),
  );
  await new Promise<void>((resolve) => echo.bind(0, '127.0.0.3', resolve));
  port = echo.address().port;
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: loopbackUdpCatalog() });
  dialer = new LocalDialer('far', store, 1000);
});
afterAll(() => echo?.close());

/** The pod on node "far" serves UDP on `port` (and, in the same slice, nothing on TCP). */
function loopbackUdpCatalog() {
  const catalog = structuredClone(
    loopbackCatalog([{ name: 'udp-1', ip: '127.0.0.3', node: 'far', ports: [port] }]),
  );
  for (const e of catalog.services['demo/echo'].endpoints) e.ports = [{ name: 'dns', port, protocol: 'UDP' }];
  return catalog;
}

function replies(flow: UdpFlow): Buffer[] {
  const dec = new DatagramDecoder();
  const got: Buffer[] = [];
  flow.on('data', (c: Buffer) => got.push(...dec.push(c)));
  return got;
}

async function until(ok: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('UdpFlow', () => {
  it('sends each framed datagram as one datagram and frames the replies, however the bytes were cut', async () => {
    const flow = await dialer.dialUdp({ ip: '127.0.0.3', port });
    const got = replies(flow);
    const bytes = Buffer.concat([
      encodeDatagram(Buffer.from('a')),
      encodeDatagram(Buffer.from('bc')),
      encodeDatagram(Buffer.alloc(0)),
    ]);
    for (const b of bytes) flow.write(Buffer.from([b])); // one byte at a time
    await until(() => got.length === 3);
    expect(got.map(String).sort()).toEqual(['', 'echo:a', 'echo:bc']);
    flow.destroy();
  });

  it('a burst both ways: every datagram sent and every reply framed, in order (replies of one turn in one push)', async () => {
    const flow = await dialer.dialUdp({ ip: '127.0.0.3', port });
    const got = replies(flow);
    const want = Array.from({ length: 40 }, (_, i) => Buffer.from(`d${i}`));
    flow.write(Buffer.concat(want.map((d) => encodeDatagram(d)))); // one chunk, 40 datagrams
    await until(() => got.length === want.length);
    // UDP on loopback keeps order; a lost one would show as a missing or reordered reply.
    expect(got).toEqual(want.map((d) => Buffer.concat([Buffer.from('echo:'), d])));
    flow.destroy();
  });

  it('the dialer allows only UDP ports of local pod endpoints (the TCP rule, for UDP)', async () => {
    await expect(dialer.dialUdp({ ip: '127.0.0.3', port: port + 1 })).rejects.toMatchObject({
      code: ErrorCodes.DIAL_REFUSED,
      message: expect.stringContaining(`127.0.0.3:${port + 1}/udp is not an endpoint of a pod on node far`),
    });
    // The same port as TCP is not an endpoint: the slice lists it as UDP only.
    await expect(dialer.dial({ ip: '127.0.0.3', port })).rejects.toMatchObject({
      code: ErrorCodes.DIAL_REFUSED,
    });
    await expect(dialer.dial({ ip: '127.0.0.1', port: 53, transport: 'udp' })).rejects.toMatchObject({
      code: ErrorCodes.DIAL_REFUSED,
    });
  });

  it('a datagram length over the maximum fails the flow (the stream is reset)', async () => {
    const flow = await dialUdpFlow({ ip: '127.0.0.3', port });
    const failed = new Promise<Error>((resolve) => flow.once('error', resolve));
    flow.write(Buffer.from('ffff', 'hex'));
    expect((await failed).message).toContain('over the 65507-byte maximum');
  });

  it('goes idle on the sweep: ends its readable side (FIN), then is destroyed if the opener never ends', async () => {
    let now = 1_000_000;
    const sweeper = new FlowSweeper(60_000, () => now);
    const flow = await dialUdpFlow({ ip: '127.0.0.3', port }, { idleMs: 30_000, sweeper });
    const got = replies(flow);
    const ended = new Promise<void>((resolve) => flow.once('end', () => resolve()));
    flow.write(encodeDatagram(Buffer.from('x')));
    await until(() => got.length === 1);
    now += 29_000;
    sweeper.sweep();
    expect(flow.readableEnded).toBe(false);
    now += 31_000; // past the reply's activity too
    const idleBefore = udpFlowCounters.idleClosed;
    sweeper.sweep();
    await ended;
    expect(udpFlowCounters.idleClosed).toBe(idleBefore + 1);
    const dropped = udpFlowCounters.requestsDropped;
    flow.write(encodeDatagram(Buffer.from('late')));
    await new Promise((r) => setImmediate(r));
    expect(udpFlowCounters.requestsDropped).toBe(dropped + 1);
    now += 30_000;
    sweeper.sweep();
    expect(flow.destroyed).toBe(true);
    expect(sweeper.size).toBe(0);
    expect(sweeper.flowsTo(flow.targetKey)).toBeUndefined(); // its index by target forgets it too
  });

  it("the dialer gives a flow its Service's idle (edgemesh.io/udp-idle-timeout): 60 s is alive after 31 s", async () => {
    let now = 1_000_000;
    const sweeper = new FlowSweeper(60_000, () => now);
    const catalog = loopbackUdpCatalog();
    catalog.services['demo/echo'].service.udpIdleTimeoutMs = 60_000;
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog });
    const annotated = new LocalDialer('far', store, 1000, undefined, { sweeper });
    const flow = await annotated.dialUdp({ ip: '127.0.0.3', port });
    const got = replies(flow);
    flow.write(encodeDatagram(Buffer.from('x')));
    await until(() => got.length === 1);
    now += 31_000; // past the gateway's default 30 s
    sweeper.sweep();
    expect(flow.readableEnded).toBe(false);
    flow.write(encodeDatagram(Buffer.from('still')));
    await until(() => got.length === 2);
    expect(got.map(String)).toEqual(['echo:x', 'echo:still']);
    now += 61_000; // past the Service's 60 s since the last datagram
    const ended = new Promise<void>((resolve) => flow.once('end', () => resolve()));
    sweeper.sweep();
    await ended;
    flow.destroy();
    // Without the annotation the same dialer keeps its default: idle after 30 s.
    delete catalog.services['demo/echo'].service.udpIdleTimeoutMs;
    store.apply({ type: 'snapshot', catalog: structuredClone(catalog) });
    const plain = await annotated.dialUdp({ ip: '127.0.0.3', port });
    const plainEnded = new Promise<void>((resolve) => plain.once('end', () => resolve()));
    plain.resume();
    now += 31_000;
    sweeper.sweep();
    await plainEnded;
    expect(plain.readableEnded).toBe(true);
    plain.destroy();
  });

  describe('a changed udp-idle-timeout applies to open flows (followUdpIdle)', () => {
    /**
     * demo/echo (UDP `port`) and demo/other (UDP `port + 1`, same pod), annotated as given;
     * one flow to each, dialled at `now`; the follower on the test's sweeper.
     */
    async function twoServices(echoMs: number | undefined, otherMs: number | undefined) {
      const clock = { now: 1_000_000 };
      const sweeper = new FlowSweeper(60_000, () => clock.now);
      const catalog = loopbackUdpCatalog();
      const other = structuredClone(catalog.services['demo/echo']);
      other.service.name = 'other';
      for (const e of other.endpoints) e.ports = [{ name: 'dns', port: port + 1, protocol: 'UDP' }];
      catalog.services['demo/other'] = other;
      const annotate = (entry: typeof other, ms: number | undefined) => {
        const copy = structuredClone(entry);
        delete copy.service.udpIdleTimeoutMs;
        if (ms !== undefined) copy.service.udpIdleTimeoutMs = ms;
        return copy;
      };
      catalog.services['demo/echo'] = annotate(catalog.services['demo/echo'], echoMs);
      catalog.services['demo/other'] = annotate(other, otherMs);
      const store = new CatalogStore();
      store.apply({ type: 'snapshot', catalog });
      const unfollow = followUdpIdle(store, { sweeper });
      const local = new LocalDialer('far', store, 1000, undefined, { sweeper });
      const echoFlow = await local.dialUdp({ ip: '127.0.0.3', port });
      const otherFlow = await local.dialUdp({ ip: '127.0.0.3', port: port + 1 });
      echoFlow.resume();
      otherFlow.resume();
      let revision = catalog.revision;
      const setEcho = (ms: number | undefined) =>
        store.apply({
          type: 'service',
          revision: ++revision,
          key: 'demo/echo',
          entry: annotate(store.current?.services['demo/echo'] as typeof other, ms),
        });
      /** One sweep at `now`, then a turn for the FIN to be read. */
      const sweepAt = async (ms: number) => {
        clock.now += ms;
        sweeper.sweep();
        await new Promise((r) => setImmediate(r));
      };
      const done = () => {
        unfollow();
        echoFlow.destroy();
        otherFlow.destroy();
      };
      return { echoFlow, otherFlow, setEcho, sweepAt, done };
    }

    it("shortened: a flow idle longer than the new timeout ends at the next sweep; another Service's flow is kept", async () => {
      const { echoFlow, otherFlow, setEcho, sweepAt, done } = await twoServices(60_000, 60_000);
      try {
        await sweepAt(20_000); // both idle 20 s
        expect(echoFlow.readableEnded).toBe(false);
        setEcho(10_000);
        expect(echoFlow.idleMs).toBe(10_000);
        await sweepAt(1_000);
        expect(echoFlow.readableEnded).toBe(true);
        expect(otherFlow.readableEnded).toBe(false); // demo/other keeps its 60 s
        expect(otherFlow.idleMs).toBe(60_000);
        await sweepAt(40_000); // idle 61 s
        expect(otherFlow.readableEnded).toBe(true);
      } finally {
        done();
      }
    });

    it('lengthened: a flow is kept past the timeout it was dialled with', async () => {
      const { echoFlow, otherFlow, setEcho, sweepAt, done } = await twoServices(10_000, 10_000);
      try {
        await sweepAt(5_000);
        setEcho(60_000);
        await sweepAt(25_000); // idle 30 s
        expect(otherFlow.readableEnded).toBe(true); // demo/other: its 10 s
        expect(echoFlow.readableEnded).toBe(false);
        await sweepAt(31_000); // idle 61 s
        expect(echoFlow.readableEnded).toBe(true);
      } finally {
        done();
      }
    });

    it("removed: the flow falls back to the dialer's default (30 s)", async () => {
      const { echoFlow, otherFlow, setEcho, sweepAt, done } = await twoServices(120_000, 120_000);
      try {
        setEcho(undefined);
        expect(echoFlow.idleMs).toBe(DEFAULT_UDP_IDLE_MS);
        expect(() => echoFlow.retime(0)).toThrow(
          /udp flow to 127\.0\.0\.3:\d+: idle timeout must be > 0 ms, got 0/,
        );
        await sweepAt(DEFAULT_UDP_IDLE_MS + 1_000);
        expect(echoFlow.readableEnded).toBe(true);
        expect(otherFlow.readableEnded).toBe(false);
      } finally {
        done();
      }
    });
  });

  it('an opener that ends and a flow gone idle finish cleanly: destroyed, out of the sweep', async () => {
    let now = 0;
    const sweeper = new FlowSweeper(60_000, () => now);
    const flow = await dialUdpFlow({ ip: '127.0.0.3', port }, { idleMs: 1000, sweeper });
    flow.resume();
    flow.end(encodeDatagram(Buffer.from('bye')));
    now += 2000;
    sweeper.sweep();
    await until(() => flow.destroyed);
    expect(sweeper.size).toBe(0);
  });

  it('drops replies the stream cannot take instead of queueing them', async () => {
    const flow = await dialUdpFlow({ ip: '127.0.0.3', port }, { maxQueuedBytes: 64 });
    // Not read: replies wait in the readable buffer until the bound.
    const before = udpFlowCounters.repliesDropped;
    for (let i = 0; i < 20; i++) flow.write(encodeDatagram(Buffer.from(`datagram-${i}`)));
    await until(() => udpFlowCounters.repliesDropped > before);
    expect(flow.readableLength).toBeLessThanOrEqual(64);
    flow.destroy();
  });

  /**
   * Sends `n` requests of `size` bytes (the echo answers each with "echo:" + it), `chunk` at a
   * time, each chunk waiting until the flow has taken or dropped every reply so far (so the
   * kernel's socket buffers never overflow unseen). Replies are all one size, so the readable
   * buffer's length says how many wait. Returns [queued, dropped].
   */
  async function unreadReplies(
    flow: UdpFlow,
    n: number,
    size: number,
    chunk: number,
  ): Promise<[number, number]> {
    const framed = 2 + 5 + size;
    const dropped0 = udpFlowCounters.repliesDropped;
    const queued = () => flow.readableLength / framed;
    for (let sent = 0; sent < n; ) {
      const k = Math.min(chunk, n - sent);
      const d = encodeDatagram(Buffer.alloc(size, 0x61));
      flow.write(Buffer.concat(Array.from({ length: k }, () => d)));
      sent += k;
      await until(() => queued() + udpFlowCounters.repliesDropped - dropped0 === sent);
    }
    return [queued(), udpFlowCounters.repliesDropped - dropped0];
  }

  it(`1,000 small replies to an opener that does not read: ${DEFAULT_MAX_QUEUED_DATAGRAMS} wait past the high-water mark, the rest dropped; a read restarts the count`, async () => {
    const flow = await dialUdpFlow({ ip: '127.0.0.3', port });
    const [queued, dropped] = await unreadReplies(flow, 1000, 64, 50);
    // What the readable side took before push() returned false: its 16 KiB mark, plus the
    // rest of that turn's batch (≤ 50 here).
    const beforeBackpressure = Math.ceil(REPLY_HIGH_WATER_BYTES / 71) + 50;
    expect(flow.waitingDatagrams).toBe(DEFAULT_MAX_QUEUED_DATAGRAMS);
    expect(queued).toBeLessThanOrEqual(beforeBackpressure + DEFAULT_MAX_QUEUED_DATAGRAMS);
    expect(queued * 71).toBeLessThan(DEFAULT_MAX_QUEUED_BYTES); // the count bound, not bytes
    expect(dropped).toBe(1000 - queued);
    // The opener reads: _read is asked for more, the count restarts, replies queue again.
    const dec = new DatagramDecoder();
    let read = 0;
    for (let c = flow.read() as Buffer | null; c; c = flow.read() as Buffer | null)
      read += dec.push(c).length;
    expect(read).toBe(queued);
    expect(flow.waitingDatagrams).toBeUndefined();
    const got = replies(flow);
    flow.write(encodeDatagram(Buffer.from('again')));
    await until(() => got.length === 1);
    expect(String(got[0])).toBe('echo:again');
    flow.destroy();
  });

  it('large replies are still bounded by bytes', async () => {
    const flow = await dialUdpFlow({ ip: '127.0.0.3', port });
    const size = 4000;
    const [queued, dropped] = await unreadReplies(flow, 1000, size, 20);
    expect(queued).toBeGreaterThan(0);
    expect(queued * (size + 7)).toBeLessThanOrEqual(DEFAULT_MAX_QUEUED_BYTES); // 65 of 4,007 framed
    expect(flow.waitingDatagrams ?? 0).toBeLessThan(DEFAULT_MAX_QUEUED_DATAGRAMS);
    expect(dropped).toBe(1000 - queued);
    flow.destroy();
  });

  it('through a mux session, as the tunnel far end joins it: datagram stream in, replies back', async () => {
    const [a, b] = duplexPair();
    const near = new MuxSession(a, { role: 'client', peer: 'far' });
    const far = new MuxSession(b, { role: 'server', peer: 'near' });
    // What gateway/tunnel/session.ts does with a peer's stream.
    far.on('stream', (stream, target) => {
      dialer.dial(target).then(
        (conn) => {
          stream.accept();
          splice(stream, conn);
        },
        (err: EdgemeshError) =>
          stream.refuse(
            err.code === ErrorCodes.DIAL_REFUSED ? ResetCode.REFUSED : ResetCode.DIAL_FAILED,
            err.message,
          ),
      );
    });
    try {
      const stream = await near.openStream({ ip: '127.0.0.3', port, transport: 'udp' });
      const dec = new DatagramDecoder();
      const got: Buffer[] = [];
      stream.on('data', (c: Buffer) => got.push(...dec.push(c)));
      stream.write(Buffer.concat([encodeDatagram(Buffer.from('one')), encodeDatagram(Buffer.from('two'))]));
      await until(() => got.length === 2);
      expect(got.map(String).sort()).toEqual(['echo:one', 'echo:two']);
      // A TCP stream to the UDP-only port is refused at the far end.
      await expect(near.openStream({ ip: '127.0.0.3', port })).rejects.toMatchObject({
        code: ErrorCodes.DIAL_REFUSED,
      });
      stream.destroy();
    } finally {
      near.close();
      far.close();
    }
  });
});
