import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../../lib/catalog/store.ts';
import type { Catalog, LbPolicy } from '../../lib/catalog/types.ts';
import { Registry } from '../../lib/metrics.ts';
import { RoutingDialer, SOCKET_HWM } from './dialer.ts';
import { createProxyMetrics } from './metrics.ts';
import { NativeHttp1 } from './native-http1.ts';
import { NativeL4 } from './native-l4.ts';
import { Router } from './router.ts';

// The native engine's HTTP/1.1 path on loopback: which services it takes, a keep-alive
// connection carried by it (counted at scrape), and a request it gives back to JavaScript.
// The whole fast-path suites also run on it: fast.native.test.ts, pool.native.test.ts.
const registry = new Registry();
const metrics = createProxyMetrics(registry);
const servers: net.Server[] = [];
const fallbacks: string[] = [];
/** Per fallback: whether the connection was taken from its fd, unread (takeFd). */
const unsniffed: boolean[] = [];
let directPort = 0;
let l4: NativeL4 | undefined;
let native: NativeHttp1;
let router: Router;
let backendPort = 0;
let proxyPort = 0;

function catalog(port: number): Catalog {
  const svcPort = { name: 'http', port: 80, protocol: 'TCP' as const };
  const service = (name: string, ip: string, lbPolicy: LbPolicy, extra: object = {}) => ({
    service: {
      namespace: 'default',
      name,
      type: 'ClusterIP' as const,
      clusterIPs: [ip],
      headless: false,
      ports: [svcPort],
      sessionAffinity: { type: 'None' as const },
      lbPolicy,
      publishNotReadyAddresses: false,
      ...extra,
    },
    endpoints: [
      { ip: '127.0.0.1', ready: true, serving: true, terminating: false, ports: [{ ...svcPort, port }] },
    ],
  });
  return {
    format: 1,
    revision: 1,
    clusterDomain: 'cluster.local',
    services: {
      'default/web': service('web', '10.96.1.1', 'round-robin'),
      'default/least': service('least', '10.96.1.2', 'least-connections'),
      'default/hash': service('hash', '10.96.1.3', 'consistent-hash', { hashHeader: 'x-user' }),
      'default/sticky': service('sticky', '10.96.1.4', 'round-robin', {
        sessionAffinity: { type: 'ClientIP', timeoutSeconds: 60 },
      }),
      'default/empty': { ...service('empty', '10.96.1.5', 'round-robin'), endpoints: [] },
    },
    pods: {},
    nodes: {},
  } as unknown as Catalog;
}

const listen = (server: net.Server): Promise<number> =>
  new Promise((resolve) => {
    servers.push(server);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });

beforeAll(async () => {
  backendPort = await listen(
    http.createServer((req, res) => {
      req.resume();
      req.on('end', () => res.end(`${req.method} ${req.url}`));
    }),
  );
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: catalog(backendPort) });
  router = new Router(store);
  const created = NativeHttp1.create({
    router,
    dialer: new RoutingDialer({}),
    metrics,
    connectTimeoutMs: 1000,
    idleTimeoutMs: 10_000,
    onFallback: (socket, _ctx, buffered, fromFd) => {
      fallbacks.push(buffered.toString('latin1'));
      unsniffed.push(fromFd);
      socket.destroy();
    },
  });
  if (created instanceof Error) throw created;
  native = created;
  proxyPort = await listen(
    net.createServer({ pauseOnConnect: true, allowHalfOpen: true, highWaterMark: SOCKET_HWM }, (socket) => {
      if (!native.take(socket, { dstIp: '10.96.1.1', dstPort: 80, clientIp: '127.0.0.1' }, undefined))
        socket.destroy();
    }),
  );
  // As proxy.ts with the native L4 engine: the fd it accepted goes over before JavaScript
  // reads a byte, and the HTTP/1.1 engine owns it from then on (nobody here closes it).
  const engine = new NativeL4({
    idleTimeoutMs: 10_000,
    onAccepted: (conn) => {
      if (native.takeFd(conn.fd, { dstIp: '10.96.1.1', dstPort: 80, clientIp: '127.0.0.1' }))
        engine.handedOver(conn.fd);
      else engine.reset(conn.fd);
    },
    onAcceptError: (code) => {
      throw new Error(`accept failed: ${code}`);
    },
  });
  l4 = engine;
  // A free port for the engine's listener: the kernel picks one, released at once.
  directPort = await listen(net.createServer());
  await new Promise((resolve) => servers.pop()?.close(resolve));
  engine.listen('127.0.0.1', directPort, 64);
});

afterAll(() => {
  native?.stop();
  l4?.stop();
  for (const s of servers) s.close();
});

/** Writes `request`, reads until `done(text)`. */
function exchange(request: string, done: (text: string) => boolean, port = proxyPort): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request));
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      text += d;
      if (done(text)) {
        socket.destroy();
        resolve(text);
      }
    });
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
}

describe('native HTTP/1.1 path', () => {
  it.each([
    ['10.96.1.1', undefined],
    ['10.96.1.2', 'lb policy least-connections'],
    ['10.96.1.3', 'lb policy consistent-hash'],
    ['10.96.1.4', 'ClientIP session affinity'],
    ['10.96.1.5', 'no ready endpoint (JavaScript answers 503)'],
    ['10.9.9.9', 'not a service'],
  ])('takes %s: %s', (ip, why) => {
    expect(native.eligible(router.resolve(ip, 80))).toBe(why);
  });

  it('carries keep-alive requests itself and counts them at scrape', async () => {
    const get = (path: string) => `GET ${path} HTTP/1.1\r\nhost: web\r\nconnection: keep-alive\r\n\r\n`;
    const text = await exchange(get('/1') + get('/2') + get('/3'), (t) => t.includes('GET /3'));
    expect(text.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(3);
    expect(text).toContain('GET /1');
    // The backend's keep-alive lines are dropped (hop-by-hop), as fast.ts drops them.
    expect(text.toLowerCase()).not.toContain('keep-alive');
    const scrape = await registry.metrics();
    expect(scrape).toMatch(
      /^edgemesh_proxy_service_requests_total\{[^}]*dst_service="web"[^}]*class="2xx"\} 3$/m,
    );
    expect(scrape).toMatch(/^edgemesh_proxy_http_requests_total\{code="200"\} 3$/m);
  });

  it('gives a chunked request back to JavaScript with the bytes it has not handled', async () => {
    const chunked =
      'POST /c HTTP/1.1\r\nhost: web\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n';
    await exchange(`GET /first HTTP/1.1\r\nhost: web\r\n\r\n${chunked}`, () => false);
    expect(fallbacks).toEqual([chunked]);
    expect(unsniffed).toEqual([false]);
  });

  it('takes a connection from its fd, unread: reads the first head itself', async () => {
    const text = await exchange(
      'GET /direct HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n',
      () => false,
      directPort,
    );
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text).toMatch(/connection: close\r\n/i);
    expect(text.endsWith('GET /direct')).toBe(true);
  });

  it('gives back a connection taken from its fd whose first request it does not carry, marked unsniffed', async () => {
    fallbacks.length = 0;
    unsniffed.length = 0;
    const preface = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
    await exchange(preface, () => false, directPort);
    expect(fallbacks).toEqual([preface]);
    expect(unsniffed).toEqual([true]);
  });
});
