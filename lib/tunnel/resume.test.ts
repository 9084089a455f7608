import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { type Duplex, duplexPair } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeFrame, FrameType } from './frame.ts';
import { MuxSession, type MuxStream } from './mux.ts';
import { ResumeBook, type ResumeOutcome } from './resume.ts';

/**
 * Resumable streams over in-process socket pairs: a "path" is a duplexPair with a session at
 * each end; cutting it destroys both sockets, dropping whatever was in flight in the pair, as
 * a killed relay drops what it held.
 */
const sessions: MuxSession[] = [];
afterEach(() => {
  for (const s of sessions.splice(0)) s.close();
});

interface Side {
  book: ResumeBook;
  outcomes: ResumeOutcome[];
}

function side(opts: { waitMs?: number; retainLimit?: number } = {}): Side {
  const outcomes: ResumeOutcome[] = [];
  return { book: new ResumeBook({ ...opts, outcome: (o) => outcomes.push(o) }), outcomes };
}

function path(
  a: Side | undefined,
  b: Side | undefined,
  onStream?: (s: MuxStream) => void,
): { client: MuxSession; server: MuxSession; cut: () => void; clientSocket: Duplex } {
  const [x, y] = duplexPair();
  const client = new MuxSession(x, { role: 'client', peer: 'b', resume: a?.book, window: 256 * 1024 });
  const server = new MuxSession(y, { role: 'server', peer: 'a', resume: b?.book, window: 256 * 1024 });
  if (onStream) server.on('stream', (s) => onStream(s));
  sessions.push(client, server);
  return {
    client,
    server,
    clientSocket: x,
    cut: () => {
      x.destroy();
      y.destroy();
    },
  };
}

/** The far end echoes everything back, and ends when the opener ends. */
function echo(s: MuxStream): void {
  s.accept();
  s.on('error', () => undefined);
  s.pipe(s);
}

/** Features are asked at a session's start: streams opened after the answer are resumable. */
const featuresKnown = () => new Promise((r) => setTimeout(r, 20));

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Reads a stream to its end; rejects on its error. */
function collect(s: Duplex): { done: Promise<Buffer>; bytes: () => number } {
  const parts: Buffer[] = [];
  let n = 0;
  const done = new Promise<Buffer>((resolve, reject) => {
    s.on('data', (c: Buffer) => {
      parts.push(c);
      n += c.length;
    });
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
  });
  return { done, bytes: () => n };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe('resumable streams', () => {
  it('a stream survives its path being cut mid-transfer: every byte once, in order, both ways', async () => {
    const a = side();
    const b = side();
    const first = path(a, b, echo);
    await featuresKnown();
    const stream = await first.client.openStream({ ip: '10.1.1.2', port: 80 });
    expect(stream.resumeToken).toBeDefined();
    const payload = randomBytes(6 * 1024 * 1024 + 123);
    const back = collect(stream);
    // The cut falls in the middle of both directions: once 1 MiB came back, with the first
    // half written (some of it on its way out, some echoed on its way back).
    const half = 3 * 1024 * 1024;
    let cut = false;
    stream.on('data', () => {
      if (!cut && back.bytes() > 1024 * 1024) {
        cut = true;
        first.cut();
      }
    });
    for (let at = 0; at < half; at += 64 * 1024 + 7)
      stream.write(payload.subarray(at, Math.min(half, at + 64 * 1024 + 7)));
    await until(() => cut);
    await until(() => b.book.parkedCount === 1 && a.book.parkedCount === 1);
    expect(back.bytes()).toBeLessThan(half);
    // The rest is written while parked: it waits, then goes on the new path.
    stream.end(payload.subarray(half));
    // A new path to the same peer: the opener asks to carry on there.
    const second = path(a, b, echo);
    a.book.resumeOn(second.client);
    const got = await back.done;
    expect(got.length).toBe(payload.length);
    expect(sha(got)).toBe(sha(payload));
    expect(a.outcomes).toEqual(['parked', 'resumed']);
    expect(b.outcomes).toEqual(['parked', 'resumed']);
    expect(a.book.retained).toBe(0);
  });

  it('streams move to a better path while both are up: every byte once, the old path keeps no stream', async () => {
    const a = side();
    const b = side();
    const relay = path(a, b, echo);
    const direct = path(a, b, echo);
    await featuresKnown();
    const stream = await relay.client.openStream({ ip: '10.1.1.2', port: 80 });
    const payload = randomBytes(4 * 1024 * 1024 + 5);
    const back = collect(stream);
    const half = 2 * 1024 * 1024;
    let moved = -1;
    stream.on('data', () => {
      if (moved < 0 && back.bytes() > 512 * 1024) moved = relay.client.moveStreams(direct.client);
    });
    for (let at = 0; at < half; at += 64 * 1024 + 7)
      stream.write(payload.subarray(at, Math.min(half, at + 64 * 1024 + 7)));
    await until(() => moved >= 0);
    expect(moved).toBe(1);
    stream.end(payload.subarray(half));
    const got = await back.done;
    expect(sha(got)).toBe(sha(payload));
    expect(relay.client.streamCount).toBe(0);
    expect(relay.client.usable).toBe(true);
    expect(a.outcomes).toEqual(['moved', 'resumed']);
    expect(b.outcomes).toEqual(['resumed']);
  });

  it("a session's first stream, opened before the peer's answer, is made resumable once it comes", async () => {
    const a = side();
    const b = side();
    const first = path(a, b, echo);
    const stream = await first.client.openStream({ ip: '10.1.1.2', port: 80 });
    const back = collect(stream);
    stream.write(Buffer.from('before '));
    await until(() => stream.resumeToken !== undefined);
    // Not before the far end is known to hold the token (a PONG behind the RESUMABLE).
    await until(() => stream.resumable);
    // The far end has what was sent before the stream was resumable: a resume needs none of it.
    await until(() => back.bytes() === 7);
    first.cut();
    await until(() => a.book.parkedCount === 1 && b.book.parkedCount === 1);
    const second = path(a, b, echo);
    a.book.resumeOn(second.client);
    stream.end(Buffer.from('and after'));
    expect((await back.done).toString()).toBe('before and after');
  });

  it('a FIN lost with the path is sent again; one that arrived is not repeated', async () => {
    const a = side();
    const b = side();
    let far: MuxStream | undefined;
    const first = path(a, b, (s) => {
      far = s;
      s.accept();
    });
    await featuresKnown();
    const stream = await first.client.openStream({ ip: '10.1.1.2', port: 80 });
    const farGot = new Promise<Buffer>((resolve) => {
      const parts: Buffer[] = [];
      const check = () => {
        if (!far) return setTimeout(check, 1);
        far.on('data', (c: Buffer) => parts.push(c));
        far.on('end', () => resolve(Buffer.concat(parts)));
      };
      check();
    });
    stream.end(Buffer.from('hello'));
    await new Promise((r) => setImmediate(r));
    // Cut before the far end could answer anything: it may or may not have the FIN.
    first.cut();
    await until(() => a.book.parkedCount === 1 && b.book.parkedCount === 1);
    const back = collect(stream);
    const second = path(a, b);
    a.book.resumeOn(second.client);
    expect((await farGot).toString()).toBe('hello');
    far?.end(Buffer.from('world'));
    expect((await back.done).toString()).toBe('world');
  });

  it('a parked stream nobody resumes is reset after the wait, with the reason', async () => {
    const a = side({ waitMs: 50 });
    const b = side({ waitMs: 50 });
    const first = path(a, b, echo);
    await featuresKnown();
    const stream = await first.client.openStream({ ip: '10.1.1.2', port: 80 });
    const errored = once(stream, 'error');
    first.cut();
    const [err] = await errored;
    expect((err as Error).message).toMatch(/lost its path: no new path to the peer within 50 ms/);
    expect(a.outcomes).toEqual(['parked', 'expired']);
  });

  it('a peer that no longer has the stream refuses the resume: the opener fails, says why', async () => {
    const a = side();
    const b = side({ waitMs: 20 });
    const first = path(a, b, echo);
    await featuresKnown();
    const stream = await first.client.openStream({ ip: '10.1.1.2', port: 80 });
    const errored = once(stream, 'error');
    first.cut();
    await until(() => b.outcomes.includes('expired'));
    const second = path(a, b);
    a.book.resumeOn(second.client);
    const [err] = await errored;
    expect((err as Error).message).toMatch(/could not be resumed by b: no stream to resume/);
    expect(a.outcomes).toEqual(['parked', 'refused']);
  });

  it('without a book on either side streams are not resumable: a cut resets them as before', async () => {
    for (const [x, y] of [
      [side(), undefined],
      [undefined, side()],
    ] as const) {
      const p = path(x, y, echo);
      await featuresKnown();
      const stream = await p.client.openStream({ ip: '10.1.1.2', port: 80 });
      expect(stream.resumeToken).toBeUndefined();
      const errored = once(stream, 'error');
      p.cut();
      const [err] = await errored;
      expect((err as Error).message).toMatch(/closed|ended/);
    }
  });

  it('past the retain bound a stream stops being resumable (bounded memory), and a cut resets it', async () => {
    const a = side({ retainLimit: 64 * 1024 });
    const b = side();
    const first = path(a, b, (s) => s.accept()); // reads nothing: credit never comes back
    await featuresKnown();
    const stream = await first.client.openStream({ ip: '10.1.1.2', port: 80 });
    stream.on('error', () => undefined);
    stream.write(randomBytes(200 * 1024));
    await until(() => a.outcomes.includes('given-up'));
    expect(stream.resumeToken).toBeUndefined();
    expect(a.book.retained).toBe(0);
    const closed = new Promise((r) => stream.once('close', r));
    first.cut();
    await closed;
    expect(a.outcomes).toEqual(['given-up']);
  });

  it('a RESUME for a token this peer never gave is refused, the session carries on', async () => {
    const a = side();
    const b = side();
    const p = path(a, b, echo);
    await featuresKnown();
    const good = await p.client.openStream({ ip: '10.1.1.2', port: 80 });
    // Raw frames from "a": a RESUME naming a token b never saw, on a fresh odd id.
    p.clientSocket.write(
      encodeFrame({
        type: FrameType.RESUME,
        stream: 1001,
        token: randomBytes(16),
        position: { received: 0, credited: 0, finReceived: false },
      }),
    );
    await until(() => b.outcomes.includes('refused'));
    expect(p.server.usable).toBe(true);
    const back = collect(good);
    good.end(Buffer.from('still here'));
    expect((await back.done).toString()).toBe('still here');
  });
});
