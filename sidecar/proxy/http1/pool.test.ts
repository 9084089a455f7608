import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Gateway, startGateway } from '../../../gateway/gateway.ts';
import { InProcessTunnel, type RemotePath, type StreamTarget } from '../../../gateway/streams.ts';
import { buildCatalog } from '../../../lib/catalog/from-objects.ts';
import { CatalogStore } from '../../../lib/catalog/store.ts';
import type { Catalog } from '../../../lib/catalog/types.ts';
import { silentLogger } from '../../../lib/log.ts';
import { waitFor } from '../../../test/harness/netns.ts';
import { GatewayDialer, RoutingDialer } from '../dialer.ts';
import { HttpProxy } from '../http-proxy.ts';
import { createProxyMetrics } from '../metrics.ts';
import { Router } from '../router.ts';

// The fast path's upstream pool against the things that end or outdate a pooled connection,
// on real sockets: two real gateways (edge-a: the sidecar's node; edge-b: the backend's) whose
// tunnel carries the bytes in-process and answers with the path a test sets, as the tunnel
// manager does when it moves from the relay to a punched path; and a backend that only hints
// its keep-alive timeout and never closes.
const VIP = '10.96.0.40';
const VIP_HINT = '10.96.0.41';
const REMOTE_POD = '127.0.0.3'; // on edge-b
const HINT_POD = '127.0.0.4'; // node unknown: dialled directly
const VIP_CLOSING = '10.96.0.42';
const CLOSING_POD = '127.0.0.5'; // on edge-b

/** In-process tunnel whose path the test chooses; records each stream's path and whether it is open. */
class PathTunnel extends InProcessTunnel {
  path: RemotePath = 'relay';
  readonly streams: { path: RemotePath; open: boolean }[] = [];

  override async openStream(
    peer: string,
    target: StreamTarget,
  ): Promise<{ stream: Duplex; path: RemotePath }> {
    const { stream } = await super.openStream(peer, target);
    const record = { path: this.path, open: true };
    this.streams.push(record);
    stream.once('close', () => {
      record.open = false;
    });
    return { stream, path: this.path };
  }

  open(path: RemotePath): number {
    return this.streams.filter((s) => s.open && s.path === path).length;
  }

  opened(path: RemotePath): number {
    return this.streams.filter((s) => s.path === path).length;
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'emh-pool-'));
const servers: net.Server[] = [];
const gateways: Gateway[] = [];
const proxies: HttpProxy[] = [];
const tunnel = new PathTunnel();
let gatewayPort = 0;
let backendPort = 0;
let hintPort = 0;
let closingPort = 0;
/** The closing backend's connections: accepted, and closed by it (its keep-alive timeout). */
const closing = { accepted: 0, closed: 0 };
/** Connections the hinting backend accepted, and how many of them the proxy closed. */
const hint = { accepted: 0, closedByProxy: 0 };

function listen(server: net.Server, host: string): Promise<number> {
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port));
  });
}

function catalog(): Catalog {
  const service = (name: string, ip: string, port: number) => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: 'demo', name },
    spec: { clusterIP: ip, ports: [{ name: 'http', port: 80, targetPort: port }] },
  });
  const slice = (name: string, ip: string, port: number, nodeName?: string, pod?: string) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { namespace: 'demo', name: `${name}-1`, labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    endpoints: [
      { addresses: [ip], ...(nodeName ? { nodeName, targetRef: { kind: 'Pod', name: pod } } : {}) },
    ],
    ports: [{ name: 'http', port, protocol: 'TCP' }],
  });
  const { catalog } = buildCatalog([
    service('web', VIP, backendPort),
    slice('web', REMOTE_POD, backendPort, 'edge-b', 'b-0'),
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { namespace: 'demo', name: 'b-0' },
      spec: { nodeName: 'edge-b' },
      status: { phase: 'Running', podIP: REMOTE_POD },
    },
    service('hint', VIP_HINT, hintPort),
    slice('hint', HINT_POD, hintPort),
    service('closing', VIP_CLOSING, closingPort),
    slice('closing', CLOSING_POD, closingPort, 'edge-b', 'b-1'),
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { namespace: 'demo', name: 'b-1' },
      spec: { nodeName: 'edge-b' },
      status: { phase: 'Running', podIP: CLOSING_POD },
    },
  ]);
  return { ...catalog, revision: 1 };
}

/** The sidecar's L7 path on edge-a, behind a listener that stands in for the transparent one. */
async function sidecar(pool?: {
  idleMs?: number;
  relayReuseMs?: number;
}): Promise<(vip: string) => Promise<number>> {
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: catalog() });
  const proxy = new HttpProxy({
    router: new Router(store),
    dialer: new RoutingDialer({
      nodeName: 'edge-a',
      gateway: new GatewayDialer({ host: '127.0.0.1', port: gatewayPort }),
    }),
    connectTimeoutMs: 2000,
    idleTimeoutMs: 30_000,
    maxAttempts: 2,
    log: silentLogger,
    metrics: createProxyMetrics(),
    http1: 'fast',
    pool,
  });
  proxies.push(proxy);
  const ports = new Map<string, number>();
  for (const vip of [VIP, VIP_HINT, VIP_CLOSING]) {
    ports.set(
      vip,
      await listen(
        net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) =>
          proxy.handle(socket, { dstIp: vip, dstPort: 80, clientIp: '127.0.0.1' }),
        ),
        '127.0.0.1',
      ),
    );
  }
  return (vip) => Promise.resolve(ports.get(vip) as number);
}

/** One keep-alive client connection: `get()` sends a request and resolves with the status line. */
async function client(port: number): Promise<{ get(): Promise<string>; close(): void }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.setEncoding('latin1');
  let text = '';
  let waiting: ((line: string) => void) | undefined;
  socket.on('data', (d: string) => {
    text += d;
    // Every response here is small and ends with "ok\n".
    const end = text.indexOf('ok\n');
    if (end >= 0 && waiting) {
      const line = text.slice(0, text.indexOf('\r\n'));
      text = text.slice(end + 3);
      const w = waiting;
      waiting = undefined;
      w(line);
    }
  });
  return {
    get: () =>
      new Promise<string>((resolve) => {
        waiting = resolve;
        socket.write(`GET / HTTP/1.1\r\nhost: web\r\n\r\n`);
      }),
    close: () => socket.destroy(),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  // A backend that keeps idle connections far longer than the pool: only the proxy ends them.
  const backend = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 3 });
    res.end('ok\n');
  });
  backend.keepAliveTimeout = 60_000;
  backendPort = await listen(backend, REMOTE_POD);
  // Says `keep-alive: timeout=2` and never closes: what the proxy does is its own doing.
  const hinting = net.createServer((socket) => {
    hint.accepted++;
    let buf = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      buf += d;
      while (buf.includes('\r\n\r\n')) {
        buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
        socket.write('HTTP/1.1 200 OK\r\ncontent-length: 3\r\nkeep-alive: timeout=2\r\n\r\nok\n');
      }
    });
    socket.on('end', () => {
      hint.closedByProxy++;
      socket.end();
    });
    socket.on('error', () => socket.destroy());
  });
  hintPort = await listen(hinting, HINT_POD);
  // Closes each connection 200 ms after its response, with no hint: as nginx does at its
  // keepalive_timeout. The pool learns of it only through the FIN crossing both gateways.
  const closer = net.createServer({ allowHalfOpen: true }, (socket) => {
    closing.accepted++;
    let timer: NodeJS.Timeout | undefined;
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      if (!d.includes('\r\n\r\n')) return;
      clearTimeout(timer);
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n');
      timer = setTimeout(() => socket.end(), 200);
    });
    socket.on('end', () => socket.end());
    socket.on('close', () => {
      clearTimeout(timer);
      closing.closed++;
    });
    socket.on('error', () => socket.destroy());
  });
  closingPort = await listen(closer, CLOSING_POD);
  const common = {
    listenHost: '127.0.0.1',
    listenPort: 0,
    clusterDomain: 'cluster.local',
    log: silentLogger,
  };
  const a = await startGateway({ ...common, nodeName: 'edge-a', stateDir: join(tmp, 'a'), tunnel });
  const b = await startGateway({
    ...common,
    nodeName: 'edge-b',
    stateDir: join(tmp, 'b'),
    tunnel: async (dialer) => {
      tunnel.register(dialer);
      return tunnel;
    },
  });
  gateways.push(a, b);
  a.store.apply({ type: 'snapshot', catalog: catalog() });
  b.store.apply({ type: 'snapshot', catalog: catalog() });
  gatewayPort = (a.server.address() as net.AddressInfo).port;
});

afterAll(async () => {
  for (const p of proxies) await p.close();
  for (const g of gateways) await g.close();
  for (const s of servers) s.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('HTTP/1.1 fast path: pooled upstream connections', () => {
  it("closes an idle connection 1 s before the server's Keep-Alive timeout, and dials anew", async () => {
    const port = await (await sidecar())(VIP_HINT);
    const c = await client(port);
    expect(await c.get()).toBe('HTTP/1.1 200 OK');
    expect(hint.accepted).toBe(1);
    // timeout=2 → at most 1 s idle in the pool: closed by the proxy, not left to the server.
    await waitFor(() => hint.closedByProxy === 1, 2_500, 50, 'the pool closing its idle connection');
    expect(await c.get()).toBe('HTTP/1.1 200 OK');
    expect(hint.accepted).toBe(2);
    c.close();
  });

  it("a server's close of an idle pooled connection crosses both gateways: the pool drops it at once", async () => {
    const port = await (await sidecar())(VIP_CLOSING);
    tunnel.path = 'punched';
    const c = await client(port);
    const before = tunnel.streams.length;
    expect(await c.get()).toBe('HTTP/1.1 200 OK');
    // Closed by the server, then by the sidecar (the stream through the gateways is gone),
    // long before the pool's own idle limit.
    await waitFor(() => closing.closed === 1, 2_000, 10, 'the connection closed at both ends');
    expect(tunnel.streams.slice(before).every((s) => !s.open)).toBe(true);
    expect(await c.get()).toBe('HTTP/1.1 200 OK');
    expect(closing.accepted).toBe(2);
    expect(tunnel.streams.length - before).toBe(2);
    c.close();
  });

  it('steady traffic: a connection whose stream rides the relay is not reused past its age limit; the next takes the new path', async () => {
    const port = await (await sidecar({ relayReuseMs: 400 }))(VIP);
    const before = tunnel.streams.length;
    tunnel.path = 'relay';
    const c = await client(port);
    expect(await c.get()).toBe('HTTP/1.1 200 OK');
    expect(tunnel.opened('relay')).toBe(1);
    // The gateways found a punched path; the app keeps sending, never idle long enough to expire.
    tunnel.path = 'punched';
    for (let i = 0; i < 20; i++) {
      expect(await c.get()).toBe('HTTP/1.1 200 OK');
      await sleep(50);
    }
    await waitFor(() => tunnel.open('relay') === 0, 2_000, 20, 'the relay stream closed');
    expect(tunnel.streams.slice(before).filter((s) => s.path === 'punched' && s.open)).toHaveLength(1);
    c.close();
  });

  it('a new connection that comes back off the relay retires the pooled relay ones to that node at once', async () => {
    const port = await (await sidecar())(VIP);
    tunnel.path = 'relay';
    const relayBefore = tunnel.opened('relay');
    // Two clients at once: two upstream connections, both on the relay, both pooled after.
    const [c1, c2, c3] = [await client(port), await client(port), await client(port)];
    await Promise.all([c1.get(), c2.get()]);
    expect(tunnel.opened('relay') - relayBefore).toBe(2);
    tunnel.path = 'punched';
    // Three at once: two take the pooled relay connections, the third dials and comes back punched.
    await Promise.all([c1.get(), c2.get(), c3.get()]);
    await waitFor(() => tunnel.open('relay') === 0, 2_000, 20, 'the relay streams closed');
    const punched = tunnel.opened('punched');
    for (let i = 0; i < 5; i++) expect(await c1.get()).toBe('HTTP/1.1 200 OK');
    // Later requests reuse the punched connection: no new stream, none on the relay.
    expect(tunnel.opened('punched')).toBe(punched);
    expect(tunnel.open('relay')).toBe(0);
    for (const c of [c1, c2, c3]) c.close();
  });
});
