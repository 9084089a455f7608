import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { type Duplex, duplexPair } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { EdgemeshError, ErrorCodes } from '../errors.ts';
import { ReceiveBudget } from './budget.ts';
import { DatagramDecoder, encodeDatagram, encodeFrame, FrameDecoder, FrameType, ResetCode } from './frame.ts';
import { type DatagramPath, MuxSession, type MuxStream, type MuxSession as Session } from './mux.ts';

const sessions: Session[] = [];
function pair(window?: number): {
  client: Session;
  server: Session;
  serverSocket: Duplex;
  clientSocket: Duplex;
} {
  const [a, b] = duplexPair();
  const client = new MuxSession(a, { role: 'client', peer: 'server', window });
  const server = new MuxSession(b, { role: 'server', peer: 'client', window });
  sessions.push(client, server);
  return { client, server, clientSocket: a, serverSocket: b };
}
afterEach(() => {
  for (const s of sessions.splice(0)) s.close();
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
async function readAll(s: Duplex): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

describe('mux session', () => {
  it('carries a stream both ways with half-close, intact', async () => {
    const { client, server } = pair();
    server.on('stream', (stream, target) => {
      expect(target).toEqual({ ip: '10.1.1.2', port: 8080 });
      stream.accept();
      // Echo, then keep writing after the opener half-closed: half-close is one-way.
      readAll(stream).then((got) => {
        stream.write(createHash('sha256').update(got).digest());
        stream.end(Buffer.from('after-fin'));
      });
    });
    const stream = await client.openStream({ ip: '10.1.1.2', port: 8080 });
    const payload = randomBytes(5 * 1024 * 1024 + 17);
    const reply = readAll(stream);
    stream.end(payload);
    const got = await reply;
    expect(got.subarray(0, 32).toString('hex')).toBe(sha(payload));
    expect(got.subarray(32).toString()).toBe('after-fin');
    await new Promise((r) => setImmediate(r));
    // Both halves closed: the stream is gone from both sessions.
    expect(client.streamCount).toBe(0);
    expect(server.streamCount).toBe(0);
  });

  it('many concurrent streams stay separate', async () => {
    const { client, server } = pair();
    server.on('stream', (stream) => {
      stream.accept();
      stream.pipe(stream);
    });
    const results = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const s = await client.openStream({ ip: '10.0.0.1', port: 1000 + i });
        const data = randomBytes(20_000 + i);
        const back = readAll(s);
        s.end(data);
        return (await back).equals(data);
      }),
    );
    expect(results.every(Boolean)).toBe(true);
  });

  it('a reader that keeps up grants credit in quarter-window batches, not one WINDOW per DATA frame', async () => {
    const window = 1024 * 1024;
    const { client, server } = pair(window);
    const windowFrames: number[] = [];
    const send = server.send.bind(server);
    server.send = (f) => {
      if (f.type === FrameType.WINDOW) windowFrames.push(f.increment);
      send(f);
    };
    const got = new Promise<Buffer>((resolve) =>
      server.on('stream', (stream) => {
        stream.accept();
        // Flowing mode, as pipe() reads: each DATA frame is handed on as it arrives.
        const parts: Buffer[] = [];
        stream.on('data', (c: Buffer) => parts.push(c));
        stream.on('end', () => resolve(Buffer.concat(parts)));
      }),
    );
    const s = await client.openStream({ ip: '10.0.0.1', port: 1 });
    const data = randomBytes(4 * 1024 * 1024);
    // One frame at a time, so the reader's buffer runs empty after each.
    for (let at = 0; at < data.length; at += 64 * 1024) {
      s.write(data.subarray(at, at + 64 * 1024));
      await new Promise((r) => setImmediate(r));
    }
    s.end();
    expect(sha(await got)).toBe(sha(data));
    // 64 DATA frames of 64 KiB; credit comes back in grants of ≥ 256 KiB (≤ 16 of them).
    expect(windowFrames.length).toBeLessThanOrEqual(data.length / (window / 4));
    expect(windowFrames.every((n) => n >= window / 4)).toBe(true);
  });

  it('backpressure: a reader that stops reading stalls its writer at about one window', async () => {
    const window = 256 * 1024;
    const { client, server } = pair(window);
    let far: MuxStream | undefined;
    server.on('stream', (stream) => {
      stream.accept();
      stream.pause();
      far = stream;
    });
    const s = await client.openStream({ ip: '10.0.0.1', port: 1 });
    const total = 4 * 1024 * 1024;
    for (let i = 0; i < total / (64 * 1024); i++) s.write(Buffer.alloc(64 * 1024, i));
    s.end();
    await new Promise((r) => setTimeout(r, 100));
    expect(far).toBeDefined();
    const stalled = far as MuxStream;
    // At most one window crossed over; the rest waits on the writer's side.
    expect(stalled.readableLength).toBeLessThanOrEqual(window);
    expect(stalled.readableLength).toBeGreaterThan(0);
    expect(s.writableLength).toBeGreaterThanOrEqual(total - window);
    // Reading again releases the writer and everything arrives.
    const got = await readAll(stalled);
    expect(got.length).toBe(total);
    expect(got[total - 1]).toBe((total / (64 * 1024) - 1) & 0xff);
  });

  it('a refused stream rejects with the far side reason and code', async () => {
    const { client, server } = pair();
    server.on('stream', (stream) =>
      stream.refuse(ResetCode.REFUSED, '10.9.9.9:22 is not a pod endpoint on node b'),
    );
    const err = await client.openStream({ ip: '10.9.9.9', port: 22 }).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.DIAL_REFUSED);
    expect(err.message).toMatch(/not a pod endpoint/);
    // The session survives a refused stream.
    expect(client.usable).toBe(true);
  });

  it('a bad frame closes only that session, with a clear error', async () => {
    const bad = pair();
    const good = pair();
    good.server.on('stream', (s) => {
      s.accept();
      s.pipe(s);
    });
    const closed = once(bad.server, 'close');
    bad.clientSocket.write(Buffer.from('0203000000000001000000010a', 'hex'));
    const [err] = await closed;
    expect((err as Error).message).toMatch(/unsupported protocol version 2/);
    expect(bad.server.closed).toBe(true);
    const s = await good.client.openStream({ ip: '10.0.0.1', port: 1 });
    const back = readAll(s);
    s.end('still fine');
    expect((await back).toString()).toBe('still fine');
  });

  it('a peer that sends past its window is cut off', async () => {
    const window = 64 * 1024;
    const { client, server, clientSocket } = pair(window);
    server.on('stream', (s) => {
      s.accept();
      s.pause();
    });
    await client.openStream({ ip: '10.0.0.1', port: 1 });
    const closed = once(server, 'close');
    // Bypass the stream's own flow control and write raw DATA frames past the window.
    for (let i = 0; i < 3; i++) {
      clientSocket.write(
        encodeFrame({ type: FrameType.DATA, stream: 1, data: Buffer.alloc(window / 2 + 1) }),
      );
    }
    const [err] = await closed;
    expect((err as Error).message).toMatch(/past its window/);
  });

  it('measures RTT with PING and refuses streams after GOAWAY while open ones finish', async () => {
    const { client, server } = pair();
    server.on('stream', (s) => {
      s.accept();
      s.pipe(s);
    });
    expect(await client.ping()).toBeGreaterThanOrEqual(0);
    expect(client.rttMs).toBeDefined();
    const open = await client.openStream({ ip: '10.0.0.1', port: 1 });
    server.goAway('draining');
    await new Promise((r) => setTimeout(r, 20));
    expect(client.usable).toBe(false);
    await expect(client.openStream({ ip: '10.0.0.1', port: 2 })).rejects.toThrow(/closing/);
    const back = readAll(open);
    open.end('finishes');
    expect((await back).toString()).toBe('finishes');
  });

  it('a peer that sends PINGs and never reads is cut once the queue passes its bound', async () => {
    const [a, b] = duplexPair();
    let slow = 0;
    const session = new MuxSession(a, {
      role: 'server',
      peer: 'flooder',
      maxQueuedBytes: 64 * 1024,
      onSlowReader: () => slow++,
    });
    sessions.push(session);
    const closed = once(session, 'close');
    // b is never read: every PONG stays queued on a. 64 KiB of PONGs is ~3,800 of them.
    const ping = encodeFrame({ type: FrameType.PING, stream: 0, opaque: Buffer.alloc(8) });
    for (let i = 0; i < 10_000 && !session.closed; i++) b.write(ping);
    const [err] = await closed;
    expect((err as Error).message).toMatch(/flooder does not read: \d+ bytes queued \(limit 65536\)/);
    expect(slow).toBe(1);
    // Destroyed: the buffered writes are freed; what is left is the one write in flight (the
    // session joins a turn's answers into one write), which the never-reading side holds.
    expect(a.destroyed).toBe(true);
    expect(a.writableLength).toBeLessThanOrEqual(64 * 1024 + ping.length);
  });

  it('DATA waits for the socket to drain: many writers queue about one window, not one each', async () => {
    const window = 256 * 1024;
    const { client, server, serverSocket, clientSocket } = pair(window);
    const received: Promise<Buffer>[] = [];
    server.on('stream', (s) => {
      s.accept();
      received.push(readAll(s));
    });
    const streams = await Promise.all(
      Array.from({ length: 16 }, (_, i) => client.openStream({ ip: '10.0.0.1', port: i + 1 })),
    );
    serverSocket.pause(); // the peer stops reading its socket
    const data = randomBytes(1024 * 1024);
    for (const s of streams) s.end(data);
    await new Promise((r) => setTimeout(r, 100));
    // Without waiting for drain, each stream would queue its whole window (16 × 256 KiB).
    expect(clientSocket.writableLength).toBeLessThanOrEqual(window + 64 * 1024 + 64);
    serverSocket.resume();
    const got = await Promise.all(received);
    expect(got.map(sha)).toEqual(got.map(() => sha(data)));
    expect(server.closed).toBe(false);
  });

  it('a stream listener that throws refuses that stream only; the others keep flowing', async () => {
    const { client, server } = pair();
    server.on('stream', (s, target) => {
      // As a dialer that refuses synchronously did (LocalDialer.check throwing inside dial).
      if (target.port === 22)
        throw new EdgemeshError(ErrorCodes.DIAL_REFUSED, `${target.ip}:22 is not a pod endpoint`);
      if (target.port === 23) throw new Error('dial exploded');
      s.accept();
      s.pipe(s);
    });
    const echo = await client.openStream({ ip: '10.0.0.1', port: 80 });
    const back = readAll(echo);
    echo.write('before ');
    const refused = await client.openStream({ ip: '10.0.0.1', port: 22 }).catch((e) => e);
    expect(refused.code).toBe(ErrorCodes.DIAL_REFUSED);
    expect(refused.message).toMatch(/not a pod endpoint/);
    const failed = await client.openStream({ ip: '10.0.0.1', port: 23 }).catch((e) => e);
    expect(failed.code).toBe(ErrorCodes.UNAVAILABLE);
    expect(failed.message).toMatch(/dial exploded/);
    echo.end('after');
    expect((await back).toString()).toBe('before after');
    expect(client.usable).toBe(true);
    expect(server.closed).toBe(false);
  });

  it("a peer's unread streams stay inside its budget: the fullest is reset, new ones refused, readers flow (issue 16 item 8)", async () => {
    const MiB = 1024 * 1024;
    const budget = new ReceiveBudget(4 * MiB);
    let peak = 0;
    const watched = Object.assign(budget, {
      set(this: ReceiveBudget, ...args: Parameters<ReceiveBudget['set']>) {
        ReceiveBudget.prototype.set.apply(this, args);
        peak = Math.max(peak, this.total);
      },
    });
    const [a, b] = duplexPair();
    const client = new MuxSession(a, { role: 'client', peer: 'server' });
    let refusedCount = 0;
    const server = new MuxSession(b, {
      role: 'server',
      peer: 'client',
      budget: watched,
      onBudgetRefused: () => refusedCount++,
    });
    sessions.push(client, server);
    server.on('stream', (stream, target) => {
      stream.on('error', () => undefined); // the opener resets the unread ones at the end
      stream.accept();
      if (target.port === 80)
        stream.pipe(stream); // echo: reads what arrives
      else stream.pause(); // a target that never reads
    });
    // Eight streams open while the budget is empty, then each fills its whole window.
    const unread = await Promise.all(
      Array.from({ length: 8 }, () => client.openStream({ ip: '10.0.0.1', port: 1 })),
    );
    const errors = unread.map(
      (s) =>
        new Promise<Error | undefined>((resolve) =>
          s.once('error', resolve).once('close', () => resolve(undefined)),
        ),
    );
    for (const s of unread) s.write(Buffer.alloc(MiB, 1));
    await client.ping(); // the server has handled every DATA frame sent before it
    expect(peak).toBeLessThanOrEqual(4 * MiB);
    expect(budget.total).toBe(4 * MiB);
    // Four were reset (the fullest each time the cap was passed), with a reason the opener sees.
    const reset = await Promise.all(errors.slice(0, 4));
    expect(reset.map((e) => e?.message)).toEqual(
      Array(4).fill(
        "stream reset by server: peer's streams hold more than 4194304 bytes unread here; this one held 1048576",
      ),
    );
    // A new stream is refused while a window would not fit.
    const refused = await client.openStream({ ip: '10.0.0.1', port: 1 }).catch((e: Error) => e);
    expect((refused as Error).message).toBe(
      'stream reset by server: your streams hold 4194304 bytes unread here (budget 4194304)',
    );
    expect(refusedCount).toBe(1);
    // The session itself carries on: a stream that reads is not charged, and once unread ones
    // close, new streams fit again.
    for (const s of unread.slice(4)) s.destroy();
    await client.ping();
    expect(budget.total).toBe(0);
    const echo = await client.openStream({ ip: '10.0.0.1', port: 80 });
    const back = readAll(echo);
    const data = randomBytes(3 * MiB);
    echo.end(data);
    expect(sha(await back)).toBe(sha(data));
    expect(server.closed).toBe(false);
    expect(peak).toBeLessThanOrEqual(4 * MiB);
  });

  describe('batching (docs/tunnel.md, Throughput)', () => {
    /** Counts the writes a socket's underlying side gets (a corked batch is one _writev). */
    function countWrites(socket: Duplex): { writes: number } {
      const seen = { writes: 0 };
      const write = socket._write.bind(socket);
      socket._write = (chunk, enc, cb) => {
        seen.writes++;
        write(chunk, enc, cb);
      };
      socket._writev = (chunks, cb) => {
        seen.writes++;
        write(Buffer.concat(chunks.map((c) => c.chunk as Buffer)), 'binary', cb);
      };
      return seen;
    }

    it('full DATA frames written in one turn leave as one socket write, and arrive as one chunk', async () => {
      const { client, server, clientSocket } = pair();
      const chunks: Buffer[] = [];
      const got = new Promise<Buffer>((resolve) =>
        server.on('stream', (stream) => {
          stream.accept();
          stream.on('data', (c: Buffer) => chunks.push(c));
          stream.on('end', () => resolve(Buffer.concat(chunks)));
        }),
      );
      const s = await client.openStream({ ip: '10.0.0.1', port: 1 });
      await new Promise((r) => setImmediate(r));
      const seen = countWrites(clientSocket);
      const data = randomBytes(3 * 64 * 1024);
      // Three full frames in one turn, as three 64 KiB socket reads of a busy sender give.
      for (let at = 0; at < data.length; at += 64 * 1024) s.write(data.subarray(at, at + 64 * 1024));
      await new Promise((r) => setImmediate(r));
      expect(seen.writes).toBe(1); // was 6: a header and a payload write per frame
      s.end();
      expect(sha(await got)).toBe(sha(data));
      expect(chunks.length).toBe(1); // one push (one write to the target), not one per frame
    });

    it('a stream hands on a quarter window at a time however much arrives in one read', async () => {
      const [a, b] = duplexPair();
      const server = new MuxSession(b, { role: 'server', peer: 'client' });
      sessions.push(server);
      const chunks: Buffer[] = [];
      const ended = new Promise<void>((resolve) =>
        server.on('stream', (stream) => {
          stream.accept();
          stream.on('data', (c: Buffer) => chunks.push(c));
          stream.on('end', () => resolve());
        }),
      );
      a.write(encodeFrame({ type: FrameType.OPEN, stream: 1, target: { ip: '10.0.0.1', port: 1 } }));
      await once(server, 'stream');
      // A whole window (16 full frames) and the FIN in one read, as a receiver that fell
      // behind reads them: without the quarter-window hand-on it would push 1 MiB at once.
      const data = randomBytes(server.window);
      const frames: Buffer[] = [];
      for (let at = 0; at < data.length; at += 64 * 1024)
        frames.push(
          encodeFrame({ type: FrameType.DATA, stream: 1, data: data.subarray(at, at + 64 * 1024) }),
        );
      frames.push(encodeFrame({ type: FrameType.FIN, stream: 1 }));
      a.write(Buffer.concat(frames));
      await ended;
      expect(sha(Buffer.concat(chunks))).toBe(sha(data));
      expect(chunks.length).toBe(4);
      expect(Math.max(...chunks.map((c) => c.length))).toBe(server.window / 4);
    });

    it('a short write goes out and is handed to the reader without waiting for the turn', async () => {
      const { client, server, clientSocket } = pair();
      let far: MuxStream | undefined;
      server.on('stream', (stream) => {
        stream.accept();
        far = stream;
      });
      const s = await client.openStream({ ip: '10.0.0.1', port: 1 });
      await new Promise((r) => setImmediate(r));
      const seen = countWrites(clientSocket);
      const parts: Buffer[] = [];
      far?.on('data', (c: Buffer) => parts.push(c));
      s.write(Buffer.from('request'));
      // Within the same turn: the socket got the frame, the far session decoded it (the pair
      // passes bytes on in process.nextTick) and its reader has it.
      expect(seen.writes).toBe(1);
      await new Promise((r) => process.nextTick(r));
      await new Promise((r) => process.nextTick(r));
      expect(Buffer.concat(parts).toString()).toBe('request');
    });

    it('a control frame has left when send returns: a reply, then socket.end(), arrives', async () => {
      const { client, server, serverSocket } = pair();
      const got = once(client, 'control');
      // As the tunnel-server answers an enrolment: sendControl, then end the TLS socket.
      server.sendControl({ t: 'enrolled' });
      serverSocket.end();
      expect((await got)[0]).toEqual({ t: 'enrolled' });
    });

    it('frames queued before close (GOAWAY) still reach the peer', async () => {
      const { client, server } = pair();
      server.goAway('draining'); // no streams: closes at once, after queueing GOAWAY
      expect(server.closed).toBe(true);
      await once(client, 'close');
      expect(client.usable).toBe(false);
    });
  });
});

describe('datagram streams (OPEN_DATAGRAM, negotiated)', () => {
  it('opens a datagram stream to a peer that takes them: the far end sees transport udp', async () => {
    const { client, server } = pair();
    server.on('stream', (stream, target) => {
      expect(target).toEqual({ ip: '10.1.1.2', port: 5353, transport: 'udp' });
      stream.on('error', () => undefined); // closed with the sessions after the test
      stream.accept();
      stream.pipe(stream); // echo the framed datagrams
    });
    const stream = await client.openStream({ ip: '10.1.1.2', port: 5353, transport: 'udp' });
    const dec = new DatagramDecoder();
    const got: Buffer[] = [];
    stream.on('data', (c: Buffer) => got.push(...dec.push(c)));
    stream.write(Buffer.concat([encodeDatagram(Buffer.from('one')), encodeDatagram(Buffer.alloc(0))]));
    await waitUntil(() => got.length === 2);
    expect(got).toEqual([Buffer.from('one'), Buffer.alloc(0)]);
    // Asked once per session: a second stream needs no new question.
    await client.openStream({ ip: '10.1.1.2', port: 5353, transport: 'udp' });
  });

  it('a peer that does not take them refuses cleanly: an error that says so, the session carries on', async () => {
    const [a, b] = duplexPair();
    const client = new MuxSession(a, { role: 'client', peer: 'old-b' });
    const server = new MuxSession(b, { role: 'server', peer: 'client', features: [] });
    sessions.push(client, server);
    server.on('stream', (stream) => {
      stream.on('error', () => undefined);
      stream.accept();
      stream.end('tcp still works');
    });
    await expect(client.openStream({ ip: '10.1.1.2', port: 53, transport: 'udp' })).rejects.toThrow(
      /peer gateway old-b does not take datagram streams .* until it is upgraded/,
    );
    const tcp = await client.openStream({ ip: '10.1.1.2', port: 80 });
    expect((await readAll(tcp)).toString()).toBe('tcp still works');
    expect(client.closed).toBe(false);
  });

  it('a gateway from before them (ignores the question, answers PING) is never sent OPEN_DATAGRAM', async () => {
    const [a, b] = duplexPair();
    const client = new MuxSession(a, { role: 'client', peer: 'v1-peer' });
    sessions.push(client);
    // The old peer: a version-1 decoder that closes on an unknown type, answering only PINGs.
    const seen: number[] = [];
    const decoder = new FrameDecoder();
    b.on('data', (chunk: Buffer) => {
      for (const f of decoder.push(chunk)) {
        seen.push(f.type);
        if (f.type === FrameType.PING)
          b.write(encodeFrame({ type: FrameType.PONG, stream: 0, opaque: f.opaque }));
      }
    });
    await expect(client.openStream({ ip: '10.1.1.2', port: 53, transport: 'udp' })).rejects.toThrow(
      'does not take datagram streams',
    );
    expect(seen).toContain(FrameType.CONTROL);
    expect(seen).not.toContain(FrameType.OPEN_DATAGRAM);
    expect(client.usable).toBe(true);
  });

  it('an OPEN_DATAGRAM to a session that does not take them is RESET REFUSED, not a session error', async () => {
    const [a, b] = duplexPair();
    const server = new MuxSession(b, { role: 'server', peer: 'client', features: [] });
    sessions.push(server);
    server.on('stream', () => expect.unreachable('no stream'));
    const decoder = new FrameDecoder();
    const frames: ReturnType<FrameDecoder['push']> = [];
    a.on('data', (chunk: Buffer) => frames.push(...decoder.push(chunk)));
    a.write(encodeFrame({ type: FrameType.OPEN_DATAGRAM, stream: 1, target: { ip: '10.0.0.1', port: 53 } }));
    await waitUntil(() => frames.length > 0);
    expect(frames[0]).toMatchObject({ type: FrameType.RESET, stream: 1, code: ResetCode.REFUSED });
    expect(server.closed).toBe(false);
  });
});

/**
 * Two ends of a datagram channel in memory: what one sends arrives at the other's onDatagram
 * (on a later turn, as a data channel's message would), unless `open` is false (then send
 * refuses, as the real one does) or `full` (dropped, as past the SCTP bound).
 */
class FakeChannel implements DatagramPath {
  open = true;
  full = false;
  far: FakeChannel | undefined;
  onDatagram: ((stream: number, payload: Buffer) => void) | undefined;
  readonly sentIds: number[] = [];
  send(stream: number, payload: Uint8Array): boolean {
    if (!this.open || this.full) return false;
    this.sentIds.push(stream);
    const copy = Buffer.from(payload);
    setImmediate(() => this.far?.onDatagram?.(stream, copy));
    return true;
  }
  static pair(): [FakeChannel, FakeChannel] {
    const a = new FakeChannel();
    const b = new FakeChannel();
    a.far = b;
    b.far = a;
    return [a, b];
  }
}

function datagramsOf(stream: Duplex): Buffer[] {
  const dec = new DatagramDecoder();
  const got: Buffer[] = [];
  stream.on('data', (c: Buffer) => got.push(...dec.push(c)));
  return got;
}

describe('datagram streams on a bound datagram channel (the UDP path)', () => {
  const echo = (server: Session) =>
    server.on('stream', (stream) => {
      stream.on('error', () => undefined);
      stream.accept();
      stream.pipe(stream);
    });
  const udp = { ip: '10.1.1.2', port: 5353, transport: 'udp' as const };
  const batch = (n: number) =>
    Buffer.concat(Array.from({ length: n }, (_, i) => encodeDatagram(Buffer.from(`d${i}`))));

  it('both ends bound: every datagram both ways goes on the channel, none framed, readers see them framed', async () => {
    const { client, server } = pair();
    const [ca, sa] = FakeChannel.pair();
    client.bindDatagramChannel(ca);
    server.bindDatagramChannel(sa);
    echo(server);
    const stream = await client.openStream(udp);
    const got = datagramsOf(stream);
    // One write cut mid-datagram: the decoder joins the pieces before sending.
    const bytes = Buffer.concat([batch(5), encodeDatagram(Buffer.alloc(0))]);
    stream.write(bytes.subarray(0, 7));
    stream.write(bytes.subarray(7));
    await waitUntil(() => got.length === 6);
    expect(got.map(String).sort()).toEqual(['', 'd0', 'd1', 'd2', 'd3', 'd4']);
    expect(client.datagrams).toMatchObject({ sent: 6, framed: 0, received: 6, refused: 0 });
    expect(server.datagrams).toMatchObject({ sent: 6, framed: 0, received: 6, refused: 0 });
    expect(ca.sentIds.every((id) => id === stream.id)).toBe(true);
  });

  it('falls back to DATA while the channel is not open, back on it once open; a full channel drops, never frames', async () => {
    const { client, server } = pair();
    const [ca, sa] = FakeChannel.pair();
    client.bindDatagramChannel(ca);
    server.bindDatagramChannel(sa);
    echo(server);
    const stream = await client.openStream(udp);
    const got = datagramsOf(stream);
    ca.open = false;
    sa.open = false;
    stream.write(batch(3));
    await waitUntil(() => got.length === 3);
    expect(got.map(String)).toEqual(['d0', 'd1', 'd2']); // framed: in order
    expect(client.datagrams).toMatchObject({ sent: 0, framed: 3 });
    expect(server.datagrams).toMatchObject({ sent: 0, framed: 3 });
    ca.open = true;
    sa.open = true;
    stream.write(batch(2));
    await waitUntil(() => got.length === 5);
    expect(client.datagrams).toMatchObject({ sent: 2, framed: 3 });
    ca.full = true;
    stream.write(batch(4));
    await waitUntil(() => client.datagrams.dropped === 4);
    expect(client.datagrams).toMatchObject({ sent: 2, framed: 3, dropped: 4 });
    expect(server.datagrams.received).toBe(2);
  });

  it('ids that are not an open datagram stream of the session are refused and counted: unknown, TCP, ended', async () => {
    const { client, server } = pair();
    const [ca, sa] = FakeChannel.pair();
    client.bindDatagramChannel(ca);
    server.bindDatagramChannel(sa);
    const serverStreams: MuxStream[] = [];
    server.on('stream', (stream) => {
      stream.on('error', () => undefined);
      serverStreams.push(stream);
      stream.accept();
    });
    const tcp = await client.openStream({ ip: '10.1.1.2', port: 80 });
    const dgram = await client.openStream(udp);
    const [serverTcp, serverDgram] = serverStreams;
    const seen: Buffer[] = [];
    serverTcp.on('data', (c: Buffer) => seen.push(c));
    const got = datagramsOf(serverDgram);
    const deliver = (id: number) => sa.onDatagram?.(id, Buffer.from('x'));
    deliver(tcp.id);
    deliver(999);
    deliver(dgram.id + 2); // the peer's next id, never opened
    expect(server.datagrams).toMatchObject({ refused: 3, received: 0 });
    deliver(dgram.id);
    expect(server.datagrams).toMatchObject({ refused: 3, received: 1 });
    dgram.end(); // FIN: the server's stream takes no more
    await once(serverDgram, 'end');
    deliver(dgram.id);
    expect(server.datagrams).toMatchObject({ refused: 4, received: 1 });
    expect(got.map(String)).toEqual(['x']);
    expect(seen).toEqual([]);
    expect(serverTcp.destroyed).toBe(false); // a stray id fails nothing
  });

  it('a stream holding a window unread drops what the channel brings (counted), never grows past it', async () => {
    const { client, server } = pair(64 * 1024);
    const [ca, sa] = FakeChannel.pair();
    client.bindDatagramChannel(ca);
    server.bindDatagramChannel(sa);
    const serverStreams: MuxStream[] = [];
    server.on('stream', (stream) => {
      stream.on('error', () => undefined);
      serverStreams.push(stream);
      stream.accept();
    });
    const dgram = await client.openStream(udp);
    const s = serverStreams[0]; // nobody reads it
    for (let i = 0; i < 100; i++) sa.onDatagram?.(dgram.id, Buffer.alloc(1000));
    expect(server.datagrams.received + server.datagrams.overflow).toBe(100);
    expect(server.datagrams.overflow).toBeGreaterThan(0);
    expect(s.readableLength).toBeLessThanOrEqual(64 * 1024 + 1002);
  });

  for (const [name, bindClient, bindServer] of [
    ['the peer has no channel bound (an older gateway, or TCP/relay at its end)', true, false],
    ['this end has none bound', false, true],
  ] as const) {
    it(`${name}: framed on the stream as before, nothing on the channel`, async () => {
      const { client, server } = pair();
      const [ca, sa] = FakeChannel.pair();
      if (bindClient) client.bindDatagramChannel(ca);
      if (bindServer) server.bindDatagramChannel(sa);
      echo(server);
      const stream = await client.openStream(udp);
      const got = datagramsOf(stream);
      stream.write(batch(4));
      await waitUntil(() => got.length === 4);
      expect(got.map(String)).toEqual(['d0', 'd1', 'd2', 'd3']);
      expect(ca.sentIds).toEqual([]);
      expect(sa.sentIds).toEqual([]);
      expect(client.datagrams.sent + server.datagrams.sent).toBe(0);
    });
  }

  it('a peer from before the channel (announces only `datagram`) is still asked and answered as before', async () => {
    const [a, b] = duplexPair();
    const client = new MuxSession(a, { role: 'client', peer: 'old' });
    const server = new MuxSession(b, { role: 'server', peer: 'client', features: ['datagram'] });
    sessions.push(client, server);
    client.bindDatagramChannel(FakeChannel.pair()[0]);
    echo(server);
    const stream = await client.openStream(udp);
    const got = datagramsOf(stream);
    stream.write(batch(2));
    await waitUntil(() => got.length === 2);
    expect(client.datagrams).toMatchObject({ sent: 0, framed: 2 });
  });

  it('a channel bound after the first question: the unasked announcement switches new streams to it', async () => {
    const { client, server } = pair();
    echo(server);
    const first = await client.openStream(udp); // features asked and answered: no channel
    const [ca, sa] = FakeChannel.pair();
    client.bindDatagramChannel(ca);
    server.bindDatagramChannel(sa);
    const firstGot = datagramsOf(first);
    first.write(batch(2)); // wrote nothing before the bind: decodes from its first write
    await waitUntil(() => firstGot.length === 2);
    await waitUntil(() => client.datagrams.sent + client.datagrams.framed === 2);
    const second = await client.openStream(udp);
    const got = datagramsOf(second);
    second.write(batch(3));
    await waitUntil(() => got.length === 3);
    expect(ca.sentIds.filter((id) => id === second.id)).toHaveLength(3);
  });
});

async function waitUntil(ok: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
