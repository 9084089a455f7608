import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../../lib/catalog/store.ts';
import type { Catalog } from '../../lib/catalog/types.ts';
import { Registry } from '../../lib/metrics.ts';
import { RoutingDialer } from './dialer.ts';
import { createProxyMetrics } from './metrics.ts';
import { OutboundProxy } from './proxy.ts';

// proxy.ts's drain() with a request in flight on the native engine's HTTP/1.1 path
// (EDGEMESH_HTTP1_PATH=native, read when the HttpProxy is built): the connection left the
// proxy's Node sockets at hand-over, yet drain waits for its response and the active gauge
// counts it. The node L4 engine accepts (its originalDst hook fakes the ClusterIP); the
// HTTP/1.1 engine is the same either way.
process.env.EDGEMESH_HTTP1_PATH = 'native';

const VIP = '10.96.7.1';
const BODY = 'slow response, whole\n';
const servers: net.Server[] = [];
const registry = new Registry();
let proxy: OutboundProxy;
let proxyPort = 0;
let backendPort = 0;
/** Resolves with a function that sends the held response, once the backend has a request. */
let requested: Promise<() => void>;

function catalog(port: number): Catalog {
  const svcPort = { name: 'http', port: 80, protocol: 'TCP' as const, appProtocol: 'http' };
  return {
    format: 1,
    revision: 1,
    clusterDomain: 'cluster.local',
    services: {
      'default/slow': {
        service: {
          namespace: 'default',
          name: 'slow',
          type: 'ClusterIP',
          clusterIPs: [VIP],
          headless: false,
          ports: [svcPort],
          sessionAffinity: { type: 'None' },
          lbPolicy: 'round-robin',
          publishNotReadyAddresses: false,
        },
        endpoints: [
          { ip: '127.0.0.1', ready: true, serving: true, terminating: false, ports: [{ ...svcPort, port }] },
        ],
      },
    },
    pods: {},
    nodes: {},
  } as unknown as Catalog;
}

const listen = (server: net.Server, port = 0): Promise<number> =>
  new Promise((resolve, reject) => {
    servers.push(server);
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });

/** A free loopback port for the proxy (it listens on its configured port, not an ephemeral one). */
async function freePort(): Promise<number> {
  const probe = net.createServer();
  const port = await listen(probe);
  servers.pop();
  await new Promise((r) => probe.close(r));
  return port;
}

async function gauge(): Promise<number> {
  const line = (await registry.metrics())
    .split('\n')
    .find((x) => x.startsWith('edgemesh_proxy_active_connections '));
  return Number(line?.split(' ').pop());
}

beforeAll(async () => {
  let release: (send: () => void) => void = () => undefined;
  requested = new Promise((r) => {
    release = r;
  });
  // The backend answers only when the test says so: the response is in flight meanwhile.
  backendPort = await listen(
    net.createServer((socket) => {
      socket.once('data', () =>
        release(() =>
          socket.write(
            `HTTP/1.1 200 OK\r\ncontent-length: ${BODY.length}\r\nkeep-alive: timeout=5\r\n\r\n${BODY}`,
          ),
        ),
      );
      socket.on('error', () => socket.destroy());
    }),
  );
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: catalog(backendPort) });
  proxyPort = await freePort();
  proxy = new OutboundProxy({
    store,
    dialer: new RoutingDialer({}),
    port: proxyPort,
    hosts: ['127.0.0.1'],
    metrics: createProxyMetrics(registry),
    originalDst: () => ({ ip: VIP, port: 80, family: 4 }),
  });
  await proxy.start();
});

afterAll(async () => {
  for (const s of servers) s.close();
});

describe('drain with the native HTTP/1.1 path', () => {
  it('waits for an in-flight response, which arrives whole, then the connection closes', async () => {
    const client = net.connect(proxyPort, '127.0.0.1');
    client.setEncoding('latin1');
    let text = '';
    client.on('data', (d: string) => {
      text += d;
    });
    const closed = new Promise<void>((r) => client.once('close', () => r()));
    client.write('GET /slow HTTP/1.1\r\nhost: slow\r\nconnection: keep-alive\r\n\r\n');
    const send = await requested;

    // In flight: held by the engine, no longer a Node socket of the proxy, counted once.
    expect(proxy.activeConnections).toBe(1);
    expect(await gauge()).toBe(1);

    const order: string[] = [];
    const drained = proxy.drain(10_000).then(() => order.push('drained'));
    // Time for a drain that does not see the connection to finish (and close it) first.
    await new Promise((r) => setTimeout(r, 300));
    expect(proxy.activeConnections).toBe(1);
    send();
    await closed.then(() => order.push('closed'));
    await drained;

    expect(order).toEqual(['closed', 'drained']);
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    // Keep-alive ends with this response: the engine says so and closes after it.
    expect(text.toLowerCase()).toContain('connection: close\r\n');
    expect(text.endsWith(`\r\n\r\n${BODY}`)).toBe(true);
    expect(proxy.activeConnections).toBe(0);
  });
});
