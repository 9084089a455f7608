/**
 * Test/bench backend, run inside a network namespace: on each address given it serves
 *   HTTP/1.1 on --http   GET /         → "backend <ip>\n"   (the endpoint that answered)
 *                        GET /bytes/N  → N bytes             (throughput)
 *                        POST /        → "<ip> got <n> bytes\n"
 *                        Upgrade       → 101, then echoes raw bytes
 *   h2c on --h2c         any request   → "h2 <ip>\n"
 *   raw TCP on --tcp     greets "hello from <ip>\n", echoes; on the client's FIN it answers
 *                        "bye <n>\n" (bytes it received) and then closes: a half-close check
 * Prints "ready" once every listener is bound.
 */
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    addr: { type: 'string' },
    http: { type: 'string' },
    h2c: { type: 'string' },
    tcp: { type: 'string' },
  },
});
const addrs = (values.addr ?? '').split(',').filter(Boolean);
const listens: Promise<void>[] = [];
const listen = (server: net.Server, port: string, host: string) =>
  listens.push(new Promise((resolve) => server.listen({ port: Number(port), host, backlog: 4096 }, resolve)));
const big = Buffer.alloc(1 << 20, 'x');

for (const ip of addrs) {
  if (values.http) {
    const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
      if (req.method === 'POST') {
        let n = 0;
        req.on('data', (d: Buffer) => {
          n += d.length;
        });
        req.on('end', () => res.end(`${ip} got ${n} bytes\n`));
        return;
      }
      const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
      if (m) {
        let left = Math.min(Number(m[1]), 1 << 30);
        res.writeHead(200, { 'content-length': left });
        const write = () => {
          while (left > 0) {
            const chunk = big.subarray(0, Math.min(left, big.length));
            left -= chunk.length;
            if (!res.write(chunk)) return res.once('drain', write);
          }
          res.end();
        };
        write();
        return;
      }
      res.end(`backend ${ip}\n`);
    });
    server.on('upgrade', (_req, socket: net.Socket, head: Buffer) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n');
      socket.write(`upgraded ${ip}\n`);
      if (head.length) socket.write(head);
      socket.pipe(socket);
    });
    listen(server, values.http, ip);
  }
  if (values.h2c) {
    const server = http2.createServer((_req, res) => res.end(`h2 ${ip}\n`));
    // Without TCP_NODELAY a response's HEADERS and DATA (two writes) wait for the client's
    // delayed ACK: ~40 ms per exchange at low concurrency, which measured Nagle, not HTTP/2.
    server.on('connection', (socket: net.Socket) => socket.setNoDelay(true));
    listen(server as unknown as net.Server, values.h2c, ip);
  }
  if (values.tcp) {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      let n = 0;
      socket.write(`hello from ${ip}\n`);
      socket.on('data', (d: Buffer) => {
        n += d.length;
        socket.write(d);
      });
      socket.on('end', () => socket.end(`bye ${n}\n`));
      socket.on('error', () => socket.destroy());
    });
    listen(server, values.tcp, ip);
  }
}
await Promise.all(listens);
process.stdout.write('ready\n');
