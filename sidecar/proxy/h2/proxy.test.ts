import http2 from 'node:http2';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../../../lib/catalog/store.ts';
import type { Catalog } from '../../../lib/catalog/types.ts';
import { silentLogger } from '../../../lib/log.ts';
import { directDialer } from '../dialer.ts';
import { HttpProxy } from '../http-proxy.ts';
import { createProxyMetrics } from '../metrics.ts';
import { Router } from '../router.ts';

// Real sockets on loopback: an h2c backend, the L7 proxy taking over connections from a
// listener as the transparent one hands them, and a node:http2 client.
const VIP = '10.96.0.30';
const servers: net.Server[] = [];
const sessions: http2.ClientHttp2Session[] = [];
const PATHS = ['frames', 'node'] as const;
const proxies: HttpProxy[] = [];
/** The listener port of each path's proxy (EDGEMESH_H2_PATH picks the h2c implementation). */
const ports: Record<(typeof PATHS)[number], number> = { frames: 0, node: 0 };

function listen(server: net.Server): Promise<number> {
  servers.push(server);
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );
}

function catalog(backendPort: number): Catalog {
  const port = { name: 'grpc', port: 50051, protocol: 'TCP' as const };
  return {
    format: 1,
    revision: 1,
    clusterDomain: 'cluster.local',
    services: {
      'default/h2': {
        service: {
          namespace: 'default',
          name: 'h2',
          type: 'ClusterIP',
          clusterIPs: [VIP],
          headless: false,
          ports: [port],
          sessionAffinity: { type: 'None' },
          lbPolicy: 'round-robin',
          publishNotReadyAddresses: false,
        },
        endpoints: [
          {
            ip: '127.0.0.1',
            ready: true,
            serving: true,
            terminating: false,
            ports: [{ ...port, port: backendPort }],
          },
        ],
      },
    },
    pods: {},
    nodes: {},
  };
}

beforeAll(async () => {
  const backend = http2.createServer();
  backend.on('stream', (stream, headers) => {
    const path = String(headers[':path']);
    if (path === '/echo') {
      // The body back, its length and a checksum in trailers: flow control both ways.
      stream.respond({ ':status': 200 }, { waitForTrailers: true });
      let n = 0;
      stream.on('data', (d: Buffer) => {
        n += d.length;
      });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-length': String(n) }));
      stream.pipe(stream);
      return;
    }
    if (path.startsWith('/bytes/')) {
      stream.respond({ ':status': 200 });
      stream.end(Buffer.alloc(Number(path.slice(7)), 'b'));
      return;
    }
    if (path === '/hang') {
      stream.respond({ ':status': 200 });
      stream.write('first');
      stream.on('close', () => hangClosed.push(stream.rstCode));
      return;
    }
    if (path === '/early') {
      // Answers before reading the body, as a server refusing a large upload does.
      stream.respond({ ':status': 413 });
      stream.end('too big\n');
      return;
    }
    stream.respond({ ':status': 200, 'content-type': 'text/plain' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc' }));
    stream.end('with trailers\n');
  });
  const backendPort = await listen(backend as unknown as net.Server);
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: catalog(backendPort) });
  for (const path of PATHS) {
    const before = process.env.EDGEMESH_H2_PATH;
    process.env.EDGEMESH_H2_PATH = path;
    const proxy = new HttpProxy({
      router: new Router(store),
      dialer: directDialer,
      connectTimeoutMs: 2000,
      idleTimeoutMs: 10_000,
      maxAttempts: 1,
      log: silentLogger,
      metrics: createProxyMetrics(),
    });
    if (before === undefined) delete process.env.EDGEMESH_H2_PATH;
    else process.env.EDGEMESH_H2_PATH = before;
    proxies.push(proxy);
    ports[path] = await listen(
      net.createServer({ pauseOnConnect: true }, (socket) =>
        proxy.handle(socket, { dstIp: VIP, dstPort: 50051, clientIp: '127.0.0.1' }),
      ),
    );
  }
});
const hangClosed: (number | undefined)[] = [];

afterAll(async () => {
  for (const s of sessions) s.destroy();
  for (const p of proxies) await p.close();
  for (const s of servers) s.close();
});

function connect(port: number): http2.ClientHttp2Session {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  sessions.push(session);
  return session;
}

function exchange(
  port: number | http2.ClientHttp2Session,
  path: string,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer,
): Promise<{ status: number; body: string; trailers: http2.IncomingHttpHeaders | undefined }> {
  const session = typeof port === 'number' ? connect(port) : port;
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path, ':method': body ? 'POST' : 'GET', ...headers });
    let status = 0;
    let text = '';
    let trailers: http2.IncomingHttpHeaders | undefined;
    req.on('response', (h) => {
      status = Number(h[':status']);
    });
    req.on('trailers', (t) => {
      trailers = t;
    });
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      text += d;
    });
    req.on('end', () => resolve({ status, body: text, trailers }));
    req.on('error', reject);
    if (body) req.end(body);
    else req.end();
  });
}

describe.each(PATHS)('the h2c path in process (%s)', (path) => {
  it('carries trailers to a client that takes them (te: trailers)', async () => {
    const r = await exchange(ports[path], '/', { te: 'trailers' });
    expect(r.status).toBe(200);
    expect(r.body).toBe('with trailers\n');
    expect(r.trailers?.['x-checksum']).toBe('abc');
  });

  it('passes an answer given before the request body was read, and the stream still ends', async () => {
    const r = await exchange(ports[path], '/early', {}, Buffer.alloc(1 << 20, 'x'));
    expect(r).toMatchObject({ status: 413, body: 'too big\n' });
  });

  it('echoes a 3 MiB body both ways under flow control (beyond every window), trailers after it', async () => {
    const body = Buffer.from('0123456789abcdef'.repeat(3 << 16));
    const r = await exchange(ports[path], '/echo', { te: 'trailers' }, body);
    expect(r.status).toBe(200);
    expect(r.trailers?.['x-length']).toBe(String(body.length));
    expect(r.body === body.toString()).toBe(true);
  });

  it('carries 300 concurrent streams of one connection (more than one upstream connection takes)', async () => {
    const session = connect(ports[path]);
    const all = await Promise.all(Array.from({ length: 300 }, () => exchange(session, '/bytes/1000', {})));
    expect(all.every((r) => r.status === 200 && r.body.length === 1000)).toBe(true);
  });

  it('cancels the upstream stream when the client resets its stream', async () => {
    const session = connect(ports[path]);
    const before = hangClosed.length;
    await new Promise<void>((resolve, reject) => {
      const req = session.request({ ':path': '/hang' });
      req.on('data', () => {
        req.close(http2.constants.NGHTTP2_CANCEL);
        resolve();
      });
      req.on('error', reject);
      req.end();
    });
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (hangClosed.length > before) {
          clearInterval(t);
          resolve();
        }
      }, 10);
    });
    expect(hangClosed.at(-1)).toBe(http2.constants.NGHTTP2_CANCEL);
  });
});
