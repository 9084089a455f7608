import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { LookupHub } from '../../gateway/lookup.ts';
import { CatalogStore } from '../../lib/catalog/store.ts';
import { type Catalog, emptyCatalog, type ServiceEntry } from '../../lib/catalog/types.ts';
import { silentLogger } from '../../lib/log.ts';
import { waitFor } from '../../test/harness/netns.ts';
import { OnDemandCatalog } from './on-demand.ts';

// The sidecar's on-demand catalog against the gateway's real LookupHub, over TCP on
// 127.0.0.1; the server taps what the sidecar sends so the test can count its questions.
const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

const entry = (name: string, ip: string, eps: string[]): ServiceEntry => ({
  service: {
    namespace: 'demo',
    name,
    type: 'ClusterIP',
    clusterIPs: [ip],
    headless: false,
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    sessionAffinity: { type: 'None' },
    lbPolicy: 'round-robin',
    publishNotReadyAddresses: false,
  },
  endpoints: eps.map((e) => ({
    ip: e,
    ready: true,
    serving: true,
    terminating: false,
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  })),
});

const gatewayCatalog = (): Catalog => ({
  ...emptyCatalog(),
  revision: 3,
  services: {
    'demo/web': entry('web', '10.96.0.10', ['10.244.1.7']),
    'demo/db': entry('db', '10.96.0.11', ['10.244.1.8']),
  },
});

/**
 * A gateway stand-in made of the real hub; `sent` collects the sidecar's lines. `old`: as a
 * gateway from before the compact format, whose hub refused a line it did not know (`F 2`)
 * with an error line and closed the connection.
 */
async function gateway(store: CatalogStore, port = 0, opts: { old?: boolean } = {}) {
  const hub = new LookupHub(store, { keepaliveMs: 60_000 });
  const sent: string[] = [];
  const sockets = new Set<net.Socket>();
  const counts = { connections: 0, refused: 0 };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    counts.connections++;
    // As the gateway's server does: the header line first, then the hub takes the rest.
    socket.once('data', (first: Buffer) => {
      const nl = first.indexOf(0x0a);
      expect(first.subarray(0, nl).toString()).toBe('EDGEMESH/1 LOOKUP');
      const tap = (c: Buffer) => sent.push(...c.toString().split('\n').filter(Boolean));
      const start = (early: Buffer) => {
        tap(early);
        socket.on('data', tap);
        hub.attach(socket, 'test', early);
      };
      if (!opts.old) return start(first.subarray(nl + 1));
      const body = (b: Buffer) => {
        if (b.length === 0) return void socket.once('data', body);
        if (!b.toString().startsWith('F ')) return start(b);
        counts.refused++;
        const message = 'expected "Q <id> SVC|NS|IP <arg>" or "U SVC|POD|NS <arg>"';
        socket.end(`${JSON.stringify({ type: 'error', id: null, message })}\n`);
      };
      body(first.subarray(nl + 1));
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  const stop = () => {
    hub.close();
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  };
  cleanups.push(stop);
  return { hub, sent, counts, port: (server.address() as net.AddressInfo).port, stop };
}

async function sidecar(
  port: number,
  opts: { negativeTtlMs?: number; idleMs?: number; sweepMs?: number; lookupTimeoutMs?: number } = {},
) {
  const store = new CatalogStore();
  const source = new OnDemandCatalog({
    host: '127.0.0.1',
    port,
    clusterDomain: 'cluster.local',
    log: silentLogger,
    retryInitialMs: 20,
    retryMaxMs: 50,
    ...opts,
  });
  await source.start(store);
  cleanups.push(() => source.stop());
  await waitFor(() => store.synced, 5000, 5, 'connected');
  return { store, source };
}

const WEB = { kind: 'svc', namespace: 'demo', name: 'web' } as const;

describe('on-demand catalog (sidecar ↔ gateway hub)', () => {
  it('coalesces concurrent misses into one question, holds the answer and takes pushes', async () => {
    const gwStore = new CatalogStore();
    gwStore.apply({ type: 'snapshot', catalog: gatewayCatalog() });
    const gw = await gateway(gwStore);
    const { store, source } = await sidecar(gw.port);
    expect(store.current?.services).toEqual({});
    const results = await Promise.all(Array.from({ length: 10 }, () => source.ensure(WEB)));
    expect(results).toEqual(Array(10).fill('found'));
    expect(gw.sent).toEqual(['F 2', 'Q 1 SVC demo/web']);
    expect(Object.keys(store.current!.services)).toEqual(['demo/web']);
    // Read from the compact answer: the gateway's entry.
    expect(store.current!.services['demo/web']).toEqual(gwStore.current!.services['demo/web']);
    expect(source.ensure(WEB)).toBeUndefined(); // held: answered locally from now on
    // The address of a held service is a separate question; the answer shares the topic.
    expect(await source.ensure({ kind: 'ip', ip: '10.96.0.11' })).toBe('found');
    expect(Object.keys(store.current!.services).sort()).toEqual(['demo/db', 'demo/web']);
    // A change of a held service is pushed into the store.
    const moved = entry('web', '10.96.0.10', ['10.244.1.9']);
    const before = store.current!.revision;
    gwStore.apply({ type: 'service', revision: 4, key: 'demo/web', entry: moved });
    await waitFor(
      () => store.current?.services['demo/web']?.endpoints[0].ip === '10.244.1.9',
      5000,
      5,
      'push',
    );
    // One increment in the sidecar's store (its own numbering: it holds a part of the catalog).
    expect(store.current!.revision).toBe(before + 1);
  });

  it('calls ensureThen callers once each, after the store holds the answer, past a failing one', async () => {
    const gwStore = new CatalogStore();
    gwStore.apply({ type: 'snapshot', catalog: gatewayCatalog() });
    const gw = await gateway(gwStore);
    const { store, source } = await sidecar(gw.port);
    const id = 'svc demo/web';
    const calls: string[] = [];
    const seen = (who: string) => (r: string) => {
      calls.push(`${who} ${r} ${Object.keys(store.current!.services).join()}`);
    };
    expect(source.ensureThen(WEB, id, undefined, seen('a'))).toBe(true);
    // A caller that throws: the others still run and the connection stays up.
    expect(
      source.ensureThen(WEB, id, undefined, () => {
        throw new Error('caller bug');
      }),
    ).toBe(true);
    expect(source.ensureThen(WEB, id, undefined, seen('c'))).toBe(true);
    expect(calls).toEqual([]); // never from inside the call
    await waitFor(() => calls.length === 2, 5000, 5, 'answered');
    expect(calls).toEqual(['a found demo/web', 'c found demo/web']);
    expect(gw.sent).toEqual(['F 2', 'Q 1 SVC demo/web']);
    const memo = {};
    expect(source.ensureThen(WEB, id, memo, seen('held'))).toBe(false); // held: no callback
    expect(source.ensureThen(WEB, id, memo, seen('held'))).toBe(false); // by its ticket
    expect(source.connected).toBe(true);
    // Not connected: 'unavailable', still later than the call.
    await gw.stop();
    await waitFor(() => !source.connected, 5000, 5, 'disconnected');
    const db = { kind: 'svc', namespace: 'demo', name: 'db' } as const;
    expect(source.ensureThen(db, 'svc demo/db', undefined, seen('d'))).toBe(true);
    expect(calls).toHaveLength(2);
    await waitFor(() => calls.length === 3, 5000, 5, 'unavailable');
    expect(calls[2]).toBe('d unavailable demo/web');
  });

  it('asks an older gateway in JSON lines once it refuses the compact format, and asks again later', async () => {
    const gwStore = new CatalogStore();
    gwStore.apply({ type: 'snapshot', catalog: gatewayCatalog() });
    let gw = await gateway(gwStore, 0, { old: true });
    const port = gw.port;
    const { store, source } = await sidecar(port);
    await waitFor(() => gw.counts.connections === 2 && source.connected, 5000, 5, 'reconnected');
    expect(gw.counts.refused).toBe(1);
    expect(await source.ensure(WEB)).toBe('found');
    expect(gw.sent).toEqual(['Q 1 SVC demo/web']); // no F on the second connection
    expect(store.current!.services['demo/web']).toEqual(gwStore.current!.services['demo/web']);
    // The gateway restarts (upgraded, say): the connection after the JSON one asks again.
    await gw.stop();
    gw = await gateway(gwStore, port);
    await waitFor(() => gw.sent.includes('F 2'), 5000, 5, 'asked again');
    await waitFor(() => gw.sent.some((l) => /^Q \d+ SVC demo\/web$/.test(l)), 5000, 5, 're-asked');
    expect(gw.sent[0]).toBe('F 2');
  });

  it('caches negative answers briefly, then asks again', async () => {
    const gwStore = new CatalogStore();
    gwStore.apply({ type: 'snapshot', catalog: gatewayCatalog() });
    const gw = await gateway(gwStore);
    const { source } = await sidecar(gw.port, { negativeTtlMs: 200 });
    const nope = { kind: 'svc', namespace: 'demo', name: 'nope' } as const;
    expect(await source.ensure(nope)).toBe('missing');
    expect(source.ensure(nope)).toBeUndefined();
    const asked: Promise<unknown>[] = [];
    await waitFor(
      () => {
        const p = source.ensure(nope);
        if (p) asked.push(p);
        return p !== undefined;
      },
      5000,
      20,
      'negative answer expired',
    );
    expect(await asked[0]).toBe('missing');
    expect(gw.sent.filter((l) => l.endsWith('SVC demo/nope'))).toHaveLength(2);
  });

  it('lets idle services go (unsubscribing at the gateway)', async () => {
    const gwStore = new CatalogStore();
    gwStore.apply({ type: 'snapshot', catalog: gatewayCatalog() });
    const gw = await gateway(gwStore);
    const { store, source } = await sidecar(gw.port, { idleMs: 100, sweepMs: 20 });
    expect(await source.ensure(WEB)).toBe('found');
    await waitFor(() => gw.sent.includes('U SVC demo/web'), 5000, 10, 'unsubscribed');
    expect(store.current?.services).toEqual({});
    await waitFor(() => gw.hub.subscriptions === 0, 5000, 10, 'hub dropped it');
  });

  it('fails questions the gateway never answers, oldest first, with one timer for all', async () => {
    // A gateway that reads the questions and never answers.
    const asked: string[] = [];
    const server = net.createServer((socket) => {
      socket.on('data', (c: Buffer) => asked.push(...c.toString().split('\n').filter(Boolean)));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const sockets = new Set<net.Socket>();
    server.on('connection', (s) => sockets.add(s));
    cleanups.push(() => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    });
    const { source } = await sidecar((server.address() as net.AddressInfo).port, { lookupTimeoutMs: 60 });
    const settled: string[] = [];
    const ask = (name: string) =>
      source.ensure({ kind: 'svc', namespace: 'demo', name })!.then((r) => {
        settled.push(name);
        return r;
      });
    const a = ask('a');
    await new Promise((r) => setTimeout(r, 30));
    const b = ask('b');
    const bAgain = ask('b'); // coalesced: the same question, the same timeout
    expect(await Promise.all([a, b, bAgain])).toEqual(['unavailable', 'unavailable', 'unavailable']);
    // The timer is armed again for a question after the others have timed out.
    expect(await ask('c')).toBe('unavailable');
    expect(settled).toEqual(['a', 'b', 'b', 'c']);
    expect(asked.filter((l) => l.startsWith('Q '))).toEqual([
      'Q 1 SVC demo/a',
      'Q 2 SVC demo/b',
      'Q 3 SVC demo/c',
    ]);
  });

  it('keeps serving what it holds while the gateway is away, and re-subscribes when it is back', async () => {
    const gwStore = new CatalogStore();
    gwStore.apply({ type: 'snapshot', catalog: gatewayCatalog() });
    let gw = await gateway(gwStore);
    const port = gw.port;
    const { store, source } = await sidecar(port);
    expect(await source.ensure(WEB)).toBe('found');
    await gw.stop();
    await waitFor(() => !source.connected, 5000, 5, 'disconnected');
    expect(source.ensure(WEB)).toBeUndefined(); // still held
    expect(Object.keys(store.current!.services)).toEqual(['demo/web']);
    expect(await source.ensure({ kind: 'svc', namespace: 'demo', name: 'db' })).toBe('unavailable');
    // Back, with a change made meanwhile: the re-asked answer brings it.
    gwStore.apply({
      type: 'service',
      revision: 4,
      key: 'demo/web',
      entry: entry('web', '10.96.0.10', ['10.244.1.5']),
    });
    gw = await gateway(gwStore, port);
    await waitFor(() => gw.sent.some((l) => /^Q \d+ SVC demo\/web$/.test(l)), 5000, 10, 're-asked');
    await waitFor(
      () => store.current?.services['demo/web']?.endpoints[0].ip === '10.244.1.5',
      5000,
      5,
      'refreshed',
    );
    expect(gw.hub.subscriptions).toBe(1);
  });
});
