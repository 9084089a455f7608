import http2 from 'node:http2';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../../lib/catalog/store.ts';
import type { Catalog } from '../../lib/catalog/types.ts';
import { formatReply, parseRequest, takeLine } from '../../lib/gateway-protocol.ts';
import { silentLogger } from '../../lib/log.ts';
import { GatewayDialer, RoutingDialer } from './dialer.ts';
import { HttpProxy } from './http-proxy.ts';
import { createProxyMetrics } from './metrics.ts';
import { Router } from './router.ts';

// Real sockets on loopback: an h2c backend "on another node", a gateway that answers CONNECT,
// and the L7 proxy taking over connections from a listener as the transparent one hands them.
const VIP = '10.96.0.23';
const servers: net.Server[] = [];
const sessions: http2.ClientHttp2Session[] = [];
let backendPort: number;

function listen(server: net.Server): Promise<number> {
  servers.push(server);
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );
}

/**
 * A gateway that sends its `OK` line and the target's first bytes (an HTTP/2 server's SETTINGS)
 * in one write, as a real one may when the target answers before the reply left.
 */
function coalescingGateway(): net.Server {
  return net.createServer((socket) => {
    let buffer: Buffer = Buffer.alloc(0);
    const onRequest = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const taken = takeLine(buffer);
      if (!taken) return;
      socket.removeListener('data', onRequest);
      socket.pause();
      const req = parseRequest(taken.line);
      if (req.kind !== 'connect') throw new Error('expected CONNECT');
      const upstream = net.connect(backendPort, '127.0.0.1');
      upstream.once('data', (first: Buffer) => {
        socket.write(Buffer.concat([Buffer.from(formatReply({ ok: true, path: 'relay' })), first]));
        upstream.pipe(socket);
        socket.pipe(upstream);
      });
      upstream.on('error', () => socket.destroy());
      socket.on('error', () => upstream.destroy());
    };
    socket.on('data', onRequest);
  });
}

function catalog(): Catalog {
  const port = { name: 'grpc', port: 50051, protocol: 'TCP' as const };
  return {
    format: 1,
    revision: 1,
    clusterDomain: 'cluster.local',
    services: {
      'default/remote-grpc': {
        service: {
          namespace: 'default',
          name: 'remote-grpc',
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
            ip: '10.20.0.40',
            ready: true,
            serving: true,
            terminating: false,
            nodeName: 'node-b',
            ports: [{ ...port, port: 50051 }],
          },
        ],
      },
    },
    pods: {},
    nodes: {
      'node-a': { name: 'node-a', addresses: ['127.0.0.1'] },
      'node-b': { name: 'node-b', addresses: [] },
    },
  };
}

let proxy: HttpProxy;
let proxyPort: number;

beforeAll(async () => {
  const backend = http2.createServer();
  backend.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    stream.end('h2 backend\n');
  });
  backendPort = await listen(backend);
  const gatewayPort = await listen(coalescingGateway());
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: catalog() });
  proxy = new HttpProxy({
    router: new Router(store),
    dialer: new RoutingDialer({
      nodeName: 'node-a',
      gateway: new GatewayDialer({ host: '127.0.0.1', port: gatewayPort }),
    }),
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

function get(session: http2.ClientHttp2Session): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': '/' });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      body += d;
    });
    req.on('end', () => resolve(body));
    req.on('error', reject);
    req.end();
  });
}

describe('h2c through the gateway hop', () => {
  it("keeps the target's first bytes that came in one read with the gateway's reply", async () => {
    const session = http2.connect(`http://127.0.0.1:${proxyPort}`);
    sessions.push(session);
    const bodies: string[] = [];
    for (let i = 0; i < 3; i++) bodies.push(await get(session));
    expect(bodies).toEqual(Array(3).fill('h2 backend\n'));
  });
});
