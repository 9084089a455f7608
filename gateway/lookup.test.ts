import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LineSplitter } from '../lib/catalog/feed.ts';
import { decodeCompactAnswer } from '../lib/catalog/lookup-compact.ts';
import { MAX_SUBSCRIPTIONS } from '../lib/catalog/lookup-protocol.ts';
import { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog, ServiceEntry } from '../lib/catalog/types.ts';
import { emptyCatalog } from '../lib/catalog/types.ts';
import { silentLogger } from '../lib/log.ts';
import { waitFor } from '../test/harness/netns.ts';
import { CatalogIndex } from './catalog-index.ts';
import { startGateway } from './gateway.ts';
import { LookupHub } from './lookup.ts';
import { saveCatalog } from './persist.ts';

// The gateway's lookup index (pure) and the hub over real sockets on 127.0.0.1, read raw.
const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

function entry(ns: string, name: string, clusterIP: string | undefined, eps: string[]): ServiceEntry {
  return {
    service: {
      namespace: ns,
      name,
      type: 'ClusterIP',
      clusterIPs: clusterIP ? [clusterIP] : [],
      headless: !clusterIP,
      ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
      sessionAffinity: { type: 'None' },
      lbPolicy: 'round-robin',
      publishNotReadyAddresses: false,
    },
    endpoints: eps.map((ip) => ({
      ip,
      ready: true,
      serving: true,
      terminating: false,
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    })),
  };
}

function catalog(): Catalog {
  return {
    ...emptyCatalog(),
    revision: 10,
    services: {
      'demo/web': entry('demo', 'web', '10.96.0.10', ['10.244.1.7', '10.244.1.8']),
      'demo/db': entry('demo', 'db', undefined, ['10.244.1.8']),
    },
    pods: { '10.244.1.7': { ip: '10.244.1.7', namespace: 'demo', name: 'web-0', nodeName: 'edge-a' } },
  };
}

describe('catalog index', () => {
  it('indexes addresses and namespaces incrementally, the same as from a snapshot', () => {
    const store = new CatalogStore();
    const index = new CatalogIndex();
    store.subscribe((c, u) => index.apply(c, u));
    store.apply({ type: 'snapshot', catalog: catalog() });
    expect(index.servicesAt('10.96.0.10', 64)).toEqual(['demo/web']);
    expect(index.servicesAt('10.244.1.8', 64)).toEqual(['demo/db', 'demo/web']);
    expect(index.servicesAt('10.244.1.8', 1)).toEqual(['demo/db']);
    expect(index.servicesAt('10.0.0.1', 64)).toEqual([]);
    expect(index.namespaceExists('demo')).toBe(true);
    expect(index.namespaceExists('empty')).toBe(false);

    store.apply({
      type: 'service',
      revision: 11,
      key: 'demo/web',
      entry: entry('demo', 'web', '10.96.0.11', []),
    });
    store.apply({ type: 'service', revision: 12, key: 'demo/db', entry: null });
    store.apply({
      type: 'service',
      revision: 13,
      key: 'other/api',
      entry: entry('other', 'api', '10.96.0.12', []),
    });
    store.apply({ type: 'namespace', revision: 14, name: 'empty', namespace: { name: 'empty' } });
    expect(index.servicesAt('10.96.0.10', 64)).toEqual([]);
    expect(index.servicesAt('10.244.1.8', 64)).toEqual([]);
    expect(index.servicesAt('10.96.0.11', 64)).toEqual(['demo/web']);
    expect(index.namespaceExists('other')).toBe(true);
    expect(index.namespaceExists('empty')).toBe(true);
    expect(index.addresses).toBe(2);

    // A fresh index from the resulting catalog holds the same.
    const fresh = new CatalogIndex();
    fresh.apply(store.current!, { type: 'snapshot', catalog: store.current! });
    for (const ip of ['10.96.0.10', '10.96.0.11', '10.96.0.12', '10.244.1.8'])
      expect(fresh.servicesAt(ip, 64)).toEqual(index.servicesAt(ip, 64));
    // A snapshot re-indexes only what changed and drops what went.
    store.apply({ type: 'snapshot', catalog: { ...store.current!, services: {} } });
    expect(index.addresses).toBe(0);
    expect(index.namespaceExists('other')).toBe(false);
  });

  it('indexes the first catalog in slices, and whatever needs the addresses first finishes them', () => {
    const services: Record<string, ServiceEntry> = {};
    for (let i = 0; i < 5; i++)
      services[`demo/s${i}`] = entry('demo', `s${i}`, `10.96.0.${i + 1}`, ['10.244.1.8']);
    const first = { ...catalog(), services };
    const sliced = new CatalogIndex();
    sliced.apply(first, { type: 'snapshot', catalog: first });
    expect(sliced.indexing).toBe(true);
    expect(sliced.namespaceExists('demo')).toBe(true); // namespaces at once
    expect(sliced.indexSome(2)).toBe(true);
    expect(sliced.indexSome(2)).toBe(true);
    expect(sliced.indexSome(2)).toBe(false);
    expect(sliced.indexing).toBe(false);
    const whole = new CatalogIndex();
    whole.apply(first, { type: 'snapshot', catalog: first });
    // An IP lookup before the slices are done indexes the rest first.
    expect(whole.servicesAt('10.96.0.5', 64)).toEqual(['demo/s4']);
    expect(whole.indexing).toBe(false);
    for (const ip of ['10.96.0.1', '10.96.0.5', '10.244.1.8'])
      expect(sliced.servicesAt(ip, 64)).toEqual(whole.servicesAt(ip, 64));
    expect(sliced.servicesAt('10.244.1.8', 64)).toEqual(Object.keys(services));

    // A service update in the middle: the slices are finished first, then the update applied.
    const store = new CatalogStore();
    const updated = new CatalogIndex();
    store.subscribe((c, u) => updated.apply(c, u));
    store.apply({ type: 'snapshot', catalog: first });
    expect(updated.indexSome(1)).toBe(true);
    store.apply({ type: 'service', revision: 11, key: 'demo/s4', entry: null });
    expect(updated.indexing).toBe(false);
    expect(updated.servicesAt('10.96.0.5', 64)).toEqual([]);
    expect(updated.servicesAt('10.96.0.2', 64)).toEqual(['demo/s1']);
    expect(updated.addresses).toBe(5);
  });
});

/** A raw client of the hub: sends lines, collects parsed JSON lines. */
async function client(port: number) {
  const socket = net.connect({ host: '127.0.0.1', port });
  await new Promise((r) => socket.once('connect', r));
  const lines: Record<string, unknown>[] = [];
  const splitter = new LineSplitter();
  socket.on('data', (c: Buffer) => {
    for (const l of splitter.push(c)) lines.push(JSON.parse(l));
  });
  let closed = false;
  socket.on('close', () => {
    closed = true;
  });
  cleanups.push(() => socket.destroy());
  return {
    lines,
    send: (text: string) => socket.write(text),
    closed: () => closed,
    until: (n: number) =>
      waitFor(() => lines.length >= n, 5000, 5, `${n} lines (have ${JSON.stringify(lines)})`),
  };
}

async function hubServer(store: CatalogStore) {
  const hub = new LookupHub(store, { keepaliveMs: 60_000 });
  const server = net.createServer((s) => hub.attach(s, 'test'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => {
    hub.close();
    server.close();
  });
  return { hub, port: (server.address() as net.AddressInfo).port };
}

describe('lookup hub', () => {
  it('answers, subscribes what it answered, pushes only to subscribers, and unsubscribes', async () => {
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: catalog() });
    const { hub, port } = await hubServer(store);
    const a = await client(port);
    const b = await client(port);
    a.send('Q 1 SVC demo/web\nQ 2 SVC demo/nope\nQ 3 IP 10.244.1.7\nQ 4 NS empty\n');
    await a.until(4);
    // A service's answer is written as a head and the entry's cached bytes: the same line.
    expect(a.lines[0]).toEqual({
      type: 'answer',
      id: 1,
      revision: 10,
      services: { 'demo/web': store.current!.services['demo/web'] },
      pods: {},
      namespaces: {},
    });
    expect(a.lines[1]).toEqual({
      type: 'answer',
      id: 2,
      revision: 10,
      services: {},
      pods: {},
      namespaces: {},
    });
    expect(Object.keys(a.lines[2].services as object)).toEqual(['demo/web']);
    expect(Object.keys(a.lines[2].pods as object)).toEqual(['10.244.1.7']);
    expect(a.lines[3]).toMatchObject({ id: 4, namespaces: {} });
    b.send('Q 1 NS demo\n');
    await b.until(1);
    expect(b.lines[0]).toMatchObject({ namespaces: { demo: { name: 'demo' } } });
    expect(hub.subscriptions).toBe(3); // a: svc demo/web, pod 10.244.1.7; b: ns demo

    // demo/db changes: nobody holds it, nothing is sent. demo/web changes: a gets it.
    store.apply({ type: 'service', revision: 11, key: 'demo/db', entry: null });
    const web = entry('demo', 'web', '10.96.0.10', ['10.244.1.9']);
    store.apply({ type: 'service', revision: 12, key: 'demo/web', entry: web });
    await a.until(5);
    expect(a.lines[4]).toEqual({ type: 'service', revision: 12, key: 'demo/web', entry: web });
    // The namespace empties: b (subscribed to ns demo) is told it is gone.
    store.apply({ type: 'service', revision: 13, key: 'demo/web', entry: null });
    await b.until(2);
    expect(b.lines[1]).toEqual({ type: 'namespace', revision: 13, name: 'demo', namespace: null });
    await a.until(6);
    expect(a.lines[5]).toEqual({ type: 'service', revision: 13, key: 'demo/web', entry: null });

    // After U, a hears nothing more of it; its pod subscription still works.
    a.send('U SVC demo/web\n');
    await waitFor(() => hub.subscriptions === 2, 5000, 5, 'unsubscribed');
    store.apply({ type: 'service', revision: 14, key: 'demo/web', entry: web });
    store.apply({ type: 'pod', revision: 15, ip: '10.244.1.7', pod: null });
    await a.until(7);
    expect(a.lines[6]).toEqual({ type: 'pod', revision: 15, ip: '10.244.1.7', pod: null });
    expect(a.lines).toHaveLength(7);
  });

  it('answers each service as it is now: the cached JSON of an entry goes with the entry', async () => {
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: catalog() });
    const { port } = await hubServer(store);
    const served = (line: Record<string, unknown>) => (line.services as Record<string, unknown>)['demo/web'];
    const a = await client(port);
    a.send('Q 1 SVC demo/web\n');
    await a.until(1);
    expect(served(a.lines[0])).toEqual(store.current!.services['demo/web']);
    const web = entry('demo', 'web', '10.96.0.10', ['10.244.1.9']);
    store.apply({ type: 'service', revision: 11, key: 'demo/web', entry: web });
    await a.until(2); // the push
    const b = await client(port);
    b.send('Q 1 SVC demo/web\nQ 2 SVC demo/web\n');
    await b.until(2);
    expect(b.lines.map(served)).toEqual([web, web]);
  });

  it('refuses a lookup that would pass MAX_SUBSCRIPTIONS, by service name and by namespace alike', async () => {
    const services: Record<string, ServiceEntry> = {};
    for (let i = 0; i <= MAX_SUBSCRIPTIONS; i++)
      services[`demo/s${i}`] = entry('demo', `s${i}`, `10.96.${i >> 8}.${i & 255}`, []);
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: { ...catalog(), services } });
    const { port } = await hubServer(store);
    const c = await client(port);
    let queries = '';
    for (let i = 0; i < MAX_SUBSCRIPTIONS; i++) queries += `Q ${i + 1} SVC demo/s${i}\n`;
    c.send(queries);
    await c.until(MAX_SUBSCRIPTIONS);
    expect(c.lines.every((l) => l.type === 'answer')).toBe(true);
    // Asked again, a held topic needs no new subscription: answered.
    c.send(`Q 30001 SVC demo/s0\nQ 30002 SVC demo/s${MAX_SUBSCRIPTIONS}\nQ 30003 NS demo\n`);
    await c.until(MAX_SUBSCRIPTIONS + 3);
    const refusal = (id: number) => ({
      type: 'error',
      id,
      message: `at most ${MAX_SUBSCRIPTIONS} subscriptions per connection`,
    });
    expect(c.lines.slice(MAX_SUBSCRIPTIONS)).toEqual([
      expect.objectContaining({ type: 'answer', id: 30001 }),
      refusal(30002),
      refusal(30003),
    ]);
  });

  it('answers before any catalog with an error naming the query; a bad line ends the connection', async () => {
    const store = new CatalogStore();
    const { hub, port } = await hubServer(store);
    const c = await client(port);
    c.send('Q 7 SVC demo/web\n');
    await c.until(1);
    expect(c.lines[0]).toEqual({ type: 'error', id: 7, message: 'gateway has no catalog yet' });
    c.send('Q 8 PTR 10.0.0.1\n');
    await c.until(2);
    expect(c.lines[1]).toEqual({ type: 'error', id: null, message: 'query kind must be SVC, NS or IP' });
    await waitFor(() => c.closed(), 5000, 5, 'closed');
    await waitFor(() => hub.clients === 0, 5000, 5, 'client gone');
    const long = await client(port);
    long.send(`Q 1 SVC ${'a'.repeat(600)}`);
    await long.until(1);
    expect(long.lines[0]).toMatchObject({
      type: 'error',
      id: null,
      message: expect.stringMatching(/longer than 512/),
    });
  });
});

describe('LOOKUP through the gateway listener', () => {
  it('takes queries sent with the header in one write, and counts lookups', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'emc-lookup-'));
    cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
    await saveCatalog(stateDir, catalog());
    const gw = await startGateway({
      nodeName: 'edge-a',
      stateDir,
      listenHost: '127.0.0.1',
      listenPort: 0,
      clusterDomain: 'cluster.local',
      log: silentLogger,
      persistDelayMs: 10,
    });
    cleanups.push(() => gw.close());
    const port = (gw.server.address() as net.AddressInfo).port;
    const socket = net.connect({ host: '127.0.0.1', port });
    cleanups.push(() => socket.destroy());
    const lines: Record<string, unknown>[] = [];
    const splitter = new LineSplitter();
    socket.on('data', (c: Buffer) => {
      for (const l of splitter.push(c)) lines.push(JSON.parse(l));
    });
    socket.write('EDGEMESH/1 LOOKUP\nQ 1 SVC demo/web\nQ 2 IP 10.96.0.10\nQ 3 NS nope\n');
    await waitFor(() => lines.length >= 3, 5000, 5, '3 answers');
    expect(lines.map((l) => [l.id, Object.keys(l.services as object)])).toEqual([
      [1, ['demo/web']],
      [2, ['demo/web']],
      [3, []],
    ]);
    const metrics = await gw.registry.metrics();
    expect(metrics).toMatch(/^edgemesh_gateway_lookups_total\{kind="svc",result="found"[^}]*\} 1$/m);
    expect(metrics).toMatch(/^edgemesh_gateway_lookups_total\{kind="ns",result="missing"[^}]*\} 1$/m);
    expect(metrics).toMatch(/^edgemesh_gateway_lookup_subscriptions\{[^}]*\} 1$/m);
  });
});

/** A raw client of the hub: sends lines, collects them as text. */
async function rawClient(port: number) {
  const socket = net.connect({ host: '127.0.0.1', port });
  await new Promise((r) => socket.once('connect', r));
  const lines: string[] = [];
  const splitter = new LineSplitter();
  socket.on('data', (c: Buffer) => lines.push(...splitter.push(c)));
  let closed = false;
  socket.on('close', () => {
    closed = true;
  });
  cleanups.push(() => socket.destroy());
  return {
    lines,
    send: (text: string) => socket.write(text),
    closed: () => closed,
    until: (n: number) => waitFor(() => lines.length >= n, 5000, 5, `${n} lines (have ${lines.join('|')})`),
  };
}

describe('lookup hub: compact answers (format 2, lib/catalog/lookup-compact.ts)', () => {
  it('after F 2 answers a found service in the compact form, the same entry; the rest stays JSON', async () => {
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: catalog() });
    const { port } = await hubServer(store);
    const c = await rawClient(port);
    c.send('F 2\nQ 1 SVC demo/web\nQ 2 SVC demo/nope\nQ 3 IP 10.244.1.7\nQ 4 SVC demo/web\n');
    await c.until(5);
    expect(c.lines[0]).toBe('F 2');
    const b = Buffer.from(c.lines[1]);
    expect(decodeCompactAnswer(b, 0, b.length)).toEqual({
      id: 1,
      revision: 10,
      key: 'demo/web',
      entry: store.current!.services['demo/web'],
    });
    expect(JSON.parse(c.lines[2])).toEqual({
      type: 'answer',
      id: 2,
      revision: 10,
      services: {},
      pods: {},
      namespaces: {},
    });
    expect(Object.keys(JSON.parse(c.lines[3]).services)).toEqual(['demo/web']);
    // The entry's tail is kept: the second answer differs in its head only.
    expect(c.lines[4]).toBe(c.lines[1].replace(/^S 1 /, 'S 4 '));
    // Pushes stay feed lines.
    store.apply({
      type: 'service',
      revision: 11,
      key: 'demo/web',
      entry: entry('demo', 'web', '10.96.0.10', []),
    });
    await c.until(6);
    expect(JSON.parse(c.lines[5])).toMatchObject({ type: 'service', key: 'demo/web' });
  });

  it('grants format 1 to a sidecar that reads only that, and refuses a bad format line', async () => {
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: catalog() });
    const { port } = await hubServer(store);
    const one = await rawClient(port);
    one.send('F 1\nQ 1 SVC demo/web\n');
    await one.until(2);
    expect(one.lines[0]).toBe('F 1');
    expect(JSON.parse(one.lines[1])).toMatchObject({ type: 'answer', id: 1 });
    const later = await rawClient(port);
    later.send('F 99\nQ 1 SVC demo/web\n');
    await later.until(2);
    expect(later.lines[0]).toBe('F 2'); // the highest it speaks
    expect(later.lines[1]).toMatch(/^S 1 10 demo\/web /);
    const bad = await rawClient(port);
    bad.send('F two\n');
    await bad.until(1);
    expect(JSON.parse(bad.lines[0])).toEqual({
      type: 'error',
      id: null,
      message: 'format line must be "F <1..99>", got "F two"',
    });
    await waitFor(bad.closed, 5000, 5, 'closed');
  });
});
