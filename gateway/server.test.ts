import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../lib/log.ts';
import { DatagramDecoder, encodeDatagram } from '../lib/tunnel/frame.ts';
import { type Gateway, startGateway } from './gateway.ts';
import { InProcessTunnel } from './streams.ts';
import { echoServer, loopbackCatalog, readAll, request } from './test-fixtures.ts';

// Two gateways in one process (nodes edge-a and edge-b) joined by the in-process tunnel;
// "pods" are loopback addresses with real echo servers. All sockets are on 127.0.0.0/8.
const tmp = mkdtempSync(join(tmpdir(), 'emc-server-'));
const servers: net.Server[] = [];
let a: Gateway;
let b: Gateway;
let portA: number;
let echoA: number; // pod a-0 on edge-a, 127.0.0.2
let hostPortA: number; // a server on the same address, not an endpoint port
let echoB: number; // pod b-0 on edge-b, 127.0.0.3
let udpA: number; // a UDP echo in pod a-0 (a UDP endpoint port)
let udpB: number; // a UDP echo in pod b-0
const udpEchoes: dgram.Socket[] = [];

/** A UDP echo that answers each datagram with `echo:` + the datagram. */
async function udpEcho(host: string): Promise<number> {
  const s = dgram.createSocket('udp4');
  s.on('message', (msg, rinfo) =>
    s.send(Buffer.concat([Buffer.from('echo:'), msg]), rinfo.port, rinfo.address),
  );
  await new Promise<void>((resolve) => s.bind(0, host, resolve));
  udpEchoes.push(s);
  return s.address().port;
}

const sha = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');

beforeAll(async () => {
  const e1 = await echoServer('127.0.0.2');
  const e2 = await echoServer('127.0.0.2');
  const e3 = await echoServer('127.0.0.3');
  servers.push(e1.server, e2.server, e3.server);
  [echoA, hostPortA, echoB] = [e1.port, e2.port, e3.port];
  [udpA, udpB] = [await udpEcho('127.0.0.2'), await udpEcho('127.0.0.3')];
  const tunnel = new InProcessTunnel();
  const common = {
    listenHost: '127.0.0.1',
    listenPort: 0,
    clusterDomain: 'cluster.local',
    log: silentLogger,
  };
  a = await startGateway({
    ...common,
    nodeName: 'edge-a',
    stateDir: join(tmp, 'a'),
    tunnel,
    headerTimeoutMs: 300,
  });
  // The factory form: the tunnel gets the gateway's LocalDialer for its far end.
  b = await startGateway({
    ...common,
    nodeName: 'edge-b',
    stateDir: join(tmp, 'b'),
    tunnel: async (dialer) => {
      tunnel.register(dialer);
      return tunnel;
    },
  });
  tunnel.register(a.dialer);
  const catalog = loopbackCatalog([
    { name: 'a-0', ip: '127.0.0.2', node: 'edge-a', ports: [echoA] },
    { name: 'b-0', ip: '127.0.0.3', node: 'edge-b', ports: [echoB] },
    { name: 'a-dead', ip: '127.0.0.4', node: 'edge-a', ports: [9] },
    { name: 'c-0', ip: '127.0.0.5', node: 'edge-c', ports: [80] },
  ]);
  // Each pod also serves a UDP port (the fixture's slices carry TCP ports only).
  for (const e of catalog.services['demo/echo'].endpoints) {
    if (e.ip === '127.0.0.2') e.ports.push({ name: 'udp', port: udpA, protocol: 'UDP' });
    if (e.ip === '127.0.0.3') e.ports.push({ name: 'udp', port: udpB, protocol: 'UDP' });
  }
  a.store.apply({ type: 'snapshot', catalog });
  b.store.apply({ type: 'snapshot', catalog });
  portA = (a.server.address() as net.AddressInfo).port;
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  for (const s of servers) s.close();
  for (const s of udpEchoes) s.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('gateway CONNECT', () => {
  it('carries a stream to a pod on its own node (OK local), with early data and half-close', async () => {
    const payload = randomBytes(256 * 1024);
    const { reply, socket, rest } = await request(
      portA,
      `EDGEMESH/1 CONNECT edge-a 127.0.0.2 ${echoA}\n`,
      Buffer.from('early:'),
    );
    expect(reply).toBe('OK local');
    socket.end(payload); // half-close: the echo server still answers everything, then ends
    const echoed = await readAll(socket, rest);
    expect(echoed.subarray(0, 6).toString()).toBe('early:');
    expect(sha(echoed.subarray(6))).toBe(sha(payload));
  });

  it('carries a stream to a pod on another node through the tunnel (OK direct)', async () => {
    const payload = randomBytes(64 * 1024);
    const { reply, socket, rest } = await request(portA, `EDGEMESH/1 CONNECT edge-b 127.0.0.3 ${echoB}\n`);
    expect(reply).toBe('OK direct');
    socket.end(payload);
    expect(sha(await readAll(socket, rest))).toBe(sha(payload));
    const metrics = await a.registry.getSingleMetricAsString('edgemesh_gateway_streams_total');
    expect(metrics).toMatch(/path="local"[^\n]* [1-9]/);
    expect(metrics).toMatch(/path="direct"[^\n]* [1-9]/);
  });

  const refusals: Array<[string, string, RegExp]> = [
    [
      'a port of a pod that is not an endpoint port (host port)',
      'edge-a 127.0.0.2 HOSTPORT',
      /^ERR EDGEMESH_ERR_DIAL_REFUSED 127\.0\.0\.2:\d+ is not an endpoint of a pod on node edge-a$/,
    ],
    [
      'an address that is no pod (the host itself)',
      'edge-a 127.0.0.1 PORTA',
      /^ERR EDGEMESH_ERR_DIAL_REFUSED/,
    ],
    [
      'a pod that runs on another node, named as local',
      'edge-a 127.0.0.3 ECHOB',
      /^ERR EDGEMESH_ERR_DIAL_REFUSED .* on node edge-a$/,
    ],
    [
      'a target the catalog does not place on the named peer',
      'edge-b 127.0.0.2 ECHOA',
      /^ERR EDGEMESH_ERR_DIAL_REFUSED .* on node edge-b$/,
    ],
    [
      'a peer without a tunnel',
      'edge-c 127.0.0.5 80',
      /^ERR EDGEMESH_ERR_UNAVAILABLE no tunnel to node edge-c$/,
    ],
    [
      'a node the catalog does not know',
      'edge-z 127.0.0.9 80',
      /^ERR EDGEMESH_ERR_DIAL_REFUSED .* on node edge-z$/,
    ],
    [
      'an endpoint nobody listens on',
      'edge-a 127.0.0.4 9',
      /^ERR EDGEMESH_ERR_UNAVAILABLE dial 127\.0\.0\.4:9: connect ECONNREFUSED/,
    ],
  ];
  for (const [what, target, answer] of refusals) {
    it(`refuses ${what}`, async () => {
      const t = target
        .replace('HOSTPORT', String(hostPortA))
        .replace('PORTA', String(portA))
        .replace('ECHOB', String(echoB))
        .replace('ECHOA', String(echoA));
      const { reply, socket } = await request(portA, `EDGEMESH/1 CONNECT ${t}\n`);
      expect(reply).toMatch(answer);
      socket.destroy();
    });
  }

  it('has the far gateway refuse what its own catalog does not hold', async () => {
    // edge-b loses pod b-0 from its catalog; edge-a still believes in it.
    const catalog = b.store.current!;
    const { '127.0.0.3': _gone, ...pods } = catalog.pods;
    b.store.apply({ type: 'snapshot', catalog: { ...catalog, revision: catalog.revision + 1, pods } });
    try {
      const { reply, socket } = await request(portA, `EDGEMESH/1 CONNECT edge-b 127.0.0.3 ${echoB}\n`);
      expect(reply).toMatch(/^ERR EDGEMESH_ERR_DIAL_REFUSED .* on node edge-b$/);
      socket.destroy();
    } finally {
      b.store.apply({ type: 'snapshot', catalog: { ...catalog, revision: catalog.revision + 2 } });
    }
  });

  it('answers malformed, oversized and missing headers with BAD_REQUEST and stays up', async () => {
    const cases: Array<[string, RegExp]> = [
      ['GET / HTTP/1.1\r\n\r\n', /^ERR EDGEMESH_ERR_BAD_REQUEST expected EDGEMESH\/1 header$/],
      ['EDGEMESH/1 CONNECT edge-a 127.0.0.2 0\n', /1\.\.65535/],
      [`EDGEMESH/1 ${'x'.repeat(600)}`, /longer than 512 bytes/],
      ['EDGEMESH/1 FEED \u0000\n', /non-printable/],
      ['', /no header in time/],
    ];
    for (const [header, answer] of cases) {
      const { reply, socket } = await request(portA, header);
      expect(reply).toMatch(answer);
      socket.destroy();
    }
    const errors = await a.registry.getSingleMetricAsString('edgemesh_gateway_errors_total');
    expect(errors).toMatch(/code="EDGEMESH_ERR_BAD_REQUEST"[^\n]* [5-9]/);
    // Still serving.
    const { reply, socket } = await request(portA, `EDGEMESH/1 CONNECT edge-a 127.0.0.2 ${echoA}\n`);
    expect(reply).toBe('OK local');
    socket.destroy();
  });

  it('survives random garbage from many clients', async () => {
    for (let i = 0; i < 50; i++) {
      const { socket } = await request(portA, `${randomBytes(1 + (i % 40) * 17).toString('latin1')}\n`);
      socket.destroy();
    }
    const { reply, socket } = await request(portA, `EDGEMESH/1 CONNECT edge-a 127.0.0.2 ${echoA}\n`);
    expect(reply).toBe('OK local');
    socket.destroy();
  });

  it('limits feeds per address and takes new ones when old ones leave', async () => {
    const feeds = [];
    for (let i = 0; i < 16; i++) {
      const { reply, socket } = await request(portA, 'EDGEMESH/1 FEED 0\n');
      expect(JSON.parse(reply).type).toBe('snapshot');
      feeds.push(socket);
    }
    const extra = await request(portA, 'EDGEMESH/1 FEED 0\n');
    expect(extra.reply).toBe('ERR EDGEMESH_ERR_UNAVAILABLE at most 16 feeds per address');
    extra.socket.destroy();
    feeds.pop()?.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const again = await request(portA, 'EDGEMESH/1 FEED 0\n');
    expect(JSON.parse(again.reply).type).toBe('snapshot');
    again.socket.destroy();
    for (const f of feeds) f.destroy();
  });
});

describe('gateway DGRAM', () => {
  /** Sends datagrams framed as on the stream and reads `count` framed replies. */
  async function exchange(
    socket: net.Socket,
    rest: Buffer,
    datagrams: Buffer[],
    expected = datagrams.length,
  ): Promise<string[]> {
    const decoder = new DatagramDecoder();
    const replies = decoder.push(rest).map(String);
    socket.resume();
    for (const d of datagrams) socket.write(encodeDatagram(d));
    if (replies.length >= expected) return replies;
    return new Promise((resolve, reject) => {
      socket.on('data', (chunk: Buffer) => {
        replies.push(...decoder.push(chunk).map(String));
        if (replies.length >= expected) resolve(replies);
      });
      socket.on('error', reject);
    });
  }

  it('carries datagrams to a UDP port of a pod on another node over the tunnel (OK direct)', async () => {
    const { reply, socket, rest } = await request(portA, `EDGEMESH/1 DGRAM edge-b 127.0.0.3 ${udpB}\n`);
    expect(reply).toBe('OK direct');
    // Boundaries survive: a zero-length datagram and two in one write are three replies.
    const replies = await exchange(socket, rest, [Buffer.from('one'), Buffer.alloc(0), Buffer.from('three')]);
    expect(replies).toEqual(['echo:one', 'echo:', 'echo:three']);
    socket.destroy();
  });

  it('carries datagrams to a UDP port of a pod on its own node (OK local), early datagrams first', async () => {
    const { reply, socket, rest } = await request(
      portA,
      `EDGEMESH/1 DGRAM edge-a 127.0.0.2 ${udpA}\n`,
      encodeDatagram(Buffer.from('early')),
    );
    expect(reply).toBe('OK local');
    const replies = await exchange(socket, rest, [Buffer.from('later')], 2);
    expect(replies.sort()).toEqual(['echo:early', 'echo:later']);
    socket.destroy();
  });

  const refusals: Array<[string, () => string, RegExp]> = [
    [
      'a TCP endpoint port named as a UDP one (on another node)',
      () => `edge-b 127.0.0.3 ${echoB}`,
      /^ERR EDGEMESH_ERR_DIAL_REFUSED 127\.0\.0\.3:\d+\/udp is not an endpoint of a pod on node edge-b$/,
    ],
    [
      'a TCP endpoint port named as a UDP one (on its own node)',
      () => `edge-a 127.0.0.2 ${echoA}`,
      /^ERR EDGEMESH_ERR_DIAL_REFUSED/,
    ],
    [
      'a UDP port of a pod on another node, named as local',
      () => `edge-a 127.0.0.3 ${udpB}`,
      /^ERR EDGEMESH_ERR_DIAL_REFUSED/,
    ],
  ];
  for (const [what, target, answer] of refusals) {
    it(`refuses ${what}`, async () => {
      const { reply, socket } = await request(portA, `EDGEMESH/1 DGRAM ${target()}\n`);
      expect(reply).toMatch(answer);
      socket.destroy();
    });
  }

  it('still refuses a UDP port asked for with CONNECT', async () => {
    const { reply, socket } = await request(portA, `EDGEMESH/1 CONNECT edge-b 127.0.0.3 ${udpB}\n`);
    expect(reply).toMatch(/^ERR EDGEMESH_ERR_DIAL_REFUSED 127\.0\.0\.3:\d+ is not an endpoint/);
    socket.destroy();
  });
});
