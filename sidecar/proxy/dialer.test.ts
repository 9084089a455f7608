import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Request } from '../../lib/gateway-protocol.ts';
import { startGatewayPeer } from '../testing/gateway-peer.ts';
import { directDialer, GatewayDialer, RoutingDialer } from './dialer.ts';
import type { Target } from './route.ts';

// Real sockets on loopback: an echo server as the "pod", and a peer speaking the gateway protocol.
let echo: net.Server;
let echoPort: number;
const servers: net.Server[] = [];
const seen: (Request | { error: string })[] = [];

async function peer(opts: { rawReply?: string } = {}): Promise<number> {
  const server = await startGatewayPeer({
    host: '127.0.0.1',
    port: 0,
    nodes: ['node-b'],
    onRequest: (r) => seen.push(r),
    ...opts,
  });
  servers.push(server);
  return (server.address() as net.AddressInfo).port;
}

function roundTrip(socket: net.Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    socket.on('data', (d) => {
      got += d;
    });
    socket.on('end', () => resolve(got));
    socket.on('error', reject);
    socket.resume(); // dialers hand sockets back paused
    socket.end(text);
  });
}

beforeAll(async () => {
  echo = net.createServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    s.on('data', (d: Buffer) => {
      n += d.length;
      s.write(d);
    });
    s.on('end', () => s.end(`|${n}`));
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoPort = (echo.address() as net.AddressInfo).port;
});

afterAll(async () => {
  for (const s of [echo, ...servers]) s.close();
});

const target = (over: Partial<Target> = {}): Target => ({
  id: `127.0.0.1:${echoPort}`,
  ip: '127.0.0.1',
  port: echoPort,
  nodeName: 'node-b',
  ...over,
});

describe('gateway dialer', () => {
  it('names the target in one CONNECT line and then carries raw bytes both ways, half-close included', async () => {
    const port = await peer();
    seen.length = 0;
    const { socket, via } = await new GatewayDialer({ host: '127.0.0.1', port }).dial(target(), 2000);
    expect(via).toBe('relay');
    expect(seen).toEqual([{ kind: 'connect', node: 'node-b', ip: '127.0.0.1', port: echoPort }]);
    expect(await roundTrip(socket, 'ping')).toBe('ping|4');
  });

  it('rejects with the gateway error when the gateway refuses', async () => {
    const port = await peer();
    await expect(
      new GatewayDialer({ host: '127.0.0.1', port }).dial(target({ nodeName: 'node-z' }), 2000),
    ).rejects.toMatchObject({
      code: 'EDGEMESH_ERR_DIAL_REFUSED',
      message: expect.stringContaining('gateway refused: EDGEMESH_ERR_DIAL_REFUSED node not reachable'),
    });
  });

  it.each([
    ['a malformed reply', 'HELLO\n', 'bad gateway reply: malformed gateway reply'],
    ['an unknown path', 'OK teleport\n', 'bad gateway reply: unknown path'],
    ['a close before any reply', '', 'closed the connection before replying'],
    ['a reply line that never ends', 'x'.repeat(600), 'longer than 512 bytes'],
  ])('rejects %s', async (_name, rawReply, message) => {
    const port = await peer({ rawReply });
    await expect(new GatewayDialer({ host: '127.0.0.1', port }).dial(target(), 2000)).rejects.toMatchObject({
      code: 'EDGEMESH_ERR_DIAL_REFUSED',
      message: expect.stringContaining(message),
    });
  });

  it('times out when the gateway accepts but never answers', async () => {
    const silent = net.createServer(() => undefined);
    servers.push(silent);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as net.AddressInfo).port;
    await expect(new GatewayDialer({ host: '127.0.0.1', port }).dial(target(), 200)).rejects.toMatchObject({
      message: expect.stringContaining('gateway gave no answer within'),
    });
  });

  it('needs the node name of the target', async () => {
    await expect(
      new GatewayDialer({ host: '127.0.0.1', port: 1 }).dial(target({ nodeName: undefined }), 200),
    ).rejects.toThrow(/needs the node name/);
  });
});

describe('direct and routing dialers', () => {
  it('dials directly and reports refused connects with a code', async () => {
    const { socket, via } = await directDialer.dial(target(), 2000);
    expect(via).toBe('pod');
    expect(await roundTrip(socket, 'abc')).toBe('abc|3');
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const deadPort = (closed.address() as net.AddressInfo).port;
    closed.close();
    await expect(directDialer.dial(target({ port: deadPort }), 2000)).rejects.toMatchObject({
      code: 'EDGEMESH_ERR_DIAL_REFUSED',
      message: expect.stringContaining('ECONNREFUSED'),
    });
  });

  it('a reader gets every byte from reused read buffers; one it says it kept is never read into again', async () => {
    const chunks: Buffer[] = [];
    const kept: Buffer[] = [];
    let calls = 0;
    const reader = {
      read(chunk: Buffer): boolean {
        chunks.push(Buffer.from(chunk)); // a copy: `chunk` is valid only during the call
        // Every third chunk is "kept" (as a queued write would be): its bytes must stay as read.
        if (++calls % 3 === 0) {
          kept.push(chunk, Buffer.from(chunk));
          return true;
        }
        return false;
      },
    };
    const { socket, read } = await directDialer.dial(target(), 2000, undefined, reader);
    expect(read).toBe(true);
    const payload = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 13 + (i >> 12)) & 0xff;
    const ended = new Promise<void>((resolve) => socket.once('end', resolve));
    socket.resume();
    socket.end(payload);
    await ended;
    // Buffer.equals: vitest's deep equality walks a 1 MiB Buffer element by element.
    const want = Buffer.concat([payload, Buffer.from(`|${payload.length}`)]);
    expect(Buffer.concat(chunks).equals(want)).toBe(true);
    const intact = kept.filter((b, k) => k % 2 === 0 && b.equals(kept[k + 1])).length;
    expect(intact).toBe(kept.length / 2);
    expect(kept.length).toBeGreaterThan(0);
  });

  it('sends only targets on another known node through the gateway', async () => {
    const port = await peer();
    const dialer = new RoutingDialer({
      nodeName: 'node-a',
      gateway: new GatewayDialer({ host: '127.0.0.1', port }),
    });
    expect(dialer.viaGateway(target({ nodeName: 'node-b' }))).toBe(true);
    expect(dialer.viaGateway(target({ nodeName: 'node-a' }))).toBe(false);
    expect(dialer.viaGateway(target({ nodeName: undefined }))).toBe(false);
    expect(
      new RoutingDialer({ gateway: new GatewayDialer({ host: '127.0.0.1', port }) }).viaGateway(target()),
    ).toBe(false);
    seen.length = 0;
    const viaGateway = await dialer.dial(target({ nodeName: 'node-b' }), 2000);
    expect(viaGateway.via).toBe('relay');
    expect(await roundTrip(viaGateway.socket, 'x')).toBe('x|1');
    const direct = await dialer.dial(target({ nodeName: 'node-a' }), 2000);
    expect(direct.via).toBe('pod');
    expect(await roundTrip(direct.socket, 'yy')).toBe('yy|2');
    expect(seen).toHaveLength(1);
  });
});

describe('raw routes (what the native engine dials itself)', () => {
  const gateway = new GatewayDialer({ host: '10.10.0.1', port: 15080 });
  const routing = new RoutingDialer({ nodeName: 'node-a', gateway });

  it('a pod on this node is its own address; one on another node is the gateway with a CONNECT line', () => {
    const here = target({ ip: '10.20.0.11', port: 9000, nodeName: 'node-a' });
    expect(routing.raw(here)).toEqual({ ip: '10.20.0.11', port: 9000, via: 'pod' });
    const there = routing.raw(target({ ip: '10.20.0.40', port: 9000, nodeName: 'node-b' }));
    expect(there).toMatchObject({ ip: '10.10.0.1', port: 15080, via: 'gateway' });
    expect(there?.handshake?.hello).toBe('EDGEMESH/1 CONNECT node-b 10.20.0.40 9000\n');
    expect(gateway.raw(target({ nodeName: undefined }))).toBeUndefined();
  });

  it.each([
    ['OK relay', undefined],
    ['OK direct\r', undefined],
    [
      'ERR EDGEMESH_ERR_DIAL_REFUSED node not reachable',
      'gateway refused: EDGEMESH_ERR_DIAL_REFUSED node not reachable',
    ],
    ['OK teleport', 'bad gateway reply: unknown path "teleport" in gateway reply'],
    ['NOT A REPLY', 'bad gateway reply: malformed gateway reply'],
    ['OK \u0001relay', 'bad gateway reply: header line has non-printable characters'],
  ])('judges the reply line %j', (line, problem) => {
    const check = routing.raw(target({ nodeName: 'node-b' }))?.handshake?.check;
    const err = check?.(line);
    if (problem === undefined) expect(err).toBeUndefined();
    else expect(err?.message).toContain(problem);
  });
});
