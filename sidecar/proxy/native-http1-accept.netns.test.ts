/**
 * The native engine's accept-time route table (l4.c "the accept-time route table",
 * native-http1.ts attach) on really redirected connections, in a private network namespace
 * (SO_ORIGINAL_DST needs the REDIRECT): a connection to a destination in the table is served
 * with no event to JavaScript and counted in httpStats; one not in it, or removed from it,
 * comes to JavaScript as an accept event as before; a request the engine does not carry comes
 * back naming its destination; bad tables are refused with clear errors. Run against the plain
 * and the ASan/UBSan build (its runtime preloaded: node is not built with it).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetnsLab } from '../../test/harness/netns.ts';
import { buildSanitizedAddons, sanitizerEnv } from '../testing/sanitized.ts';

const BUILD = join(import.meta.dirname, '../native/build');
const LISTEN_PORT = 15001;
/** In the table; never in it; in it, then removed. */
const VIP_TABLE = '10.96.7.1';
const VIP_OTHER = '10.96.7.2';
const REQUESTS = 20;

/** Runs in the namespace; prints one JSON line with what it saw. */
const SCRIPT = `
const http = require('node:http');
const net = require('node:net');
const addon = require(process.argv[2]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (what) => { for (let i = 0; i < 300 && !what(); i++) await sleep(10); return what(); };

(async () => {
  const backend = http.createServer((req, res) => { req.resume(); req.on('end', () => res.end('hi ' + req.url)); });
  await new Promise((r) => backend.listen(0, '127.0.0.1', r));
  const ep = [0, '127.0.0.1', backend.address().port];
  const events = []; // [type, fd, extra]
  const engine = addon.create((type, fd, num, data, peer, local, sent, received, port) => {
    if (type === 1) { events.push([type, fd, local ?? data]); addon.reset(engine, fd); }
    else if (type === 8) { events.push([type, fd, { bytes: data.toString('latin1'), peer, dst: local, port }]); require('node:fs').closeSync(fd); }
    else events.push([type, fd]);
  }, 10000);
  addon.listen(engine, '0.0.0.0', ${LISTEN_PORT}, 64);
  const get = (ip, path) => new Promise((resolve) => {
    const req = http.get({ host: ip, port: 80, path, agent: false, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(res.statusCode + ' ' + body));
    });
    req.on('error', (err) => resolve('error ' + err.code));
  });
  const rows = () => {
    const r = addon.httpStats(engine);
    return r.length ? { svc: r[0], c2xx: r[2], count: r[21], conns: r[38], sent: r[39], received: r[40], len: r.length } : undefined;
  };
  const out = {};
  // Bad tables: each refused with its error, nothing crashes.
  const refuse = (entries, timeout = 1000) => { try { addon.httpRoutes(engine, entries, timeout); return 'accepted'; } catch (err) { return err.code || err.message; } };
  const many = [];
  for (let i = 0; i < 8193; i++) many.push(['10.97.' + (i >> 8) + '.' + (i & 255), 80, 0, 'k', ep]);
  const manyEps = [];
  for (let i = 0; i < 257; i++) manyEps.push(['10.98.' + (i >> 8) + '.' + (i & 255), 80, 0, 'k', Array.from({ length: 64 }, (_, k) => [k, '127.0.0.1', 1]).flat()]);
  out.refused = {
    notArray: refuse('nope'),
    entryShape: refuse([['${VIP_TABLE}', 80, 0, 'k']]),
    badIp: refuse([['nope', 80, 0, 'k', ep]]),
    badPort: refuse([['${VIP_TABLE}', 70000, 0, 'k', ep]]),
    badSvc: refuse([['${VIP_TABLE}', 80, 4096, 'k', ep]]),
    badKey: refuse([['${VIP_TABLE}', 80, 0, 7, ep]]),
    noEndpoints: refuse([['${VIP_TABLE}', 80, 0, 'k', []]]),
    badEndpoint: refuse([['${VIP_TABLE}', 80, 0, 'k', [0, '127.0.0.1', 0]]]),
    twice: refuse([['${VIP_TABLE}', 80, 0, 'k', ep], ['${VIP_TABLE}', 80, 1, 'k', ep]]),
    badTimeout: refuse([], 0),
    tooMany: refuse(many),
    tooManyEndpoints: refuse(manyEps),
  };
  // A refused table changed nothing: there is none yet, so this comes to JS.
  out.beforeTable = await get('${VIP_TABLE}', '/before');
  await until(() => events.length >= 1);
  out.eventsBeforeTable = events.splice(0).map((e) => e[0]);

  addon.httpRoutes(engine, [['${VIP_TABLE}', 80, 5, 'default/web:80', ep]], 1000);
  const answers = [];
  for (let i = 0; i < ${REQUESTS}; i++) answers.push(await get('${VIP_TABLE}', '/' + i));
  out.answers = answers.filter((a) => a.startsWith('200 hi /')).length;
  await until(() => addon.httpOpen(engine) === 0);
  await sleep(100);
  out.eventsInTable = events.splice(0).map((e) => e[0]);
  out.stats = rows();
  out.openAfter = addon.httpOpen(engine);

  out.other = await get('${VIP_OTHER}', '/other');
  await until(() => events.length >= 1);
  out.eventsOther = events.splice(0).map((e) => e[0]);

  // A chunked request is not the engine's: it comes back with its destination and peer.
  const chunked = 'POST /c HTTP/1.1\\r\\nhost: web\\r\\ntransfer-encoding: chunked\\r\\n\\r\\n3\\r\\nabc\\r\\n0\\r\\n\\r\\n';
  const sock = net.connect(80, '${VIP_TABLE}', () => sock.write(chunked));
  sock.on('error', () => {});
  await until(() => events.length >= 1);
  sock.destroy();
  out.fallback = events.splice(0).map((e) => [e[0], e[2]]);
  await until(() => addon.httpOpen(engine) === 0);

  // Removed from the table: the next connection comes to JS.
  addon.httpRoutes(engine, [], 1000);
  out.removed = await get('${VIP_TABLE}', '/removed');
  await until(() => events.length >= 1);
  out.eventsRemoved = events.splice(0).map((e) => e[0]);
  addon.stop(engine);
  backend.close();
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((err) => { console.error(err.stack); process.exit(1); });
`;

const REPO = join(import.meta.dirname, '../..');
const VIP_PROXY = '10.96.8.1';

/**
 * The whole proxy (proxy.ts, native engines, EDGEMESH_HTTP1_PATH=native) in the namespace: the
 * addon's event callback is wrapped to count accept events; prints what it saw as JSON.
 */
const PROXY_SCRIPT = `
import http from 'node:http';
import { CatalogStore } from '${REPO}/lib/catalog/store.ts';
import { Registry } from '${REPO}/lib/metrics.ts';
import { RoutingDialer } from '${REPO}/sidecar/proxy/dialer.ts';
import { createProxyMetrics } from '${REPO}/sidecar/proxy/metrics.ts';
import { loadAddon } from '${REPO}/sidecar/proxy/native-l4.ts';
import { OutboundProxy } from '${REPO}/sidecar/proxy/proxy.ts';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// The addon as loaded (EDGEMESH_L4_ADDON: the counting wrapper below), before proxy.ts loads it.
if (loadAddon() instanceof Error) throw loadAddon();
const accepts = globalThis.acceptEvents;

const backend = http.createServer((req, res) => { req.resume(); req.on('end', () => res.end('hi ' + req.url)); });
await new Promise((r) => backend.listen(0, '127.0.0.1', r));
const svcPort = { name: 'http', port: 80, protocol: 'TCP' };
const service = (name, ip, endpoints) => ({
  service: { namespace: 'default', name, type: 'ClusterIP', clusterIPs: [ip], headless: false,
    ports: [svcPort], sessionAffinity: { type: 'None' }, lbPolicy: 'round-robin', publishNotReadyAddresses: false },
  endpoints: endpoints ? [{ ip: '127.0.0.1', ready: true, serving: true, terminating: false, ports: [{ ...svcPort, port: backend.address().port }] }] : [],
});
// 'idle' is in the table too, but nobody calls it: it must not show up on /metrics.
const catalog = (revision, endpoints) => ({
  format: 1, revision, clusterDomain: 'cluster.local', pods: {}, nodes: {},
  services: { 'default/web': service('web', '${VIP_PROXY}', endpoints), 'default/idle': service('idle', '10.96.8.2', true) },
});
const store = new CatalogStore();
store.apply({ type: 'snapshot', catalog: catalog(1, true) });
const registry = new Registry();
const proxy = new OutboundProxy({ store, dialer: new RoutingDialer({}), port: ${LISTEN_PORT}, hosts: ['0.0.0.0'],
  metrics: createProxyMetrics(registry), engine: 'native' });
await proxy.start();
await sleep(50);
const get = (path) => new Promise((resolve) => {
  const req = http.get({ host: '${VIP_PROXY}', port: 80, path, agent: false, headers: { connection: 'close' } }, (res) => {
    let body = '';
    res.on('data', (d) => (body += d));
    res.on('end', () => resolve(res.statusCode + ' ' + body));
  });
  req.on('error', (err) => resolve('error ' + err.code));
});
const metric = (text, re) => Number(text.match(re)?.[1] ?? 0);
const out = {};
// A service's first connection comes through JavaScript (it gives the service its metrics
// slot); from the next turn on the engine takes them at accept.
out.first = await get('/first');
out.firstAccepts = accepts.n;
await sleep(20);
accepts.n = 0;
const answers = [];
for (let i = 0; i < ${REQUESTS}; i++) answers.push(await get('/' + i));
out.answers = answers.filter((a) => a.startsWith('200 hi /')).length;
out.acceptsInTable = accepts.n;
let text = await registry.metrics();
out.routeHttp = metric(text, /^edgemesh_proxy_connections_total\\{route="http"\\} (\\d+)$/m);
out.serviceConnections = metric(text, /^edgemesh_proxy_service_connections_total\\{[^}]*dst_service="web"[^}]*\\} (\\d+)$/m);
out.sent = metric(text, /^edgemesh_proxy_service_bytes_total\\{[^}]*direction="sent"[^}]*\\} (\\d+)$/m);
out.received = metric(text, /^edgemesh_proxy_service_bytes_total\\{[^}]*direction="received"[^}]*\\} (\\d+)$/m);
out.requests2xx = metric(text, /^edgemesh_proxy_service_requests_total\\{[^}]*class="2xx"[^}]*\\} (\\d+)$/m);
// The engine closes the last connection once the client's FIN is in (lingering close).
for (let i = 0; i < 100 && proxy.activeConnections > 0; i++) await sleep(10);
out.active = proxy.activeConnections;
out.idleSeries = text.includes('dst_service="idle"');
// The endpoints go: the very next connection is JavaScript's (503), not the engine's.
store.apply({ type: 'snapshot', catalog: catalog(2, false) });
out.afterRemoval = await get('/gone');
out.acceptsAfterRemoval = accepts.n - out.acceptsInTable;
// And come back: the engine takes them again once the table is rebuilt (next turn).
store.apply({ type: 'snapshot', catalog: catalog(3, true) });
await sleep(20);
out.back = await get('/back');
out.acceptsAfterBack = accepts.n - out.acceptsInTable - out.acceptsAfterRemoval;
// A chunked request is not the engine's: given back, JavaScript answers it (fast.ts).
out.chunked = await new Promise((resolve) => {
  const req = http.request({ host: '${VIP_PROXY}', port: 80, path: '/chunked', method: 'POST', agent: false }, (res) => {
    let body = '';
    res.on('data', (d) => (body += d));
    res.on('end', () => resolve(res.statusCode + ' ' + body));
  });
  req.on('error', (err) => resolve('error ' + err.code));
  req.write('abc');
  req.end('def');
});
out.acceptsAfterChunked = accepts.n - out.acceptsInTable - out.acceptsAfterRemoval;
text = await registry.metrics();
out.routeHttpEnd = metric(text, /^edgemesh_proxy_connections_total\\{route="http"\\} (\\d+)$/m);
await proxy.drain(1000);
backend.close();
console.log(JSON.stringify(out));
process.exit(0);
`;

/** The real addon with its event callback wrapped: counts accept events (type 1). */
const COUNTING_ADDON = `
const real = require('${REPO}/sidecar/native/build/l4.node');
globalThis.acceptEvents = { n: 0 };
// The addon's functions are not enumerable: copied by name.
for (const name of Object.getOwnPropertyNames(real)) module.exports[name] = real[name];
module.exports.create = (onEvent, idleMs) => real.create((type, ...rest) => {
  if (type === 1) globalThis.acceptEvents.n++;
  return onEvent(type, ...rest);
}, idleMs);
`;

let lab: NetnsLab;
let ns: string;
let dir: string;

beforeAll(async () => {
  buildSanitizedAddons(); // a fresh clone has only the plain addons
  dir = await mkdtemp(join(tmpdir(), 'emha-'));
  await writeFile(join(dir, 'accept.cjs'), SCRIPT);
  await writeFile(join(dir, 'proxy.mts'), PROXY_SCRIPT);
  await writeFile(join(dir, 'counting-addon.cjs'), COUNTING_ADDON);
  lab = new NetnsLab('emha');
  ns = await lab.add('ha');
  // Service addresses routed towards a second namespace (nothing answers there), redirected
  // to the engine's port before they leave.
  const far = await lab.add('far');
  await lab.link(
    { ns, ifname: 'eth0', addr: '10.0.5.1/24' },
    { ns: far, ifname: 'eth0', addr: '10.0.5.2/24' },
  );
  await lab.exec(ns, ['ip', 'route', 'add', '10.96.0.0/16', 'via', '10.0.5.2']);
  await lab.exec(ns, [
    'iptables',
    '-t',
    'nat',
    '-A',
    'OUTPUT',
    '-p',
    'tcp',
    '-d',
    '10.96.0.0/16',
    '-j',
    'REDIRECT',
    '--to-ports',
    String(LISTEN_PORT),
  ]);
});

afterAll(async () => {
  await lab?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the accept-time route table', () => {
  it.each([
    { build: 'l4.node', sanitized: false },
    { build: 'l4-sanitized.node', sanitized: true },
  ])(
    'serves a destination in it with no JavaScript event, and the rest as before ($build)',
    async ({ build, sanitized }) => {
      const addon = join(BUILD, build);
      // Built in beforeAll (sidecar/testing/sanitized.ts).
      expect(existsSync(addon), `${addon} not built`).toBe(true);
      const env = sanitized ? sanitizerEnv(dir) : [];
      const r = await lab.run(ns, ['env', ...env, process.execPath, join(dir, 'accept.cjs'), addon], {
        timeoutMs: 60_000,
      });
      const logs = (await readdir(dir)).filter((f) => f.startsWith('asan') || f.startsWith('ubsan'));
      const reports = await Promise.all(logs.map((f) => readFile(join(dir, f), 'utf8')));
      expect(reports.join('\n')).toBe('');
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.refused).toEqual({
        notArray: 'ERR_INVALID_ROUTES',
        entryShape: 'ERR_INVALID_ROUTES',
        badIp: 'ERR_INVALID_IP',
        badPort: 'port must be an integer in [1, 65535]',
        badSvc: 'svc must be an integer in [0, 4095]',
        badKey: 'ERR_INVALID_ROUTES',
        noEndpoints: 'ERR_INVALID_ENDPOINTS',
        badEndpoint: 'port must be an integer in [1, 65535]',
        twice: 'ERR_INVALID_ROUTES',
        badTimeout: 'timeoutMs must be an integer in [1, 2147483647]',
        tooMany: 'ERR_TOO_MANY_ROUTES',
        tooManyEndpoints: 'ERR_TOO_MANY_ROUTES',
      });
      // No table: an accept event (the script resets it).
      expect(out.beforeTable).toMatch(/^error /);
      expect(out.eventsBeforeTable).toEqual([1]);
      // In the table: every request served, no event at all, counted for the next poll.
      expect(out.answers).toBe(REQUESTS);
      expect(out.eventsInTable).toEqual([]);
      expect(out.stats).toMatchObject({ svc: 5, c2xx: REQUESTS, count: REQUESTS, conns: REQUESTS, len: 41 });
      expect(out.stats.sent).toBeGreaterThan(REQUESTS * 30);
      expect(out.stats.received).toBeGreaterThan(REQUESTS * 30);
      expect(out.openAfter).toBe(0);
      // Not in it: to JavaScript.
      expect(out.other).toMatch(/^error /);
      expect(out.eventsOther).toEqual([1]);
      // Given back with what JavaScript needs to go on: bytes, destination, peer.
      expect(out.fallback).toHaveLength(1);
      expect(out.fallback[0][0]).toBe(8);
      expect(out.fallback[0][1]).toMatchObject({ dst: VIP_TABLE, port: 80, peer: '10.0.5.1' });
      expect(out.fallback[0][1].bytes).toContain('transfer-encoding: chunked');
      // Removed: to JavaScript again.
      expect(out.removed).toMatch(/^error /);
      expect(out.eventsRemoved).toEqual([1]);
    },
  );

  it('whole proxy: served with no accept event, counted as before; a removed endpoint set goes to JavaScript at once', async () => {
    const r = await lab.run(
      ns,
      [
        'env',
        'EDGEMESH_HTTP1_PATH=native',
        `EDGEMESH_L4_ADDON=${join(dir, 'counting-addon.cjs')}`,
        join(REPO, 'node_modules/.bin/node'),
        join(dir, 'proxy.mts'),
      ],
      { timeoutMs: 60_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({
      first: '200 hi /first',
      firstAccepts: 1,
      answers: REQUESTS,
      acceptsInTable: 0,
      // What proxy.ts counts on an accept event, now from the engine's stats.
      routeHttp: REQUESTS + 1,
      serviceConnections: REQUESTS + 1,
      requests2xx: REQUESTS + 1,
      active: 0,
      idleSeries: false,
      afterRemoval: expect.stringMatching(/^503 /),
      acceptsAfterRemoval: 1,
      back: '200 hi /back',
      acceptsAfterBack: 0,
      chunked: '200 hi /chunked',
      acceptsAfterChunked: 0,
      routeHttpEnd: REQUESTS + 4,
    });
    expect(out.sent).toBeGreaterThan(REQUESTS * 30);
    expect(out.received).toBeGreaterThan(REQUESTS * 30);
  });
});
