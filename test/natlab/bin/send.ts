// Sends --bytes of random data to --target (ip:port) on --node through the local tunnel
// node (127.0.0.1:15080), or straight to --direct ip:port, and prints one JSON line:
// { path, bytes, sha, reply, ms }. The sink answers the sha256 of what arrived.
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    node: { type: 'string' },
    target: { type: 'string' },
    bytes: { type: 'string' },
    direct: { type: 'string' },
  },
});
const total = Number(a.bytes);
const start = performance.now();
const [host, port] = (a.direct ?? '127.0.0.1:15080').split(':');
const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
s.setNoDelay(true);
let path = 'plain';
let buf = Buffer.alloc(0);
const h = createHash('sha256');
const block = randomBytes(1 << 20);
let sent = 0;
function pump() {
  while (sent < total) {
    const n = Math.min(block.length, total - sent);
    // Vary each block so a repeated-block bug cannot pass the hash check.
    block.writeUInt32BE(sent >>> 0, 0);
    const chunk = Buffer.from(block.subarray(0, n));
    h.update(chunk);
    sent += n;
    if (!s.write(chunk)) return void s.once('drain', pump);
  }
  s.end();
}
s.on('connect', () => {
  if (a.direct) return pump();
  const [ip, p] = String(a.target).split(':');
  s.write(`EDGEMESH/1 CONNECT ${a.node} ${ip} ${p}\n`);
});
let headerDone = !!a.direct;
s.on('data', (c) => {
  buf = Buffer.concat([buf, c]);
  if (!headerDone) {
    const nl = buf.indexOf(10);
    if (nl < 0) return;
    const line = buf.subarray(0, nl).toString();
    buf = buf.subarray(nl + 1);
    headerDone = true;
    if (!line.startsWith('OK ')) {
      console.log(JSON.stringify({ error: line }));
      process.exit(0);
    }
    path = line.slice(3);
    pump();
  }
});
s.on('end', () => {
  const ms = performance.now() - start;
  console.log(JSON.stringify({ path, bytes: sent, sha: h.digest('hex'), reply: buf.toString().trim(), ms }));
});
s.on('error', (e) => {
  console.log(JSON.stringify({ error: e.message }));
  process.exit(0);
});
