import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { Counter, Gauge, type Registry } from 'prom-client';
import { describeError, EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { LogGate } from '../lib/log-gate.ts';
import {
  type Address,
  MAX_SITE_PEERS,
  type PeerInfo,
  parseRawLine,
  parseToServer,
  plainIp,
  RAW_LINE_MAX,
  type SitePeer,
  type ToGateway,
  type ToServer,
  tlsRole,
} from '../lib/tunnel/control.ts';
import { assertName, identityOfCert, type TlsIdentity } from '../lib/tunnel/identity.ts';
import { MuxSession } from '../lib/tunnel/mux.ts';
import { registrationProblem } from '../lib/tunnel/peer-address.ts';
import { peerIdentity, serverOptions } from '../lib/tunnel/tls.ts';
import type { EnrolmentVerifier } from './enrol.ts';
import { busiest, limitMetrics } from './metrics.ts';
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
 * TLS handshake 10 s (the socket is destroyed: Node only reports the timeout); an enrolment
 * session 30 s from its handshake, PINGs or not; a relay leg waits 10 s for its partner, a
 * punch 5 s for both probes (the gateways retry).
 *
 * Everything here is reachable from the internet without a certificate, so every resource an
 * unauthenticated peer can hold is bounded: connections (total and per source IP), the bytes
 * queued towards each peer (a peer that does not read is cut), and the time before enrolling.
 */
export interface RelayLimits {
  /** Concurrent relayed sessions per node; 0 = unlimited. */
  maxRelaysPerNode: number;
  /** Bytes per second relayed per node (sum over its relays); 0 = unlimited. */
  bytesPerSecondPerNode: number;
}

export interface ConnectionLimits {
  /** Open TCP connections in all (relay legs, control, enrolment, handshakes). */
  maxConnections: number;
  /** Open TCP connections from one source IP (a NAT in front of a site shares one). */
  maxConnectionsPerIp: number;
}

/**
 * What one certificate-less connection can pin is bounded (TLS buffers, a partial CONTROL
 * frame ≤ 64 KiB in the decoder, ≤ 32 KiB queued towards it), so the total cap is what keeps
 * the server inside its memory limit (512Mi): measured ~180 KB of RSS per such connection
 * (tunnel-server/hostile.e2e.test.ts), so 2048 of them took an idle server of ~170 MB past
 * 512Mi; 1024 leave room. 256 per IP leaves room for a site's gateways
 * behind one NAT (one control connection each per replica, plus relay legs and probes).
 */
export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = { maxConnections: 1024, maxConnectionsPerIp: 256 };

export interface TunnelServerOptions {
  name: string;
  host: string;
  port: number;
  /** The mesh CA certificate, handed to enrolled gateways. */
  caPem: string;
  identity: TlsIdentity;
  /**
   * Signs a verified node's CSR: with a local mesh CA key (`--signer=local`), or through the
   * Kubernetes CSR API and the in-cluster edgemesh signer (`--signer=kubernetes`, no key here).
   */
  signNode(csrPem: string, node: string): Promise<string>;
  verifier?: EnrolmentVerifier;
  limits: RelayLimits;
  connections?: ConnectionLimits;
  log: Logger;
  registry: Registry;
}

export interface TunnelServer {
  port: number;
  /** Names of the gateways registered now. */
  gateways(): string[];
  /** A renewed serving certificate: new handshakes use it, established sessions keep theirs. */
  setIdentity(identity: TlsIdentity): void;
  close(): Promise<void>;
}

interface Registration {
  session: MuxSession;
  info: PeerInfo;
  /** Newer messages it understands (control.ts FEATURES). */
  features: readonly string[];
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
/**
 * From handshake to answer: one CSR + token round trip plus a TokenReview (seconds at
 * most). Absolute, so a certificate-less client cannot stay by PINGing (PINGs reset the
 * session's idle timer).
 */
const ENROL_DEADLINE_MS = 30_000;
/**
 * Bytes queued towards one peer before it counts as not reading. Control messages are
 * ≤ 64 KiB and few; an enrolling client gets one answer (certificate + CA, ~3 KiB) and its
 * PONGs, so 32 KiB is ample — and times the connection cap it must fit in memory.
 */
const CONTROL_MAX_QUEUED = 1024 * 1024;
const ENROL_MAX_QUEUED = 32 * 1024;
/** One warning per this interval for events anyone on the internet can cause. */
export const NOISY_LOG_INTERVAL_MS = 10_000;
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
  const connLimits = opts.connections ?? DEFAULT_CONNECTION_LIMITS;
  const connsByIp = new Map<string, number>();
  let connections = 0;
  const gates = new Map<string, LogGate>();
  /** A warning that anyone can trigger: one line per interval per kind, with a count. */
  const noisyWarn = (kind: string, fields: Record<string, unknown>, msg: string) => {
    let g = gates.get(kind);
    if (!g) {
      g = new LogGate(NOISY_LOG_INTERVAL_MS);
      gates.set(kind, g);
    }
    const { log: ok, suppressed } = g.pass();
    if (ok) log.warn(suppressed > 0 ? { ...fields, suppressed } : fields, msg);
  };

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
    connections: new Gauge({
      name: 'edgemesh_tunnel_server_connections',
      help: 'Open TCP connections',
      registers: [opts.registry],
    }),
    cut: new Counter({
      name: 'edgemesh_tunnel_server_cut_total',
      help: 'Connections closed by the server: slow-reader, enrol-deadline, handshake (timeout or failure)',
      labelNames: ['reason'],
      registers: [opts.registry],
    }),
  };

  limitMetrics(opts.registry, { connections: connLimits, relays: opts.limits }, () => busiest(relaysByNode));

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
    const session = new MuxSession(socket, {
      role: 'server',
      peer: node,
      log,
      maxQueuedBytes: CONTROL_MAX_QUEUED,
      onSlowReader: () => m.cut.inc({ reason: 'slow-reader' }),
    });
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
        // Other gateways dial what is registered here: nothing that points them at their
        // own loopback, the metadata service, a kubelet or this server (peer-address.ts).
        const problem = registrationProblem(msg.lan, msg.port, [plainIp(socket.localAddress)]);
        if (problem) {
          m.refused.inc({ reason: 'bad-address' });
          log.warn({ node, lan: msg.lan, port: msg.port, reason: problem }, 'registration refused');
          session.sendControl({
            t: 'error',
            code: ErrorCodes.BAD_REQUEST,
            message: `registration refused: ${problem}`,
          });
          return;
        }
        const old = gateways.get(node);
        if (old && old.session !== session)
          old.session.close(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'replaced by a new registration'));
        gateways.set(node, {
          session,
          info: { lan: msg.lan, port: msg.port, observed },
          features: msg.features ?? [],
        });
        registered = true;
        m.gateways.set(gateways.size);
        session.sendControl({ t: 'registered', server: opts.name, observed });
        log.info({ node, observed, lan: msg.lan }, 'gateway registered');
        introduceSite(node);
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

  /**
   * Tells a new gateway about the gateways behind the same public address (its site, as far
   * as this server can tell), and them about it: same-site peers then know each other's LAN
   * addresses before they need them, and find each other there while the cloud is away.
   * Only LAN addresses of gateways behind the same NAT are shared.
   */
  function introduceSite(node: string): void {
    const self = gateways.get(node);
    if (!self) return;
    const site: SitePeer[] = [];
    for (const [name, g] of gateways) {
      if (name === node || g.info.observed.ip !== self.info.observed.ip) continue;
      site.push({ node: name, lan: g.info.lan, port: g.info.port });
      if (g.features.includes('site-peers'))
        send(name, { t: 'site-peers', peers: [{ node, lan: self.info.lan, port: self.info.port }] });
    }
    if (!self.features.includes('site-peers')) return;
    for (let i = 0; i < site.length; i += MAX_SITE_PEERS)
      send(node, { t: 'site-peers', peers: site.slice(i, i + MAX_SITE_PEERS) });
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
    const from = `${plainIp(socket.remoteAddress)}:${socket.remotePort}`;
    const session = new MuxSession(socket, {
      role: 'server',
      peer: `enrolling ${from}`,
      log,
      idleTimeoutMs: 15_000,
      maxQueuedBytes: ENROL_MAX_QUEUED,
      onSlowReader: () => m.cut.inc({ reason: 'slow-reader' }),
    });
    const deadline = setTimeout(() => {
      m.cut.inc({ reason: 'enrol-deadline' });
      noisyWarn(
        'enrol-deadline',
        { from, limitMs: ENROL_DEADLINE_MS },
        'enrolment not done in time: closing',
      );
      session.close(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'enrolment deadline passed'));
    }, ENROL_DEADLINE_MS);
    session.once('close', () => clearTimeout(deadline));
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
        assertName(node);
        await opts.verifier.verify({ node, token: msg.token });
        const certPem = await opts.signNode(msg.csr, node);
        m.enrolments.inc({ result: 'ok' });
        log.info({ node }, 'node enrolled');
        session.sendControl({ t: 'enrolled', cert: certPem, ca: opts.caPem });
      } catch (err) {
        m.enrolments.inc({ result: 'refused' });
        noisyWarn('enrol', { node, from, err: describeError(err) }, 'enrolment refused');
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
      noisyWarn(
        'bad-certificate',
        { err: describeError(err), claims: identityOfCert(presented), from: socket.remoteAddress },
        'refused a gateway certificate',
      );
      socket.destroy();
    }
  });
  // Node reports a failed or timed-out handshake here and leaves the socket open: close it.
  tlsServer.on('tlsClientError', (err, socket) => {
    m.refused.inc({ reason: 'tls' });
    m.cut.inc({ reason: 'handshake' });
    log.debug({ err: err.message, from: socket.remoteAddress }, 'TLS handshake failed');
    socket.destroy();
  });

  /** Counts a new connection against the caps; false (and destroyed) when over one. */
  const admit = (socket: net.Socket): boolean => {
    const ip = plainIp(socket.remoteAddress);
    const fromIp = connsByIp.get(ip) ?? 0;
    const over =
      connections >= connLimits.maxConnections
        ? 'connection-limit'
        : fromIp >= connLimits.maxConnectionsPerIp
          ? 'connection-limit-ip'
          : undefined;
    if (over) {
      m.refused.inc({ reason: over });
      noisyWarn(
        over,
        { from: ip, connections, fromIp, limits: connLimits },
        'connection refused: limit reached',
      );
      socket.destroy();
      return false;
    }
    connections++;
    connsByIp.set(ip, fromIp + 1);
    m.connections.set(connections);
    socket.once('close', () => {
      connections--;
      const n = (connsByIp.get(ip) ?? 1) - 1;
      if (n > 0) connsByIp.set(ip, n);
      else connsByIp.delete(ip);
      m.connections.set(connections);
    });
    return true;
  };

  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    socket.on('error', () => undefined);
    if (!admit(socket)) return;
    const timer = setTimeout(() => socket.destroy(), FIRST_BYTE_TIMEOUT_MS);
    // Gone before saying anything (allowHalfOpen would otherwise keep it until the timer).
    const onEnd = () => socket.destroy();
    socket.once('end', onEnd);
    socket.once('close', () => clearTimeout(timer));
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(timer);
      socket.removeListener('end', onEnd);
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
  log.info(
    { listen: `${opts.host}:${port}`, name: opts.name, limits: opts.limits, connections: connLimits },
    'tunnel-server ready',
  );

  return {
    port,
    gateways: () => [...gateways.keys()],
    setIdentity: (identity) => tlsServer.setSecureContext(serverOptions(identity)),
    close: async () => {
      for (const g of gateways.values()) g.session.goAway('server shutting down');
      udp.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
