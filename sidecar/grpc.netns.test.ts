/**
 * gRPC and h2c through the real sidecar (the proxy lab, sidecar/testing/lab.ts): a
 * @grpc/grpc-js client in the pod namespace, captured by `edgemesh init`'s rules, talks to
 * @grpc/grpc-js servers on the three backends behind one service; h2load loads an h2c port.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, NODE, type ProxyLab, setUpProxyLab, startGrpcBackends, VIP } from './testing/lab.ts';

const CLIENT = new URL('./testing/grpc-client.ts', import.meta.url).pathname;
let l: ProxyLab;
let dir: string;

/** What grpc-client.ts prints (its header lists which command fills which field). */
interface Reply {
  backends?: string[];
  backend?: string;
  bytes?: number;
  same?: boolean;
  messages?: string[];
  status?: number;
  code?: number;
  details?: string;
  trailers?: Record<string, string>;
  error?: string;
}

/** One grpc-client.ts run against the grpc-js service through the sidecar: its JSON answer. */
async function grpcCall(
  op: string,
  args: string[] = [],
  host: string = VIP.grpcJs,
  port = 50051,
): Promise<Reply> {
  const r = await l.lab.exec(l.pod, [NODE, CLIENT, op, '--host', host, '--port', String(port), ...args], {
    timeoutMs: 30_000,
  });
  return JSON.parse(r.stdout) as Reply;
}

const tally = (items: string[]) => {
  const out: Record<string, number> = {};
  for (const i of items) out[i] = (out[i] ?? 0) + 1;
  return out;
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emg-'));
  await chmod(dir, 0o755); // the sidecar runs as uid 1337 and must read the catalog
  l = await setUpProxyLab('emg', { catalogFile: join(dir, 'catalog.json') });
  await startGrpcBackends(l);
});

afterAll(async () => {
  await l?.lab.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe('gRPC through the sidecar (@grpc/grpc-js client and servers)', () => {
  it('spreads the unary calls of ONE channel over every endpoint (per-request balancing)', async () => {
    const r = await grpcCall('unary', ['--count', '9']);
    expect(tally(r.backends ?? [])).toEqual(Object.fromEntries(BACKENDS.map((ip) => [ip, 3])));
  });

  it('carries a server-streaming RPC with its status and trailing metadata', async () => {
    const r = await grpcCall('count', ['--count', '50']);
    expect(r.status).toBe(0);
    expect(r.trailers).toEqual({ 'x-count': '50' });
    expect(r.messages).toHaveLength(50);
    const ip = r.messages?.[0]?.split(' ')[0];
    expect(r.messages).toEqual(Array.from({ length: 50 }, (_, i) => `${ip} ${i}`));
  });

  it('carries a bidi-streaming RPC turn by turn with its trailers', async () => {
    const r = await grpcCall('chat', ['--count', '20']);
    expect(r.status).toBe(0);
    expect(r.trailers).toEqual({ 'x-seen': '20' });
    const ip = r.messages?.[0]?.split(':')[0];
    expect(BACKENDS).toContain(ip);
    expect(r.messages).toEqual(Array.from({ length: 20 }, (_, i) => `${ip}: m${i}`));
  });

  it('passes a gRPC error status, its message and trailing metadata through unchanged', async () => {
    const r = await grpcCall('fail');
    expect(r).toEqual({ code: 5, details: 'no such thing: thing', trailers: { 'x-why': 'lab' } });
  });

  it('reports a missed deadline as DEADLINE_EXCEEDED, and the channel keeps working', async () => {
    const r = await grpcCall('sleep', ['--ms', '3000', '--deadline-ms', '300']);
    expect(r.code).toBe(4);
    const ok = await grpcCall('sleep', ['--ms', '10', '--deadline-ms', '5000']);
    expect(ok.code).toBe(0);
  });

  it('carries a 1 MiB message each way intact', async () => {
    const r = await grpcCall('big', ['--bytes', String(1 << 20)]);
    expect(BACKENDS).toContain(r.backend);
    expect(r).toMatchObject({ bytes: 1 << 20, same: true });
  });

  it('answers UNAVAILABLE (grpc-status 14) naming the cause when no endpoint is ready or accepts', async () => {
    // Port 80 of both is an HTTP port; default/empty has no ready endpoint, default/dead's refuses.
    const empty = await grpcCall('fail', [], VIP.empty, 80);
    expect(empty).toEqual({
      code: 14,
      details: 'edgemesh: no ready endpoint for service default/empty:80',
      trailers: {},
    });
    const dead = await grpcCall('fail', [], VIP.dead, 80);
    expect(dead.code).toBe(14);
    expect(dead.details).toMatch(/^edgemesh: upstream of default\/dead:80 failed: .*ECONNREFUSED/);
  });
});

describe('h2load against an h2c port', () => {
  it('answers every request of 1 connection × 20 streams with 2xx', async () => {
    const r = await l.lab.exec(
      l.pod,
      ['h2load', '-n', '2000', '-c', '1', '-m', '20', '-T', '10', `http://${VIP.grpc}:50051/`],
      { timeoutMs: 60_000 },
    );
    expect(r.stdout).toMatch(/requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed/);
    expect(r.stdout).toMatch(/status codes: 2000 2xx/);
  });

  it("answers 5,000 requests of 1 connection × 100 streams (upstream streams reused past one connection's 256)", async () => {
    const r = await l.lab.exec(
      l.pod,
      ['h2load', '-n', '5000', '-c', '1', '-m', '100', '-T', '10', `http://${VIP.grpc}:50051/`],
      { timeoutMs: 60_000 },
    );
    expect(r.stdout).toMatch(/requests: 5000 total, 5000 started, 5000 done, 5000 succeeded, 0 failed/);
    expect(r.stdout).toMatch(/status codes: 5000 2xx/);
  });

  it('carries POSTs with 100 KiB bodies to a backend that answers without reading them', async () => {
    const body = join(dir, 'body.bin');
    await writeFile(body, Buffer.alloc(100 * 1024, 'p'));
    await chmod(body, 0o644);
    const r = await l.lab.exec(
      l.pod,
      ['h2load', '-n', '300', '-c', '1', '-m', '10', '-T', '10', '-d', body, `http://${VIP.grpc}:50051/`],
      { timeoutMs: 60_000 },
    );
    expect(r.stdout).toMatch(/requests: 300 total, 300 started, 300 done, 300 succeeded, 0 failed/);
  });
});
