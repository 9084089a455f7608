import { once } from 'node:events';
import { duplexPair } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { splice } from './splice.ts';
import { readText } from './testing/streams.ts';

/**
 * Two connections in memory: `a` and `b` are the splice's ends, `peerA` / `peerB` the far
 * ends (what the pod, upstream, tunnel or gateway on the other side would hold).
 */
function ends(opts: { bHighWaterMark?: number } = {}) {
  const [peerA, a] = duplexPair();
  const [peerB, b] = duplexPair(
    opts.bHighWaterMark === undefined ? undefined : { highWaterMark: opts.bHighWaterMark },
  );
  return { peerA, a, peerB, b };
}

function counted() {
  const c = { ends: 0 };
  return { c, onEnd: () => c.ends++ };
}

describe('splice', () => {
  it('carries bytes both ways and ends nothing while both are open', async () => {
    const { peerA, a, peerB, b } = ends();
    const { c, onEnd } = counted();
    splice(a, b, { onEnd });
    peerA.write('to b');
    expect(await readText(peerB, 4)).toBe('to b');
    peerB.write('to a');
    expect(await readText(peerA, 4)).toBe('to a');
    expect(c.ends).toBe(0);
    expect(a.destroyed || b.destroyed).toBe(false);
  });

  it('carries a FIN while the other direction keeps flowing, and ends once when both are done', async () => {
    const { peerA, a, peerB, b } = ends();
    const { c, onEnd } = counted();
    splice(a, b, { onEnd });
    peerA.end('last');
    expect(await readText(peerB, 4)).toBe('last');
    const bEnded = once(peerB, 'end');
    peerB.read();
    await bEnded;
    peerB.write('still open');
    expect(await readText(peerA, 10)).toBe('still open');
    expect(c.ends).toBe(0);
    peerB.end();
    peerA.resume();
    await Promise.all([once(a, 'close'), once(b, 'close')]);
    expect(c.ends).toBe(1);
  });

  it('a reset on one side destroys the other and ends once', async () => {
    const { a, b } = ends();
    const { c, onEnd } = counted();
    splice(a, b, { onEnd });
    const bClosed = once(b, 'close');
    a.destroy(new Error('ECONNRESET'));
    await bClosed;
    expect(b.destroyed).toBe(true);
    await sleep(5);
    expect(c.ends).toBe(1);
  });

  it('a close without a clean end (no FIN) destroys the other', async () => {
    const { a, b } = ends();
    const { c, onEnd } = counted();
    splice(a, b, { onEnd });
    const aClosed = once(a, 'close');
    b.destroy();
    await aClosed;
    expect(a.destroyed).toBe(true);
    expect(c.ends).toBe(1);
  });

  it('pauses a source while its destination is full and resumes it on drain', async () => {
    const { peerA, a, peerB, b } = ends({ bHighWaterMark: 4 });
    splice(a, b);
    peerA.write('0123456789');
    await sleep(5);
    expect(a.isPaused()).toBe(true);
    expect(await readText(peerB, 10)).toBe('0123456789');
    await sleep(5);
    expect(a.isPaused()).toBe(false);
  });

  it('pauses a side for as long as onChunk asks, counting each chunk from its side', async () => {
    const { peerA, a, peerB, b } = ends();
    const chunks: ['a' | 'b', number][] = [];
    splice(a, b, {
      onChunk: (from, bytes) => {
        chunks.push([from, bytes]);
        return from === 'a' ? 40 : 0;
      },
    });
    peerA.write('12345');
    expect(await readText(peerB, 5)).toBe('12345');
    expect(a.isPaused()).toBe(true); // charged: the limit holds it though b has room
    peerB.write('123');
    expect(await readText(peerA, 3)).toBe('123');
    await sleep(80);
    expect(a.isPaused()).toBe(false);
    expect(chunks).toEqual([
      ['a', 5],
      ['b', 3],
    ]);
  });

  it('a drain during a rate-limit pause does not lift the limit', async () => {
    const { peerA, a, peerB, b } = ends({ bHighWaterMark: 4 });
    splice(a, b, { onChunk: (from) => (from === 'a' ? 60 : 0) });
    peerA.write('0123456789'); // fills b and charges a: both hold a
    expect(await readText(peerB, 10)).toBe('0123456789'); // b drains well within the limit
    await sleep(10);
    expect(a.isPaused()).toBe(true);
    await sleep(80);
    expect(a.isPaused()).toBe(false);
  });

  it('bSinked: carries only b’s FIN to a (its bytes flow to a by other means)', async () => {
    const { peerA, a, peerB, b } = ends();
    splice(a, b, { bSinked: true });
    peerB.write('not through splice');
    await sleep(5);
    expect(a.writableLength + peerA.readableLength).toBe(0);
    expect(b.readableLength).toBe(18); // splice does not read b: the dialer does
    b.resume();
    const aEnded = once(peerA, 'end');
    peerB.end();
    peerA.resume();
    await aEnded;
  });

  it('finByClose: a FIN to a side that has read its own peer’s FIN and has nothing queued is a close', async () => {
    const { peerA, a, peerB, b } = ends();
    splice(a, b, { finByClose: true });
    peerB.end(); // b reads its peer's FIN: carried to a by end() (a has not read one)
    peerA.resume();
    await once(peerA, 'end');
    expect(a.destroyed).toBe(false);
    peerA.end(); // now a's FIN goes to b, which has read its peer's FIN and queues nothing
    peerB.resume();
    await once(b, 'close');
    expect(b.destroyed).toBe(true);
  });
});
