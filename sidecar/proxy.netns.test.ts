/**
 * The real sidecar process (`edgemesh sidecar`, uid 1337) in a pod network namespace with the
 * capture rules of `edgemesh init`, clients (curl, a Node client) whose connections iptables
 * redirects to it, and real backends in a second namespace (sidecar/testing/lab.ts).
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EDGEMESH_BIN, waitFor } from '../test/harness/netns.ts';
import {
  BACKENDS,
  BACKENDS6,
  HTTP_PORT,
  KNOWN_POD,
  labCatalog,
  NODE,
  PASSTHROUGH,
  type ProxyLab,
  proxyUser,
  REMOTE,
  setUpProxyLab,
  TCP_PORT,
  VIP,
} from './testing/lab.ts';

const CLIENT = new URL('./testing/client.ts', import.meta.url).pathname;
let l: ProxyLab;
let dir: string;
let catalogFile: string;

async function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return l.lab.run(l.pod, ['curl', '-sS', '-m', '5', ...args]);
}

/** h2c requests over one session through the proxy (the lab client): the response bodies. */
async function h2(host: string, count: number): Promise<string[]> {
  const r = await l.lab.exec(l.pod, [
    NODE,
    CLIENT,
    'h2',
    '--host',
    host,
    '--port',
    '50051',
    '--count',
    String(count),
  ]);
  return JSON.parse(r.stdout) as string[];
}

/** Raw TCP through the proxy: one JSON result per connection. `holdMs`: wait before sending. */
async function tcp(
  host: string,
  port: number,
  count = 1,
  send = 'ping',
  holdMs = 0,
): Promise<{ data?: string; error?: string }[]> {
  const r = await l.lab.exec(l.pod, [
    NODE,
    CLIENT,
    'tcp',
    '--host',
    host,
    '--port',
    String(port),
    '--count',
    String(count),
    '--send',
    send,
    '--hold-ms',
    String(holdMs),
  ]);
  return r.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line));
}

async function metric(name: string): Promise<number> {
  const r = await curl(['http://127.0.0.1:15020/metrics']);
  const line = r.stdout.split('\n').find((x) => x.startsWith(name));
  return line ? Number(line.split(' ').pop()) : 0;
}

const tally = (items: string[]) => {
  const out: Record<string, number> = {};
  for (const i of items) out[i] = (out[i] ?? 0) + 1;
  return out;
};
const greeting = (data = '') => /^hello from (\S+)\n/.exec(data)?.[1];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emp-'));
  await chmod(dir, 0o755); // the sidecar runs as uid 1337 and must read the catalog
  catalogFile = join(dir, 'catalog.json');
  l = await setUpProxyLab('emp', { catalogFile });
});

afterAll(async () => {
  await l?.lab.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe('HTTP service ports (per-request balancing)', () => {
  it('spreads the requests of ONE keep-alive curl connection round-robin over all endpoints', async () => {
    const url = `http://${VIP.web}/`;
    const r = await curl(['-w', '%{num_connects}\\n', ...Array(10).fill(url)]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const backends = lines.filter((x) => x.startsWith('backend ')).map((x) => x.slice(8));
    const connects = lines.filter((x) => /^\d+$/.test(x)).map(Number);
    expect(connects.reduce((a, b) => a + b, 0)).toBe(1); // curl reused one connection
    expect(tally(backends)).toEqual(Object.fromEntries([...BACKENDS, ...BACKENDS6].map((ip) => [ip, 2])));
  });

  it('serves IPv6 cluster IPs', async () => {
    const r = await curl([`http://[${VIP.web6}]/`]);
    expect(r.stdout).toMatch(/^backend \S+\n$/);
  });

  it('retries an idempotent request on the next endpoint when one refuses', async () => {
    const r = await curl(['-w', '%{http_code}\\n', ...Array(4).fill(`http://${VIP.flakyHttp}/`)]);
    expect(r.stdout.trim().split('\n')).toEqual(
      Array(4)
        .fill([`backend ${BACKENDS[0]}`, '200'])
        .flat(),
    );
  });

  it('keeps a hash-header key on one endpoint and spreads different keys', async () => {
    const pick = async (user: string) =>
      (await curl(['-H', `x-user: ${user}`, `http://${VIP.hashed}/`])).stdout.trim();
    const alice = await pick('alice');
    for (let i = 0; i < 4; i++) expect(await pick('alice')).toBe(alice);
    const many = new Set<string>();
    for (let i = 0; i < 12; i++) many.add(await pick(`user-${i}`));
    expect(many.size).toBeGreaterThan(1);
  });

  it('carries HTTP requests to an endpoint on another node through the gateway, reusing the stream', async () => {
    const before = l.gatewayRequests.length;
    const r = await curl(['-w', '%{http_code}\\n', ...Array(3).fill(`http://${VIP.remoteHttp}/`)]);
    expect(r.stdout).toBe(`backend ${REMOTE}\n200\n`.repeat(3));
    // One CONNECT for three requests: the pooled upstream connection is the gateway stream.
    expect(l.gatewayRequests.slice(before).map((x) => JSON.parse(x))).toEqual([
      { kind: 'connect', node: 'node-b', ip: REMOTE, port: HTTP_PORT },
    ]);
  });

  it('carries h2c to an endpoint on another node through the gateway', async () => {
    const before = l.gatewayRequests.length;
    const bodies = await h2(VIP.remoteGrpc, 3);
    expect(bodies).toEqual(Array(3).fill(`h2 ${REMOTE}\n`));
    expect(l.gatewayRequests.slice(before).map((x) => JSON.parse(x))).toEqual([
      { kind: 'connect', node: 'node-b', ip: REMOTE, port: 50051 },
    ]);
  });

  it('answers 503 with a clear body when no endpoint is ready', async () => {
    const r = await curl(['-w', '%{http_code}', `http://${VIP.empty}/`]);
    expect(r.stdout).toBe('edgemesh: no ready endpoint for service default/empty:80\n503');
  });

  it('answers 502 naming the failure when no endpoint accepts the connection', async () => {
    const r = await curl(['-w', '%{http_code}', `http://${VIP.dead}/`]);
    expect(r.stdout).toMatch(/^edgemesh: upstream of default\/dead:80 failed: .*ECONNREFUSED.*\n502$/);
  });

  it('carries POST bodies (not retried) and 1 MiB responses intact', async () => {
    const post = await curl(['--data-binary', 'x'.repeat(100_000), `http://${VIP.web}/`]);
    expect(post.stdout).toMatch(/^\S+ got 100000 bytes\n$/);
    const big = await curl(['-o', '/dev/null', '-w', '%{size_download}', `http://${VIP.web}/bytes/1048576`]);
    expect(big.stdout).toBe('1048576');
  });

  it('balances h2c requests of one session over the endpoints', async () => {
    const bodies = await h2(VIP.grpc, 6);
    expect(tally(bodies)).toEqual(Object.fromEntries(BACKENDS.map((ip) => [`h2 ${ip}\n`, 2])));
  });

  it('passes Upgrade (WebSocket-style) connections through as raw bytes', async () => {
    const [r] = await tcp(
      VIP.web,
      80,
      1,
      'GET /ws HTTP/1.1\\r\\nHost: web\\r\\nConnection: Upgrade\\r\\nUpgrade: echo\\r\\n\\r\\nhi there',
    );
    expect(r.data).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
    expect(r.data).toMatch(/upgraded \S+\n/);
    expect(r.data?.endsWith('hi there')).toBe(true);
  });

  it('closes an h2c connection that sends garbage after the preface, and keeps serving', async () => {
    const [r] = await tcp(
      VIP.grpc,
      50051,
      1,
      'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\nthis is not a frame at all',
    );
    expect(r.error).toBeUndefined(); // closed by the proxy, not timed out
    // What came back, if anything, is HTTP/2 frames (SETTINGS/GOAWAY), never an HTTP/1 answer.
    expect(r.data ?? '').not.toMatch(/HTTP\/1/);
    const ok = await h2(VIP.grpc, 1);
    expect(ok[0]).toMatch(/^h2 /);
  });

  it('answers garbage with 400 and a close, and keeps serving', async () => {
    const [r] = await tcp(VIP.web, 80, 1, '\\x00\\x01\\x02 NOT HTTP\\r\\n\\r\\n');
    expect(r.data).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(r.data).toMatch(/edgemesh: malformed HTTP request/);
    const ok = await curl([`http://${VIP.web}/`]);
    expect(ok.stdout).toMatch(/^backend /);
  });
});

describe('hostile input', () => {
  it.each([
    ['HTTP/1 port', VIP.web, '80'],
    ['h2c port', VIP.grpc, '50051'],
    ['TCP port', VIP.echo, '7'],
  ])('random bytes on a %s never stall or crash the sidecar', async (_name, host, port) => {
    const r = await l.lab.exec(
      l.pod,
      [
        NODE,
        CLIENT,
        'fuzz',
        '--host',
        host,
        '--port',
        port,
        '--count',
        '60',
        '--seed',
        String(port.length * 7919),
      ],
      { timeoutMs: 120_000 },
    );
    const out = JSON.parse(r.stdout) as { closed: number; resets: number; timeouts: number };
    expect(out.timeouts).toBe(0);
    expect(out.closed + out.resets).toBe(60);
    const ok = await curl([`http://${VIP.web}/`]);
    expect(ok.stdout).toMatch(/^backend /);
  });
});

describe('TCP service ports', () => {
  it('balances connections round-robin and carries half-close both ways', async () => {
    const results = await tcp(VIP.echo, 7, 6, 'ping');
    for (const r of results) expect(r.data).toMatch(/^hello from \S+\npingbye 4\n$/);
    expect(tally(results.map((r) => greeting(r.data) ?? 'none'))).toEqual(
      Object.fromEntries(BACKENDS.map((ip) => [ip, 2])),
    );
  });

  it('carries 64 MiB both ways byte-exact (backpressure, reused read buffers, half-close)', async () => {
    const r = await l.lab.exec(
      l.pod,
      [NODE, CLIENT, 'echo', '--host', VIP.echo, '--port', '7', '--bytes', String(64 << 20)],
      {
        timeoutMs: 60_000,
      },
    );
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, bytes: 64 << 20, tail: `bye ${64 << 20}\n` });
  });

  it('keeps a client on one endpoint with sessionAffinity ClientIP', async () => {
    const results = await tcp(VIP.sticky, 7, 6);
    expect(new Set(results.map((r) => greeting(r.data))).size).toBe(1);
  });

  it('fails over to the next endpoint when one refuses', async () => {
    const failuresBefore = await metric('edgemesh_proxy_connect_failures_total{via="pod"');
    const results = await tcp(VIP.flakyTcp, 7, 4);
    expect(results.map((r) => greeting(r.data))).toEqual(Array(4).fill(BACKENDS[1]));
    // Outlier ejection: after its first refusal the dead endpoint is skipped, not retried each time.
    expect(await metric('edgemesh_proxy_connect_failures_total{via="pod"')).toBe(failuresBefore + 1);
  });

  it('resets the connection when a service has no ready endpoint', async () => {
    const [r] = await tcp(VIP.empty, 7);
    expect(r.error).toBe('ECONNRESET');
  });

  it('resets the connection when no endpoint accepts it', async () => {
    const [r] = await tcp(VIP.dead, 7);
    expect(r.error).toBe('ECONNRESET');
  });

  it('serves IPv6 cluster IPs', async () => {
    const results = await tcp(VIP.echo6, 7, 2);
    expect(results.map((r) => greeting(r.data)).sort()).toEqual([...BACKENDS6].sort());
  });

  it('reaches an endpoint on another node through the gateway hop', async () => {
    // Not reachable directly from the pod (the sidecar's uid is not captured, so this tests the route):
    const direct = await l.lab.run(
      l.pod,
      [NODE, CLIENT, 'tcp', '--host', REMOTE, '--port', String(TCP_PORT)],
      await proxyUser(l.lab, l.pod),
    );
    expect(JSON.parse(direct.stdout).error).toBe('ECONNREFUSED');
    const before = l.gatewayRequests.length;
    const [r] = await tcp(VIP.remote, 7, 1, 'via gateway');
    expect(r.data).toBe(`hello from ${REMOTE}\nvia gatewaybye 11\n`);
    expect(l.gatewayRequests.slice(before).map((x) => JSON.parse(x))).toEqual([
      { kind: 'connect', node: 'node-b', ip: REMOTE, port: TCP_PORT },
    ]);
  });
});

describe('metrics by destination service', () => {
  // Names end before the closing brace: the registry appends its default labels.
  const labels = (service: string, port: number) =>
    `dst_namespace="default",dst_service="${service}",dst_port="${port}"`;

  it('counts HTTP requests by response class, with their latency, per service port', async () => {
    const ok = `edgemesh_proxy_service_requests_total{${labels('web', 80)},class="2xx"`;
    const took = `edgemesh_proxy_service_request_duration_seconds_count{${labels('web', 80)}`;
    const none = `edgemesh_proxy_service_requests_total{${labels('empty', 80)},class="5xx"`;
    const [okBefore, tookBefore, noneBefore] = [await metric(ok), await metric(took), await metric(none)];
    const r = await curl([`http://${VIP.web}/`, `http://${VIP.web}/`, `http://${VIP.web}/`]);
    expect(r.code).toBe(0);
    expect(await curl(['-o', '/dev/null', '-w', '%{http_code}', `http://${VIP.empty}/`])).toMatchObject({
      stdout: '503',
    });
    expect(await metric(ok)).toBe(okBefore + 3);
    expect(await metric(took)).toBe(tookBefore + 3);
    expect(await metric(none)).toBe(noneBefore + 1);
    // The +Inf bucket holds every observation.
    expect(
      await metric(`edgemesh_proxy_service_request_duration_seconds_bucket{${labels('web', 80)},le="+Inf"`),
    ).toBe(tookBefore + 3);
  });

  it('counts L4 connections and the bytes each way once they close, per service port', async () => {
    const conns = `edgemesh_proxy_service_connections_total{${labels('echo', 7)}`;
    const sent = `edgemesh_proxy_service_bytes_total{${labels('echo', 7)},direction="sent"`;
    const received = `edgemesh_proxy_service_bytes_total{${labels('echo', 7)},direction="received"`;
    const before = { conns: await metric(conns), sent: await metric(sent), received: await metric(received) };
    const results = await tcp(VIP.echo, 7, 2, 'ping');
    const replied = results.reduce((n, r) => n + Buffer.byteLength(r.data ?? ''), 0);
    expect(replied).toBeGreaterThan(0);
    expect(await metric(conns)).toBe(before.conns + 2);
    // Bytes are counted when the sidecar has closed both sides: wait for it, bounded.
    await waitFor(
      async () => (await metric(received)) === before.received + replied,
      10_000,
      100,
      'bytes received',
    );
    expect(await metric(sent)).toBe(before.sent + 2 * 'ping'.length);
  });
});

describe('pods, passthrough and loops', () => {
  it('sends a known pod IP to that pod and anything else to its original destination', async () => {
    const podBefore = await metric('edgemesh_proxy_connections_total{route="pod"');
    const passBefore = await metric('edgemesh_proxy_connections_total{route="passthrough"');
    const [pod] = await tcp(KNOWN_POD, TCP_PORT);
    expect(greeting(pod.data)).toBe(KNOWN_POD);
    const pass = await curl([`http://${PASSTHROUGH}:${HTTP_PORT}/`]);
    expect(pass.stdout).toBe(`backend ${PASSTHROUGH}\n`);
    expect(await metric('edgemesh_proxy_connections_total{route="pod"')).toBe(podBefore + 1);
    expect(await metric('edgemesh_proxy_connections_total{route="passthrough"')).toBe(passBefore + 1);
  });

  it('refuses a connection addressed to its own listener', async () => {
    const before = await metric('edgemesh_proxy_refused_total{reason="loop"');
    const [r] = await tcp('10.10.0.2', 15001);
    expect(r.data ?? '').toBe('');
    expect(await metric('edgemesh_proxy_refused_total{reason="loop"')).toBe(before + 1);
  });
});

describe('least connections and catalog changes', () => {
  it('sends new connections to the endpoint with the fewest open ones', async () => {
    const holder = l.lab.spawn(l.pod, [
      NODE,
      CLIENT,
      'hold',
      '--host',
      VIP.least,
      '--port',
      '7',
      '--count',
      '2',
    ]);
    let out = '';
    holder.stdout?.on('data', (d) => {
      out += d;
    });
    try {
      await waitFor(() => out.includes('held 2'), 10_000, 50, 'two held connections');
      const held = (JSON.parse(out.slice(out.indexOf('['))) as string[]).map((g) => greeting(`${g}\n`));
      expect(new Set(held).size).toBe(2);
      const idle = BACKENDS.filter((ip) => !held.includes(ip));
      const results = await tcp(VIP.least, 7, 3);
      expect(results.map((r) => greeting(r.data))).toEqual([idle[0], idle[0], idle[0]]);
    } finally {
      holder.stdin?.end();
    }
  });

  it('follows catalog file changes: a removed endpoint gets no new connections', async () => {
    const catalog = labCatalog();
    catalog.revision = 2;
    const echo = catalog.services['default/echo'];
    echo.endpoints = echo.endpoints.filter((e) => e.ip === BACKENDS[2]);
    await writeFile(catalogFile, JSON.stringify(catalog));
    await waitFor(
      async () => (await tcp(VIP.echo, 7, 3)).every((r) => greeting(r.data) === BACKENDS[2]),
      10_000,
      200,
      'only the remaining endpoint answers',
    );
    const results = await tcp(VIP.echo, 7, 6);
    expect(results.map((r) => greeting(r.data))).toEqual(Array(6).fill(BACKENDS[2]));
  });
});

describe('process', () => {
  it('drains on SIGTERM: not ready, open connections finish, exit 0', async () => {
    const sidecar = l.sidecar;
    if (!sidecar?.pid) throw new Error('no sidecar');
    // A connection that is still open when the signal arrives (the client waits 1.5 s before sending).
    const open = tcp(VIP.echo, 7, 1, 'late', 2000);
    // Signal only once that connection is through the proxy (a loaded machine starts node slowly).
    await waitFor(
      async () => (await metric('edgemesh_proxy_active_connections')) >= 1,
      10_000,
      20,
      'open connection',
    );
    const exited = new Promise<number | null>((resolve) => sidecar.once('exit', (code) => resolve(code)));
    // The sidecar runs under `ip netns exec … setpriv`, which exec()s: the child PID is the node process.
    process.kill(sidecar.pid, 'SIGTERM');
    const [r] = await open;
    expect(r.data).toMatch(/^hello from \S+\nlatebye 4\n$/);
    expect(await exited).toBe(0);
    await waitFor(async () => (await curl(['http://127.0.0.1:15021/ready'])).code !== 0, 5_000);
  });
});

describe('standalone from Kubernetes objects', () => {
  it('routes a Service from --objects (YAML Service + EndpointSlice) like the gateway would', async () => {
    // The first sidecar has exited (previous test); this one builds its catalog from objects.
    const objects = join(dir, 'objects.yaml');
    await writeFile(
      objects,
      `apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  type: ClusterIP
  clusterIP: 10.96.5.5
  clusterIPs: [10.96.5.5]
  ports: [{name: tcp, port: 7, protocol: TCP, targetPort: ${TCP_PORT}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
endpoints:
  - addresses: [${BACKENDS[1]}]
    conditions: {ready: true, serving: true, terminating: false}
    nodeName: node-a
ports: [{name: tcp, port: ${TCP_PORT}, protocol: TCP}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored, namespace: shop}
`,
    );
    await chmod(objects, 0o644);
    const child = l.lab.spawn(
      l.pod,
      [
        EDGEMESH_BIN,
        'sidecar',
        '--objects',
        objects,
        '--upstream',
        '10.10.0.1',
        '--node-name',
        'node-a',
        '--idle-timeout-ms',
        '700',
      ],
      await proxyUser(l.lab, l.pod),
    );
    let log = '';
    child.stderr?.on('data', (d) => {
      log += d;
    });
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`sidecar exited: ${log}`);
        return (await curl(['http://127.0.0.1:15021/ready'])).stdout.startsWith('ready');
      },
      20_000,
      100,
      'sidecar --objects ready',
    );
    const results = await tcp('10.96.5.5', 7, 2);
    expect(results.map((r) => greeting(r.data))).toEqual([BACKENDS[1], BACKENDS[1]]);
  });

  it('answers the pod DNS from the same catalog (app queries to port 53 are captured)', async () => {
    // dig asks the pod's "upstream" 10.10.0.1:53; the capture rules send it to the sidecar.
    const a = await l.lab.exec(l.pod, [
      'dig',
      '+short',
      '+time=2',
      '+tries=1',
      '@10.10.0.1',
      'api.shop.svc.cluster.local',
      'A',
    ]);
    expect(a.stdout.trim()).toBe('10.96.5.5');
    const nx = await l.lab.exec(l.pod, [
      'dig',
      '+time=2',
      '+tries=1',
      '@10.10.0.1',
      'nope.shop.svc.cluster.local',
      'A',
    ]);
    expect(nx.stdout).toMatch(/status: NXDOMAIN/);
  });

  it('closes a connection idle longer than --idle-timeout-ms', async () => {
    // The client waits 2 s before sending; the sidecar (700 ms idle limit) closes first.
    const [r] = await tcp('10.96.5.5', 7, 1, 'late', 2000);
    expect(greeting(r.data)).toBe(BACKENDS[1]);
    expect(r.data).not.toMatch(/late|bye/);
  });
});
