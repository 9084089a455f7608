// Steady traffic through the local tunnel node (127.0.0.1:15080) for --seconds: one
// long-lived stream to --echo (ip:port) on --node carrying a 4 KiB block every 20 ms, each
// echoed byte checked against what was sent, and meanwhile a new short stream to --sink
// every --every-ms (2,000 random bytes, the sink's SHA-256 answer checked). Prints one JSON
// line: { path, longSent, longEchoed, longError?, shortOk, shortFailed, shortErrors }.
// Bounded: the long stream stops writing at --seconds and gets 10 s to drain.
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    node: { type: 'string' },
    echo: { type: 'string' },
    sink: { type: 'string' },
    seconds: { type: 'string', default: '30' },
    'every-ms': { type: 'string', default: '500' },
  },
});
const endAt = Date.now() + Number(a.seconds) * 1000;

/** A CONNECT through the tunnel node; resolves with the socket and the path once OK. */
function connect(target: string): Promise<{ socket: net.Socket; path: string; rest: Buffer }> {
  const [ip, port] = target.split(':');
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: 15080, allowHalfOpen: true });
    s.setNoDelay(true);
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const nl = buf.indexOf(10);
      if (nl < 0) return;
      s.removeListener('data', onData);
      s.pause();
      const line = buf.subarray(0, nl).toString();
      if (!line.startsWith('OK ')) {
        s.destroy();
        reject(new Error(line));
        return;
      }
      resolve({ socket: s, path: line.slice(3), rest: buf.subarray(nl + 1) });
    };
    s.on('data', onData);
    s.once('error', reject);
    s.write(`EDGEMESH/1 CONNECT ${a.node} ${ip} ${port}\n`);
  });
}

async function longStream(): Promise<{ path?: string; sent: number; echoed: number; error?: string }> {
  const r = { sent: 0, echoed: 0 } as { path?: string; sent: number; echoed: number; error?: string };
  let socket: net.Socket;
  try {
    const c = await connect(String(a.echo));
    socket = c.socket;
    r.path = c.path;
    if (c.rest.length > 0) socket.unshift(c.rest);
  } catch (err) {
    return { ...r, error: `connect: ${(err as Error).message}` };
  }
  const pending: Buffer[] = [];
  let pendingOff = 0;
  return new Promise((resolve) => {
    let ticker: NodeJS.Timeout | undefined;
    let drainTimer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      clearInterval(ticker);
      clearTimeout(drainTimer);
      if (error) r.error = error;
      socket.destroy();
      resolve(r);
    };
    socket.on('data', (chunk: Buffer) => {
      let off = 0;
      while (off < chunk.length) {
        const head = pending[0];
        if (!head) return finish(`echo sent ${chunk.length - off} bytes never written`);
        const n = Math.min(head.length - pendingOff, chunk.length - off);
        if (!chunk.subarray(off, off + n).equals(head.subarray(pendingOff, pendingOff + n)))
          return finish(`echoed bytes differ at offset ${r.echoed}`);
        off += n;
        pendingOff += n;
        r.echoed += n;
        if (pendingOff === head.length) {
          pending.shift();
          pendingOff = 0;
        }
      }
      if (Date.now() >= endAt && r.echoed === r.sent) finish();
    });
    socket.on('error', (err) => finish(`stream error: ${err.message}`));
    socket.on('close', () => finish(r.echoed === r.sent ? 'closed early' : 'closed with bytes in flight'));
    socket.resume();
    ticker = setInterval(() => {
      if (Date.now() >= endAt) {
        clearInterval(ticker);
        if (r.echoed === r.sent) return finish(); // all back already: no 'data' event will come
        drainTimer = setTimeout(
          () => finish(`${r.sent - r.echoed} bytes not echoed 10 s after the end`),
          10_000,
        );
        return;
      }
      const block = randomBytes(4096);
      pending.push(block);
      r.sent += block.length;
      socket.write(block);
    }, 20);
  });
}

async function shortStreams(): Promise<{ ok: number; failed: number; errors: string[] }> {
  const r = { ok: 0, failed: 0, errors: [] as string[] };
  while (Date.now() < endAt) {
    const started = Date.now();
    try {
      const { socket, rest } = await connect(String(a.sink));
      const data = randomBytes(2000);
      const want = `${createHash('sha256').update(data).digest('hex')} ${data.length}`;
      const reply = await new Promise<string>((resolve, reject) => {
        let buf = rest;
        socket.on('data', (c: Buffer) => {
          buf = Buffer.concat([buf, c]);
        });
        socket.once('end', () => resolve(buf.toString().trim()));
        socket.once('error', reject);
        setTimeout(() => reject(new Error('no answer in 10 s')), 10_000).unref();
        socket.resume();
        socket.end(data);
      });
      socket.destroy();
      if (reply !== want) throw new Error(`sink answered ${JSON.stringify(reply)}`);
      r.ok++;
    } catch (err) {
      r.failed++;
      if (r.errors.length < 5) r.errors.push((err as Error).message);
    }
    await new Promise((res) => setTimeout(res, Math.max(0, Number(a['every-ms']) - (Date.now() - started))));
  }
  return r;
}

const [long, short] = await Promise.all([longStream(), shortStreams()]);
console.log(
  JSON.stringify({
    path: long.path,
    longSent: long.sent,
    longEchoed: long.echoed,
    longError: long.error,
    shortOk: short.ok,
    shortFailed: short.failed,
    shortErrors: short.errors,
  }),
);
process.exit(0);
