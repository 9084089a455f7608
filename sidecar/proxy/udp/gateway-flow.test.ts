import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type GatewayDrop, GatewayFlow, MAX_BUFFERED_BYTES, MAX_QUEUED_DATAGRAMS } from './gateway-flow.ts';

/** A gateway that answers the request, then reads nothing more until `resume()`: a peer that does not read. */
async function stalledGateway() {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('data', () => {
      socket.pause(); // what follows the request line stays in the kernel's buffers
      socket.write('OK relay\n');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port },
    resume: () => {
      for (const s of sockets) s.resume();
    },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

const turn = () => new Promise((r) => setImmediate(r));

/** A flow, opened, whose connection is past its high-water mark (the kernel's buffers full). */
async function congestedFlow(gw: Awaited<ReturnType<typeof stalledGateway>>) {
  const drops: GatewayDrop[] = [];
  let opened = '';
  const flow = new GatewayFlow(
    gw.address,
    { node: 'node-b', ip: '10.1.0.9', port: 5353 },
    { onReply: () => {}, onDrop: (why) => drops.push(why), onOpen: (result) => (opened = result) },
  );
  flow.send(Buffer.from('first'));
  for (let i = 0; i < 500 && opened === ''; i++) await new Promise((r) => setTimeout(r, 10));
  expect(opened).toBe('opened');
  // 8 KiB a turn (each turn's batch is one write) until write() returns false: the kernel's
  // send and receive buffers first (a few MB on loopback), then the write high-water mark.
  const fill = Buffer.alloc(8 * 1024);
  for (let i = 0; i < 20_000 && flow.waitingDatagrams === undefined; i++) {
    flow.send(fill);
    await turn();
  }
  expect(flow.waitingDatagrams).toBe(0);
  expect(drops).toEqual([]);
  return { flow, drops };
}

let gw: Awaited<ReturnType<typeof stalledGateway>> | undefined;
afterEach(() => gw?.close());

describe('GatewayFlow: the queue toward a gateway that does not read', () => {
  it(`1,000 small datagrams: at most ${MAX_QUEUED_DATAGRAMS} wait past the high-water mark, the rest dropped as gateway-full; drain restarts the count`, async () => {
    gw = await stalledGateway();
    const { flow, drops } = await congestedFlow(gw);
    let accepted = 0;
    for (let i = 0; i < 1000; i++) {
      if (flow.send(Buffer.alloc(64, i))) accepted++;
      if (i % 50 === 49) await turn(); // batches of 50, written between app reads
    }
    expect(accepted).toBe(MAX_QUEUED_DATAGRAMS); // well inside the bytes (256 × 66 = 17 KB)
    expect(flow.waitingDatagrams).toBe(MAX_QUEUED_DATAGRAMS);
    expect(drops.length).toBe(1000 - accepted);
    expect(new Set(drops)).toEqual(new Set(['gateway-full']));

    // The gateway reads again: the connection drains, the count restarts, datagrams go.
    gw.resume();
    for (let i = 0; i < 500 && flow.waitingDatagrams !== undefined; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(flow.waitingDatagrams).toBeUndefined();
    expect(flow.send(Buffer.from('after drain'))).toBe(true);
    flow.close();
  });

  it('large datagrams are still bounded by bytes, before the count', async () => {
    gw = await stalledGateway();
    const { flow, drops } = await congestedFlow(gw);
    const size = 4096;
    let accepted = 0;
    for (let i = 0; i < 1000; i++) {
      if (flow.send(Buffer.alloc(size))) accepted++;
      if (i % 10 === 9) await turn();
    }
    // Past the 16 KiB mark at most MAX_BUFFERED_BYTES wait: ~60 of 4 KiB, far under 256.
    expect(accepted).toBeGreaterThan(0);
    expect(accepted * (size + 2)).toBeLessThanOrEqual(MAX_BUFFERED_BYTES);
    expect(flow.waitingDatagrams).toBe(accepted);
    expect(drops.length).toBe(1000 - accepted);
    expect(new Set(drops)).toEqual(new Set(['gateway-full']));
    flow.close();
  });
});
