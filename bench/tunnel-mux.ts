// Micro benchmark of the tunnel's stream layer (frames, mux, TLS) without the NAT lab: in one
// network namespace (loopback only), an app sends to gateway A, which carries it in a mux
// stream over TLS to gateway B, which writes it to a sink — the real topology of a tunnel
// stream, minus NAT routers, tunnel-server and path finding. Baseline: the app straight to the
// sink over plain TCP in the same round. Each gateway pair can run another tree's lib/tunnel
// (`--tree /path/to/worktree`, repeatable), so old and new code alternate in one session.
// Needs root (ip netns).
//   node_modules/.bin/node bench/tunnel-mux.ts [--mb 200] [--rounds 3] [--tree DIR ...] [--prof DIR] [--perf DIR]
// --prof writes V8 CPU profiles (--cpu-prof) of every gateway to DIR; --perf records each
// gateway's first transfer with `perf record -g` (native and kernel frames) into DIR.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import net, { type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { GATEWAY_NODE_FLAGS } from '../gateway/tunnel/node-flags.ts';
import { NetnsLab, waitFor } from '../test/harness/netns.ts';

const { values: opt } = parseArgs({
  options: {
    role: { type: 'string', default: '' },
    tree: { type: 'string', multiple: true, default: [] },
    port: { type: 'string', default: '0' },
    to: { type: 'string', default: '0' },
    mb: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '3' },
    prof: { type: 'string', default: '' },
    echo: { type: 'boolean', default: false },
    // `perf record -g` of each gateway during its first transfer, to DIR/perf-<tree><side>.data.
    perf: { type: 'string', default: '' },
  },
});
const HERE = new URL('..', import.meta.url).pathname;
const NODE = join(HERE, 'node_modules/.bin/node');
const SELF = new URL(import.meta.url).pathname;
const MB = 1024 * 1024;
const SINK = 9000;
const ECHO = 9001;

function listen(port: number, onConn: (s: Socket) => void): void {
  net.createServer({ allowHalfOpen: true }, onConn).listen(port, '127.0.0.1', () => console.log('READY'));
}

/** Counts what arrives on :9000 and answers the count at FIN; :9001 echoes. */
function sink(): void {
  net
    .createServer({ allowHalfOpen: true }, (s) => {
      let n = 0;
      s.on('data', (c: Buffer) => {
        n += c.length;
      });
      s.on('end', () => s.end(`${n}\n`));
      s.on('error', () => undefined);
    })
    .listen(SINK, '127.0.0.1');
  listen(ECHO, (s) => {
    s.setNoDelay(true);
    s.pipe(s);
    s.on('error', () => undefined);
  });
}

/** A gateway's tunnel end from `tree`: `b` accepts TLS sessions and dials the sink. */
async function gateway(side: 'a' | 'b', tree: string, port: number): Promise<void> {
  const { MuxSession } = await import(join(tree, 'lib/tunnel/mux.ts'));
  const { serverOptions, connectTls } = await import(join(tree, 'lib/tunnel/tls.ts'));
  const { issueIdentity } = await import(join(tree, 'lib/tunnel/identity.ts'));
  // The one splice is lib/splice.ts; trees before it had the gateway's own in streams.ts.
  const { splice } = await import(join(tree, 'lib/splice.ts')).catch(
    () => import(join(tree, 'gateway/streams.ts')),
  );
  process.on('SIGTERM', () => process.exit(0)); // lets --cpu-prof write its profile
  // Trees with resumable streams (lib/tunnel/resume.ts) run as the gateway runs them: a book
  // per peer, so the sender keeps what it sent until credited.
  const resumeBook = () =>
    import(join(tree, 'lib/tunnel/resume.ts')).then(
      (m) => new m.ResumeBook(),
      () => undefined,
    );
  const ca = JSON.parse(readFileSync(0, 'utf8'));
  const identity = issueIdentity(ca, { kind: 'node', name: `node-${side}` });
  const book = await resumeBook();
  if (side === 'b') {
    tls
      .createServer(serverOptions(identity), (socket) => {
        socket.setNoDelay(true);
        const session = new MuxSession(socket, { role: 'server', peer: 'node-a', resume: book });
        session.on(
          'stream',
          (
            stream: Duplex & { accept(): void; chargeSink(w: Duplex): void },
            target: { ip: string; port: number },
          ) => {
            const conn = net.connect({ host: target.ip, port: target.port, allowHalfOpen: true }, () => {
              stream.accept();
              stream.chargeSink(conn);
              void splice(stream, conn);
            });
            conn.on('error', () => stream.destroy());
          },
        );
      })
      .listen(port, '127.0.0.1', () => console.log('READY'));
    return;
  }
  const tcp = net.connect({ host: '127.0.0.1', port: port + 1 });
  await new Promise((r) => tcp.once('connect', r));
  tcp.setNoDelay(true);
  const { socket } = await connectTls({ identity, expect: { kind: 'node', name: 'node-b' }, socket: tcp });
  const session = new MuxSession(socket, { role: 'client', peer: 'node-b', resume: book });
  // As test/natlab/bin/tunnel-node.ts joins a client connection to its stream.
  for (const [local, target] of [
    [port, SINK],
    [port + 2, ECHO],
  ] as const) {
    net
      .createServer({ allowHalfOpen: true }, async (client) => {
        client.pause();
        client.setNoDelay(true);
        const stream = await session.openStream({ ip: '127.0.0.1', port: target });
        stream.on('error', () => client.destroy());
        client.on('error', () => stream.destroy());
        client.pipe(stream);
        stream.pipe(client);
        client.resume();
      })
      .listen(local, '127.0.0.1');
  }
  console.log('READY');
}

/** Sends `bytes` to :port, waits for the sink's count; or (`echo`) 300 one-byte round trips. */
async function source(port: number, bytes: number, echo: boolean): Promise<void> {
  const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  s.setNoDelay(true);
  await new Promise((r) => s.once('connect', r));
  if (echo) {
    const rtts: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t0 = performance.now();
      const got = new Promise((r) => s.once('data', r));
      s.write('x');
      await got;
      rtts.push(performance.now() - t0);
    }
    rtts.sort((a, b) => a - b);
    console.log(JSON.stringify({ p50Us: Math.round(rtts[150] * 1000) }));
    s.destroy();
    return;
  }
  const block = randomBytes(MB);
  const start = performance.now();
  let sent = 0;
  let reply = '';
  s.on('data', (c) => {
    reply += c;
  });
  const done = new Promise((r) => s.once('end', r));
  while (sent < bytes) {
    const n = Math.min(block.length, bytes - sent);
    sent += n;
    if (!s.write(block.subarray(0, n))) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await done;
  const ms = performance.now() - start;
  if (Number(reply.trim()) !== bytes) throw new Error(`sink counted ${reply.trim()} of ${bytes} bytes`);
  console.log(JSON.stringify({ mbps: bytes / MB / (ms / 1000) }));
}

/** Read and write syscalls so far (/proc/PID/io). */
function syscalls(pid: number): number {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  return Number(/syscr: (\d+)/.exec(io)?.[1]) + Number(/syscw: (\d+)/.exec(io)?.[1]);
}

function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks (100/s)
}

async function orchestrate(): Promise<void> {
  const trees = [HERE, ...(opt.tree ?? []).map((t) => resolve(t))];
  const bytes = Number(opt.mb) * MB;
  const rounds = Number(opt.rounds);
  for (const dir of [opt.prof, opt.perf]) if (dir) mkdirSync(dir, { recursive: true });
  NetnsLab.cleanUpOnInterrupt();
  const lab = new NetnsLab('emx');
  const ns = await lab.add('mux');
  const ca = JSON.stringify((await import('../lib/tunnel/identity.ts')).createCA());
  const ready = (child: ChildProcess, what: string) =>
    new Promise<void>((ok, fail) => {
      let out = '';
      child.stdout?.on('data', (c) => {
        out += c;
        if (out.includes('READY')) ok();
      });
      child.stderr?.on('data', (c) => process.stderr.write(`${what}: ${c}`));
      child.once('exit', (code) => fail(new Error(`${what} exited with ${code}`)));
    });
  const run = async (argv: string[]) => {
    const child = lab.spawn(ns, [NODE, SELF, ...argv]);
    let out = '';
    child.stdout?.on('data', (c) => {
      out += c;
    });
    child.stderr?.on('data', (c) => process.stderr.write(c));
    const code = await new Promise((r) => child.once('exit', r));
    if (code !== 0) throw new Error(`${argv.join(' ')} exited with ${code}`);
    return JSON.parse(out.trim().split('\n').pop() ?? '{}');
  };
  try {
    const sinkChild = lab.spawn(ns, [NODE, SELF, '--role', 'sink']);
    await ready(sinkChild, 'sink');
    const gateways: ChildProcess[][] = [];
    for (const [i, tree] of trees.entries()) {
      const port = 7000 + 10 * i;
      const pair: ChildProcess[] = [];
      for (const side of ['b', 'a'] as const) {
        const prof = opt.prof ? ['--cpu-prof', '--cpu-prof-dir', resolve(opt.prof, `t${i}${side}`)] : [];
        const child = lab.spawn(ns, [
          NODE,
          ...GATEWAY_NODE_FLAGS,
          ...prof,
          SELF,
          '--role',
          `gw${side}`,
          '--tree',
          tree,
          '--port',
          String(side === 'b' ? port + 1 : port),
        ]);
        child.stdin?.end(ca);
        await ready(child, `tree ${i} gateway ${side}`);
        pair.push(child);
      }
      gateways.push(pair);
    }
    const plain: number[] = [];
    const tun: number[][] = trees.map(() => []);
    const cpu: number[][][] = trees.map(() => []);
    const calls: number[][][] = trees.map(() => []);
    for (let r = 0; r < rounds; r++) {
      plain.push((await run(['--role', 'source', '--port', String(SINK), '--mb', opt.mb])).mbps);
      for (const [i] of trees.entries()) {
        const pids = gateways[i].map((c) => c.pid as number);
        const before = pids.map(cpuSeconds);
        const callsBefore = pids.map(syscalls);
        const perf =
          opt.perf && r === 0
            ? pids.map((pid, k) =>
                spawn(
                  'perf',
                  ['record', '-g', '-p', String(pid), '-o', join(opt.perf, `perf-${i}${'ba'[k]}.data`)],
                  {
                    stdio: 'ignore',
                  },
                ),
              )
            : [];
        tun[i].push((await run(['--role', 'source', '--port', String(7000 + 10 * i), '--mb', opt.mb])).mbps);
        const used = pids.map((p, k) => (cpuSeconds(p) - before[k]) / (bytes / 1024 ** 3));
        cpu[i].push(used);
        calls[i].push(pids.map((p, k) => (syscalls(p) - callsBefore[k]) / (bytes / MB)));
        for (const p of perf) p.kill('SIGINT');
        await Promise.all(perf.map((p) => new Promise((ok) => p.once('exit', ok))));
      }
      console.log(
        `round ${r + 1}: plain ${plain[r].toFixed(0)} MB/s; ${trees
          .map((_, i) => `tree ${i}: ${tun[i][r].toFixed(0)} MB/s (${(tun[i][r] / plain[r]).toFixed(2)}×)`)
          .join('; ')}`,
      );
    }
    const plainRtt = (await run(['--role', 'source', '--port', String(ECHO), '--echo'])).p50Us;
    for (const [i, tree] of trees.entries()) {
      const rtt = (await run(['--role', 'source', '--port', String(7002 + 10 * i), '--echo'])).p50Us;
      const ratios = tun[i].map((t, r) => t / plain[r]).sort((a, b) => a - b);
      console.log(
        `tree ${i} (${tree}): ratio ${ratios.map((x) => x.toFixed(2)).join(' ')} (median ${ratios[Math.floor(ratios.length / 2)].toFixed(2)}); ` +
          `gateway CPU s/GB sending ${cpu[i].map((x) => x[1].toFixed(2)).join(' ')}, receiving ${cpu[i].map((x) => x[0].toFixed(2)).join(' ')}; ` +
          `syscalls/MB sending ${calls[i].map((x) => x[1].toFixed(0)).join(' ')}, receiving ${calls[i].map((x) => x[0].toFixed(0)).join(' ')}; p50 RTT ${rtt} µs (plain ${plainRtt}, added ${rtt - plainRtt})`,
      );
    }
    for (const pair of gateways) for (const c of pair) if (c.pid) process.kill(c.pid, 'SIGTERM');
    if (opt.prof)
      await waitFor(async () => gateways.flat().every((c) => c.exitCode !== null), 10_000, 100, 'profiles');
  } finally {
    await lab.cleanup();
  }
}

switch (opt.role) {
  case 'sink':
    sink();
    break;
  case 'gwa':
  case 'gwb':
    await gateway(opt.role === 'gwa' ? 'a' : 'b', String(opt.tree?.[0]), Number(opt.port));
    break;
  case 'source':
    await source(Number(opt.port), Number(opt.mb) * MB, opt.echo ?? false);
    break;
  default:
    await orchestrate();
}
