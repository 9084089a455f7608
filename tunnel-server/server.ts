import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { Counter, Gauge, type Registry } from 'prom-client';
import { describeError, EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import {
  type Address,
  type PeerInfo,
  parseRawLine,
  parseToServer,
  plainIp,
  RAW_LINE_MAX,
  type ToGateway,
  type ToServer,
  tlsRole,
} from '../lib/tunnel/control.ts';
import {
  type CertificateAuthority,
  identityOfCert,
  signCsr,
  type TlsIdentity,
} from '../lib/tunnel/identity.ts';
import { MuxSession } from '../lib/tunnel/mux.ts';
import { peerIdentity, serverOptions } from '../lib/tunnel/tls.ts';
import type { EnrolmentVerifier } from './enrol.ts';
import { stunResponse } from './stun.ts';

/**
 * The tunnel-server: one TCP port carries
 *   - TLS control sessions from enrolled gateways (certificate = node identity): registry,
 *     rendezvous (observed addresses, punch coordination, ICE signalling);
 *   - TLS enrolment from gateways without a certificate yet (CSR + proof → certificate);
 *   - raw relay legs and punch probes ("EMT1 ..." line, single-use token from a control
 *     session). Relay legs are spliced byte for byte: what flows is the gateways' own TLS.
 * and the same UDP port answers STUN binding requests (server-reflexive addresses for ICE).
 *
 * Timeouts: first byte 10 s, raw line 5 s (a silent connection holds nothing for long);
 * a relay leg waits 10 s for its partner, a punch 5 s for both probes (the gateways retry).
 */
export interface RelayLimits {
  /** Concurrent relayed sessions per node; 0 = unlimited. */
  maxRelaysPerNode: number;
  /** Bytes per second relayed per node (sum over its relays); 0 = unlimited. */
  bytesPerSecondPerNode: number;
}

export interface TunnelServerOptions {
  name: string;
  host: string;
  port: number;
  ca: CertificateAuthority;
  identity: TlsIdentity;
  verifier?: EnrolmentVerifier;
  limits: RelayLimits;
  log: Logger;
  registry: Registry;
}

export interface TunnelServer {
  port: number;
  /** Names of the gateways registered now. */
  gateways(): string[];
  close(): Promise<void>;
}

interface Registration {
  session: MuxSession;
  info: PeerInfo;
}

interface RelayLeg {
  node: string;
  pairId: string;
  socket?: net.Socket;
  timer: NodeJS.Timeout;
  /** Frees the requester's pending slot (once). */
  release: () => void;
}

interface Punch {
  id: string;
  release: () => void;
  nodes: [string, string];
  tokens: [string, string];
  observed: (Address | undefined)[];
  timer: NodeJS.Timeout;
}

const FIRST_BYTE_TIMEOUT_MS = 10_000;
const RAW_LINE_TIMEOUT_MS = 5_000;
const RELAY_PARTNER_TIMEOUT_MS = 10_000;
const PUNCH_TIMEOUT_MS = 5_000;
/** Pending relay/punch requests one node may have at a time. */
const MAX_PENDING_PER_NODE = 64;

export async function startTunnelServer(opts: TunnelServerOptions): Promise<TunnelServer> {
  const { log } = opts;
  const gateways = new Map<string, Registration>();
  const relayLegs = new Map<string, RelayLeg>();
  const relaysByNode = new Map<string, number>();
  const punches = new Map<string, Punch>();
  const probeTokens = new Map<string, { punch: Punch; index: number }>();
  const buckets = new Map<string, { tokens: number; at: number }>();

  const m = {
    gateways: new Gauge({
      name: 'edgemesh_tunnel_server_gateways',
      help: 'Registered gateways',
      registers: [opts.registry],
    }),
    relays: new Gauge({
      name: 'edgemesh_tunnel_server_relays',
      help: 'Active relayed sessions',
      registers: [opts.registry],
    }),
    relayBytes: new Counter({
      name: 'edgemesh_tunnel_server_relay_bytes_total',
      help: 'Bytes relayed',
      registers: [opts.registry],
    }),
    refused: new Counter({
      name: 'edgemesh_tunnel_server_refused_total',
      help: 'Connections or requests refused',
      labelNames: ['reason'],
      registers: [opts.registry],
    }),
    enrolments: new Counter({
      name: 'edgemesh_tunnel_server_enrolments_total',
      help: 'Enrolment attempts',
      labelNames: ['result'],
      registers: [opts.registry],
    }),
    punches: new Counter({
      name: 'edgemesh_tunnel_server_punches_total',
      help: 'Punches coordinated',
      registers: [opts.registry],
    }),
  };

  const token = () => randomBytes(16).toString('hex');
  const pendingByNode = new Map<string, number>();
  /** Counts a pending request against `node`; returns its release (idempotent). */
  const hold = (node: string) => {
    pendingByNode.set(node, (pendingByNode.get(node) ?? 0) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const n = (pendingByNode.get(node) ?? 1) - 1;
      if (n > 0) pendingByNode.set(node, n);
      else pendingByNode.delete(node);
    };
  };
  const send = (node: string, msg: ToGateway) =>
    gateways.get(node)?.session.sendControl(msg as unknown as Record<string, unknown>);

  // --- control sessions -------------------------------------------------------------------
  function onControl(node: string, socket: TLSSocket): void {
    const session = new MuxSession(socket, { role: 'server', peer: node, log });
    const observed = { ip: plainIp(socket.remoteAddress), port: socket.remotePort ?? 0 };
    let registered = false;
    session.on('control', (raw) => {
      let msg: ToServer;
      try {
        msg = parseToServer(raw);
      } catch (err) {
        m.refused.inc({ reason: 'bad-control' });
        session.close(err as Error);
        return;
      }
      if (msg.t === 'register') {
        const old = gateways.get(node);
        if (old && old.session !== session)
          old.session.close(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'replaced by a new registration'));
        gateways.set(node, { session, info: { lan: msg.lan, port: msg.port, observed } });
        registered = true;
        m.gateways.set(gateways.size);
        session.sendControl({ t: 'registered', server: opts.name, observed });
        log.info({ node, observed, lan: msg.lan }, 'gateway registered');
        return;
      }
      if (!registered) {
        session.sendControl({ t: 'error', code: ErrorCodes.BAD_REQUEST, message: 'register first' });
        return;
      }
      handleRequest(node, msg);
    });
    session.on('close', (err) => {
      if (gateways.get(node)?.session === session) {
        gateways.delete(node);
        m.gateways.set(gateways.size);
        log.info({ node, reason: err ? describeError(err) : 'closed' }, 'gateway left');
      }
    });
  }

  function handleRequest(node: string, msg: Exclude<ToServer, { t: 'register' }>): void {
    const peer = gateways.get(msg.peer);
    const self = gateways.get(node);
    if (!peer || !self || msg.peer === node) {
      send(node, {
        t: 'error',
        id: msg.id,
        code: ErrorCodes.UNAVAILABLE,
        message: `node ${msg.peer} is not registered at ${opts.name}`,
      });
      return;
    }
    if (msg.t === 'signal') {
      send(msg.peer, { t: 'signal', id: msg.id, peer: node, data: msg.data });
      return;
    }
    // Rendezvous state is created on request: cap what one node can have pending so a
    // misbehaving gateway cannot grow the server's memory (legs and punches time out anyway).
    if ((pendingByNode.get(node) ?? 0) >= MAX_PENDING_PER_NODE) {
      m.refused.inc({ reason: 'pending-limit' });
      send(node, {
        t: 'error',
        id: msg.id,
        code: ErrorCodes.UNAVAILABLE,
        message: 'too many pending requests',
      });
      return;
    }
    if (msg.t === 'connect') {
      const limit = opts.limits.maxRelaysPerNode;
      if (
        limit > 0 &&
        ((relaysByNode.get(node) ?? 0) >= limit || (relaysByNode.get(msg.peer) ?? 0) >= limit)
      ) {
        m.refused.inc({ reason: 'relay-limit' });
        send(node, {
          t: 'error',
          id: msg.id,
          code: ErrorCodes.UNAVAILABLE,
          message: `relay limit of ${limit} per node reached`,
        });
        return;
      }
      const release = hold(node);
      const pairId = `${msg.id}:${token()}`;
      const [ta, tb] = [token(), token()];
      for (const [t, n] of [
        [ta, node],
        [tb, msg.peer],
      ] as const) {
        const timer = setTimeout(() => {
          const leg = relayLegs.get(t);
          relayLegs.delete(t);
          leg?.socket?.destroy();
          release();
        }, RELAY_PARTNER_TIMEOUT_MS);
        relayLegs.set(t, { node: n, pairId, timer, release });
      }
      send(node, {
        t: 'relay',
        id: msg.id,
        peer: msg.peer,
        token: ta,
        role: tlsRole(node, msg.peer),
        info: peer.info,
      });
      send(msg.peer, {
        t: 'relay',
        id: msg.id,
        peer: node,
        token: tb,
        role: tlsRole(msg.peer, node),
        info: self.info,
      });
      return;
    }
    // punch
    const release = hold(node);
    const p: Punch = {
      id: msg.id,
      release,
      nodes: [node, msg.peer],
      tokens: [token(), token()],
      observed: [undefined, undefined],
      timer: setTimeout(() => {
        for (const t of p.tokens) probeTokens.delete(t);
        punches.delete(p.id);
        release();
        send(node, {
          t: 'error',
          id: msg.id,
          code: ErrorCodes.UNAVAILABLE,
          message: 'punch probes did not arrive in time',
        });
      }, PUNCH_TIMEOUT_MS),
    };
    punches.set(p.id, p);
    m.punches.inc();
    p.tokens.forEach((t, i) => {
      probeTokens.set(t, { punch: p, index: i });
      send(p.nodes[i], { t: 'probe', id: p.id, peer: p.nodes[1 - i], token: t });
    });
  }

  // --- raw connections: relay legs and probes ---------------------------------------------
  function onRaw(socket: net.Socket): void {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), RAW_LINE_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > RAW_LINE_MAX) {
          m.refused.inc({ reason: 'bad-raw' });
          socket.destroy();
        }
        return;
      }
      socket.removeListener('data', onData);
      socket.pause();
      clearTimeout(timer);
      let line: ReturnType<typeof parseRawLine>;
      try {
        line = parseRawLine(buf.subarray(0, nl).toString('latin1'));
      } catch {
        m.refused.inc({ reason: 'bad-raw' });
        socket.destroy();
        return;
      }
      const rest = buf.subarray(nl + 1);
      if (rest.length > 0) socket.unshift(rest);
      if (line.kind === 'PROBE') onProbe(socket, line.token);
      else onRelayLeg(socket, line.token);
    };
    socket.on('data', onData);
    socket.resume(); // paused by the protocol sniffer
  }

  function onProbe(socket: net.Socket, t: string): void {
    const entry = probeTokens.get(t);
    if (!entry) {
      m.refused.inc({ reason: 'bad-token' });
      socket.destroy();
      return;
    }
    probeTokens.delete(t);
    const observed = { ip: plainIp(socket.remoteAddress), port: socket.remotePort ?? 0 };
    socket.end(`OK ${observed.ip} ${observed.port}\n`);
    const { punch, index } = entry;
    punch.observed[index] = observed;
    if (punch.observed.every(Boolean)) {
      clearTimeout(punch.timer);
      punches.delete(punch.id);
      punch.release();
      const [a, b] = punch.nodes;
      const [oa, ob] = punch.observed as [Address, Address];
      send(a, { t: 'punch-go', id: punch.id, peer: b, addr: ob, role: tlsRole(a, b) });
      send(b, { t: 'punch-go', id: punch.id, peer: a, addr: oa, role: tlsRole(b, a) });
    }
  }

  function onRelayLeg(socket: net.Socket, t: string): void {
    const leg = relayLegs.get(t);
    if (!leg || leg.socket) {
      m.refused.inc({ reason: 'bad-token' });
      socket.destroy();
      return;
    }
    leg.socket = socket;
    socket.on('error', () => undefined);
    const partner = [...relayLegs.entries()].find(([k, l]) => k !== t && l.pairId === leg.pairId);
    if (!partner?.[1].socket) return;
    const [pt, other] = partner;
    for (const k of [t, pt]) {
      clearTimeout(relayLegs.get(k)?.timer);
      relayLegs.delete(k);
    }
    leg.release();
    splice(leg.node, socket, other.node, other.socket as net.Socket);
  }

  function splice(nodeA: string, a: net.Socket, nodeB: string, b: net.Socket): void {
    for (const n of [nodeA, nodeB]) relaysByNode.set(n, (relaysByNode.get(n) ?? 0) + 1);
    m.relays.inc();
    log.info({ a: nodeA, b: nodeB }, 'relay spliced');
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      a.destroy();
      b.destroy();
      m.relays.dec();
      for (const n of [nodeA, nodeB]) relaysByNode.set(n, Math.max(0, (relaysByNode.get(n) ?? 1) - 1));
    };
    pipeOneWay(nodeA, a, b, finish);
    pipeOneWay(nodeB, b, a, finish);
  }

  // Bytes from `from` (sent by `node`) to `to`, with backpressure, half-close, and the
  // node's rate limit when one is set.
  function pipeOneWay(node: string, from: net.Socket, to: net.Socket, finish: () => void): void {
    const rate = opts.limits.bytesPerSecondPerNode;
    from.on('data', (chunk: Buffer) => {
      m.relayBytes.inc(chunk.length);
      if (!to.write(chunk)) from.pause();
      if (rate > 0) {
        const wait = charge(node, chunk.length, rate);
        if (wait > 0) {
          from.pause();
          setTimeout(() => {
            if (to.writableNeedDrain) return; // 'drain' resumes it
            from.resume();
          }, wait).unref();
        }
      }
    });
    to.on('drain', () => from.resume());
    from.on('end', () => to.end());
    from.on('close', () => {
      // A clean half-close keeps the other direction open; a reset ends both.
      if (!from.readableEnded || to.writableFinished) finish();
    });
    from.on('error', finish);
    from.resume();
  }

  function charge(node: string, bytes: number, rate: number): number {
    const now = Date.now();
    const b = buckets.get(node) ?? { tokens: rate, at: now };
    b.tokens = Math.min(rate, b.tokens + ((now - b.at) * rate) / 1000) - bytes;
    b.at = now;
    buckets.set(node, b);
    return b.tokens >= 0 ? 0 : Math.ceil((-b.tokens * 1000) / rate);
  }

  // --- enrolment --------------------------------------------------------------------------
  function onEnrol(socket: TLSSocket): void {
    const session = new MuxSession(socket, { role: 'server', peer: 'enrolling', log, idleTimeoutMs: 15_000 });
    session.once('control', async (msg) => {
      const node = typeof msg.node === 'string' ? msg.node : '';
      try {
        if (
          msg.t !== 'enrol' ||
          typeof msg.csr !== 'string' ||
          typeof msg.token !== 'string' ||
          msg.csr.length > 16_384 ||
          msg.token.length > 16_384
        )
          throw new EdgemeshError(ErrorCodes.BAD_REQUEST, 'expected { t: "enrol", node, csr, token }');
        if (!opts.verifier)
          throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, 'enrolment is disabled on this server');
        await opts.verifier.verify({ node, token: msg.token });
        const certPem = signCsr(opts.ca, msg.csr, { kind: 'node', name: node });
        m.enrolments.inc({ result: 'ok' });
        log.info({ node }, 'node enrolled');
        session.sendControl({ t: 'enrolled', cert: certPem, ca: opts.ca.certPem });
      } catch (err) {
        m.enrolments.inc({ result: 'refused' });
        log.warn({ node, err: describeError(err) }, 'enrolment refused');
        session.sendControl({
          t: 'error',
          code: (err as EdgemeshError).code ?? ErrorCodes.INTERNAL,
          message: (err as Error).message,
        });
      }
      socket.end();
    });
  }

  // --- listeners ------------------------------------------------------------------------
  const tlsServer = new tls.Server({ ...serverOptions(opts.identity), rejectUnauthorized: false });
  tlsServer.on('secureConnection', (socket: TLSSocket) => {
    socket.on('error', () => undefined);
    const presented = socket.getPeerCertificate()?.raw;
    if (!presented) {
      onEnrol(socket);
      return;
    }
    try {
      const id = peerIdentity(socket, opts.identity.caPem);
      if (id.kind !== 'node')
        throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, `${id.kind} certificate used as a node`);
      onControl(id.name, socket);
    } catch (err) {
      m.refused.inc({ reason: 'bad-certificate' });
      log.warn(
        { err: describeError(err), claims: identityOfCert(presented) },
        'refused a gateway certificate',
      );
      socket.destroy();
    }
  });
  tlsServer.on('tlsClientError', (err) => {
    m.refused.inc({ reason: 'tls' });
    log.debug({ err: err.message }, 'TLS handshake failed');
  });

  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    socket.on('error', () => undefined);
    const timer = setTimeout(() => socket.destroy(), FIRST_BYTE_TIMEOUT_MS);
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(timer);
      socket.pause();
      socket.unshift(chunk);
      if (chunk[0] === 0x16) tlsServer.emit('connection', socket);
      else onRaw(socket);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  const udp = dgram.createSocket(opts.host.includes(':') ? 'udp6' : 'udp4');
  udp.on('message', (msg, rinfo) => {
    const reply = stunResponse(msg, { ip: plainIp(rinfo.address), port: rinfo.port });
    if (reply) udp.send(reply, rinfo.port, rinfo.address);
  });
  udp.on('error', (err) => log.warn({ err: err.message }, 'STUN socket error'));
  await new Promise<void>((resolve) => udp.bind(port, opts.host, () => resolve()));
  log.info({ listen: `${opts.host}:${port}`, name: opts.name, limits: opts.limits }, 'tunnel-server ready');

  return {
    port,
    gateways: () => [...gateways.keys()],
    close: async () => {
      for (const g of gateways.values()) g.session.goAway('server shutting down');
      udp.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
