/**
 * Listeners for the capture netns tests, run as a separate process inside a namespace:
 *   node servers.ts '{"http":[80,8080],"label":"direct","dns":["198.51.100.53:53"],"answer":"192.0.2.1"}'
 * HTTP servers answer "<label> <local address>:<local port>" (plus " for <original
 * destination>" with originalDst), so a test sees who answered, which address the connection
 * really reached, and what the sidecar would learn about where it was meant to go. DNS
 * servers (UDP and TCP on each address) answer every A query with `answer`. Prints
 * "ready" once everything listens. Bad packets are dropped, never crash the process.
 */
import { createSocket } from 'node:dgram';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, isIPv6, type Socket } from 'node:net';
import dnsPacket from 'dns-packet';
import { originalDst } from '../../sidecar/proxy/original-dst.ts';

interface Spec {
  http?: number[];
  /** Addresses the HTTP servers bind (default: '::', dual-stack). */
  httpHosts?: string[];
  /** Append " for <original destination>" read with SO_ORIGINAL_DST (the sidecar's code). */
  originalDst?: boolean;
  label?: string;
  dns?: string[];
  answer?: string;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as Spec;
const listening: Promise<void>[] = [];

const hostPort = (ip: string | undefined, port: number | undefined) => {
  const addr = ip?.replace(/^::ffff:/, '');
  return `${addr?.includes(':') ? `[${addr}]` : addr}:${port}`;
};

for (const port of spec.http ?? []) {
  for (const host of spec.httpHosts ?? ['::']) {
    const server = createHttpServer((req, res) => {
      let body = `${spec.label} ${hostPort(req.socket.localAddress, req.socket.localPort)}`;
      if (spec.originalDst) {
        // What the sidecar will read: the destination the app dialled before REDIRECT.
        try {
          const dst = originalDst(req.socket, host.includes(':') ? 6 : 4);
          body += ` for ${hostPort(dst.ip, dst.port)}`;
        } catch (err) {
          body += ` for unknown (${(err as Error).message})`;
        }
      }
      res.end(body);
    });
    listening.push(
      new Promise((resolve) =>
        server.listen({ port, host, ipv6Only: host.includes(':') && host !== '::' }, resolve),
      ),
    );
  }
}

function answer(query: Buffer): Buffer | undefined {
  try {
    const q = dnsPacket.decode(query);
    return dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
      questions: q.questions,
      answers: (q.questions ?? [])
        .filter((x) => x.type === 'A')
        .map((x) => ({ type: 'A' as const, name: x.name, ttl: 5, data: spec.answer ?? '192.0.2.1' })),
    });
  } catch {
    return undefined;
  }
}

for (const hostPort of spec.dns ?? []) {
  const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(hostPort);
  if (!m) throw new Error(`bad dns address ${hostPort}`);
  const [host, port] = [m[1], Number(m[2])];
  const udp = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
  udp.on('message', (msg, rinfo) => {
    const reply = answer(msg);
    if (reply) udp.send(reply, rinfo.port, rinfo.address);
  });
  listening.push(new Promise((resolve) => udp.bind(port, host, () => resolve())));

  const tcp = createTcpServer((socket: Socket) => {
    let buffered = Buffer.alloc(0);
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const reply = answer(buffered.subarray(2, 2 + buffered.readUInt16BE(0)));
        buffered = buffered.subarray(2 + buffered.readUInt16BE(0));
        if (!reply) return socket.destroy();
        const len = Buffer.alloc(2);
        len.writeUInt16BE(reply.length);
        socket.write(Buffer.concat([len, reply]));
      }
      if (buffered.length > 4096) socket.destroy();
    });
  });
  listening.push(new Promise((resolve) => tcp.listen({ port, host }, resolve)));
}

await Promise.all(listening);
process.stdout.write('ready\n');
