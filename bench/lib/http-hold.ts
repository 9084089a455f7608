/**
 * bench/lib/http-hold.ts — holds N keep-alive HTTP/1.1 connections open through a proxy, each
 * having completed one `GET /` (so the proxy holds a parsed-and-idle client connection, not a
 * fresh one it has not read from yet). Run inside the pod namespace by bench/proxy-memory.ts:
 *
 *   node http-hold.ts --host H --port P --count N
 *
 * Prints "held N" once every connection has its response, keeps them open until stdin closes,
 * then closes them and exits. Connections open 64 at a time; each has a 5 s deadline, so a
 * broken proxy fails the bench instead of hanging it.
 */
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { host: { type: 'string' }, port: { type: 'string' }, count: { type: 'string', default: '1' } },
});
const host = values.host ?? '127.0.0.1';
const port = Number(values.port);
const count = Math.min(Number(values.count), 20_000);
if (!Number.isInteger(port) || port <= 0 || port > 65535)
  throw new Error(`http-hold: bad --port ${values.port}`);
if (!Number.isInteger(count) || count <= 0) throw new Error(`http-hold: bad --count ${values.count}`);

const REQUEST = `GET / HTTP/1.1\r\nhost: ${host}\r\n\r\n`;
const PARALLEL = 64;
const DEADLINE_MS = 5_000;

/** One connection with one complete response (Content-Length framed) read from it. */
function openOne(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`http-hold: no complete response from ${host}:${port} within ${DEADLINE_MS} ms`));
    }, DEADLINE_MS);
    socket.on('connect', () => socket.write(REQUEST));
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) return;
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(got.toString('latin1', 0, end));
      if (!length) {
        clearTimeout(timer);
        socket.destroy();
        reject(new Error(`http-hold: response without Content-Length: ${got.toString('latin1', 0, 80)}`));
        return;
      }
      if (got.length < end + 4 + Number(length[1])) return;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      resolve(socket);
    };
    socket.on('data', onData);
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`http-hold: ${host}:${port}: ${err.message}`));
    });
  });
}

const held: net.Socket[] = [];
for (let i = 0; i < count; i += PARALLEL) {
  const batch = await Promise.all(Array.from({ length: Math.min(PARALLEL, count - i) }, openOne));
  held.push(...batch);
}
console.log(`held ${held.length}`);
process.stdin.resume();
process.stdin.on('end', () => {
  for (const s of held) s.destroy();
  process.exit(0);
});
