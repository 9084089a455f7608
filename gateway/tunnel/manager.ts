/**
 * The gateway's tunnel to peer gateways: composes the parts, each in its own module.
 *
 *   rendezvous.ts  control links to the tunnel-servers; their messages dispatched by kind
 *   requests.ts    request/reply matching on those links (connect → relay, punch → punch-go)
 *   peer.ts        per peer: its sessions and the path state machine (relay first, then the
 *                  search for a direct path, failover); the rules and timeouts are there
 *   direct.ts      the tunnel listener, LAN dials
 *   punch-tcp.ts   TCP simultaneous open (probe, punch-go)
 *   udp.ts         the UDP/ICE path
 *   birthday.ts    birthday punching (one NAT symmetric), handing its hit to a pinned ICE agent
 *   relay.ts       relay legs through a tunnel-server
 *   session.ts     TLS + mux session on any path; the far end of every stream
 *   nat-log.ts     what punching taught about this node's NAT (`edgemesh netcheck`)
 *   status.ts      the status document (/status) and RemotePath
 *
 * On every path the two gateways run their own TLS 1.3 with per-node certificates and
 * multiplex streams over it, so relays and NATs see only ciphertext.
 */
import { networkInterfaces } from 'node:os';
import type { Duplex } from 'node:stream';
import type { Registry } from 'prom-client';
import { describeError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import { type Logger, silentLogger } from '../../lib/log.ts';
import type { PeerInfo } from '../../lib/tunnel/control.ts';
import type { Target } from '../../lib/tunnel/frame.ts';
import type { TlsIdentity } from '../../lib/tunnel/identity.ts';
import type { MuxSession } from '../../lib/tunnel/mux.ts';
import { lanAddressProblem } from '../../lib/tunnel/peer-address.ts';
import { ResumeBook } from '../../lib/tunnel/resume.ts';
import type { PeerMessages, Tunnel } from '../streams.ts';
import { Birthdays } from './birthday.ts';
import { realClock } from './clock.ts';
import { DirectListener, dialLan, lanCandidates } from './direct.ts';
import { Lanes } from './lanes.ts';
import { type TunnelMetrics, tunnelMetrics } from './metrics.ts';
import { NatLog } from './nat-log.ts';
import { NatClassifier } from './nat-type.ts';
import { Peer, type PeerContext, type Techniques } from './peer.ts';
import type { PeerBook } from './peer-book.ts';
import { TcpPunch } from './punch-tcp.ts';
import { joinRelay, requestRelay } from './relay.ts';
import { type ControlHandlers, type ControlLink, Rendezvous } from './rendezvous.ts';
import { type ServerAddress, ServerLink } from './server-link.ts';
import { Sessions } from './session.ts';
import type { BirthdayOutcome, BirthdayTally, RemotePath, TunnelStatus } from './status.ts';

import { UdpPaths } from './udp.ts';

/** This host's IPv4 addresses another host could reach (the gateway runs in the node's network). */
function hostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((i) => i !== undefined && i.family === 'IPv4' && !i.internal)
    .map((i) => (i as { address: string }).address)
    .filter((ip) => lanAddressProblem(ip) === undefined);
}

/** /status lists the birthday outcomes of this many peers at most (lib/gateway-status.ts MAX_NAT_ENTRIES). */
const MAX_BIRTHDAY_TALLIES = 64;

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
  techniques?: Partial<Techniques>;
  /** Gateway-to-gateway messages (gateway/streams.ts PeerMessages). */
  messages?: PeerMessages;
  /** Peers' addresses remembered across restarts (peer-book.ts): direct dials without the rendezvous. */
  peerBook?: PeerBook;
  log?: Logger;
  registry?: Registry;
}

/** Implements the interface the gateway's sidecar listener calls (gateway/streams.ts Tunnel). */
export class TunnelManager implements Tunnel {
  readonly nodeName: string;
  listenPort = 0;
  readonly metrics: TunnelMetrics;
  /** Own copy: setIdentity replaces the identity. */
  readonly #opts: TunnelManagerOptions;
  readonly #log: Logger;
  readonly #peers = new Map<string, Peer>();
  /** Each peer's resumable streams (lib/tunnel/resume.ts), shared by its sessions. */
  readonly #books = new Map<string, ResumeBook>();
  readonly #nat = new NatLog();
  readonly #sessions: Sessions;
  /** UDP Services' datagram lanes beside sessions (lanes.ts); off with techniques.lane false. */
  readonly #lanes: Lanes | undefined;
  readonly #direct: DirectListener;
  readonly #punch: TcpPunch;
  readonly #peerContext: PeerContext<MuxSession, ControlLink>;
  /** From start(): the links register this gateway's listen port, known only then. */
  #rendezvous: Rendezvous | undefined;
  #udp: UdpPaths | undefined;
  #birthdays: Birthdays | undefined;
  /** Birthday punching's NAT classifier (/status natClass), when birthday punching is on. */
  #classifier: NatClassifier | undefined;
  /** Birthday outcomes per peer for /status, the MAX_BIRTHDAY_TALLIES most recent peers. */
  readonly #birthdayTallies = new Map<string, BirthdayTally>();

  constructor(opts: TunnelManagerOptions) {
    this.nodeName = opts.nodeName;
    this.#opts = { ...opts };
    const log = (opts.log ?? silentLogger).child({ part: 'tunnel' });
    this.#log = log;
    const techniques: Techniques = {
      lan: true,
      tcpPunch: true,
      udp: true,
      birthday: true,
      lane: true,
      ...opts.techniques,
    };
    this.metrics = tunnelMetrics(opts.registry, () => this.status().peers);
    const metrics = this.metrics;
    this.#lanes = techniques.lane
      ? new Lanes({
          log,
          clock: realClock,
          stunServers: () =>
            (this.#rendezvous?.linksUp() ?? []).map((l) => ({ ip: l.address.host, port: l.address.port })),
          // A gateway listening on all addresses registers none: offer the node's own.
          lanAddresses: () =>
            this.#opts.lanAddresses.length > 0 ? this.#opts.lanAddresses : hostAddresses(),
          bindHost: opts.listenHost,
          onState: (state) => metrics.lanes.inc({ state }),
        })
      : undefined;
    this.#sessions = new Sessions({
      identity: () => this.#opts.identity,
      log,
      budgetOf: (peer) => this.#peer(peer).budget,
      bookOf: (peer) => this.#book(peer),
      refused: (reason) => metrics.refused.inc({ reason }),
      dialTarget: opts.dialTarget,
      messages: opts.messages,
      lanes: this.#lanes,
    });
    this.#direct = new DirectListener({
      nodeName: opts.nodeName,
      identity: () => this.#opts.identity,
      log,
      accepted: (peer, socket) =>
        this.#peer(peer).add('direct', this.#sessions.open(socket, peer, 'server'), 'tcp'),
      refused: () => metrics.refused.inc({ reason: 'bad-certificate' }),
    });
    this.#punch = new TcpPunch({ sessions: this.#sessions, nat: this.#nat, log });
    this.#peerContext = {
      self: opts.nodeName,
      log,
      clock: realClock,
      techniques,
      linksUp: (first) => this.#rendezvous?.linksUp(first) ?? [],
      requestRelay: (link, peer) => requestRelay(this.#started(), link, peer),
      requestPunch: (link, peer) => this.#punch.request(this.#started(), link, peer),
      connectUdp: (link, peer) => this.#connectUdp(link, peer),
      dialLan: (peer, info) => this.#dialLan(peer, info),
      pathUp: (kind, session) => {
        this.#greet(session);
        metrics.paths.inc({ path: kind });
        this.#books.get(session.peer)?.resumeOn(session);
      },
      parkedStreams: (peer) => this.#books.get(peer)?.parkedCount ?? 0,
      resumeOn: (session) => this.#books.get(session.peer)?.resumeOn(session),
      budgetReset: () => metrics.refused.inc({ reason: 'budget-reset' }),
      pathHealth: (kind, degraded) =>
        metrics.degraded.inc({ path: kind, verdict: degraded ? 'degraded' : 'recovered' }),
      laneOf: (session) => this.#lanes?.statusOf(session),
    };
  }

  /** Starts the direct listener and the links to every tunnel-server. */
  async start(): Promise<void> {
    const opts = this.#opts;
    this.listenPort = await this.#direct.listen(opts.listenPort ?? 20006, opts.listenHost ?? '0.0.0.0');
    if (this.#peerContext.techniques.udp)
      this.#udp = new UdpPaths({
        nodeName: this.nodeName,
        log: this.#log,
        sessions: this.#sessions,
        nat: this.#nat,
        birthdays: () => this.#birthdays,
      });
    if (this.#udp && this.#peerContext.techniques.birthday) {
      const udp = this.#udp;
      this.#classifier = new NatClassifier(realClock);
      this.#birthdays = new Birthdays({
        log: this.#log,
        classifier: this.#classifier,
        stunServers: () =>
          (this.#rendezvous?.linksUp() ?? []).map((l) => ({ ip: l.address.host, port: l.address.port })),
        udp: {
          connectPinned: (link, peer, pin, id) => udp.connectPinned(link, this.#peer(peer.name), pin, id),
        },
        counters: {
          attempt: (role, result, peer) => {
            this.metrics.birthdays.inc({ role, result });
            this.#tallyBirthday(peer, result);
          },
          packets: (role, n) => this.metrics.birthdayPackets.inc({ role }, n),
        },
      });
    }
    // Registration carries the listen port, known only now.
    const register = { lan: opts.lanAddresses, port: this.listenPort };
    this.#rendezvous = new Rendezvous({
      links: opts.tunnelServers.map((addr) => new ServerLink(addr, opts.identity, register, this.#log)),
      handlers: this.#handlers(),
      // A tunnel-server back after an outage: peers still on the relay look for a better
      // path again now, not when their backed-off timer fires (peer.ts linkUp).
      onLinkUp: () => {
        for (const p of this.#peers.values()) p.linkUp();
      },
      log: this.#log,
    });
    this.#rendezvous.start();
  }

  /**
   * A renewed certificate: new TLS sessions (the direct listener's handshakes, dials on every
   * path, tunnel-server links when they reconnect) use it; established sessions keep theirs.
   */
  setIdentity(identity: TlsIdentity): void {
    this.#direct.setIdentity(identity); // throws on a bad key: nothing changed
    this.#opts.identity = identity;
    this.#rendezvous?.setIdentity(identity);
  }

  /** Resolves when at least one tunnel-server link is registered (or after timeoutMs). */
  async ready(timeoutMs = 10_000): Promise<boolean> {
    return this.#rendezvous ? this.#rendezvous.ready(timeoutMs) : false;
  }

  /** A stream to `target` on `peerNode`, over the best path available now. */
  async openStream(peerNode: string, target: Target): Promise<{ stream: Duplex; path: RemotePath }> {
    if (peerNode === this.nodeName)
      throw new EdgemeshError(ErrorCodes.BAD_REQUEST, 'the tunnel does not carry streams to this node');
    const peer = this.#peer(peerNode);
    const session = await peer.session();
    const path = peer.pathOf(session) ?? 'relay';
    const stream = await session.openStream(target);
    if (target.transport === 'udp') this.#lanes?.want(session);
    this.metrics.streams.inc({ path });
    return { stream, path };
  }

  status(): TunnelStatus {
    return {
      node: this.nodeName,
      listenPort: this.listenPort,
      servers: this.#rendezvous?.status() ?? [],
      peers: [...this.#peers.values()].map((p) => p.status()),
      nat: this.#nat.snapshot(),
      ...(this.#classifier
        ? {
            natClass: this.#classifier.last
              ? { nat: this.#classifier.last.nat, at: this.#classifier.last.at }
              : null,
            birthdays: [...this.#birthdayTallies.values()],
          }
        : {}),
    };
  }

  #tallyBirthday(peer: string, result: BirthdayOutcome): void {
    const t = this.#birthdayTallies.get(peer) ?? { peer, outcomes: {}, lastAt: 0 };
    t.outcomes[result] = (t.outcomes[result] ?? 0) + 1;
    t.lastAt = realClock.now();
    // Newest last in the map: the oldest peer goes when the bound is reached.
    this.#birthdayTallies.delete(peer);
    this.#birthdayTallies.set(peer, t);
    if (this.#birthdayTallies.size > MAX_BIRTHDAY_TALLIES)
      this.#birthdayTallies.delete(this.#birthdayTallies.keys().next().value as string);
  }

  /** Sends `message` on every peer's best session (peers without one learn it on connecting). */
  broadcast(message: Record<string, unknown>): void {
    for (const p of this.#peers.values()) p.best()?.sendControl(message);
  }

  async close(): Promise<void> {
    this.#rendezvous?.close();
    for (const p of this.#peers.values()) p.close();
    for (const b of this.#books.values()) b.close();
    this.#birthdays?.close();
    this.#udp?.close();
    this.#lanes?.close();
    await this.#direct.close();
  }

  /** What each tunnel-server message does here (rendezvous.ts dispatches by kind). */
  #handlers(): ControlHandlers {
    return {
      relay: (link, msg) => {
        const peer = this.#peer(msg.peer);
        peer.info = msg.info;
        this.#opts.peerBook?.remember(msg.peer, msg.info);
        const established = joinRelay(link, msg, this.#sessions).then(({ session, via }) =>
          peer.add('relay', session, `tcp via ${via}`, via),
        );
        if (!this.#started().answer(msg, established)) established.catch(() => undefined);
      },
      probe: (link, msg) => this.#punch.onProbe(link, msg),
      'punch-go': (_link, msg) => {
        const peer = this.#peer(msg.peer);
        const punched = this.#punch.onPunchGo(msg).then((session) => peer.add('punched', session, 'tcp'));
        if (!this.#started().answer(msg, punched))
          punched.catch((err) =>
            this.#log.debug({ peer: msg.peer, err: describeError(err) }, 'TCP punch failed'),
          );
      },
      signal: (link, msg) => {
        if (msg.data.type === 'birthday') this.#birthdays?.onSignal(link, msg, this.#peer(msg.peer));
        else this.#udp?.onSignal(link, msg, this.#peer(msg.peer));
      },
      'site-peers': (_link, msg) => {
        // Remembered for when no tunnel-server answers (peer-book.ts): dialled on their LAN then.
        for (const p of msg.peers)
          if (p.node !== this.nodeName) this.#opts.peerBook?.remember(p.node, { lan: p.lan, port: p.port });
      },
    };
  }

  /**
   * The UDP search: ICE, and beside it a birthday punch (which runs only when exactly one of
   * the two NATs is symmetric, and then finds what ICE cannot); the first path up wins.
   */
  #connectUdp(link: ControlLink, peer: Peer): Promise<unknown> | undefined {
    const ice = this.#udp?.connect(link, peer);
    if (!ice || !this.#birthdays) return ice;
    return Promise.any([ice, this.#birthdays.start(link, peer)]).catch((err: AggregateError) => {
      throw new EdgemeshError(ErrorCodes.UNAVAILABLE, err.errors.map((e) => describeError(e)).join('; '));
    });
  }

  /** LAN candidates for `peer` (tunnel-server info, catalog, peer book), dialled at once. */
  #dialLan(peer: string, info: PeerInfo | undefined): Promise<MuxSession> {
    const opts = this.#opts;
    const { lan, port, dropped } = lanCandidates({
      info,
      known: opts.peerAddresses?.(peer) ?? [],
      remembered: opts.peerBook?.candidates(peer),
      ownPort: this.listenPort,
      own: [...opts.lanAddresses, ...opts.tunnelServers.map((s) => s.host)],
    });
    if (dropped.length > 0) this.#log.warn({ peer, dropped }, 'not dialling these peer addresses');
    return dialLan(lan, port, peer, this.#sessions);
  }

  /** What a new peer session is told first (PeerMessages.greeting). */
  #greet(session: MuxSession): void {
    const greeting = this.#opts.messages?.greeting();
    if (greeting) session.sendControl(greeting);
  }

  #book(peer: string): ResumeBook {
    let book = this.#books.get(peer);
    if (!book) {
      book = new ResumeBook({ outcome: (result) => this.metrics.resumes.inc({ result }) });
      this.#books.set(peer, book);
    }
    return book;
  }

  #peer(name: string): Peer {
    let p = this.#peers.get(name);
    if (!p) {
      p = new Peer(this.#peerContext, name);
      this.#peers.set(name, p);
    }
    return p;
  }

  /** The rendezvous; only links it handed out reach the callers, so it exists. */
  #started(): Rendezvous {
    if (!this.#rendezvous) throw new EdgemeshError(ErrorCodes.INTERNAL, 'tunnel manager not started');
    return this.#rendezvous;
  }
}

export async function createTunnelManager(opts: TunnelManagerOptions): Promise<TunnelManager> {
  const m = new TunnelManager(opts);
  await m.start();
  return m;
}
