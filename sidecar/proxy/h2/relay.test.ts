import http2 from 'node:http2';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../../../lib/catalog/store.ts';
import type { Catalog } from '../../../lib/catalog/types.ts';
import { silentLogger } from '../../../lib/log.ts';
import { directDialer } from '../dialer.ts';
import { createProxyMetrics } from '../metrics.ts';
import { Router } from '../router.ts';
import {
  COMPRESSION_ERROR,
  F_END_HEADERS,
  F_END_STREAM,
  F_PADDED,
  FLOW_CONTROL_ERROR,
  FRAME_SIZE_ERROR,
  FrameReader,
  frameHeader,
  headersFrames,
  PREFACE,
  PROTOCOL_ERROR,
  settingsFrame,
  T_CONTINUATION,
  T_DATA,
  T_GOAWAY,
  T_HEADERS,
  T_PING,
  T_RST_STREAM,
  T_SETTINGS,
} from './frames.ts';
import { encodeBlock, HpackDecoder } from './hpack.ts';
import { FrameRelay } from './relay.ts';

// The frame relay spoken to in raw frames: what a well-behaved client library would never
// send, and the answers RFC 9113 asks for.
const VIP = '10.96.0.31';
const NOT_A_SERVICE = '10.96.0.99';
const servers: net.Server[] = [];
let relay: FrameRelay;
let port: number;

function listen(server: net.Server): Promise<number> {
  servers.push(server);
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );
}

function catalog(backendPort: number): Catalog {
  const p = { name: 'grpc', port: 50051, protocol: 'TCP' as const };
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
          ports: [p],
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
            ports: [{ ...p, port: backendPort }],
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
    stream.respond({ ':status': 200, 'x-path': String(headers[':path']) });
    stream.end('ok');
  });
  const backendPort = await listen(backend as unknown as net.Server);
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: catalog(backendPort) });
  relay = new FrameRelay({
    router: new Router(store),
    dialer: directDialer,
    connectTimeoutMs: 2000,
    idleTimeoutMs: 10_000,
    maxAttempts: 1,
    log: silentLogger,
    metrics: createProxyMetrics(),
  });
  port = await listen(
    net.createServer({ pauseOnConnect: true }, (socket) => {
      // The transparent listener would give the original destination; here the test's first
      // byte (before the preface) says which: 'Q' a destination that is no service.
      socket.once('readable', () => {
        const first = socket.read(1) as Buffer;
        const dstIp = first[0] === 0x51 ? NOT_A_SERVICE : VIP;
        relay.handle(socket, { dstIp, dstPort: 50051, clientIp: '127.0.0.1' }, Buffer.alloc(0));
      });
      socket.resume();
    }),
  );
});

afterAll(() => {
  relay?.close();
  for (const s of servers) s.close();
});

interface Got {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** A raw client: sends `frames` after the preface and our SETTINGS, collects what comes back until `until` or a close. */
function talk(
  frames: Buffer[],
  until: (got: Got[]) => boolean,
  notService = false,
  settings = true,
): Promise<Got[]> {
  return new Promise((resolve, reject) => {
    const got: Got[] = [];
    const reader = new FrameReader(1 << 24);
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(Buffer.from([notService ? 0x51 : 0x50]));
      socket.write(Buffer.concat([PREFACE, ...(settings ? [settingsFrame([])] : []), ...frames]));
    });
    const done = () => {
      socket.destroy();
      resolve(got);
    };
    socket.on('data', (chunk) => {
      reader.push(chunk, (type, flags, stream, payload) =>
        got.push({ type, flags, stream, payload: Buffer.from(payload) }),
      );
      if (until(got)) done();
    });
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
    setTimeout(
      () => reject(new Error(`no answer; got frame types ${got.map((g) => g.type).join(',')}`)),
      5000,
    ).unref();
  });
}

const goawayCode = (got: Got[]) => got.find((g) => g.type === T_GOAWAY)?.payload.readUInt32BE(4);
const hasGoaway = (got: Got[]) => got.some((g) => g.type === T_GOAWAY);
const REQUEST = encodeBlock([':method', 'GET', ':scheme', 'http', ':path', '/x', ':authority', 'h2']);
const headersOf = (got: Got[], stream: number) => {
  const d = new HpackDecoder();
  const out: string[][] = [];
  for (const g of got)
    if (g.type === T_HEADERS) {
      const fields = d.decode(g.payload);
      if (g.stream === stream) out.push(fields);
    }
  return out;
};

describe('the frame relay against raw frames (RFC 9113)', () => {
  it('answers a PING itself, same payload, ACK set', async () => {
    const ping = Buffer.concat([frameHeader(8, T_PING, 0, 0), Buffer.from('12345678')]);
    const got = await talk([ping], (g) => g.some((f) => f.type === T_PING));
    const ack = got.find((f) => f.type === T_PING);
    expect(ack?.flags).toBe(1);
    expect(ack?.payload.toString()).toBe('12345678');
  });

  it('relays a request whose head comes in HEADERS + CONTINUATION, with padding', async () => {
    const a = REQUEST.subarray(0, 5);
    const b = REQUEST.subarray(5);
    const padded = Buffer.concat([Buffer.from([3]), a, Buffer.alloc(3)]);
    const frames = [
      Buffer.concat([frameHeader(padded.length, T_HEADERS, F_END_STREAM | F_PADDED, 1), padded]),
      Buffer.concat([frameHeader(b.length, T_CONTINUATION, F_END_HEADERS, 1), b]),
    ];
    const got = await talk(frames, (g) => g.some((f) => f.type === T_DATA && f.flags & F_END_STREAM));
    const [head] = headersOf(got, 1);
    expect(head?.slice(0, 2)).toEqual([':status', '200']);
    expect(head).toContain('/x');
    expect(Buffer.concat(got.filter((f) => f.type === T_DATA).map((f) => f.payload)).toString()).toBe('ok');
  });

  it('answers a gRPC request for a destination that is no service with 200 + grpc-status 14', async () => {
    const block = encodeBlock([
      ':method',
      'POST',
      ':scheme',
      'http',
      ':path',
      '/p.S/M',
      'content-type',
      'application/grpc',
    ]);
    const got = await talk([headersFrames(1, block, true)], (g) => g.some((f) => f.type === T_HEADERS), true);
    const [head] = headersOf(got, 1);
    expect(head).toEqual(expect.arrayContaining([':status', '200', 'grpc-status', '14']));
  });

  it('refuses a malformed request (uppercase name, connection header) with RST_STREAM PROTOCOL_ERROR', async () => {
    for (const extra of [
      ['X-Up', '1'],
      ['connection', 'close'],
      ['te', 'gzip'],
    ]) {
      const block = encodeBlock([':method', 'GET', ':scheme', 'http', ':path', '/', ...extra]);
      const got = await talk([headersFrames(1, block, true)], (g) => g.some((f) => f.type === T_RST_STREAM));
      expect(got.find((f) => f.type === T_RST_STREAM)?.payload.readUInt32BE(0)).toBe(PROTOCOL_ERROR);
    }
  });

  it('answers 431 to a request head above 64 KiB decoded', async () => {
    const block = encodeBlock([
      ':method',
      'GET',
      ':scheme',
      'http',
      ':path',
      '/',
      'x-big',
      'v'.repeat(70_000),
    ]);
    const got = await talk([headersFrames(1, block, true)], (g) => g.some((f) => f.type === T_HEADERS));
    expect(headersOf(got, 1)[0]?.slice(0, 2)).toEqual([':status', '431']);
  });

  const connectionErrors: [string, Buffer[], number][] = [
    [
      'a frame above SETTINGS_MAX_FRAME_SIZE',
      [Buffer.concat([frameHeader(16_385, T_DATA, 0, 1), Buffer.alloc(16_385)])],
      FRAME_SIZE_ERROR,
    ],
    ['DATA on stream 0', [Buffer.concat([frameHeader(1, T_DATA, 0, 0), Buffer.alloc(1)])], PROTOCOL_ERROR],
    [
      'DATA on an idle stream',
      [Buffer.concat([frameHeader(1, T_DATA, 0, 5), Buffer.alloc(1)])],
      PROTOCOL_ERROR,
    ],
    ['a stream opened with an even id', [headersFrames(2, REQUEST, true)], PROTOCOL_ERROR],
    ['a header block HPACK cannot decode', [headersFrames(1, Buffer.from([0x80]), true)], COMPRESSION_ERROR],
    [
      'padding longer than the frame',
      [Buffer.concat([frameHeader(2, T_DATA, F_PADDED, 1), Buffer.from([5, 0])])],
      PROTOCOL_ERROR,
    ],
    [
      'a frame between HEADERS and its CONTINUATION',
      [
        Buffer.concat([frameHeader(2, T_HEADERS, 0, 1), REQUEST.subarray(0, 2)]),
        Buffer.concat([frameHeader(8, T_PING, 0, 0), Buffer.alloc(8)]),
      ],
      PROTOCOL_ERROR,
    ],
    ['SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1', [settingsFrame([[4, 0x80000000]])], FLOW_CONTROL_ERROR],
    [
      'SETTINGS with a length not a multiple of 6',
      [Buffer.concat([frameHeader(5, T_SETTINGS, 0, 0), Buffer.alloc(5)])],
      FRAME_SIZE_ERROR,
    ],
    [
      'DATA beyond the stream window',
      [
        headersFrames(1, encodeBlock([':method', 'POST', ':scheme', 'http', ':path', '/']), false),
        ...Array.from({ length: 17 }, () =>
          Buffer.concat([frameHeader(16_384, T_DATA, 0, 1), Buffer.alloc(16_384)]),
        ),
      ],
      FLOW_CONTROL_ERROR,
    ],
  ];
  for (const [name, frames, code] of connectionErrors)
    it(`ends the connection with GOAWAY ${code} on ${name}`, async () => {
      const got = await talk(frames, hasGoaway);
      expect(goawayCode(got)).toBe(code);
    });

  it('ends a connection that resets more than 1,000 streams in a second with ENHANCE_YOUR_CALM (rapid reset)', async () => {
    const frames: Buffer[] = [];
    for (let id = 1; id <= 2 * 1001; id += 2)
      frames.push(
        headersFrames(id, REQUEST, true),
        Buffer.concat([frameHeader(4, T_RST_STREAM, 0, id), Buffer.from([0, 0, 0, 8])]),
      );
    const got = await talk(frames, hasGoaway);
    expect(goawayCode(got)).toBe(0xb);
  });

  it('ends the connection with GOAWAY PROTOCOL_ERROR when the first frame is not SETTINGS', async () => {
    const ping = Buffer.concat([frameHeader(8, T_PING, 0, 0), Buffer.alloc(8)]);
    const got = await talk([ping], hasGoaway, false, false);
    expect(goawayCode(got)).toBe(PROTOCOL_ERROR);
  });
});
