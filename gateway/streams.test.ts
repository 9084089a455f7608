import type net from 'node:net';
import { type Duplex, duplexPair } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../lib/catalog/store.ts';
import { ErrorCodes } from '../lib/errors.ts';
import { splice } from '../lib/splice.ts';
import { MuxSession } from '../lib/tunnel/mux.ts';
import { LocalDialer } from './streams.ts';
import { echoServer, loopbackCatalog } from './test-fixtures.ts';

async function readAll(s: Duplex): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

// The far end of a tunnel: a refused or failed dial must fail that one stream, never the
// session (issue 16: a synchronous throw from dial() closed the whole tunnel session).
let echo: { server: net.Server; port: number };
let dialer: LocalDialer;

beforeAll(async () => {
  echo = await echoServer('127.0.0.2');
  const store = new CatalogStore();
  store.apply({
    type: 'snapshot',
    catalog: loopbackCatalog([{ name: 'echo-1', ip: '127.0.0.2', node: 'far', ports: [echo.port] }]),
  });
  dialer = new LocalDialer('far', store, 1000);
});
afterAll(() => {
  echo?.server.close();
});

describe('LocalDialer', () => {
  it('rejects (never throws) a target that is not a local pod endpoint', async () => {
    let p: Promise<unknown> | undefined;
    expect(() => {
      p = dialer.dial({ ip: '169.254.169.254', port: 80 });
    }).not.toThrow();
    await expect(p).rejects.toMatchObject({ code: ErrorCodes.DIAL_REFUSED });
    const none = new LocalDialer('far', new CatalogStore());
    await expect(none.dial({ ip: '127.0.0.2', port: echo.port })).rejects.toMatchObject({
      code: ErrorCodes.UNAVAILABLE,
    });
  });

  it('behind a tunnel session: a refused OPEN fails that stream with DIAL_REFUSED, the others keep flowing', async () => {
    const [a, b] = duplexPair();
    const near = new MuxSession(a, { role: 'client', peer: 'far' });
    const far = new MuxSession(b, { role: 'server', peer: 'near' });
    // As gateway/tunnel/session.ts wires the far end (dialTarget = dialer.dial).
    far.on('stream', (stream, target) => {
      dialer.dial(target).then(
        (conn) => {
          stream.accept();
          splice(stream, conn);
        },
        (err) => stream.refuse(err.code === ErrorCodes.DIAL_REFUSED ? 1 : 2, err.message),
      );
    });
    try {
      const first = await near.openStream({ ip: '127.0.0.2', port: echo.port });
      const back = readAll(first);
      first.write('one ');
      const refused = await near.openStream({ ip: '127.0.0.2', port: 10250 }).catch((e) => e);
      expect(refused.code).toBe(ErrorCodes.DIAL_REFUSED);
      expect(refused.message).toMatch(/not an endpoint of a pod on node far/);
      const second = await near.openStream({ ip: '127.0.0.2', port: echo.port });
      const back2 = readAll(second);
      second.end('two');
      first.end('three');
      expect((await back).toString()).toBe('one three');
      expect((await back2).toString()).toBe('two');
      expect(near.usable).toBe(true);
    } finally {
      near.close();
      far.close();
    }
  });
});
