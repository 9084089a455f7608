import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { fuzzSeed, replayInput } from '../../test/harness/fuzz.ts';
import { type FeedEvent, GatewayFeedSource } from './feed-source.ts';
import { CatalogStore } from './store.ts';
import { feedTarget } from './testing/fuzz.ts';
import { validateCatalog } from './validate.ts';

// The sidecar's feed client against a hostile "gateway" on loopback: every connection gets
// one fuzzed feed (lib/catalog/testing/fuzz.ts) in the reads the input names, then is closed.
// The source must drop each bad feed with a reason of its own (never a TypeError), keep
// reconnecting, and only ever publish valid catalogs.
const CONNECTIONS = 300;
const seed = fuzzSeed(1609);
let served = 0;
const server = net.createServer((socket) => {
  const input = replayInput(feedTarget, seed, served++);
  socket.on('error', () => undefined);
  socket.once('data', () => {
    let from = 0;
    for (const cut of [...input.cuts, input.bytes.length]) {
      socket.write(input.bytes.subarray(from, cut));
      from = cut;
    }
    socket.end();
  });
});
afterAll(() => server.close());

describe('fuzz: catalog feed source over a socket', () => {
  it(`drops ${CONNECTIONS} fuzzed feeds with its own reasons and publishes only valid catalogs`, async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const store = new CatalogStore();
    const invalid: string[] = [];
    store.subscribe((catalog) => {
      try {
        validateCatalog(JSON.parse(JSON.stringify(catalog)));
      } catch (err) {
        invalid.push((err as Error).message);
      }
    });
    const reasons: string[] = [];
    let done: () => void;
    const finished = new Promise<void>((r) => {
      done = r;
    });
    const source = new GatewayFeedSource({
      host: '127.0.0.1',
      port: (server.address() as net.AddressInfo).port,
      retryInitialMs: 1,
      retryMaxMs: 1,
      maxLineBytes: 256 * 1024,
      onEvent: (e: FeedEvent) => {
        if (e.kind !== 'disconnected') return;
        reasons.push(e.reason);
        if (reasons.length >= CONNECTIONS) done();
      },
    });
    await source.start(store);
    await finished;
    await source.stop();
    expect(invalid).toEqual([]);
    expect(reasons.filter((r) => /Cannot read|is not a function|is not iterable/.test(r))).toEqual([]);
    // Some feeds were good enough to apply (the fuzz is not all noise).
    expect(store.current).toBeDefined();
  });
});
