import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeFeedLine, LineSplitter } from '../lib/catalog/feed.ts';
import { type FeedEvent, GatewayFeedSource } from '../lib/catalog/feed-source.ts';
import { CatalogBuilder } from '../lib/catalog/from-objects.ts';
import { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog } from '../lib/catalog/types.ts';
import { silentLogger } from '../lib/log.ts';
import { waitFor } from '../test/harness/netns.ts';
import { encodeSnapshotPieces, FeedHub } from './feed.ts';
import { type Gateway, startGateway } from './gateway.ts';
import { loopbackCatalog } from './test-fixtures.ts';

// The catalog feed both ways over real TCP sockets on 127.0.0.1: the gateway's server with
// the sidecar's GatewayFeedSource, the source against a hostile server, and the gateway's
// wire output read by a raw socket.
const tmp = mkdtempSync(join(tmpdir(), 'emc-feed-'));
const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  rmSync(tmp, { recursive: true, force: true });
});

const fast = { retryInitialMs: 20, retryMaxMs: 100, log: silentLogger };

function gatewayAt(port: number, stateDir: string): Promise<Gateway> {
  return startGateway({
    nodeName: 'edge-a',
    stateDir,
    listenHost: '127.0.0.1',
    listenPort: port,
    clusterDomain: 'cluster.local',
    log: silentLogger,
    persistDelayMs: 10,
  });
}

function source(port: number, events: FeedEvent[] = []) {
  const store = new CatalogStore();
  const feed = new GatewayFeedSource({ host: '127.0.0.1', port, ...fast, onEvent: (e) => events.push(e) });
  cleanups.push(() => feed.stop());
  return { store, feed, events };
}

describe('feed: gateway server ↔ GatewayFeedSource', () => {
  it('a client that came before any catalog gets the first snapshot, then every increment', async () => {
    const gw = await gatewayAt(0, join(tmp, 'g1'));
    cleanups.push(() => gw.close());
    const port = (gw.server.address() as net.AddressInfo).port;
    const clients = [source(port), source(port), source(port)];
    for (const c of clients) await c.feed.start(c.store);
    await waitFor(
      () =>
        gw.registry.getSingleMetricAsString('edgemesh_gateway_feed_clients').then((m) => m.endsWith(' 3')),
      5000,
      20,
      '3 clients',
    );
    expect(clients.every((c) => !c.store.synced)).toBe(true);

    // The gateway's catalog arrives (as from the API), then changes object by object.
    const builder = new CatalogBuilder();
    gw.store.apply({ type: 'snapshot', catalog: builder.catalog });
    const catalog = loopbackCatalog([
      { name: 'p1', ip: '10.244.1.1', node: 'edge-a', ports: [80] },
      { name: 'p2', ip: '10.244.2.1', node: 'edge-b', ports: [80, 81] },
    ]);
    const events: Array<[string, unknown]> = [
      [
        'Service',
        {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { namespace: 'demo', name: 'echo' },
          spec: { clusterIP: '10.96.0.10', ports: [{ port: 7 }] },
        },
      ],
      [
        'Pod',
        {
          metadata: { namespace: 'demo', name: 'p1' },
          spec: { nodeName: 'edge-a' },
          status: { podIP: '10.244.1.1' },
        },
      ],
      [
        'Node',
        {
          metadata: { name: 'edge-a' },
          status: { addresses: [{ type: 'InternalIP', address: '192.168.10.11' }] },
        },
      ],
    ];
    for (const [kind, obj] of events) {
      for (const u of builder.handle(kind as 'Service', 'add', obj)) expect(gw.store.apply(u)).toBe(true);
    }
    for (const c of clients) {
      await waitFor(
        () => c.store.current?.revision === gw.store.current?.revision,
        5000,
        20,
        'client caught up',
      );
      expect(c.store.current).toEqual(gw.store.current);
    }
    // A later snapshot replaces everything.
    gw.store.apply({ type: 'snapshot', catalog: { ...catalog, revision: 50 } });
    for (const c of clients) await waitFor(() => c.store.current?.revision === 50, 5000, 20, 'snapshot 50');
    expect(clients[0].store.current).toEqual({ ...catalog, revision: 50 });
  });

  it('keeps the last catalog while the gateway is down and resyncs from its persisted catalog', async () => {
    const stateDir = join(tmp, 'g2');
    let gw = await gatewayAt(0, stateDir);
    const port = (gw.server.address() as net.AddressInfo).port;
    const first = loopbackCatalog([{ name: 'p1', ip: '10.244.1.1', node: 'edge-a', ports: [80] }], 7);
    gw.store.apply({ type: 'snapshot', catalog: first });
    const c = source(port);
    await c.feed.start(c.store);
    await waitFor(() => c.store.current?.revision === 7, 5000, 20, 'first snapshot');

    await gw.close(); // persists revision 7
    await waitFor(() => c.events.some((e) => e.kind === 'disconnected'), 5000, 20, 'disconnect seen');
    expect(c.store.current).toEqual(first); // still serving
    expect(c.feed.connected).toBe(false);

    gw = await gatewayAt(port, stateDir); // restart on the same port: serves the persisted catalog
    cleanups.push(() => gw.close());
    expect(gw.store.current).toEqual(first);
    await waitFor(() => c.feed.connected, 5000, 20, 'reconnected');
    const snapshots = c.events.filter((e) => e.kind === 'snapshot');
    expect(snapshots.map((e) => e.kind === 'snapshot' && e.revision)).toEqual([7, 7]);
  });
});

/** A server under the test's control, speaking whatever it is told to. */
async function scriptedServer(script: (socket: net.Socket, connection: number) => void) {
  let connections = 0;
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.once('data', () => script(socket, ++connections));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((r) => server.close(r)));
  return { port: (server.address() as net.AddressInfo).port, connections: () => connections };
}

describe('feed: GatewayFeedSource against a misbehaving gateway', () => {
  const good = loopbackCatalog([{ name: 'p1', ip: '10.244.1.1', node: 'edge-a', ports: [80] }], 3);
  const snapshot = encodeFeedLine({ type: 'snapshot', catalog: good });
  const node = (revision: number) =>
    encodeFeedLine({ type: 'node', revision, name: 'edge-x', node: { name: 'edge-x', addresses: [] } });

  const cases: Array<[string, string, RegExp]> = [
    ['a gap in revisions', snapshot + node(4) + node(6), /revision gap: at 4, got 6/],
    [
      'an invalid line',
      `${snapshot}{"type":"pod","revision":4,"ip":"10.0.0.999","pod":null}\n`,
      /invalid feed line: ip: must be an IP/,
    ],
    ['a line that is not JSON', `${snapshot}hello\n`, /invalid feed line: feed line is not JSON/],
    ['an increment before any snapshot', node(4), /did not start with a snapshot/],
    [
      'a keepalive ahead of the catalog',
      `${snapshot}{"type":"keepalive","revision":9}\n`,
      /missed updates: at revision 3, gateway at 9/,
    ],
    [
      'an ERR reply',
      'ERR EDGEMESH_ERR_UNAVAILABLE overloaded\n',
      /gateway refused: EDGEMESH_ERR_UNAVAILABLE overloaded/,
    ],
    [
      'an overlong line',
      `${snapshot}{"type":"node","x":"${'y'.repeat(70_000)}`,
      /feed line longer than 65536 bytes/,
    ],
  ];
  for (const [what, text, reason] of cases) {
    it(`drops the connection on ${what}, keeps the catalog, reconnects`, async () => {
      const server = await scriptedServer((socket) => socket.write(text));
      const events: FeedEvent[] = [];
      const store = new CatalogStore();
      const feed = new GatewayFeedSource({
        host: '127.0.0.1',
        port: server.port,
        ...fast,
        maxLineBytes: 65_536,
        onEvent: (e) => events.push(e),
      });
      cleanups.push(() => feed.stop());
      await feed.start(store);
      await waitFor(() => server.connections() >= 3, 5000, 20, 'reconnects');
      const reasons = events
        .filter((e) => e.kind === 'disconnected')
        .map((e) => e.kind === 'disconnected' && e.reason);
      expect(reasons[0]).toMatch(reason);
      if (text.startsWith(snapshot)) expect(store.current?.revision).toBeGreaterThanOrEqual(3);
      else expect(store.synced).toBe(false);
      await feed.stop();
    });
  }

  it('reconnects after silence longer than the idle timeout', async () => {
    const server = await scriptedServer((socket) => socket.write(snapshot)); // then nothing, no keepalive
    const events: FeedEvent[] = [];
    const store = new CatalogStore();
    const feed = new GatewayFeedSource({
      host: '127.0.0.1',
      port: server.port,
      ...fast,
      idleTimeoutMs: 150,
      onEvent: (e) => events.push(e),
    });
    cleanups.push(() => feed.stop());
    await feed.start(store);
    await waitFor(() => server.connections() >= 2, 5000, 20, 'reconnect after idle');
    expect(events.find((e) => e.kind === 'disconnected')).toMatchObject({ reason: 'no data for 150 ms' });
    expect(store.current).toEqual(good);
    await feed.stop();
  });

  it('backs off between attempts when nothing listens', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r)); // a port where nothing listens now
    const events: FeedEvent[] = [];
    const feed = new GatewayFeedSource({
      host: '127.0.0.1',
      port,
      retryInitialMs: 10,
      retryMaxMs: 80,
      onEvent: (e) => events.push(e),
    });
    await feed.start(new CatalogStore());
    await waitFor(() => events.length >= 6, 5000, 10, 'attempts');
    await feed.stop();
    const delays = events.map((e) => (e.kind === 'disconnected' ? e.retryInMs : 0));
    expect(delays[0]).toBeLessThanOrEqual(12);
    expect(Math.max(...delays)).toBeGreaterThanOrEqual(64); // grew towards the cap
    expect(Math.max(...delays)).toBeLessThanOrEqual(96); // 80 + 20% jitter
  });
});

describe('feed: the gateway wire seen by a raw client', () => {
  async function hubServer(store: CatalogStore, opts: ConstructorParameters<typeof FeedHub>[1]) {
    const hub = new FeedHub(store, opts);
    const server = net.createServer((socket) => hub.attach(socket, 'test'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      hub.close();
      return new Promise((r) => server.close(r));
    });
    return { hub, port: (server.address() as net.AddressInfo).port };
  }

  it('sends the snapshot line, increments, and keepalives with the current revision', async () => {
    const store = new CatalogStore();
    const catalog: Catalog = loopbackCatalog(
      [{ name: 'p1', ip: '10.244.1.1', node: 'edge-a', ports: [80] }],
      5,
    );
    store.apply({ type: 'snapshot', catalog });
    const { port } = await hubServer(store, { keepaliveMs: 50 });
    const socket = net.connect({ port, host: '127.0.0.1' });
    cleanups.push(() => socket.destroy());
    const lines: string[] = [];
    const splitter = new LineSplitter();
    socket.on('data', (c: Buffer) => lines.push(...splitter.push(c)));
    await waitFor(() => lines.length >= 1, 5000, 10, 'snapshot line');
    expect(`${lines[0]}\n`).toBe(encodeFeedLine({ type: 'snapshot', catalog }));
    store.apply({
      type: 'node',
      revision: 6,
      name: 'edge-b',
      node: { name: 'edge-b', addresses: ['192.168.20.12'] },
    });
    // Keepalives may come at any moment (every 50 ms): look at the lines around them.
    const afterUpdate = () => lines.slice(lines.findIndex((l) => l.includes('"edge-b"')) + 1);
    await waitFor(() => afterUpdate().some((l) => l.includes('"keepalive"')), 5000, 10, 'keepalive');
    const increments = lines.slice(1).filter((l) => !l.includes('"keepalive"'));
    expect(increments.map((l) => JSON.parse(l))).toEqual([
      { type: 'node', revision: 6, name: 'edge-b', node: { name: 'edge-b', addresses: ['192.168.20.12'] } },
    ]);
    const keepalives = lines.filter((l) => l.includes('"keepalive"')).map((l) => JSON.parse(l));
    expect(keepalives.every((k) => k.revision === 5 || k.revision === 6)).toBe(true);
    expect(JSON.parse(afterUpdate().find((l) => l.includes('keepalive')) as string)).toEqual({
      type: 'keepalive',
      revision: 6,
    });
  });

  // n pods (copies of one built pod under other addresses): enough to cut into pieces.
  const manyPods = (n: number): Catalog => {
    const base = loopbackCatalog([{ name: 'p0', ip: '10.244.0.0', node: 'edge-a', ports: [80, 443] }], 3);
    const pod = Object.values(base.pods)[0];
    const pods: Catalog['pods'] = {};
    for (let i = 0; i < n; i++) pods[`10.244.${i >> 8}.${i & 255}`] = { ...pod, name: `p${i}` } as typeof pod;
    return { ...base, pods };
  };

  it('encodes a snapshot in pieces that make the same line as one JSON.stringify', () => {
    const catalog = manyPods(2000);
    const pieces = encodeSnapshotPieces(catalog);
    expect(pieces.length).toBeGreaterThan(2); // the record is cut between entries
    expect(Buffer.concat(pieces).toString()).toBe(encodeFeedLine({ type: 'snapshot', catalog }));
    const small = loopbackCatalog([], 9);
    expect(Buffer.concat(encodeSnapshotPieces(small)).toString()).toBe(
      encodeFeedLine({ type: 'snapshot', catalog: small }),
    );
  });

  async function readLines(port: number, count: number): Promise<string[]> {
    const socket = net.connect({ port, host: '127.0.0.1' });
    cleanups.push(() => socket.destroy());
    const lines: string[] = [];
    const splitter = new LineSplitter();
    socket.on('data', (c: Buffer) =>
      lines.push(...splitter.push(c).filter((l) => !l.includes('"keepalive"'))),
    );
    await waitFor(() => lines.length >= count, 5000, 10, `${count} lines`);
    return lines;
  }

  it('encodes a snapshot only when a client asks, once per revision for all the clients at it', async () => {
    const store = new CatalogStore();
    const { hub, port } = await hubServer(store, {});
    // A catalog arriving (a restart's persisted one, the API's first build) with no FEED
    // client: nothing encoded.
    const first = manyPods(500);
    store.apply({ type: 'snapshot', catalog: first });
    store.apply({
      type: 'node',
      revision: 4,
      name: 'edge-b',
      node: { name: 'edge-b', addresses: ['192.168.20.12'] },
    });
    expect(hub.snapshotsEncodedForTest).toBe(0);
    // Many clients at once at revision 4: one encoding, the same line to each.
    const at4 = await Promise.all(Array.from({ length: 20 }, () => readLines(port, 1)));
    expect(hub.snapshotsEncodedForTest).toBe(1);
    const expected = encodeFeedLine({ type: 'snapshot', catalog: store.current as Catalog });
    for (const lines of at4) expect(`${lines[0]}\n`).toBe(expected);
    // A new snapshot while they are connected: encoded once for all of them.
    const second = { ...manyPods(300), revision: 10 };
    store.apply({ type: 'snapshot', catalog: second });
    expect(hub.snapshotsEncodedForTest).toBe(2);
    await waitFor(() => hub.clients === 20, 5000, 10, 'clients');
  });

  it('drops a client that does not read', async () => {
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: loopbackCatalog([], 1) });
    const { hub, port } = await hubServer(store, { maxBufferedBytes: 256 * 1024 });
    const socket = net.connect({ port, host: '127.0.0.1' });
    cleanups.push(() => socket.destroy());
    socket.pause(); // never reads
    await waitFor(() => hub.clients === 1, 5000, 10, 'attached');
    const big = loopbackCatalog(
      Array.from({ length: 200 }, (_, i) => ({
        name: `p${i}`,
        ip: `10.244.${i >> 8}.${i & 255}`,
        node: 'edge-a',
        ports: [80],
      })),
    );
    let revision = 1;
    for (let i = 0; i < 400 && hub.clients > 0; i++) {
      store.apply({ type: 'snapshot', catalog: { ...big, revision: ++revision } });
      await new Promise((r) => setImmediate(r));
    }
    await waitFor(() => hub.clients === 0, 5000, 10, 'slow client dropped');
  });
});
