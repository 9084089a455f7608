import { once } from 'node:events';
import { duplexPair } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../lib/log.ts';
import { readText } from '../lib/testing/streams.ts';
import { RelaySplicer } from './relay-splice.ts';

/** Two relay legs in memory: each gateway's end and the server's end of its connection. */
function legs() {
  const [gwA, legA] = duplexPair();
  const [gwB, legB] = duplexPair();
  return { gwA, legA, gwB, legB };
}

function splicer(charge?: (node: string, bytes: number) => number) {
  const m = { relays: 0, bytes: 0 };
  const s = new RelaySplicer({
    limiter: charge ? { charge } : undefined,
    metrics: {
      relays: { inc: () => m.relays++, dec: () => m.relays-- },
      relayBytes: { inc: (n) => (m.bytes += n) },
    },
    log: silentLogger,
  });
  return { s, m };
}

describe('RelaySplicer', () => {
  it('carries bytes both ways and counts the session per node and the bytes', async () => {
    const { s, m } = splicer();
    const { gwA, legA, gwB, legB } = legs();
    s.splice('edge-a', legA, 'edge-b', legB);
    expect([s.active('edge-a'), s.active('edge-b'), m.relays]).toEqual([1, 1, 1]);
    gwA.write('hello b');
    expect(await readText(gwB, 7)).toBe('hello b');
    gwB.write('hi a');
    expect(await readText(gwA, 4)).toBe('hi a');
    expect(m.bytes).toBe(11);
  });

  it('keeps the other direction open after a clean half-close, ends when both are done', async () => {
    const { s, m } = splicer();
    const { gwA, legA, gwB, legB } = legs();
    s.splice('edge-a', legA, 'edge-b', legB);
    gwA.end('last from a');
    expect(await readText(gwB, 11)).toBe('last from a');
    const bEnded = once(gwB, 'end');
    gwB.read();
    await bEnded;
    gwB.write('still open');
    expect(await readText(gwA, 10)).toBe('still open');
    expect(m.relays).toBe(1);
    const closed = once(legB, 'close');
    gwB.end();
    gwA.resume();
    await closed;
    expect([s.active('edge-a'), s.active('edge-b'), m.relays]).toEqual([0, 0, 0]);
    expect(s.activeByNode.size).toBe(0);
  });

  it('a reset on one leg ends both', async () => {
    const { s, m } = splicer();
    const { legA, legB } = legs();
    s.splice('edge-a', legA, 'edge-b', legB);
    const bClosed = once(legB, 'close');
    legA.destroy(new Error('ECONNRESET'));
    await bClosed;
    expect(legB.destroyed).toBe(true);
    expect(m.relays).toBe(0);
    expect(s.active('edge-a')).toBe(0);
  });

  it('charges each chunk to the node that sent it', async () => {
    const charged: [string, number][] = [];
    const { s } = splicer((node, bytes) => {
      charged.push([node, bytes]);
      return 0;
    });
    const { gwA, legA, gwB, legB } = legs();
    s.splice('edge-a', legA, 'edge-b', legB);
    gwA.write('12345');
    await readText(gwB, 5);
    gwB.write('123');
    await readText(gwA, 3);
    expect(charged).toEqual([
      ['edge-a', 5],
      ['edge-b', 3],
    ]);
  });

  it('counts one node in two relays twice', () => {
    const { s } = splicer();
    const one = legs();
    const two = legs();
    s.splice('edge-a', one.legA, 'edge-b', one.legB);
    s.splice('edge-c', two.legA, 'edge-a', two.legB);
    expect(Object.fromEntries(s.activeByNode)).toEqual({ 'edge-a': 2, 'edge-b': 1, 'edge-c': 1 });
  });
});
