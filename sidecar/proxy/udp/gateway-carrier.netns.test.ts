/**
 * The real UDP addon's gateway carrier (udp.c gatewayFlow, docs/udp.md "Across nodes") driven
 * directly, in a private network namespace (the reply socket is IP_TRANSPARENT: root there):
 * a TCP server stands in for the node's gateway and a UDP socket for the app. It checks what
 * the end-to-end test (sidecar/udp-remote.netns.test.ts) cannot steer: replies whose frames
 * arrive split at arbitrary points (the partial frame kept per flow), the bytes handed over
 * with the OK, a length over 65,507 closing the flow (REC_CLOSED, EPROTO) and the gateway's
 * EOF (REC_CLOSED, 0), sends after that refused (EPIPE).
 *
 * EDGEMESH_UDP_ADDON picks another build (e.g. build/udp-sanitized.node, with LD_PRELOAD of
 * libasan as in udp-remote.netns.test.ts).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetnsLab } from '../../../test/harness/netns.ts';

const ADDON = resolve(
  process.env.EDGEMESH_UDP_ADDON || join(import.meta.dirname, '../../native/build/udp.node'),
);

/** Runs in the namespace; prints one JSON line with what the app and the gateway received. */
const SCRIPT = `
const net = require('node:net');
const dgram = require('node:dgram');
const addon = require(${JSON.stringify(ADDON)});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (what) => { for (let i = 0; i < 300 && !what(); i++) await sleep(10); return what(); };
const frame = (s) => { const b = Buffer.from(s); const h = Buffer.alloc(2); h.writeUInt16BE(b.length); return Buffer.concat([h, b]); };
const unframe = (b) => { const out = []; for (let at = 0; at + 2 <= b.length; ) { const n = b.readUInt16BE(at); out.push(b.toString('latin1', at + 2, at + 2 + n)); at += 2 + n; } return out; };
const short = (s) => (s.length > 24 ? 'x' + s.length : s);

(async () => {
  const records = [];
  const engine = addon.create((_data, recs) => {
    for (let i = 0; i < recs.length; i += 6) if (recs[i] === 4) records.push({ fd: recs[i + 1], errno: recs[i + 2] });
  });
  const app = dgram.createSocket('udp4');
  await new Promise((r) => app.bind(0, '127.0.0.1', r));
  const got = [];
  app.on('message', (m, from) => got.push(short(m.toString()) + ' from ' + from.address + ':' + from.port));
  const client = '127.0.0.1:' + app.address().port;
  const reply = addon.replySocket(engine, '127.0.0.2:5353');

  const server = net.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  async function connection() {
    const accepted = new Promise((r) => server.once('connection', r));
    const sock = net.connect(server.address().port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    const peer = await accepted;
    const data = [];
    peer.on('data', (d) => data.push(d));
    return { sock, peer, data };
  }

  // 1. Hand-over with held datagrams and early bytes (one whole frame, 3 bytes of the next).
  const c1 = await connection();
  const rest = Buffer.concat([frame('early'), frame('split').subarray(0, 3)]);
  const fd = addon.gatewayFlow(engine, c1.sock._handle.fd, reply, client, '127.0.0.2:5353', frame('held'), rest);
  c1.sock.destroy(); // the addon's dup keeps the connection
  await sleep(50);
  c1.peer.write(frame('split').subarray(3));
  const big = frame('y'.repeat(30000));
  for (let i = 0; i < big.length; i += 7001) { c1.peer.write(big.subarray(i, i + 7001)); await sleep(5); }
  for (const b of Buffer.concat([frame('a'), frame(''), frame('b')])) { c1.peer.write(Buffer.from([b])); await sleep(1); }
  const sendOk = addon.send(engine, fd, Buffer.from('out1'), 0, 4);
  await until(() => got.length >= 6 && Buffer.concat(c1.data).length >= 12);
  // 2. A length over 65,507: the flow's connection is closed and reported.
  c1.peer.write(Buffer.from([0xff, 0xff, 1, 2, 3]));
  await until(() => records.length >= 1);
  const sendAfterBad = addon.send(engine, fd, Buffer.from('late'), 0, 4);
  addon.close(engine, fd);

  // 3. The gateway ends the connection: reported with errno 0.
  const c2 = await connection();
  const fd2 = addon.gatewayFlow(engine, c2.sock._handle.fd, reply, client, '127.0.0.2:5353', Buffer.alloc(0), Buffer.alloc(0));
  c2.sock.destroy();
  c2.peer.write(frame('last'));
  await until(() => got.length >= 7);
  c2.peer.end();
  await until(() => records.length >= 2);
  addon.close(engine, fd2);
  // 4. The addon closed its dup: the gateway sees the end.
  const c2ended = await until(() => c2.peer.readableEnded);

  // 5. A gateway that stops reading: sends succeed until the connection is full, then EAGAIN
  // (dropped, never queued); a frame the kernel took in part is finished once it reads again,
  // so the gateway gets every accepted datagram whole and in order.
  const c3 = await connection();
  c3.peer.pause();
  const fd3 = addon.gatewayFlow(engine, c3.sock._handle.fd, reply, client, '127.0.0.2:5353', Buffer.alloc(0), Buffer.alloc(0));
  c3.sock.destroy();
  let accepted = 0, full = 0;
  for (let i = 0; i < 20000 && full < 3; i++) {
    const d = Buffer.alloc(1000, 0x61 + (i % 26));
    d.write(String(accepted).padStart(8, '0'));
    const r = addon.send(engine, fd3, d, 0, d.length);
    if (r === 0) accepted++;
    else if (r === 11) { full++; await sleep(5); }
    else throw new Error('send: errno ' + r);
  }
  c3.peer.resume();
  await until(() => Buffer.concat(c3.data).length >= accepted * 1002);
  await sleep(50);
  const frames = unframe(Buffer.concat(c3.data));
  const whole = frames.every((f, i) => f.length === 1000 && f.startsWith(String(i).padStart(8, '0')) && f.slice(8) === f[999].repeat(992));
  addon.close(engine, fd3);

  console.log(JSON.stringify({
    got, toGateway: unframe(Buffer.concat(c1.data)), sendOk, sendAfterBad,
    closed: records.map((r) => ({ same: r.fd === fd || r.fd === fd2, errno: r.errno })), c2ended,
    full: { accepted, refused: full, frames: frames.length, whole, bytes: Buffer.concat(c3.data).length },
    stats: addon.stats(engine),
  }));
  addon.stop(engine);
  process.exit(0);
})().catch((err) => { console.error(err.stack); process.exit(1); });
`;

let lab: NetnsLab;
let ns: string;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emgc-'));
  await writeFile(join(dir, 'carrier.cjs'), SCRIPT);
  lab = new NetnsLab('emgc');
  ns = await lab.add('gc');
  await lab.exec(ns, ['ip', 'link', 'set', 'lo', 'up']);
});

afterAll(async () => {
  await lab?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the UDP addon carrying a gateway flow', () => {
  it('deframes split replies, frames sends, and reports a bad length and an EOF', async () => {
    const r = await lab.run(ns, [process.execPath, join(dir, 'carrier.cjs')], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1) as string);
    const from = 'from 127.0.0.2:5353'; // the reply socket: the app sees the address it sent to
    expect(out.got).toEqual([
      `early ${from}`,
      `split ${from}`,
      `x30000 ${from}`,
      `a ${from}`,
      ` ${from}`, // a zero-length datagram is carried
      `b ${from}`,
      `last ${from}`,
    ]);
    expect(out.toGateway).toEqual(['held', 'out1']);
    expect(out.sendOk).toBe(0);
    expect(out.sendAfterBad).toBe(32); // EPIPE: the flow is dead until JS closes it
    expect(out.closed).toEqual([
      { same: true, errno: 71 }, // EPROTO
      { same: true, errno: 0 },
    ]);
    expect(out.c2ended).toBe(true);
    // The full connection: some datagrams taken (the kernel's buffers), then EAGAIN; what was
    // taken arrives whole, in order, and nothing more (no frame torn by a partial write).
    expect(out.full.accepted).toBeGreaterThan(10);
    expect(out.full.refused).toBe(3);
    expect(out.full).toMatchObject({
      frames: out.full.accepted,
      whole: true,
      bytes: out.full.accepted * 1002,
    });
    // [out, replies, failed, gateway-full, gateway-unavailable, stale reports]: 7 replies;
    // the refused send is JS's to count (send returned EPIPE), not the thread's.
    expect(out.stats).toEqual([0, 7, 0, 0, 0, 0]);
  });
});
