import { randomFillSync } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { configError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { sameQuestion } from './message.ts';
import { canonicalIPv6, EDNS_PAYLOAD, FLAG_QR, FLAG_TC, HEADER_LEN, Rcode, Type } from './wire.ts';

/**
 * Sends questions outside the cluster zone to the pod's original resolvers: UDP first with
 * EDNS0 (payload 1232), the same upstream again over TCP when the answer is truncated, the
 * next upstream on a timeout or SERVFAIL/REFUSED. Identical questions in flight share one
 * upstream query. In-flight queries are bounded; past the bound a question fails at once
 * (the client gets SERVFAIL and retries) instead of queueing without limit.
 *
 * A reply is accepted only on the socket the query left from, from the address and port it
 * was sent to, with the same random 16-bit ID and the same question. Queries leave from a
 * small pool of sockets on random ports, each replaced after ROTATE_AFTER queries, so a
 * spoofer must guess the port as well as the ID (cheaper than dnsmasq's socket per query,
 * which bench/dns.ts shows costs it most of its forwarding throughput).
 */
export interface Upstream {
  host: string;
  port: number;
}

/** 'IP', 'IP:PORT', '[IPv6]:PORT' or a bare IPv6 address. */
export function parseUpstream(text: string): Upstream {
  const t = text.trim();
  let host = t;
  let port = 53;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (bracket) {
    host = bracket[1];
    if (bracket[2]) port = Number(bracket[2]);
  } else if (net.isIPv4(t.split(':')[0]) && t.includes(':')) {
    const [h, p] = t.split(':');
    host = h;
    port = /^\d+$/.test(p) ? Number(p) : Number.NaN;
  }
  if (!net.isIP(host))
    throw configError(`--upstream: ${JSON.stringify(text)} is not IP[:PORT] or [IPv6]:PORT`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw configError(`--upstream: port in ${JSON.stringify(text)} must be 1-65535`);
  }
  return { host, port };
}

export interface ForwarderOptions {
  upstreams: Upstream[];
  /** Per attempt (UDP, or the TCP retry). */
  timeoutMs?: number;
  /** Total attempts over the upstreams, in order. */
  attempts?: number;
  maxInFlight?: number;
  log: Logger;
  /** Called with 'udp' | 'tcp' | 'timeout' | 'error' events for metrics. */
  onEvent?: (event: 'udp' | 'tcp' | 'timeout' | 'error' | 'busy') => void;
}

/** One upstream socket of the pool: it closes once retired and no query awaits it. */
interface PooledSocket {
  sock: dgram.Socket;
  uses: number;
  waiting: number;
  retired: boolean;
}

interface Attempt {
  id: number;
  socket?: PooledSocket;
  query: Buffer;
  questionEnd: number;
  upstream: Upstream;
  deadline: number;
  left: number;
  next: number;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
}

const MAX_TCP_MESSAGE = 65535;
const SWEEP_MS = 50;
const POOL_SIZE = 4;
const ROTATE_AFTER = 64;

export class Forwarder {
  readonly #upstreams: Upstream[];
  readonly #timeoutMs: number;
  readonly #attempts: number;
  readonly #maxInFlight: number;
  readonly #log: Logger;
  readonly #onEvent: NonNullable<ForwarderOptions['onEvent']>;
  readonly #inflight = new Map<number, Attempt>();
  readonly #byKey = new Map<string, Promise<Buffer>>();
  readonly #pools: { udp4: (PooledSocket | undefined)[]; udp6: (PooledSocket | undefined)[] } = {
    udp4: [],
    udp6: [],
  };
  readonly #tcp = new Set<net.Socket>();
  readonly #sweep: NodeJS.Timeout;
  #ids = new Uint16Array(0);
  #idPos = 0;
  #closed = false;

  constructor(opts: ForwarderOptions) {
    if (opts.upstreams.length === 0)
      throw configError('--upstream: at least one upstream resolver is needed');
    this.#upstreams = opts.upstreams;
    this.#timeoutMs = opts.timeoutMs ?? 2000;
    this.#attempts = opts.attempts ?? Math.max(2, opts.upstreams.length);
    // Bounded well below the 65536 IDs so a free random ID is always found quickly.
    this.#maxInFlight = Math.min(opts.maxInFlight ?? 512, 8192);
    this.#log = opts.log;
    this.#onEvent = opts.onEvent ?? (() => {});
    // One coarse timer for all deadlines rather than a timer per query.
    this.#sweep = setInterval(() => this.#expire(), SWEEP_MS);
    this.#sweep.unref();
  }

  get inFlight(): number {
    return this.#inflight.size + this.#tcp.size;
  }

  /**
   * Resolves `question` (QNAME QTYPE QCLASS bytes) upstream; `key` identifies identical
   * questions. Resolves with the upstream's raw response; rejects on timeout/overload.
   */
  resolve(key: string, question: Buffer, flags: number, dnssecOk: boolean): Promise<Buffer> {
    const shared = this.#byKey.get(key);
    if (shared) return shared;
    const p = new Promise<Buffer>((resolve, reject) => {
      if (this.#closed) return reject(new Error('forwarder closed'));
      // TCP retries count too: an upstream that truncates everything cannot open unbounded connections.
      if (this.#inflight.size + this.#tcp.size >= this.#maxInFlight) {
        this.#onEvent('busy');
        return reject(new Error('too many upstream queries in flight'));
      }
      const query = Buffer.allocUnsafe(HEADER_LEN + question.length + 11);
      query.writeUInt16BE(0, 0);
      query.writeUInt16BE(flags & 0x0130, 2); // RD, AD, CD from the client
      query.writeUInt16BE(1, 4);
      query.writeUInt32BE(0, 6);
      query.writeUInt16BE(1, 10);
      question.copy(query, HEADER_LEN);
      const o = HEADER_LEN + question.length;
      query[o] = 0;
      query.writeUInt16BE(Type.OPT, o + 1);
      query.writeUInt16BE(EDNS_PAYLOAD, o + 3);
      query.writeUInt32BE(dnssecOk ? 0x8000 : 0, o + 5);
      query.writeUInt16BE(0, o + 9);
      const attempt: Attempt = {
        id: 0,
        query,
        questionEnd: o,
        upstream: this.#upstreams[0],
        deadline: 0,
        left: this.#attempts,
        next: 0,
        resolve,
        reject,
      };
      this.#sendUdp(attempt);
    });
    this.#byKey.set(key, p);
    const forget = () => this.#byKey.delete(key);
    p.then(forget, forget);
    return p;
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const a of this.#inflight.values()) a.reject(new Error('forwarder closed'));
    this.#inflight.clear();
    for (const s of this.#tcp) s.destroy();
    for (const p of [...this.#pools.udp4, ...this.#pools.udp6]) if (p) closeQuietly(p.sock);
  }

  #sendUdp(a: Attempt): void {
    if (this.#closed) {
      a.reject(new Error('forwarder closed'));
      return;
    }
    if (a.left <= 0) {
      a.reject(new Error('upstream resolvers did not answer'));
      return;
    }
    a.left--;
    a.upstream = this.#upstreams[a.next++ % this.#upstreams.length];
    a.id = this.#freeId();
    a.query.writeUInt16BE(a.id, 0);
    a.deadline = Date.now() + this.#timeoutMs;
    this.#inflight.set(a.id, a);
    this.#onEvent('udp');
    const socket = this.#pick(net.isIPv6(a.upstream.host));
    a.socket = socket;
    socket.waiting++;
    socket.sock.send(a.query, a.upstream.port, a.upstream.host, (err) => {
      if (err && this.#inflight.get(a.id) === a) {
        this.#inflight.delete(a.id);
        this.#release(a);
        this.#onEvent('error');
        this.#log.debug({ err: err.message, upstream: a.upstream }, 'upstream send failed');
        this.#sendUdp(a);
      }
    });
  }

  #onMessage(from: PooledSocket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (msg.length < HEADER_LEN) return;
    const a = this.#inflight.get(msg.readUInt16BE(0));
    if (
      !a ||
      a.socket !== from ||
      rinfo.port !== a.upstream.port ||
      !sameAddress(rinfo.address, a.upstream.host)
    ) {
      return;
    }
    if (
      !(msg.readUInt16BE(2) & FLAG_QR) ||
      msg.readUInt16BE(4) !== 1 ||
      !sameQuestion(a.query, msg, a.questionEnd)
    ) {
      return; // not the answer to this question: keep waiting for the real one
    }
    this.#inflight.delete(a.id);
    this.#release(a);
    const flags = msg.readUInt16BE(2);
    if (flags & FLAG_TC) {
      this.#onEvent('tcp');
      this.#queryTcp(a);
      return;
    }
    this.#settle(a, msg);
  }

  #settle(a: Attempt, msg: Buffer): void {
    const rcode = msg.readUInt16BE(2) & 0xf;
    if ((rcode === Rcode.SERVFAIL || rcode === Rcode.REFUSED) && a.left > 0) {
      this.#sendUdp(a);
      return;
    }
    a.resolve(msg);
  }

  /** The truncated question again over TCP (RFC 7766), to the same upstream. */
  #queryTcp(a: Attempt): void {
    const sock = net.connect({ host: a.upstream.host, port: a.upstream.port });
    this.#tcp.add(sock);
    const chunks: Buffer[] = [];
    let got = 0;
    let done = false;
    const finish = (msg: Buffer | undefined, why?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      this.#tcp.delete(sock);
      if (msg) return this.#settle(a, msg);
      this.#onEvent('error');
      this.#log.debug({ upstream: a.upstream, why }, 'upstream TCP query failed');
      this.#sendUdp(a);
    };
    const timer = setTimeout(() => finish(undefined, 'timeout'), this.#timeoutMs);
    sock.on('connect', () => {
      const framed = Buffer.allocUnsafe(2 + a.query.length);
      framed.writeUInt16BE(a.query.length, 0);
      a.query.copy(framed, 2);
      sock.write(framed);
    });
    sock.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      got += chunk.length;
      if (got < 2) return;
      const all = Buffer.concat(chunks);
      const need = all.readUInt16BE(0);
      if (got > 2 + MAX_TCP_MESSAGE) return finish(undefined, 'oversized');
      if (got < 2 + need) return;
      const msg = all.subarray(2, 2 + need);
      if (
        msg.length < HEADER_LEN ||
        msg.readUInt16BE(0) !== a.id ||
        !sameQuestion(a.query, msg, a.questionEnd)
      ) {
        return finish(undefined, 'mismatched answer');
      }
      finish(Buffer.from(msg));
    });
    sock.on('error', (err) => finish(undefined, err.message));
    sock.on('close', () => finish(undefined, 'closed'));
  }

  #expire(): void {
    const now = Date.now();
    for (const a of this.#inflight.values()) {
      if (a.deadline > now) continue;
      this.#inflight.delete(a.id);
      this.#release(a);
      this.#onEvent('timeout');
      this.#sendUdp(a);
    }
  }

  /** A random socket of the pool, replaced by a fresh one (new random port) after ROTATE_AFTER uses. */
  #pick(v6: boolean): PooledSocket {
    const kind = v6 ? 'udp6' : 'udp4';
    const pool = this.#pools[kind];
    const i = Math.floor(Math.random() * POOL_SIZE);
    let p = pool[i];
    if (!p || p.retired || p.uses >= ROTATE_AFTER) {
      if (p) this.#retire(p);
      const fresh: PooledSocket = { sock: dgram.createSocket(kind), uses: 0, waiting: 0, retired: false };
      fresh.sock.on('message', (msg, rinfo) => this.#onMessage(fresh, msg, rinfo));
      fresh.sock.on('error', (err) => {
        this.#log.warn({ err: err.message }, 'upstream socket error; replacing it');
        this.#retire(fresh);
      });
      fresh.sock.unref();
      pool[i] = fresh;
      p = fresh;
    }
    p.uses++;
    return p;
  }

  #retire(p: PooledSocket): void {
    p.retired = true;
    if (p.waiting === 0) closeQuietly(p.sock);
  }

  /** The attempt no longer waits on its socket; a retired socket closes with its last query. */
  #release(a: Attempt): void {
    const p = a.socket;
    if (!p) return;
    a.socket = undefined;
    p.waiting--;
    if (p.retired && p.waiting === 0) closeQuietly(p.sock);
  }

  /** A random ID not in use (16-bit, drawn from a refilled pool of random bytes). */
  #freeId(): number {
    for (;;) {
      if (this.#idPos >= this.#ids.length) {
        this.#ids = randomFillSync(new Uint16Array(4096));
        this.#idPos = 0;
      }
      const id = this.#ids[this.#idPos++];
      if (!this.#inflight.has(id)) return id;
    }
  }
}

function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  const strip = (s: string) => s.replace(/^::ffff:/i, '');
  if (strip(a) === strip(b)) return true;
  return net.isIPv6(a) && net.isIPv6(b) && canonicalIPv6(a) === canonicalIPv6(b);
}

function closeQuietly(sock: dgram.Socket): void {
  try {
    sock.close();
  } catch {
    // already closed
  }
}
