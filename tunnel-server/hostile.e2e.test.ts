import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls, { type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame, FrameDecoder, FrameType } from '../lib/tunnel/frame.ts';
import { createCA, createCsr, generateKeyPem, issueIdentity } from '../lib/tunnel/identity.ts';
import { EDGEMESH_BIN, waitFor } from '../test/harness/netns.ts';
import { MiB, watchPeakRss } from '../test/harness/proc.ts';
import { DEFAULT_CONNECTION_LIMITS, NOISY_LOG_INTERVAL_MS } from './server.ts';

// Issue 16: attacks on the real tunnel-server process (bin/edgemesh tunnel-server) on
// loopback, from certificate-less clients as anyone on the internet can be. Source
// addresses 127.0.0.2.. stand for distinct hosts (all of 127/8 is local on Linux). Memory
// is the process's RSS from /proc against the manifest's limit (512Mi). Every flood is
// bounded in bytes and time.
const LIMIT = 512 * MiB; // manifests/base/tunnel-server.yaml
const dir = mkdtempSync(join(tmpdir(), 'emts-hostile-'));
const ca = createCA();
writeFileSync(join(dir, 'ca.crt'), ca.certPem);
writeFileSync(join(dir, 'ca.key'), ca.keyPem, { mode: 0o600 });
writeFileSync(
  join(dir, 'tokens.json'),
  JSON.stringify({ node1: createHash('sha256').update('good-token').digest('hex') }),
);

interface Server {
  child: ChildProcess;
  pid: number;
  port: number;
  metricsPort: number;
  log: () => string;
}
const servers: Server[] = [];

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const p = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return p;
}

async function startServer(extra: string[] = []): Promise<Server> {
  const [port, metricsPort] = [await freePort(), await freePort()];
  const child = spawn(
    EDGEMESH_BIN,
    [
      'tunnel-server',
      `--listen=127.0.0.1:${port}`,
      '--name=ts1',
      `--ca-cert=${join(dir, 'ca.crt')}`,
      `--ca-key=${join(dir, 'ca.key')}`,
      `--enrol-tokens=${join(dir, 'tokens.json')}`,
      `--metrics-port=${metricsPort}`,
      ...extra,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr?.on('data', (d) => {
    log += d;
  });
  await waitFor(() => log.includes('tunnel-server ready'), 30_000, 100, `tunnel-server start: ${log}`);
  const s = { child, pid: child.pid as number, port, metricsPort, log: () => log };
  servers.push(s);
  return s;
}

/** A sample's value from /metrics: `name{k="v",...}` matches a line with that name and those labels. */
async function metric(s: Server, sample: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${s.metricsPort}/metrics`)).text();
  const [name, labels = ''] = sample.replace(/}$/, '').split('{');
  const want = labels ? labels.split(',') : [];
  const found = text
    .split('\n')
    .find((l) => (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) && want.every((w) => l.includes(w)));
  return found ? Number(found.split(' ').at(-1)) : 0;
}

/** A TLS session without a client certificate (what enrolment and any stranger look like). */
async function bareTls(s: Server, localAddress = '127.0.0.1'): Promise<TLSSocket> {
  const raw = net.connect({ host: '127.0.0.1', port: s.port, localAddress });
  raw.on('error', () => undefined);
  const sock = tls.connect({ socket: raw, rejectUnauthorized: false });
  sock.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    sock.once('secureConnect', resolve);
    sock.once('close', () => reject(new Error('closed before the handshake finished')));
  });
  return sock;
}

/** One enrolment round trip; resolves with the server's answer, or 'closed'. */
async function enrol(s: Server, token: string, localAddress?: string): Promise<string> {
  let sock: TLSSocket;
  try {
    sock = await bareTls(s, localAddress);
  } catch {
    return 'closed';
  }
  const csr = createCsr(generateKeyPem(), { kind: 'node', name: 'node1' });
  sock.write(
    encodeFrame({ type: FrameType.CONTROL, stream: 0, message: { t: 'enrol', node: 'node1', csr, token } }),
  );
  const decoder = new FrameDecoder();
  return new Promise((resolve) => {
    sock.on('data', (chunk: Buffer) => {
      for (const f of decoder.push(chunk))
        if (f.type === FrameType.CONTROL) {
          resolve(String(f.message.t));
          sock.destroy();
        }
    });
    sock.once('close', () => resolve('closed'));
  });
}

const closedSignal = (sock: net.Socket) =>
  new Promise<void>((r) => (sock.destroyed ? r() : sock.once('close', () => r())));

afterAll(() => {
  for (const s of servers) if (s.child.exitCode === null) process.kill(s.pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('tunnel-server under attack (real process, loopback)', () => {
  let s: Server;
  beforeAll(async () => {
    s = await startServer();
  });

  it('a certificate-less client that PINGs and never reads is cut; memory stays inside the limit', async () => {
    const sock = await bareTls(s);
    sock.pause(); // never read: every PONG stays queued on the server
    const ping = encodeFrame({ type: FrameType.PING, stream: 0, opaque: Buffer.alloc(8) });
    const batch = Buffer.concat(Array.from({ length: 4096 }, () => ping)); // 96 KiB
    const rss = watchPeakRss(s.pid);
    const before = rss.peak();
    const until = Date.now() + 15_000;
    let sent = 0;
    while (!sock.destroyed && Date.now() < until && sent < 400 * MiB) {
      if (!sock.write(batch))
        await new Promise<void>((r) => {
          sock.once('drain', r);
          sock.once('close', r);
        });
      sent += batch.length;
    }
    await waitFor(() => sock.destroyed, 10_000, 50, 'server cuts the flooder');
    const peak = rss.stop();
    console.log(
      `PING flood: sent ${(sent / MiB).toFixed(1)} MiB; server RSS ${(before / MiB) | 0} → peak ${(peak / MiB) | 0} MiB`,
    );
    expect(peak).toBeLessThan(LIMIT);
    // The server's log reaches us through a pipe: the cut's line can arrive after the socket closes.
    const cutLine = /enrolling 127\.0\.0\.1:\d+.*does not read|does not read.*enrolling 127\.0\.0\.1/;
    await waitFor(() => cutLine.test(s.log()), 5_000, 50, 'the cut is logged').catch(() => undefined);
    expect(s.log()).toMatch(cutLine);
    expect(await metric(s, 'edgemesh_tunnel_server_cut_total{reason="slow-reader"}')).toBeGreaterThanOrEqual(
      1,
    );
    // Legitimate enrolment still works.
    expect(await enrol(s, 'good-token')).toBe('enrolled');
  });

  it('handshakes that never finish and enrolment sessions that only PING are closed', async () => {
    // 50 connections that send one byte of a TLS record and stop (the handshake times out).
    const stalled = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const c = net.connect({ host: '127.0.0.1', port: s.port, localAddress: '127.0.0.2' });
        c.on('error', () => undefined);
        await new Promise((r) => c.once('connect', r));
        c.write(Buffer.from([0x16]));
        return c;
      }),
    );
    // 20 certificate-less sessions that answer nothing but PING every 2 s (and read PONGs).
    const pingers = await Promise.all(Array.from({ length: 20 }, () => bareTls(s, '127.0.0.3')));
    const ping = encodeFrame({ type: FrameType.PING, stream: 0, opaque: Buffer.alloc(8) });
    const timers = pingers.map((p) => {
      p.resume();
      return setInterval(() => p.writable && p.write(ping), 2_000);
    });
    try {
      // Handshake timeout 10 s (+ first byte), enrolment deadline 30 s: generous deadlines.
      await Promise.all(
        [...stalled, ...pingers].map(closedSignal).map((p) => Promise.race([p, never(70_000)])),
      );
      expect(stalled.every((c) => c.destroyed)).toBe(true);
      expect(pingers.every((c) => c.destroyed)).toBe(true);
    } finally {
      for (const t of timers) clearInterval(t);
      for (const c of [...stalled, ...pingers]) c.destroy();
    }
    expect(await metric(s, 'edgemesh_tunnel_server_cut_total{reason="handshake"}')).toBeGreaterThanOrEqual(
      50,
    );
    expect(
      await metric(s, 'edgemesh_tunnel_server_cut_total{reason="enrol-deadline"}'),
    ).toBeGreaterThanOrEqual(20);
  }, 120_000);

  it('STUN answers no request shorter than its answer (no amplification)', async () => {
    const udp = dgram.createSocket('udp4');
    const answers: Buffer[] = [];
    udp.on('message', (m) => answers.push(m));
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    const txid = (n: number) => Buffer.alloc(12, n).toString('hex');
    // A bare 20-byte Binding Request, then libjuice's own (SOFTWARE + FINGERPRINT, 40 bytes).
    const bare = Buffer.from(`000100002112a442${txid(1)}`, 'hex');
    const juice = Buffer.from(`000100142112a442${txid(2)}802200086c69626a7569636580280004020cfd56`, 'hex');
    udp.send(bare, s.port, '127.0.0.1');
    udp.send(juice, s.port, '127.0.0.1');
    try {
      // Loopback keeps order: once the second is answered, the first would have been too.
      await waitFor(() => answers.length > 0, 10_000, 20, 'STUN answer');
      expect(answers.map((a) => a.subarray(8, 20).toString('hex'))).toEqual([txid(2)]);
      expect(answers[0].length).toBeLessThanOrEqual(juice.length);
    } finally {
      udp.close();
    }
  });

  it('failed enrolments are counted each but logged at most once per interval', async () => {
    // Log lines (one JSON object each) whose message is the refusal, not mentions of the phrase.
    const refusalLines = () =>
      s
        .log()
        .split('\n')
        .filter((l) => l.includes('"msg":"enrolment refused"')).length;
    const before = refusalLines();
    const started = Date.now();
    for (let i = 0; i < 30; i++) expect(await enrol(s, `bad-token-${i}`)).toBe('error');
    // One line per interval at most, however long the 30 attempts took on a loaded machine.
    const intervals = Math.ceil((Date.now() - started) / NOISY_LOG_INTERVAL_MS);
    expect(refusalLines() - before).toBeLessThanOrEqual(intervals + 1);
    expect(intervals + 1).toBeLessThan(30); // the bound still says something
    expect(
      await metric(s, 'edgemesh_tunnel_server_enrolments_total{result="refused"}'),
    ).toBeGreaterThanOrEqual(30);
  });

  it('at the connection cap, each connection pinning its worst, memory stays inside the limit', async () => {
    const CAP = DEFAULT_CONNECTION_LIMITS.maxConnections; // the server runs with the defaults
    // 1024 (the default cap) certificate-less sessions from 4 "hosts" (256 each, the per-IP
    // cap), each with a CONTROL frame cut short just under 64 KiB in the server's decoder and
    // PONGs it never reads; then more connections, which are refused.
    const rss = watchPeakRss(s.pid);
    const before = rss.peak();
    const partial = encodeFrame({
      type: FrameType.CONTROL,
      stream: 0,
      message: { t: 'enrol', pad: 'x'.repeat(64 * 1024 - 200) },
    });
    const ping = encodeFrame({ type: FrameType.PING, stream: 0, opaque: Buffer.alloc(8) });
    const pings = Buffer.concat(Array.from({ length: 1300 }, () => ping)); // 30 KiB of PONGs owed: under the cut
    const held: TLSSocket[] = [];
    try {
      // Fill the cap exactly, topping up what a loaded machine let time out (a handshake that
      // missed its deadline holds nothing), from up to 8 "hosts" of at most 256 each.
      const perHost = new Map<number, number>();
      for (let round = 0; round < 4 && held.length < CAP; round++) {
        for (let host = 2; host < 10 && held.length < CAP; host++) {
          const want = Math.min(256 - (perHost.get(host) ?? 0), CAP - held.length);
          if (want <= 0) continue;
          const batch = await Promise.all(
            Array.from({ length: want }, () => bareTls(s, `127.0.1.${host}`).catch(() => undefined)),
          );
          for (const sock of batch) {
            if (!sock) continue;
            sock.pause();
            sock.write(pings);
            sock.write(partial.subarray(0, partial.length - 10));
            held.push(sock);
            perHost.set(host, (perHost.get(host) ?? 0) + 1);
          }
        }
      }
      expect(held.length).toBe(CAP);
      await new Promise((r) => setTimeout(r, 2_000)); // let the server take it all in
      const extra = await Promise.all(
        Array.from({ length: 20 }, () =>
          bareTls(s, '127.0.1.20').then(
            () => 'open',
            () => 'refused',
          ),
        ),
      );
      const peak = rss.stop();
      console.log(
        `connection cap: ${held.length} held; server RSS ${(before / MiB) | 0} → peak ${(peak / MiB) | 0} MiB`,
      );
      const open = await metric(s, 'edgemesh_tunnel_server_connections');
      const cut = await metric(s, 'edgemesh_tunnel_server_cut_total{reason="slow-reader"}');
      console.log(`extra: ${extra.join(',')}; open ${open}; slow-reader cuts ${cut}`);
      expect(peak).toBeLessThan(LIMIT);
      expect(extra.every((e) => e === 'refused')).toBe(true);
      expect(
        await metric(s, 'edgemesh_tunnel_server_refused_total{reason="connection-limit"}'),
      ).toBeGreaterThanOrEqual(20);
    } finally {
      for (const sock of held) sock.destroy();
    }
    // Once they are gone, a legitimate enrolment gets through again.
    await waitFor(
      async () => (await enrol(s, 'good-token')) === 'enrolled',
      30_000,
      500,
      'enrolment after the flood',
    );
  }, 120_000);
});

/** An enrolled node's control session: sends `register`, resolves with the server's answer. */
async function register(s: Server, lan: string[], port: number): Promise<Record<string, unknown>> {
  const id = issueIdentity(ca, { kind: 'node', name: 'node7' });
  const sock = tls.connect({
    host: '127.0.0.1',
    port: s.port,
    key: id.keyPem,
    cert: id.certPem,
    ca: ca.certPem,
    checkServerIdentity: () => undefined,
  });
  sock.on('error', () => undefined);
  await new Promise((r) => sock.once('secureConnect', r));
  sock.write(encodeFrame({ type: FrameType.CONTROL, stream: 0, message: { t: 'register', lan, port } }));
  const decoder = new FrameDecoder();
  return new Promise((resolve) => {
    sock.on('data', (chunk: Buffer) => {
      for (const f of decoder.push(chunk))
        if (f.type === FrameType.CONTROL) {
          resolve(f.message);
          sock.destroy();
        }
    });
    sock.once('close', () => resolve({ t: 'closed' }));
  });
}

describe('what an enrolled node may register (real process, loopback; issue 16 item 10)', () => {
  let s: Server;
  beforeAll(async () => {
    s = await startServer();
  });

  it.each([
    [['127.0.0.1'], 20006, 'lan 127.0.0.1 is a loopback address, not reachable from another host'],
    [
      ['192.168.1.10', '169.254.169.254'],
      20006,
      'lan 169.254.169.254 is a link-local address (169.254.0.0/16, e.g. cloud metadata), not reachable from another host',
    ],
    [['192.168.1.10'], 10250, 'port 10250 is the kubelet API port, not a tunnel port'],
  ])(
    'refuses lan %j port %d (before: registered, and other gateways dialled it)',
    async (lan, port, reason) => {
      expect(await register(s, lan, port)).toMatchObject({
        t: 'error',
        code: 'EDGEMESH_ERR_BAD_REQUEST',
        message: `registration refused: ${reason}`,
      });
    },
  );

  it('registers LAN addresses and a tunnel port; counts and logs the refusals', async () => {
    expect(await register(s, ['192.168.1.10'], 20006)).toMatchObject({ t: 'registered', server: 'ts1' });
    expect(await metric(s, 'edgemesh_tunnel_server_refused_total{reason="bad-address"}')).toBe(3);
    await waitFor(() => s.log().includes('registration refused'), 5_000, 50, 'the refusal is logged').catch(
      () => undefined,
    );
    expect(s.log()).toContain('registration refused');
  });
});

describe('tunnel-server connection caps (real process, loopback)', () => {
  it('one source IP cannot take more than its share; others still get in; the total is capped', async () => {
    const s = await startServer(['--max-connections=100', '--max-connections-per-ip=40']);
    const open = async (host: string, n: number) => {
      const socks = await Promise.all(
        Array.from({ length: n }, async () => {
          const c = net.connect({ host: '127.0.0.1', port: s.port, localAddress: host });
          c.on('error', () => undefined);
          await new Promise((r) => c.once('connect', r));
          return c;
        }),
      );
      return socks;
    };
    const all: net.Socket[] = [];
    try {
      const a = await open('127.0.2.2', 60);
      all.push(...a);
      await waitFor(() => a.filter((c) => c.destroyed).length >= 20, 10_000, 20, 'per-IP refusals');
      expect(await enrol(s, 'good-token', '127.0.2.3')).toBe('enrolled');
      const b = await open('127.0.2.4', 40);
      const c = await open('127.0.2.5', 40);
      all.push(...b, ...c);
      // 40 + 40 + 20 reach the cap of 100: the last 20 of c and anyone new are refused.
      await waitFor(() => c.filter((x) => x.destroyed).length >= 20, 10_000, 20, 'total refusals');
      expect(await enrol(s, 'good-token', '127.0.2.6')).toBe('closed');
      expect(a.filter((x) => !x.destroyed).length).toBe(40);
      expect(await metric(s, 'edgemesh_tunnel_server_refused_total{reason="connection-limit-ip"}')).toBe(20);
    } finally {
      for (const x of all) x.destroy();
    }
    await waitFor(
      async () => (await enrol(s, 'good-token', '127.0.2.6')) === 'enrolled',
      10_000,
      200,
      'freed',
    );
  });
});

function never(ms: number): Promise<void> {
  return new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`not closed within ${ms} ms`)), ms).unref(),
  );
}
