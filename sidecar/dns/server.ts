import dgram from 'node:dgram';
import dns from 'node:dns';
import net from 'node:net';
import { configError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import { silentLogger } from '../../lib/log.ts';
import { Gauge } from '../../lib/metrics.ts';
import { POD_CONTRACT } from '../../lib/pod-contract.ts';
import { Resolver, type ResolverOptions } from './resolver.ts';
import { HEADER_LEN } from './wire.ts';

/**
 * The sockets around the Resolver: UDP and TCP on 127.0.0.1 and ::1 (never 0.0.0.0: with
 * iptables REDIRECT, conntrack only rewrites replies that leave from the address the query
 * was redirected to). TCP follows RFC 7766: 2-byte length prefix, several (pipelined)
 * queries per connection, answers possibly out of order, an idle timeout, bounded buffers.
 */
export interface DnsServerOptions extends Omit<ResolverOptions, 'upstreams'> {
  upstreams: ResolverOptions['upstreams'];
  port?: number;
  /** Listen addresses (default 127.0.0.1 and ::1; ::1 is skipped with a warning where IPv6 is off). */
  hosts?: string[];
  /** Close a TCP connection after this long without a complete query. */
  tcpIdleMs?: number;
  maxTcpConnections?: number;
}

export interface DnsServer {
  readonly port: number;
  readonly resolver: Resolver;
  close(): Promise<void>;
}

export const DEFAULT_DNS_PORT = POD_CONTRACT.dnsPort;
const MAX_TCP_PENDING = 32; // answers owed on one connection before we stop reading it
const MAX_TCP_BUFFERED = 2 * (2 + 65535);
const MAX_TCP_UNSENT = 256 * 1024;

export async function startDnsServer(opts: DnsServerOptions): Promise<DnsServer> {
  const log = opts.log ?? silentLogger;
  const port = opts.port ?? DEFAULT_DNS_PORT;
  const hosts = opts.hosts ?? ['127.0.0.1', '::1'];
  const idleMs = opts.tcpIdleMs ?? 10_000;
  // Forwarding to ourselves would loop every unknown name until the in-flight bound.
  const self = opts.upstreams.find(
    (u) => u.port === port && (hosts.includes(u.host) || ['0.0.0.0', '::'].includes(u.host)),
  );
  if (self) throw configError(`--upstream ${self.host}:${self.port} is this DNS server itself`);
  const resolver = new Resolver({ ...opts, log });
  const udpSockets: dgram.Socket[] = [];
  const tcpServers: net.Server[] = [];
  const connections = new Set<net.Socket>();
  if (opts.registry) {
    new Gauge({
      name: 'edgemesh_dns_tcp_connections',
      help: 'Open TCP connections to the DNS server',
      registers: [opts.registry],
      collect() {
        this.set(connections.size);
      },
    });
  }

  const close = async () => {
    resolver.close();
    for (const s of udpSockets) s.close();
    for (const c of connections) c.destroy();
    await Promise.all(tcpServers.map((s) => new Promise((r) => s.close(r))));
  };

  try {
    for (const host of hosts) {
      const v6 = net.isIPv6(host);
      try {
        udpSockets.push(await bindUdp(host, port, resolver));
        tcpServers.push(
          await listenTcp(host, port, resolver, connections, idleMs, opts.maxTcpConnections ?? 256),
        );
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (v6 && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT') && hosts.length > 1) {
          log.warn({ host, code }, 'IPv6 loopback unavailable; DNS listens on IPv4 only');
          continue;
        }
        throw new EdgemeshError(
          ErrorCodes.UNAVAILABLE,
          `DNS cannot listen on ${host} port ${port} (--dns-port): ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
  } catch (err) {
    await close();
    throw err;
  }
  log.info({ port, hosts, upstreams: opts.upstreams }, 'DNS server listening');
  return { port, resolver, close };
}

/**
 * dgram's address lookup for each send: a reply goes to the sender's address, always an IP
 * literal, which dns.lookup hands back on the next tick (a tick object, its async context and
 * a closure per answer: ~200 bytes, docs/scale.md round 10); here the callback runs at once,
 * as dgram does itself for a connected socket. Names (a bind host) still go to dns.lookup.
 */
function literalLookup(
  address: string,
  family: unknown,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  const f = net.isIP(address);
  if (f !== 0) callback(null, address, f);
  else dns.lookup(address, family as number, callback);
}

function bindUdp(host: string, port: number, resolver: Resolver): Promise<dgram.Socket> {
  // Bigger socket buffers absorb bursts (the kernel caps them at net.core.[rw]mem_max).
  const sock = dgram.createSocket({
    type: net.isIPv6(host) ? 'udp6' : 'udp4',
    ipv6Only: net.isIPv6(host),
    recvBufferSize: 1 << 20,
    sendBufferSize: 1 << 20,
    lookup: literalLookup,
  });
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: host, port, exclusive: true }, () => {
      sock.off('error', reject);
      // Send errors (e.g. the client's port closed) concern one datagram only.
      sock.on('error', () => {});
      sock.on('message', (msg, rinfo) => {
        resolver.handle(msg, 'udp', (answer) => {
          sock.send(answer, rinfo.port, rinfo.address, noop);
        });
      });
      resolve(sock);
    });
  });
}

function listenTcp(
  host: string,
  port: number,
  resolver: Resolver,
  connections: Set<net.Socket>,
  idleMs: number,
  maxConnections: number,
): Promise<net.Server> {
  const server = net.createServer({ noDelay: true }, (sock) => serveTcp(sock, resolver, connections, idleMs));
  server.maxConnections = maxConnections;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: net.isIPv6(host) }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

function serveTcp(sock: net.Socket, resolver: Resolver, connections: Set<net.Socket>, idleMs: number): void {
  connections.add(sock);
  let buffered: Buffer = Buffer.alloc(0);
  let pending = 0;
  let closed = false;
  sock.setTimeout(idleMs, () => sock.destroy());
  sock.on('error', () => {});
  sock.on('close', () => {
    closed = true;
    connections.delete(sock);
  });
  const maybeResume = () => {
    if (!closed && sock.isPaused() && pending < MAX_TCP_PENDING && sock.writableLength < MAX_TCP_UNSENT)
      sock.resume();
  };
  sock.on('drain', maybeResume);
  // A message trickled in a byte at a time keeps the idle timer alive: it too gets idleMs.
  let partialSince = 0;
  sock.on('data', (chunk: Buffer) => {
    const continuing = buffered.length > 0;
    let consumed = false;
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    if (buffered.length > MAX_TCP_BUFFERED) return sock.destroy();
    while (buffered.length >= 2) {
      const len = buffered.readUInt16BE(0);
      // Nothing shorter than a header can be answered, and we could not resynchronise after it.
      if (len < HEADER_LEN) return sock.destroy();
      if (buffered.length < 2 + len) break;
      const msg = buffered.subarray(2, 2 + len);
      buffered = buffered.subarray(2 + len);
      consumed = true;
      pending++;
      const willAnswer = resolver.handle(msg, 'tcp', (answer) => {
        pending--;
        if (closed) return;
        const framed = Buffer.allocUnsafe(2 + answer.length);
        framed.writeUInt16BE(answer.length, 0);
        answer.copy(framed, 2);
        sock.write(framed);
        maybeResume();
      });
      if (!willAnswer) pending--;
    }
    if (buffered.length === 0) partialSince = 0;
    else if (!continuing || consumed) partialSince = Date.now();
    else if (Date.now() - partialSince > idleMs) return sock.destroy();
    if (pending >= MAX_TCP_PENDING || sock.writableLength >= MAX_TCP_UNSENT) sock.pause();
  });
}

function noop() {}
