/**
 * Test-only: an enrolled peer gateway speaking the tunnel protocol to a real gateway's
 * direct port (gateway/hostile-tunnel.netns.test.ts). Run as a process in a lab namespace:
 *
 *   node hostile-peer.ts '<json options>'
 *
 * mode "attack" (issue 16 item 8): opens `streams` streams to `target` (an endpoint that
 * never reads), fills each with `bytes`, waits for a PONG (the gateway has handled every
 * DATA frame before it), tries one more stream, prints a JSON summary, then holds the
 * session open until stdin closes (so what the gateway pinned stays pinned while measured).
 *
 * mode "echo": one stream to `target` (an echo), `bytes` random bytes through and back,
 * prints whether they came back intact.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { Target } from '../../lib/tunnel/frame.ts';
import type { TlsIdentity } from '../../lib/tunnel/identity.ts';
import { MuxSession } from '../../lib/tunnel/mux.ts';
import { connectTls } from '../../lib/tunnel/tls.ts';

interface Options {
  mode: 'attack' | 'echo';
  /** JSON file with the peer's TlsIdentity. */
  identityFile: string;
  gateway: { host: string; port: number; node: string };
  target: Target;
  streams?: number;
  bytes: number;
}

const opts = JSON.parse(process.argv[2]) as Options;
const identity = JSON.parse(readFileSync(opts.identityFile, 'utf8')) as TlsIdentity;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function connect(): Promise<MuxSession> {
  const { socket } = await connectTls({
    identity,
    expect: { kind: 'node', name: opts.gateway.node },
    host: opts.gateway.host,
    port: opts.gateway.port,
  });
  // On a LAN dial the dialer is the TLS client, as gateways do.
  return new MuxSession(socket, { role: 'client', peer: opts.gateway.node });
}

function outcome(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'accepted',
    (err: Error) => err.message,
  );
}

async function attack(session: MuxSession): Promise<void> {
  const count = opts.streams ?? 1;
  const opened = await Promise.allSettled(
    Array.from({ length: count }, () => session.openStream(opts.target)),
  );
  const streams = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const resets: string[] = [];
  for (const s of streams) s.on('error', (err) => resets.push(err.message));
  // One buffer for every write (no copies here). The gateway grants credit as it passes bytes
  // on to the target, whose kernel buffers take some before it stalls; keep every stream's
  // window full until nothing moves any more.
  const chunk = Buffer.alloc(opts.bytes, 0x41);
  for (const s of streams) s.write(chunk, () => undefined);
  let last = -1;
  for (let round = 0, still = 0; round < 100 && still < 3; round++) {
    await session.ping(30_000); // the gateway has handled every DATA frame sent before it
    await new Promise((r) => setTimeout(r, 200));
    const sent = (session.socket as Socket).bytesWritten;
    still = sent === last ? still + 1 : 0;
    last = sent;
  }
  const late = await outcome(session.openStream(opts.target));
  console.log(
    JSON.stringify({
      opened: streams.length,
      refusedAtOpen: opened.filter((r) => r.status === 'rejected').length,
      reset: resets.length,
      resetReason: resets[0],
      late,
      sent: last,
    }),
  );
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
}

async function echo(session: MuxSession): Promise<void> {
  const stream = await session.openStream(opts.target);
  const data = randomBytes(opts.bytes);
  const parts: Buffer[] = [];
  stream.on('data', (c: Buffer) => parts.push(c));
  const ended = new Promise<void>((resolve, reject) => {
    stream.on('end', resolve);
    stream.on('error', reject);
  });
  stream.end(data);
  await ended;
  const got = Buffer.concat(parts);
  console.log(JSON.stringify({ ok: sha(got) === sha(data), bytes: got.length }));
  process.exit(0);
}

const session = await connect();
await (opts.mode === 'attack' ? attack(session) : echo(session));
