/**
 * Test client run inside the pod namespace (so its connections are captured):
 *   tcp  --host H --port P [--count N] [--send TEXT]  one connection per count: reads the
 *        greeting, sends TEXT, half-closes, reads to the end; prints one JSON line each
 *        ({data} or {error}); connections run one after another.
 *   h2   --host H --port P [--count N]                N requests on ONE h2c session; prints
 *        one JSON line with the bodies.
 *   hold --host H --port P --count N                  opens N connections, waits for each
 *        greeting, prints "held N", keeps them open until stdin closes, then closes them.
 *   echo --host H --port P --bytes N [--count C --parallel P]  sends N random bytes to the
 *        TCP echo backend, half-closes, checks that exactly those bytes came back (sha256);
 *        C connections, P at a time, each its own payload; prints {ok, bytes, failed, mbps}.
 *   fuzz --host H --port P --count N --seed S         N connections, one after another, each
 *        sending seeded random bytes (some behind a valid HTTP/1 or h2 prefix) then a FIN;
 *        prints {closed, resets, timeouts} — a timeout means the proxy stalled.
 *   churn --host H --port P --count N                 N short connections (greeting, FIN),
 *        64 at a time, at most 60 s; prints {done, errors}.
 * Every operation has a 5 s deadline so a broken proxy fails the test instead of hanging it.
 */
import { createHash, randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    host: { type: 'string' },
    port: { type: 'string' },
    count: { type: 'string', default: '1' },
    send: { type: 'string', default: '' },
    'hold-ms': { type: 'string', default: '0' },
    bytes: { type: 'string', default: '0' },
    seed: { type: 'string', default: '1' },
    parallel: { type: 'string', default: '1' },
  },
});
const host = values.host ?? '127.0.0.1';
const port = Number(values.port);
const count = Math.min(Number(values.count), 200_000);

function tcpOnce(): Promise<{ data?: string; error?: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, allowHalfOpen: true });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ error: 'timeout', data });
    }, 5_000);
    socket.on('connect', () => {
      setTimeout(() => {
        if (values.send) socket.write(values.send.replace(/\\r\\n/g, '\r\n'));
        socket.end();
      }, Number(values['hold-ms']));
    });
    socket.on('data', (d) => {
      data += d;
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ error: err.code ?? err.message, data });
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ data });
    });
  });
}

async function h2(): Promise<string[]> {
  const authority = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
  const session = http2.connect(`http://${authority}`);
  session.on('error', () => undefined);
  const one = () =>
    new Promise<string>((resolve) => {
      const stream = session.request({ ':path': '/' });
      let body = '';
      stream.on('data', (d) => {
        body += d;
      });
      stream.on('end', () => resolve(body));
      stream.on('error', (err) => resolve(`error ${err.message}`));
    });
  const bodies: string[] = [];
  for (let i = 0; i < count; i++) bodies.push(await one());
  session.close();
  return bodies;
}

async function hold(): Promise<void> {
  const sockets: net.Socket[] = [];
  const greetings: string[] = [];
  let greeted = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${greeted}/${count} greeted`)), 20_000);
    for (let i = 0; i < count; i++) {
      const s = net.connect({ host, port });
      s.once('data', (d: Buffer) => {
        greetings.push(String(d).trim());
        if (++greeted === count) {
          clearTimeout(timer);
          resolve();
        }
      });
      s.on('error', reject);
      sockets.push(s);
    }
  });
  process.stdout.write(`held ${sockets.length} ${count <= 10 ? JSON.stringify(greetings) : ''}\n`);
  await new Promise((r) => process.stdin.once('end', r).resume());
  for (const s of sockets) s.destroy();
}

/** One echo connection: sends `total` random bytes, half-closes, checks what came back. */
async function echoOnce(total: number): Promise<{ ok: boolean; bytes: number; tail: string }> {
  const payload = randomBytes(total);
  const received: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    const socket = net.connect({ host, port, allowHalfOpen: true });
    socket.on('data', (d: Buffer) => received.push(d));
    socket.on('end', () => resolve());
    socket.on('error', reject);
    socket.on('connect', async () => {
      for (let off = 0; off < total; off += 1 << 20) {
        if (!socket.write(payload.subarray(off, Math.min(total, off + (1 << 20)))))
          await new Promise((r) => socket.once('drain', r));
      }
      socket.end();
    });
  });
  const all = Buffer.concat(received);
  const start = all.indexOf(0x0a) + 1; // after the greeting line
  const echoed = all.subarray(start, start + total);
  const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const tail = all.subarray(start + total).toString();
  const ok = echoed.length === total && digest(echoed) === digest(payload) && tail === `bye ${total}\n`;
  return { ok, bytes: echoed.length, tail };
}

/** `count` echo connections, `parallel` at a time, each with its own payload: all must come back intact. */
async function echoCheck(): Promise<void> {
  const total = Math.min(Number(values.bytes), 1 << 30);
  const parallel = Math.max(1, Math.min(Number(values.parallel), 256));
  const t0 = performance.now();
  let next = 0;
  let bytes = 0;
  let failed = 0;
  let tail = '';
  const worker = async () => {
    while (next < count) {
      next++;
      const r = await echoOnce(total).catch(() => ({ ok: false, bytes: 0, tail: '' }));
      bytes += r.bytes;
      tail = r.tail;
      if (!r.ok) failed++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker));
  const mbps = bytes / 1e6 / ((performance.now() - t0) / 1000);
  process.stdout.write(
    `${JSON.stringify({ ok: failed === 0, bytes, tail, failed, mbps: Math.round(mbps) })}\n`,
  );
}

async function fuzz(): Promise<void> {
  let state = Number(values.seed) >>> 0 || 1;
  const rand = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 4294967296;
  };
  const prefixes = [
    '',
    'GET / HTTP/1.1\r\n',
    'POST / HTTP/1.1\r\ncontent-length: 99999\r\n\r\n',
    'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
  ];
  const out = { closed: 0, resets: 0, timeouts: 0 };
  for (let i = 0; i < count; i++) {
    const body = Buffer.alloc(1 + Math.floor(rand() * 2000));
    for (let j = 0; j < body.length; j++) body[j] = Math.floor(rand() * 256);
    const payload = Buffer.concat([Buffer.from(prefixes[Math.floor(rand() * prefixes.length)]), body]);
    const result = await new Promise<keyof typeof out>((resolve) => {
      const socket = net.connect({ host, port }, () => socket.end(payload));
      const timer = setTimeout(() => {
        socket.destroy();
        resolve('timeouts');
      }, 5_000);
      socket.on('data', () => undefined);
      socket.on('error', () => {
        clearTimeout(timer);
        resolve('resets');
      });
      socket.on('close', () => {
        clearTimeout(timer);
        resolve('closed');
      });
    });
    out[result]++;
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

async function churn(): Promise<void> {
  let done = 0;
  let errors = 0;
  let next = 0;
  const stopAt = Date.now() + 60_000;
  const worker = async () => {
    while (next < count && Date.now() < stopAt) {
      next++;
      const r = await tcpOnce();
      if (r.error) errors++;
      else done++;
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  process.stdout.write(`${JSON.stringify({ done, errors })}\n`);
}

const deadline = setTimeout(() => {
  process.stdout.write('{"error":"client deadline"}\n');
  process.exit(2);
}, 30_000);
if (positionals[0] === 'h2') {
  process.stdout.write(`${JSON.stringify(await h2())}\n`);
} else if (positionals[0] === 'hold') {
  clearTimeout(deadline);
  await hold();
} else if (positionals[0] === 'echo') {
  clearTimeout(deadline);
  await echoCheck();
} else if (positionals[0] === 'fuzz') {
  clearTimeout(deadline);
  await fuzz();
} else if (positionals[0] === 'churn') {
  clearTimeout(deadline);
  await churn();
} else {
  for (let i = 0; i < count; i++) process.stdout.write(`${JSON.stringify(await tcpOnce())}\n`);
}
clearTimeout(deadline);
