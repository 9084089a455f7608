import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../../../lib/catalog/store.ts';
import type { Catalog } from '../../../lib/catalog/types.ts';
import { silentLogger } from '../../../lib/log.ts';
import { Registry } from '../../../lib/metrics.ts';
import { RoutingDialer, SOCKET_HWM } from '../dialer.ts';
import { HttpProxy } from '../http-proxy.ts';
import { createProxyMetrics } from '../metrics.ts';
import { Router } from '../router.ts';

// The fast HTTP/1.1 path (fast.ts) on loopback: node:http backends on 127.0.0.1 and 127.0.0.2
// (same port), a dead endpoint on 127.0.0.3, and raw client sockets that write exact bytes.
const VIP = '10.96.0.30';
const VIP_DEAD = '10.96.0.31';
const VIP_EMPTY = '10.96.0.32';
const VIP_HALF = '10.96.0.33';
const servers: net.Server[] = [];
let port = 0;
let proxyPort = 0;
let proxy: HttpProxy;
const upstreamConnections: number[] = [0, 0];

function backend(name: string, index: number): http.Server {
  const server = http.createServer((req, res) => {
    const hash = createHash('sha256');
    let length = 0;
    req.on('data', (d: Buffer) => {
      hash.update(d);
      length += d.length;
    });
    req.on('end', () => {
      if (req.url?.startsWith('/bytes/')) {
        const n = Number(req.url.slice(7));
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
        res.end(Buffer.alloc(n, 0x61));
        return;
      }
      if (req.url?.startsWith('/pattern/')) {
        const n = Number(req.url.slice(9));
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
        res.end(pattern(n));
        return;
      }
      if (req.url === '/chunked') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('one,');
        res.write('two,');
        res.end('three');
        return;
      }
      if (req.url === '/trailers') {
        res.writeHead(200, { trailer: 'x-sum', 'transfer-encoding': 'chunked' });
        res.write('body');
        res.addTrailers({ 'x-sum': '42' });
        res.end();
        return;
      }
      const body = JSON.stringify({
        backend: name,
        method: req.method,
        url: req.url,
        length,
        sha256: hash.digest('hex'),
        headers: req.headers,
        trailers: req.trailers,
      });
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        'x-backend': name,
      });
      res.end(body);
    });
  });
  server.on('connection', () => upstreamConnections[index]++);
  server.on('upgrade', (req, socket: net.Socket) => {
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: ${req.headers.upgrade}\r\nconnection: upgrade\r\n\r\nhello from ${name}\n`,
    );
    socket.on('data', (d) => socket.write(d));
  });
  return server;
}

/** Bytes that differ from one position to the next, so a reused read buffer overwritten too early shows. */
function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + (i >> 10)) & 0xff;
  return b;
}

function catalog(): Catalog {
  const svcPort = { name: 'http', port: 80, protocol: 'TCP' as const };
  const endpoint = (ip: string) => ({
    ip,
    ready: true,
    serving: true,
    terminating: false,
    ports: [{ ...svcPort, port }],
  });
  const service = (name: string, ip: string) => ({
    namespace: 'default',
    name,
    type: 'ClusterIP' as const,
    clusterIPs: [ip],
    headless: false,
    ports: [svcPort],
    sessionAffinity: { type: 'None' as const },
    lbPolicy: 'round-robin' as const,
    publishNotReadyAddresses: false,
  });
  return {
    format: 1,
    revision: 1,
    clusterDomain: 'cluster.local',
    services: {
      'default/web': {
        service: service('web', VIP),
        endpoints: [endpoint('127.0.0.1'), endpoint('127.0.0.2')],
      },
      'default/dead': { service: service('dead', VIP_DEAD), endpoints: [endpoint('127.0.0.3')] },
      'default/empty': { service: service('empty', VIP_EMPTY), endpoints: [] },
      'default/half': {
        service: service('half', VIP_HALF),
        endpoints: [endpoint('127.0.0.3'), endpoint('127.0.0.1')],
      },
    },
    pods: {},
    nodes: {},
  } as Catalog;
}

function listen(server: net.Server, host: string, at = 0): Promise<number> {
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at, host, () => resolve((server.address() as net.AddressInfo).port));
  });
}

const registry = new Registry();
const scrape = async () => await registry.metrics();

beforeAll(async () => {
  port = await listen(backend('a', 0), '127.0.0.1');
  await listen(backend('b', 1), '127.0.0.2', port);
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: catalog() });
  proxy = new HttpProxy({
    router: new Router(store),
    dialer: new RoutingDialer({}),
    connectTimeoutMs: 2000,
    idleTimeoutMs: 10_000,
    maxAttempts: 3,
    log: silentLogger,
    metrics: createProxyMetrics(registry),
    http1: 'fast',
  });
  // One listener per service, standing in for the transparent listener's original destination.
  for (const vip of [VIP, VIP_DEAD, VIP_EMPTY, VIP_HALF]) {
    proxyPorts.set(
      vip,
      await listen(
        // The buffer bound of the native engine's adopted sockets (native-l4.ts), as in a pod.
        net.createServer({ pauseOnConnect: true, allowHalfOpen: true, highWaterMark: SOCKET_HWM }, (socket) =>
          proxy.handle(socket, { dstIp: vip, dstPort: 80, clientIp: '127.0.0.1' }),
        ),
        '127.0.0.1',
      ),
    );
  }
  proxyPort = proxyPorts.get(VIP) as number;
});

afterAll(async () => {
  await proxy?.close();
  for (const s of servers) s.close();
});

const proxyPorts = new Map<string, number>();

/** Raw client: writes `chunks` (one write each), reads until `done(text)` or the proxy closes. */
function send(
  chunks: (string | Buffer)[],
  done: (text: string) => boolean = () => false,
  vip = VIP,
): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(proxyPorts.get(vip) as number, '127.0.0.1');
    let text = '';
    let finished = false;
    const finish = (closed: boolean) => {
      if (finished) return;
      finished = true;
      socket.destroy();
      resolve({ text, closed });
    };
    socket.on('connect', () => {
      for (const c of chunks) socket.write(c);
    });
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      text += d;
      if (done(text)) finish(false);
    });
    socket.on('end', () => finish(true));
    socket.on('error', reject);
  });
}

const count = (text: string, needle: string) => text.split(needle).length - 1;
const GET = (path = '/', extra = '') => `GET ${path} HTTP/1.1\r\nhost: web\r\n${extra}\r\n`;
const bodies = (text: string) =>
  text
    .split(/HTTP\/1\.1 \d{3}[^\r]*\r\n/)
    .slice(1)
    .map((r) => r.slice(r.indexOf('\r\n\r\n') + 4));

describe('HTTP/1.1 fast path', () => {
  it('balances each request of one keep-alive connection over the endpoints', async () => {
    const { text } = await send([GET(), GET(), GET(), GET()], (t) => count(t, '"backend"') === 4);
    const names = bodies(text).map((b) => JSON.parse(b).backend);
    expect(names.sort()).toEqual(['a', 'a', 'b', 'b']);
  });

  it('answers pipelined requests in order, sent in one write', async () => {
    const { text } = await send([GET('/1') + GET('/2') + GET('/3')], (t) => count(t, '"backend"') === 3);
    expect(bodies(text).map((b) => JSON.parse(b).url)).toEqual(['/1', '/2', '/3']);
  });

  it('passes the head through and drops hop-by-hop fields (and those Connection names)', async () => {
    const { text } = await send(
      [
        GET(
          '/h',
          'X-Custom: kept\r\nConnection: keep-alive, x-private\r\nX-Private: dropped\r\nKeep-Alive: 5\r\nTE: trailers\r\n',
        ),
      ],
      (t) => t.includes('}'),
    );
    const headers = JSON.parse(bodies(text)[0]).headers;
    expect(headers['x-custom']).toBe('kept');
    expect(headers.te).toBe('trailers');
    expect(headers['x-private']).toBeUndefined();
    expect(headers['keep-alive']).toBeUndefined();
    expect(headers.connection).toBeUndefined();
    expect(text).not.toMatch(/\r\nconnection:/i);
  });

  it('carries a 1 MiB Content-Length body byte for byte, written in pieces', async () => {
    const body = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff;
    const head = `POST /up HTTP/1.1\r\nhost: web\r\ncontent-length: ${body.length}\r\n\r\n`;
    const { text } = await send([head, body.subarray(0, 1000), body.subarray(1000), GET('/after')], (t) =>
      t.includes('"/after"'),
    );
    const [up, after] = bodies(text).map((b) => JSON.parse(b));
    expect(up.length).toBe(body.length);
    expect(up.sha256).toBe(createHash('sha256').update(body).digest('hex'));
    expect(after.url).toBe('/after');
  });

  it('carries chunked bodies with extensions and trailers, split at every awkward place', async () => {
    const chunked = '5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: yes\r\n\r\n';
    const head = 'POST /c HTTP/1.1\r\nhost: web\r\ntransfer-encoding: chunked\r\n\r\n';
    const pieces = chunked.split('');
    const { text } = await send([head, ...pieces, GET('/next')], (t) => t.includes('"/next"'));
    const [c, next] = bodies(text).map((b) => JSON.parse(b));
    expect(c.length).toBe(11);
    expect(c.sha256).toBe(createHash('sha256').update('hello world').digest('hex'));
    expect(c.trailers).toEqual({ 'x-trailer': 'yes' });
    expect(next.url).toBe('/next');
  });

  it('passes chunked responses and trailers through, then serves the next request', async () => {
    const { text } = await send([GET('/chunked') + GET('/trailers') + GET('/x')], (t) => t.includes('"/x"'));
    expect(text).toContain('one,');
    expect(text).toContain('three\r\n0\r\n\r\n');
    expect(text).toMatch(/x-sum: 42\r\n\r\n/);
    expect(text).toContain('"/x"');
  });

  it('1 MiB responses arrive whole and HEAD responses carry no body', async () => {
    const { text } = await send(
      [GET('/bytes/1048576') + 'HEAD /bytes/99 HTTP/1.1\r\nhost: web\r\n\r\n' + GET('/z')],
      (t) => t.includes('"/z"'),
    );
    expect(count(text, 'a'.repeat(1024))).toBeGreaterThanOrEqual(1024);
    expect(count(text, 'content-length: 99')).toBe(1);
    expect(text).toContain('"/z"');
  });

  it('a slow reader gets every byte of large responses as sent (read buffers reused only when free)', async () => {
    // More than loopback's socket buffers hold (a few MB), so the proxy's writes do queue.
    const n = 12 * 1024 * 1024 + 17;
    const head = `GET /pattern/${n} HTTP/1.1\r\nhost: web\r\n\r\n`;
    const socket = net.connect(proxyPort, '127.0.0.1');
    const got: Buffer[] = [];
    let length = 0;
    const want = 2 * n;
    await new Promise<void>((resolve, reject) => {
      socket.on('connect', () => socket.write(head + head));
      // Reads stall for 300 ms at the start and every 2 MiB: the socket buffers fill and the
      // proxy's writes to us queue, so it must not read the upstream into a buffer such a
      // queued write still holds.
      socket.on('data', (d: Buffer) => {
        got.push(d);
        const before = length;
        length += d.length;
        if (before === 0 || Math.floor(before / 2_097_152) !== Math.floor(length / 2_097_152)) {
          socket.pause();
          setTimeout(() => socket.resume(), 300);
        }
        if (length >= want + 2 * 80) socket.end();
      });
      socket.on('end', resolve);
      socket.on('close', resolve);
      socket.on('error', reject);
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, 20_000).unref();
    });
    const all = Buffer.concat(got);
    const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const expected = digest(pattern(n));
    const bodiesSeen: string[] = [];
    let at = 0;
    for (let k = 0; k < 2; k++) {
      const end = all.indexOf('\r\n\r\n', at) + 4;
      bodiesSeen.push(digest(all.subarray(end, end + n)));
      at = end + n;
    }
    expect(bodiesSeen).toEqual([expected, expected]);
  });

  it('Connection: close gets connection: close and a FIN after the response', async () => {
    const { text, closed } = await send([GET('/', 'Connection: close\r\n')]);
    expect(closed).toBe(true);
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text.toLowerCase()).toContain('connection: close');
  });

  it('HTTP/1.0 without keep-alive is closed after its response', async () => {
    const { text, closed } = await send(['GET /old HTTP/1.0\r\nhost: web\r\n\r\n']);
    expect(closed).toBe(true);
    expect(text).toContain('"/old"');
  });

  it('Expect: 100-continue: the interim response comes through before the body is sent', async () => {
    const socket = net.connect(proxyPort, '127.0.0.1');
    let text = '';
    socket.setEncoding('latin1');
    await new Promise<void>((resolve) => socket.on('connect', resolve));
    socket.write('POST /e HTTP/1.1\r\nhost: web\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n');
    await new Promise<void>((resolve) =>
      socket.on('data', (d: string) => {
        text += d;
        if (text.includes('100 Continue')) resolve();
      }),
    );
    socket.write('abc');
    await new Promise<void>((resolve) => {
      const check = () => (text.includes('}') ? resolve() : setTimeout(check, 5));
      check();
    });
    socket.destroy();
    expect(JSON.parse(bodies(text).at(-1) ?? '').length).toBe(3);
  });

  it('Upgrade: the 101 and then raw bytes both ways', async () => {
    const socket = net.connect(proxyPort, '127.0.0.1');
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      text += d;
      if (text.includes('hello from') && !text.includes('ping')) socket.write('ping');
    });
    socket.write('GET /ws HTTP/1.1\r\nhost: web\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n');
    await new Promise<void>((resolve) => {
      const check = () => (text.includes('ping') ? resolve() : setTimeout(check, 5));
      check();
    });
    socket.destroy();
    expect(text).toMatch(/^HTTP\/1\.1 101 /);
    expect(text).toContain('upgrade: websocket');
  });

  it('503 with the service named when nothing is ready; 502 with the error when nothing answers', async () => {
    const empty = await send([GET()], (t) => t.includes('\n', t.indexOf('\r\n\r\n') + 4), VIP_EMPTY);
    expect(empty.text).toMatch(/^HTTP\/1\.1 503 /);
    expect(empty.text).toContain('edgemesh: no ready endpoint for service default/empty:80');
    const dead = await send([GET()], (t) => t.includes('\n', t.indexOf('\r\n\r\n') + 4), VIP_DEAD);
    expect(dead.text).toMatch(/^HTTP\/1\.1 502 /);
    expect(dead.text).toContain('edgemesh: upstream of default/dead:80 failed');
    expect(dead.text).toContain('ECONNREFUSED');
    // Both answers are counted against their service, with the fast path's own latency.
    const text = await scrape();
    expect(text).toMatch(
      /^edgemesh_proxy_service_requests_total\{[^}]*dst_service="empty",dst_port="80",class="5xx"\} 1$/m,
    );
    expect(text).toMatch(
      /^edgemesh_proxy_service_requests_total\{[^}]*dst_service="dead",dst_port="80",class="5xx"\} 1$/m,
    );
    expect(text).toMatch(
      /^edgemesh_proxy_service_request_duration_seconds_count\{[^}]*dst_service="dead"[^}]*\} 1$/m,
    );
  });

  it('a refused connect moves the request to the next endpoint (GETs, and a POST whose body was not sent yet)', async () => {
    const post = `POST /p HTTP/1.1\r\nhost: half\r\ncontent-length: 5\r\n\r\nhello`;
    const { text } = await send(
      [GET('/g1') + GET('/g2') + post + GET('/g3')],
      (t) => count(t, '"backend"') === 4,
      VIP_HALF,
    );
    expect(text).not.toContain(' 502 ');
    expect(bodies(text).map((b) => JSON.parse(b).url)).toEqual(['/g1', '/g2', '/p', '/g3']);
  });

  it('reuses pooled upstream connections instead of dialling per request', async () => {
    const before = upstreamConnections[0] + upstreamConnections[1];
    for (let i = 0; i < 5; i++) await send([GET(), GET()], (t) => count(t, '"backend"') === 2);
    const after = upstreamConnections[0] + upstreamConnections[1];
    expect(after - before).toBeLessThanOrEqual(2);
  });

  it("a client's Connection: close ends its own connection, not the pooled upstream one", async () => {
    // Warm both endpoints' pools, then clients that each send one request and close.
    await send([GET(), GET()], (t) => count(t, '"backend"') === 2);
    const before = upstreamConnections[0] + upstreamConnections[1];
    for (let i = 0; i < 6; i++) {
      const { text, closed } = await send([GET('/c', 'Connection: close\r\n')]);
      expect(closed).toBe(true);
      expect(text).toContain('"/c"');
    }
    expect(upstreamConnections[0] + upstreamConnections[1] - before).toBe(0);
    // HTTP/1.0 goes out as 1.0: its upstream connection closes and is not reused.
    const old = await send(['GET /old HTTP/1.0\r\nhost: web\r\n\r\n']);
    expect(old.text).toContain('"/old"');
  });

  it('serves a Node undici client: concurrent keep-alive requests, bodies both ways', async () => {
    const { Pool } = await import('undici');
    const pool = new Pool(`http://127.0.0.1:${proxyPort}`, { connections: 4, pipelining: 2 });
    try {
      const results = await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          const r = await pool.request({
            path: `/u${i}`,
            method: i % 2 ? 'POST' : 'GET',
            body: i % 2 ? 'x'.repeat(i * 1000) : undefined,
          });
          return { status: r.statusCode, body: (await r.body.json()) as { url: string; length: number } };
        }),
      );
      expect(results.map((r) => r.status)).toEqual(Array(40).fill(200));
      expect(results.map((r) => r.body.url)).toEqual(Array.from({ length: 40 }, (_, i) => `/u${i}`));
      expect(results.map((r) => r.body.length)).toEqual(
        Array.from({ length: 40 }, (_, i) => (i % 2 ? i * 1000 : 0)),
      );
    } finally {
      await pool.close();
    }
  });

  describe('request smuggling and malformed heads are refused with 400 (or 431) and a close', () => {
    const cases: [string, string, number][] = [
      [
        'Content-Length and Transfer-Encoding',
        'POST / HTTP/1.1\r\nhost: w\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n',
        400,
      ],
      [
        'two different Content-Lengths',
        'POST / HTTP/1.1\r\nhost: w\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd',
        400,
      ],
      ['Content-Length not digits', 'POST / HTTP/1.1\r\nhost: w\r\ncontent-length: +3\r\n\r\nabc', 400],
      [
        'Transfer-Encoding not ending in chunked',
        'POST / HTTP/1.1\r\nhost: w\r\ntransfer-encoding: chunked, gzip\r\n\r\n',
        400,
      ],
      ['Transfer-Encoding: gzip alone', 'POST / HTTP/1.1\r\nhost: w\r\ntransfer-encoding: gzip\r\n\r\n', 400],
      ['obs-fold', 'GET / HTTP/1.1\r\nhost: w\r\nx-a: 1\r\n  folded\r\n\r\n', 400],
      ['bare CR in a value', 'GET / HTTP/1.1\r\nhost: w\r\nx-a: 1\r2\r\n\r\n', 400],
      ['bare LF line end', 'GET / HTTP/1.1\nhost: w\r\n\r\n', 400],
      ['space before the colon', 'GET / HTTP/1.1\r\nhost : w\r\n\r\n', 400],
      ['Transfer-Encoding in HTTP/1.0', 'POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n', 400],
      ['bad chunk size', 'POST / HTTP/1.1\r\nhost: w\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n', 400],
      [
        'chunk data longer than its size',
        'POST / HTTP/1.1\r\nhost: w\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n',
        400,
      ],
      ['not HTTP at all', 'hello there\r\n\r\n', 400],
      ['CONNECT', 'CONNECT example.com:443 HTTP/1.1\r\nhost: example.com\r\n\r\n', 405],
      ['101 header fields', `GET / HTTP/1.1\r\n${'x-h: 1\r\n'.repeat(101)}\r\n`, 431],
      ['a 40 KiB head', `GET / HTTP/1.1\r\nx-big: ${'a'.repeat(40 * 1024)}\r\n\r\n`, 431],
    ];
    for (const [name, bytes, status] of cases) {
      it(name, async () => {
        const { text, closed } = await send([bytes]);
        expect(closed).toBe(true);
        expect(text).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
        expect(text).toContain('edgemesh: malformed HTTP request');
        expect(text).not.toContain('"backend"');
      });
    }
  });
});
