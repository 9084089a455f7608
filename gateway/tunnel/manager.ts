import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import tls, { type TLSSocket } from 'node:tls';
import { Counter, Gauge, type Registry } from 'prom-client';
import { describeError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import { type Logger, silentLogger } from '../../lib/log.ts';
import { LogGate } from '../../lib/log-gate.ts';
import { ReceiveBudget } from '../../lib/tunnel/budget.ts';
import { type PeerInfo, type TlsRole, type ToGateway, tlsRole } from '../../lib/tunnel/control.ts';
import { ResetCode, type Target } from '../../lib/tunnel/frame.ts';
import type { TlsIdentity } from '../../lib/tunnel/identity.ts';
import { MuxSession } from '../../lib/tunnel/mux.ts';
import { dialableLan } from '../../lib/tunnel/peer-address.ts';
import { acceptTls, connectTls, peerIdentity, serverOptions } from '../../lib/tunnel/tls.ts';
import type { TunnelManager as GatewayTunnelManager, PeerMessages } from '../streams.ts';
import { splice } from '../streams.ts';
import type { PeerBook } from './peer-book.ts';
import { type ServerAddress, ServerLink } from './server-link.ts';
import { dial, dialRelay, probe, simultaneousOpen } from './tcp.ts';
import { UdpPaths } from './udp.ts';

/**
 * The gateway's tunnel to peer gateways.
 *
 * Paths to a peer, best first: `direct` (TCP to its LAN address), `punched` (TCP
 * simultaneous open or a UDP/ICE channel, coordinated by a tunnel-server), `relay` (spliced
 * by a tunnel-server). On every path the two gateways run their own TLS 1.3 with per-node
 * certificates and multiplex streams over it, so relays and NATs see only ciphertext.
 *
 * State per peer (owned by Peer, lives as long as the manager):
 *   sessions    one MuxSession per path kind; new streams take the best usable one, open
 *               streams stay where they started (a better path never moves them).
 *   upgrade     after a relay comes up, the opener seeks a direct path in the background:
 *               LAN dial (1 s per address: same-site peers answer in ms, others fail fast or
 *               not at all), then TCP punch (3 s: a NAT that lets it through does so within
 *               one SYN retransmit), then UDP/ICE (8 s: ICE checks pace at tens of ms and
 *               must survive a lost round). Nothing found: retry after 30 s, doubling to
 *               10 min, so a NAT that changes is picked up without hammering the servers.
 *               A search with no tunnel-server up does not double it, and a server link
 *               coming up starts the search again with the backoff reset.
 *   failover    a relay that dies (its tunnel-server went away) is re-established at once
 *               through another replica if the peer has no other path; streams that were
 *               on it fail and their callers retry.
 */
export type RemotePath = 'direct' | 'punched' | 'relay';
const PATH_ORDER: readonly RemotePath[] = ['direct', 'punched', 'relay'];

export interface TunnelManagerOptions {
  nodeName: string;
  identity: TlsIdentity;
  tunnelServers: ServerAddress[];
  /** This node's LAN addresses, offered to peers for direct dials. */
  lanAddresses: string[];
  /** Tunnel listener (direct path), default 20006; 0 picks a free port. */
  listenPort?: number;
  listenHost?: string;
  /**
   * Far end: dials a target for a peer's stream. Must refuse (throw an EdgemeshError with
   * code DIAL_REFUSED) anything that is not an endpoint of a pod on this node.
   */
  dialTarget(target: Target): Promise<Duplex>;
  /**
   * A peer's LAN addresses from the cluster's own records (the catalog's Node InternalIPs),
   * so same-site peers are reached directly even while no tunnel-server is reachable.
   */
  peerAddresses?(node: string): string[];
  /** Which direct techniques to try (tests and benchmarks pin one). */
  techniques?: { lan?: boolean; tcpPunch?: boolean; udp?: boolean };
  /** Gateway-to-gateway messages (gateway/streams.ts PeerMessages). */
  messages?: PeerMessages;
  /** Peers' addresses remembered across restarts (peer-book.ts): direct dials without the rendezvous. */
  peerBook?: PeerBook;
  log?: Logger;
  registry?: Registry;
}

export interface PeerStatus {
  node: string;
  path: RemotePath | undefined;
  rttMs: number | undefined;
  paths: Partial<
    Record<
      RemotePath,
      {
        rttMs: number | undefined;
        streams: number;
        transport: string;
        /** Relay only: the tunnel-server replica carrying it (its name, else its address). */
        via?: string;
        upAt: number;
        bytesIn: number;
        bytesOut: number;
      }
    >
  >;
  /** Session bytes with this peer since this gateway started, closed paths included. */
  bytesIn: number;
  bytesOut: number;
  /** When this gateway first needed the peer (ms epoch): path timings are measured from here. */
  firstUseAt: number | undefined;
  /** When the background search for a direct path runs next (ms epoch), if scheduled. */
  nextUpgradeAt: number | undefined;
}

export interface TunnelStatus {
  node: string;
  listenPort: number;
  servers: {
    address: string;
    name: string | undefined;
    up: boolean;
    observed: string | undefined;
    /** The link's own local port (observed's port differs when the NAT changed it). */
    localPort?: number;
  }[];
  peers: PeerStatus[];
  /** What the tunnel learnt of this node's NAT (`edgemesh netcheck`); nothing is sent for it. */
  nat?: NatObservations;
}

/**
 * What hole punching taught about this node's NAT, the latest first and bounded: punch probes
 * (a fresh local port and the address a tunnel-server saw it from: port preservation), and
 * the outcome of each TCP punch (connected; refused, i.e. a router answered the SYN with a
 * RST; or no answer, i.e. dropped) and each UDP/ICE attempt this gateway opened.
 */
export interface NatObservations {
  probes: { at: number; server: string; localPort: number; observed: string }[];
  punches: {
    at: number;
    peer: string;
    transport: 'tcp' | 'udp';
    outcome: 'connected' | 'refused' | 'no-answer' | 'failed';
    detail?: string;
  }[];
}

/** Observations kept per kind: enough for a verdict, bounded however long the gateway runs. */
const NAT_KEEP = 16;

/** `text` with IPv4 / bracketed IPv6 addresses (and ports) replaced by ADDR. */
export function withoutAddresses(text: string): string {
  return text.replace(/\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\[[0-9a-fA-F:.]+\](?::\d+)?/g, 'ADDR');
}

/** A punch error in NAT terms: RST (refused) and silence (dropped) call for different paths. */
export function punchOutcome(message: string): 'refused' | 'no-answer' | 'failed' {
  if (/ECONNREFUSED|refused|ECONNRESET/i.test(message)) return 'refused';
  if (/timed out|ETIMEDOUT|did not connect in|did not answer/i.test(message)) return 'no-answer';
  return 'failed';
}

const RELAY_REQUEST_TIMEOUT_MS = 5_000;
const LAN_DIAL_TIMEOUT_MS = 1_000;
const PUNCH_DEADLINE_MS = 3_000;
const UPGRADE_RETRY_START_MS = 30_000;
const UPGRADE_RETRY_MAX_MS = 600_000;
const LINK_UP_UPGRADE_SPREAD_MS = 1_000;

/** Implements the interface the gateway's sidecar listener calls (gateway/streams.ts). */
export class TunnelManager implements GatewayTunnelManager {
  readonly nodeName: string;
  readonly #opts: TunnelManagerOptions;
  readonly #log: Logger;
  #links: ServerLink[] = [];
  readonly #peers = new Map<string, Peer>();
  readonly #pending = new Map<string, { resolve: (m: ToGateway) => void; reject: (e: Error) => void }>();
  readonly #probes = new Map<string, Promise<number>>();
  readonly #techniques: Required<NonNullable<TunnelManagerOptions['techniques']>>;
  #server: tls.Server | undefined;
  #udp: UdpPaths | undefined;
  listenPort = 0;
  readonly metrics: ReturnType<typeof tunnelMetrics>;
  readonly #nat: NatObservations = { probes: [], punches: [] };

  constructor(opts: TunnelManagerOptions) {
    this.nodeName = opts.nodeName;
    this.#opts = { ...opts }; // own copy: setIdentity replaces the identity
    this.#log = (opts.log ?? silentLogger).child({ part: 'tunnel' });
    this.#techniques = { lan: true, tcpPunch: true, udp: true, ...opts.techniques };
    this.metrics = tunnelMetrics(opts.registry, this);
  }

  /** Starts the direct listener and the links to every tunnel-server. */
  async start(): Promise<void> {
    const server = tls.createServer(serverOptions(this.#opts.identity), (socket) => this.#onDirect(socket));
    server.on('tlsClientError', (err) =>
      this.#log.debug({ err: err.message }, 'refused a direct connection'),
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#opts.listenPort ?? 20006, this.#opts.listenHost ?? '0.0.0.0', () => resolve());
    });
    this.#server = server;
    this.listenPort = (server.address() as net.AddressInfo).port;
    if (this.#techniques.udp) {
      this.#udp = new UdpPaths(this.#log);
      this.#udp.bind(this);
    }
    // Registration carries the listen port, known only now.
    const register = { lan: this.#opts.lanAddresses, port: this.listenPort };
    this.#links = this.#opts.tunnelServers.map(
      (addr) => new ServerLink(addr, this.#opts.identity, register, this.#log),
    );
    for (const link of this.#links) {
      link.on('message', (msg) => this.#onMessage(link, msg));
      // A tunnel-server back after an outage: the searches that failed while none answered
      // (and their doubled backoff, up to 10 min) say nothing about the NATs. Peers still on
      // the relay look for a better path again now, not when their backed-off timer fires.
      link.on('up', () => {
        for (const p of this.#peers.values()) p.linkUp();
      });
      link.start();
    }
  }

  /**
   * A renewed certificate: new TLS sessions (the direct listener's handshakes, dials on every
   * path, tunnel-server links when they reconnect) use it; established sessions keep theirs.
   */
  setIdentity(identity: TlsIdentity): void {
    this.#server?.setSecureContext(serverOptions(identity)); // throws on a bad key: nothing changed
    this.#opts.identity = identity;
    for (const link of this.#links) link.identity = identity;
  }

  /** Resolves when at least one tunnel-server link is registered (or after timeoutMs). */
  async ready(timeoutMs = 10_000): Promise<boolean> {
    return Promise.any(
      this.#links.map((l) => l.waitUp(timeoutMs).then((up) => (up ? true : Promise.reject()))),
    ).catch(() => false);
  }

  /** A stream to `target` on `peerNode`, over the best path available now. */
  async openStream(peerNode: string, target: Target): Promise<{ stream: Duplex; path: RemotePath }> {
    if (peerNode === this.nodeName)
      throw new EdgemeshError(ErrorCodes.BAD_REQUEST, 'the tunnel does not carry streams to this node');
    const peer = this.#peer(peerNode);
    const session = await peer.session();
    const path = peer.pathOf(session) ?? 'relay';
    const stream = await session.openStream(target);
    this.metrics.streams.inc({ path });
    return { stream, path };
  }

  status(): TunnelStatus {
    return {
      node: this.nodeName,
      listenPort: this.listenPort,
      servers: this.#links.map((l) => ({
        address: l.label,
        name: l.serverName,
        up: l.up,
        observed: l.observed ? `${l.observed.ip}:${l.observed.port}` : undefined,
        ...(l.localPort === undefined ? {} : { localPort: l.localPort }),
      })),
      peers: [...this.#peers.values()].map((p) => p.status()),
      nat: { probes: [...this.#nat.probes], punches: [...this.#nat.punches] },
    };
  }

  /** @internal A punch attempt's outcome (TCP on both ends; UDP on the end that opened it). */
  recordPunch(peer: string, transport: 'tcp' | 'udp', err?: unknown): void {
    // The peer's public address is left out: /status is readable from this node's LAN.
    const detail = err === undefined ? undefined : withoutAddresses(describeError(err));
    this.#nat.punches.unshift({
      at: Date.now(),
      peer,
      transport,
      outcome: detail === undefined ? 'connected' : punchOutcome(detail),
      ...(detail === undefined ? {} : { detail: detail.slice(0, 300) }),
    });
    this.#nat.punches.length = Math.min(this.#nat.punches.length, NAT_KEEP);
  }

  async close(): Promise<void> {
    for (const l of this.#links) l.close();
    for (const p of this.#peers.values()) p.close();
    this.#udp?.close();
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }

  // --- internals used by Peer -------------------------------------------------------------

  /** @internal */
  get log(): Logger {
    return this.#log;
  }

  /** @internal LAN addresses and tunnel port to try for `peer` (tunnel-server info + catalog). */
  lanCandidates(peer: string, info: PeerInfo | undefined): { lan: string[]; port: number } {
    const known = this.#opts.peerAddresses?.(peer) ?? [];
    const remembered = this.#opts.peerBook?.candidates(peer);
    const port = info?.port ?? remembered?.port ?? this.listenPort;
    const all = [...new Set([...(info?.lan ?? []), ...known, ...(remembered?.addresses ?? [])])];
    // Never dial what no gateway may announce (an older tunnel-server let a node register its
    // peers' loopback, the metadata service, a kubelet port): lib/tunnel/peer-address.ts.
    const own = [...this.#opts.lanAddresses, ...this.#opts.tunnelServers.map((s) => s.host)];
    const { lan, dropped } = dialableLan(all, port, {
      addresses: own,
      what: "this gateway's or a tunnel-server's address",
    });
    if (dropped.length > 0) this.#log.warn({ peer, dropped }, 'not dialling these peer addresses');
    return { lan, port };
  }

  /** @internal */
  get techniques() {
    return this.#techniques;
  }

  /** @internal Links that are up, in configured order starting at `first`. */
  linksUp(first = 0): ServerLink[] {
    const n = this.#links.length;
    return Array.from({ length: n }, (_, i) => this.#links[(first + i) % n]).filter((l) => l.up);
  }

  /** @internal Sends a request and waits for the reply carrying the same id. */
  request(
    link: ServerLink,
    msg: { t: 'connect' | 'punch'; peer: string },
    timeoutMs: number,
  ): Promise<ToGateway> {
    const id = randomBytes(8).toString('hex');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new EdgemeshError(
            ErrorCodes.UNAVAILABLE,
            `${link.label} did not answer ${msg.t} in ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      if (!link.send({ ...msg, id })) {
        this.#pending.get(id)?.reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, `${link.label} is down`));
        this.#pending.delete(id);
      }
    });
  }

  /** @internal Wraps an established byte stream in TLS (role by node name) and a session. */
  async secure(socket: Duplex, peer: string, role: TlsRole): Promise<MuxSession> {
    const identity = this.#opts.identity;
    const expect = { kind: 'node' as const, name: peer };
    const { socket: tlsSocket } =
      role === 'client'
        ? await connectTls({ identity, expect, socket })
        : await acceptTls({ identity, expect, socket });
    return this.#session(tlsSocket, peer, role);
  }

  /** @internal */
  get udp(): UdpPaths | undefined {
    return this.#udp;
  }

  /** Sends `message` on every peer's best session (peers without one learn it on connecting). */
  broadcast(message: Record<string, unknown>): void {
    for (const p of this.#peers.values()) p.best()?.sendControl(message);
  }

  /** @internal What a new peer session is told first (PeerMessages.greeting). */
  greet(session: MuxSession): void {
    const greeting = this.#opts.messages?.greeting();
    if (greeting) session.sendControl(greeting);
  }

  #session(socket: TLSSocket, peer: string, role: TlsRole): MuxSession {
    const session = new MuxSession(socket, {
      role,
      peer,
      log: this.#log,
      // One budget for all of a peer's sessions: a peer could otherwise open more of them.
      budget: this.#peer(peer).budget,
      onBudgetRefused: () => this.metrics.refused.inc({ reason: 'budget' }),
    });
    session.on('control', (message) => this.#opts.messages?.receive(peer, message));
    session.on('stream', (stream, target) => {
      this.#opts.dialTarget(target).then(
        (conn) => {
          // The opener may have given up (or the session died) while we dialed.
          if (stream.destroyed) {
            conn.destroy();
            return;
          }
          stream.accept();
          stream.chargeSink(conn); // what waits for the target counts against the peer's budget
          void splice(stream, conn);
        },
        (err: unknown) => {
          const refused = err instanceof EdgemeshError && err.code === ErrorCodes.DIAL_REFUSED;
          this.metrics.refused.inc({ reason: refused ? 'not-allowed' : 'dial-failed' });
          stream.refuse(refused ? ResetCode.REFUSED : ResetCode.DIAL_FAILED, describeError(err));
        },
      );
    });
    session.ping().catch(() => undefined);
    return session;
  }

  #peer(name: string): Peer {
    let p = this.#peers.get(name);
    if (!p) {
      p = new Peer(this, name);
      this.#peers.set(name, p);
    }
    return p;
  }

  #onDirect(socket: TLSSocket): void {
    socket.on('error', () => undefined);
    try {
      const id = peerIdentity(socket, this.#opts.identity.caPem);
      if (id.kind !== 'node' || id.name === this.nodeName)
        throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, `unexpected peer ${id.kind}/${id.name}`);
      socket.setNoDelay(true);
      this.#peer(id.name).add('direct', this.#session(socket, id.name, 'server'), 'tcp');
    } catch (err) {
      this.metrics.refused.inc({ reason: 'bad-certificate' });
      this.#log.warn({ err: describeError(err) }, 'refused a direct connection');
      socket.destroy();
    }
  }

  #onMessage(link: ServerLink, msg: ToGateway): void {
    if (msg.t === 'error') {
      const p = msg.id ? this.#pending.get(msg.id) : undefined;
      if (p && msg.id) {
        this.#pending.delete(msg.id);
        p.reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, `${link.label}: ${msg.message}`));
      } else this.#log.warn({ server: link.label, reason: msg.message }, 'tunnel-server error');
      return;
    }
    if (msg.t === 'registered') return;
    if (msg.t === 'site-peers') {
      // Remembered for when no tunnel-server answers (peer-book.ts): dialled on their LAN then.
      for (const p of msg.peers)
        if (p.node !== this.nodeName) this.#opts.peerBook?.remember(p.node, { lan: p.lan, port: p.port });
      return;
    }
    const waiting = this.#pending.get(msg.id);
    if (msg.t === 'relay') {
      const peer = this.#peer(msg.peer);
      peer.info = msg.info;
      this.#opts.peerBook?.remember(msg.peer, msg.info);
      const established = peer.joinRelay(link, msg);
      if (waiting) {
        this.#pending.delete(msg.id);
        established.then(() => waiting.resolve(msg), waiting.reject);
      } else established.catch(() => undefined);
      return;
    }
    if (msg.t === 'probe') {
      // Both sides probe; the opener waits for punch-go, which needs both probes.
      const done = probe({ ip: link.address.host, port: link.address.port }, msg.token).then((r) => {
        this.#nat.probes.unshift({
          at: Date.now(),
          server: link.serverName ?? link.label,
          localPort: r.localPort,
          observed: `${r.observed.ip}:${r.observed.port}`,
        });
        this.#nat.probes.length = Math.min(this.#nat.probes.length, NAT_KEEP);
        return r.localPort;
      });
      done.catch((err) => this.#log.debug({ err: describeError(err) }, 'probe failed'));
      this.#probes.set(msg.id, done);
      setTimeout(() => this.#probes.delete(msg.id), 10_000).unref();
      return;
    }
    if (msg.t === 'punch-go') {
      const localPort = this.#probes.get(msg.id);
      this.#probes.delete(msg.id);
      const peer = this.#peer(msg.peer);
      const punched = (async () => {
        if (!localPort) throw new EdgemeshError(ErrorCodes.UNAVAILABLE, 'punch-go without a probe');
        let socket: net.Socket;
        try {
          socket = await simultaneousOpen(await localPort, msg.addr, PUNCH_DEADLINE_MS);
        } catch (err) {
          this.recordPunch(msg.peer, 'tcp', err);
          throw err;
        }
        this.recordPunch(msg.peer, 'tcp');
        const session = await this.secure(socket, msg.peer, msg.role);
        peer.add('punched', session, 'tcp');
      })();
      if (waiting) {
        this.#pending.delete(msg.id);
        punched.then(() => waiting.resolve(msg), waiting.reject);
      } else
        punched.catch((err) =>
          this.#log.debug({ peer: msg.peer, err: describeError(err) }, 'TCP punch failed'),
        );
      return;
    }
    if (msg.t === 'signal') {
      this.#udp?.onSignal(link, msg, this.#peer(msg.peer));
    }
  }
}

/** Per-peer path state; see TunnelManager for the rules. */
export class Peer {
  readonly name: string;
  readonly #m: TunnelManager;
  readonly #sessions = new Map<
    RemotePath,
    { session: MuxSession; transport: string; via?: string; upAt: number }
  >();
  /** Bytes of this peer's sessions that have closed (status() adds the open ones). */
  #closedBytes = { in: 0, out: 0 };
  #firstUseAt: number | undefined;
  #connecting: Promise<MuxSession> | undefined;
  #upgrading = false;
  #upgradeTimer: NodeJS.Timeout | undefined;
  #upgradeDelay = UPGRADE_RETRY_START_MS;
  #closed = false;
  nextUpgradeAt: number | undefined;
  info: PeerInfo | undefined;
  /** Link index to try first for the next relay (rotates on failure). */
  #preferred = 0;
  /** What this peer's streams may hold unread here, across its sessions (issue 16 item 8). */
  readonly budget: ReceiveBudget;

  constructor(m: TunnelManager, name: string) {
    this.#m = m;
    this.name = name;
    const gate = new LogGate(10_000);
    this.budget = new ReceiveBudget(undefined, (held) => {
      m.metrics.refused.inc({ reason: 'budget-reset' });
      const { log, suppressed } = gate.pass();
      if (log)
        m.log.warn(
          { peer: name, held, budget: this.budget.limit, suppressed },
          "peer's streams hold more unread bytes than its budget: reset the fullest",
        );
    });
  }

  best(): MuxSession | undefined {
    for (const kind of PATH_ORDER) {
      const s = this.#sessions.get(kind)?.session;
      if (s?.usable) return s;
    }
    return undefined;
  }

  pathOf(session: MuxSession): RemotePath | undefined {
    for (const [kind, s] of this.#sessions) if (s.session === session) return kind;
    return undefined;
  }

  /** The best usable session, establishing a relay first if there is none. */
  session(): Promise<MuxSession> {
    this.#firstUseAt ??= Date.now();
    const s = this.best();
    if (s) return Promise.resolve(s);
    this.#connecting ??= this.#establish().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  add(kind: RemotePath, session: MuxSession, transport: string, via?: string): void {
    if (this.#closed) {
      session.close();
      return;
    }
    const old = this.#sessions.get(kind);
    if (kind === 'punched' && transport === 'udp' && old?.session.usable && old.transport === 'tcp') {
      session.close(); // lost the race to TCP
      return;
    }
    this.#sessions.set(kind, { session, transport, via, upAt: Date.now() });
    if (old && old.session !== session) old.session.goAway('replaced by a newer session');
    this.#m.log.info({ peer: this.name, path: kind, transport }, 'tunnel path up');
    this.#m.greet(session);
    this.#m.metrics.paths.inc({ path: kind });
    session.once('close', () => {
      this.#closedBytes.in += session.bytesIn;
      this.#closedBytes.out += session.bytesOut;
      if (this.#sessions.get(kind)?.session === session) this.#sessions.delete(kind);
      this.#m.log.info(
        {
          peer: this.name,
          path: kind,
          reason: session.closeError ? describeError(session.closeError) : undefined,
        },
        'tunnel path down',
      );
      // Keep the peer reachable: a lost relay comes back through another replica at once.
      // Both ends notice; the TLS client side asks at once, the other only if still
      // without a path a second later, so one relay (not two) replaces the lost one.
      if (!this.#closed && !this.best() && kind === 'relay') {
        this.#preferred++;
        const delay = tlsRole(this.#m.nodeName, this.name) === 'client' ? 0 : 1000;
        setTimeout(() => {
          if (this.#closed || this.best()) return;
          this.session().catch((err) =>
            this.#m.log.warn({ peer: this.name, err: describeError(err) }, 'relay failover failed'),
          );
        }, delay).unref();
      }
    });
    // A direct path makes the relay idle: let its streams finish, then free the relay.
    if (kind !== 'relay') this.#sessions.get('relay')?.session.goAway('direct path found');
  }

  /** Handles a `relay` message: dial the leg, TLS, session. Both ends of a relay run this. */
  async joinRelay(link: ServerLink, msg: Extract<ToGateway, { t: 'relay' }>): Promise<MuxSession> {
    const socket = await dialRelay({ ip: link.address.host, port: link.address.port }, msg.token);
    const session = await this.#m.secure(socket, this.name, msg.role);
    const via = link.serverName ?? link.label;
    this.add('relay', session, `tcp via ${via}`, via);
    return session;
  }

  /** Relay first; without any tunnel-server (cloud outage), a same-site peer on its LAN. */
  async #establish(): Promise<MuxSession> {
    try {
      return await this.#relay();
    } catch (err) {
      if (this.#m.techniques.lan && (await this.#tryLan())) {
        const s = this.best();
        if (s) return s;
      }
      throw err;
    }
  }

  async #relay(): Promise<MuxSession> {
    let lastErr: unknown = new EdgemeshError(ErrorCodes.UNAVAILABLE, 'no tunnel-server is reachable');
    const links = this.#m.linksUp(this.#preferred);
    for (const link of links) {
      try {
        await this.#m.request(link, { t: 'connect', peer: this.name }, RELAY_REQUEST_TIMEOUT_MS);
        const s = this.#sessions.get('relay')?.session;
        if (!s) throw new EdgemeshError(ErrorCodes.UNAVAILABLE, 'relay closed at once');
        this.#scheduleUpgrade(0);
        return this.best() ?? s;
      } catch (err) {
        lastErr = err;
        this.#m.log.debug(
          { peer: this.name, server: link.label, err: describeError(err) },
          'relay attempt failed',
        );
      }
    }
    throw new EdgemeshError(
      ErrorCodes.UNAVAILABLE,
      `no path to node ${this.name}: ${describeError(lastErr)}`,
    );
  }

  /** A tunnel-server link came up: a peer on the relay retries its search soon, backoff reset. */
  linkUp(): void {
    if (this.#closed || !this.#sessions.has('relay')) return;
    if (this.#sessions.has('direct') || this.#sessions.has('punched')) return;
    this.#upgradeDelay = UPGRADE_RETRY_START_MS;
    // Spread over a second: every peer of every gateway hears the same server come back.
    this.#scheduleUpgrade(Math.floor(Math.random() * LINK_UP_UPGRADE_SPREAD_MS));
  }

  #scheduleUpgrade(delayMs: number): void {
    if (this.#closed || this.#upgrading) return;
    // An earlier search wins over a later one already planned (a relay opened now asks for
    // one at once while a backed-off retry may be minutes away).
    if (this.#upgradeTimer) {
      if (this.nextUpgradeAt !== undefined && this.nextUpgradeAt <= Date.now() + delayMs) return;
      clearTimeout(this.#upgradeTimer);
      this.#upgradeTimer = undefined;
    }
    this.nextUpgradeAt = Date.now() + delayMs;
    this.#upgradeTimer = setTimeout(() => {
      this.#upgradeTimer = undefined;
      this.#upgrade().catch(() => undefined);
    }, delayMs);
    this.#upgradeTimer.unref();
  }

  /** Seeks a direct path: LAN, then TCP punch, then UDP. Bounded; reschedules with backoff. */
  async #upgrade(): Promise<void> {
    if (this.#sessions.has('direct') || this.#sessions.has('punched')) return;
    this.#upgrading = true;
    this.nextUpgradeAt = undefined;
    const t = this.#m.techniques;
    let noServer = false;
    try {
      if (t.lan && (await this.#tryLan())) return this.#upgraded();
      const link = this.#m.linksUp(this.#preferred)[0];
      const udp = this.#m.udp;
      // TCP punch and UDP/ICE race; whichever connects first carries new streams (a later
      // TCP success still replaces UDP: it is the faster transport).
      const attempts: Promise<unknown>[] = [];
      if (t.tcpPunch && link) {
        attempts.push(
          this.#m.request(link, { t: 'punch', peer: this.name }, PUNCH_DEADLINE_MS + 3000).catch((err) => {
            this.#m.log.info({ peer: this.name, err: describeError(err) }, 'TCP punch did not connect');
            throw err;
          }),
        );
      }
      if (t.udp && link && udp) {
        attempts.push(
          udp.connect(link, this).then(
            (session) => {
              this.#m.recordPunch(this.name, 'udp');
              return session;
            },
            (err) => {
              this.#m.recordPunch(this.name, 'udp', err);
              this.#m.log.info({ peer: this.name, err: describeError(err) }, 'UDP path did not connect');
              throw err;
            },
          ),
        );
      }
      // No tunnel-server up to punch through: that says nothing about the NATs, so the
      // backoff does not double (linkUp() restarts the search when a server answers again).
      noServer = !link && (t.tcpPunch || t.udp);
      if (attempts.length > 0) {
        await Promise.any(attempts).catch(() => undefined);
        if (this.#sessions.has('punched')) return this.#upgraded();
      }
    } finally {
      this.#upgrading = false;
    }
    if (!this.#sessions.has('direct') && !this.#sessions.has('punched')) {
      const delay = this.#upgradeDelay;
      if (!noServer) this.#upgradeDelay = Math.min(UPGRADE_RETRY_MAX_MS, delay * 2);
      this.#m.log.info({ peer: this.name, retryInMs: delay }, 'no direct path; staying on the relay');
      this.#scheduleUpgrade(delay);
    }
  }

  #upgraded(): void {
    this.#upgradeDelay = UPGRADE_RETRY_START_MS;
  }

  async #tryLan(): Promise<boolean> {
    const { lan, port } = this.#m.lanCandidates(this.name, this.info);
    const attempts = lan.map(async (ip) => {
      const socket = await dial({ ip, port }, { timeoutMs: LAN_DIAL_TIMEOUT_MS });
      // We dialed, so we are the TLS client whatever the names say.
      return this.#m.secure(socket, this.name, 'client');
    });
    try {
      const session = await Promise.any(attempts);
      this.add('direct', session, 'tcp');
      return true;
    } catch {
      return false;
    }
  }

  status(): PeerStatus {
    const best = this.best();
    const paths: PeerStatus['paths'] = {};
    let bytesIn = this.#closedBytes.in;
    let bytesOut = this.#closedBytes.out;
    for (const [kind, { session, transport, via, upAt }] of this.#sessions) {
      paths[kind] = {
        rttMs: session.rttMs,
        streams: session.streamCount,
        transport,
        ...(via === undefined ? {} : { via }),
        upAt,
        bytesIn: session.bytesIn,
        bytesOut: session.bytesOut,
      };
      // A session replaced but not yet closed is counted when it closes.
      bytesIn += session.bytesIn;
      bytesOut += session.bytesOut;
    }
    return {
      node: this.name,
      path: best ? this.pathOf(best) : undefined,
      rttMs: best?.rttMs,
      paths,
      bytesIn,
      bytesOut,
      firstUseAt: this.#firstUseAt,
      nextUpgradeAt: this.nextUpgradeAt,
    };
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#upgradeTimer);
    for (const { session } of this.#sessions.values()) session.close();
  }
}

function tunnelMetrics(registry: Registry | undefined, m: TunnelManager) {
  const registers = registry ? [registry] : [];
  return {
    streams: new Counter({
      name: 'edgemesh_tunnel_streams_total',
      help: 'Streams opened to peers',
      labelNames: ['path'],
      registers,
    }),
    paths: new Counter({
      name: 'edgemesh_tunnel_paths_up_total',
      help: 'Tunnel paths established',
      labelNames: ['path'],
      registers,
    }),
    refused: new Counter({
      name: 'edgemesh_tunnel_refused_total',
      help: 'Peer streams or connections refused',
      labelNames: ['reason'],
      registers,
    }),
    peers: new Gauge({
      name: 'edgemesh_tunnel_peers',
      help: 'Peers by current best path',
      labelNames: ['path'],
      registers,
      collect() {
        this.reset();
        for (const p of m.status().peers) this.inc({ path: p.path ?? 'none' });
      },
    }),
  };
}

export async function createTunnelManager(opts: TunnelManagerOptions): Promise<TunnelManager> {
  const m = new TunnelManager(opts);
  await m.start();
  return m;
}
