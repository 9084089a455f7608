// Round trips of a 64-byte message through the local tunnel node (CONNECT --node/--target)
// or straight to --direct ip:port; prints { path, n, p50Us, p99Us }.
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    node: { type: 'string' },
    target: { type: 'string' },
    direct: { type: 'string' },
    n: { type: 'string', default: '300' },
  },
});
const n = Number(a.n);
const [host, port] = (a.direct ?? '127.0.0.1:15080').split(':');
const s = net.connect({ host, port: Number(port) });
s.setNoDelay(true);
const msg = Buffer.alloc(64, 7);
const rtts: number[] = [];
let path = 'plain';
let header = !a.direct;
let got = 0;
let t0 = 0;
const next = () => {
  if (rtts.length === n) {
    rtts.sort((x, y) => x - y);
    const q = (p: number) => Math.round(rtts[Math.min(n - 1, Math.floor(p * n))] * 1000);
    console.log(JSON.stringify({ path, n, p50Us: q(0.5), p99Us: q(0.99) }));
    process.exit(0);
  }
  got = 0;
  t0 = performance.now();
  s.write(msg);
};
s.on('connect', () => {
  if (a.direct) return next();
  const [ip, p] = String(a.target).split(':');
  s.write(`EDGEMESH/1 CONNECT ${a.node} ${ip} ${p}\n`);
});
let buf = '';
s.on('data', (c: Buffer) => {
  if (header) {
    buf += c.toString('latin1');
    const nl = buf.indexOf('\n');
    if (nl < 0) return;
    path = buf.slice(0, nl).replace(/^OK /, '');
    header = false;
    return next();
  }
  got += c.length;
  if (got >= msg.length) {
    rtts.push(performance.now() - t0);
    next();
  }
});
s.on('error', (e) => {
  console.log(JSON.stringify({ error: e.message }));
  process.exit(0);
});
