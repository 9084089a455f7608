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
let proxy: HttpProxy;
let proxyPort: number;

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
    if (headers[':path'] === '/early') {
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
  proxy = new HttpProxy({
    router: new Router(store),
    dialer: directDialer,
    connectTimeoutMs: 2000,
    idleTimeoutMs: 10_000,
    maxAttempts: 1,
    log: silentLogger,
    metrics: createProxyMetrics(),
  });
  proxyPort = await listen(
    net.createServer({ pauseOnConnect: true }, (socket) =>
      proxy.handle(socket, { dstIp: VIP, dstPort: 50051, clientIp: '127.0.0.1' }),
    ),
  );
});

afterAll(async () => {
  for (const s of sessions) s.destroy();
  await proxy?.close();
  for (const s of servers) s.close();
});

function exchange(
  path: string,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer,
): Promise<{ status: number; body: string; trailers: http2.IncomingHttpHeaders | undefined }> {
  const session = http2.connect(`http://127.0.0.1:${proxyPort}`);
  sessions.push(session);
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

describe('the h2c path in process', () => {
  it('carries trailers to a client that takes them (te: trailers)', async () => {
    const r = await exchange('/', { te: 'trailers' });
    expect(r.status).toBe(200);
    expect(r.body).toBe('with trailers\n');
    expect(r.trailers?.['x-checksum']).toBe('abc');
  });

  it('passes an answer given before the request body was read, and the stream still ends', async () => {
    const r = await exchange('/early', {}, Buffer.alloc(1 << 20, 'x'));
    expect(r).toMatchObject({ status: 413, body: 'too big\n' });
  });
});
