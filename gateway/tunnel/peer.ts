/**
 * One peer gateway: its paths and the state machine that finds and keeps them.
 *
 *  (no session) ──session()──▶ RELAY ──upgrade search──▶ DIRECT | PUNCHED
 *       ▲                       │  ▲                          │
 *       │  relay lost, nothing  │  └─ path lost, none better ◀┘ (the next session())
 *       └──── better: failover ─┘
 *
 * Paths, best first: `direct` (TCP to a LAN address), `punched` (TCP simultaneous open or a
 * UDP/ICE channel, coordinated by a tunnel-server), `relay` (spliced by a tunnel-server).
 * New streams take the best usable session that is not degraded; open streams stay where they
 * started (a better path never moves them). A direct or punched path sends the relay GOAWAY: its
 * streams finish, then it closes and frees the relay.
 *
 * Measured choice (path-choice.ts): a relay is asked of the replica whose control link answers
 * PINGs fastest, the others in RTT order as fallback. Each session's health is judged from
 * PINGs every 5 s (loss, RTT spike): a degraded direct or punched path keeps its streams, new
 * ones go to a relay opened for them (the relay is freed again when the path recovers); a
 * degraded relay is replaced through another replica.
 *
 * Everything with side effects (links, requests, dials, TLS, metrics, time) comes through a
 * PeerContext, so the machine runs in tests with fake sessions and a fake clock (peer.test.ts).
 */
import { describeError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { LogGate } from '../../lib/log-gate.ts';
import { ReceiveBudget } from '../../lib/tunnel/budget.ts';
import { type PeerInfo, tlsRole } from '../../lib/tunnel/control.ts';
import type { DatagramCounters, MuxSession } from '../../lib/tunnel/mux.ts';
import type { Clock, Timer } from './clock.ts';
import {
  HEALTH_FIRST_PING_MS,
  HEALTH_PING_INTERVAL_MS,
  HEALTH_PING_TIMEOUT_MS,
  PathHealth,
  rankByRtt,
} from './path-choice.ts';
import type { ControlLink } from './rendezvous.ts';
import {
  type LaneStatus,
  PATH_ORDER,
  type PathHealthStatus,
  type PeerStatus,
  type RemotePath,
} from './status.ts';

// --- timeouts, each with its reason --------------------------------------------------------

/**
 * Nothing better found: retry the search after 30 s, doubling to 10 min. NATs change rarely
 * (a router reboot, a new uplink), so the search need not run often, and every search costs
 * the tunnel-servers a punch coordination; 10 min still picks up a change within the hour.
 */
export const UPGRADE_RETRY_START_MS = 30_000;
export const UPGRADE_RETRY_MAX_MS = 600_000;
/**
 * A tunnel-server link came up: peers on the relay search again within 1 s, spread at random
 * since every peer of every gateway hears the same server come back at once.
 */
export const LINK_UP_UPGRADE_SPREAD_MS = 1_000;
/**
 * A search ends after 20 s whatever its attempts do (TCP punch 3 s and UDP/ICE 8 s are their
 * own bounds; the punch request waits for a server's answer): an attempt that never settles
 * must not hold the peer on the relay for good, since no later search (nor linkUp()) starts
 * while one is running. Seen as `nextUpgradeAt: null` on the relay in a real-cluster run.
 */
export const UPGRADE_SEARCH_MAX_MS = 20_000;
/**
 * A lost relay: the TLS client end asks for a new one at once, the server end only if still
 * without a path 1 s later, so one relay (not two) replaces the lost one. Both ends notice
 * the loss within the same moment (the replica's death closes both legs).
 */
export const FAILOVER_SERVER_SIDE_WAIT_MS = 1_000;
/**
 * A degraded relay is replaced through another replica at most once per 30 s: when the cause
 * is this gateway's own uplink, every replica looks bad, and churning relays would not help.
 */
export const RELAY_REPLACE_MIN_INTERVAL_MS = 30_000;

/** Which direct techniques the search may use (tests and benchmarks pin one). */
export interface Techniques {
  lan: boolean;
  tcpPunch: boolean;
  udp: boolean;
  /** Birthday punching beside ICE when exactly one NAT is symmetric (birthday.ts); needs udp. */
  birthday: boolean;
  /** UDP Services' datagrams on a datagram lane beside the session (lanes.ts); optional in fakes. */
  lane?: boolean;
}

/** What the peer needs of a session (lib/tunnel/mux.ts MuxSession; a fake in tests). */
export interface PathSession {
  /** Takes new streams (open, not going away). */
  readonly usable: boolean;
  readonly rttMs: number | undefined;
  readonly streamCount: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** Datagram streams' datagrams by the way they went (MuxSession; absent in fakes that carry none). */
  readonly datagrams?: DatagramCounters;
  readonly closeError: Error | undefined;
  /** Let open streams finish, take no new ones, then close. */
  goAway(reason: string): void;
  close(): void;
  once(event: 'close', listener: () => void): unknown;
  /** A keepalive PING: its RTT in ms, or a rejection when unanswered within `timeoutMs`. */
  ping?(timeoutMs: number): Promise<number>;
}

/** A tunnel-server link as the peer sees it: something to name in logs and hand back. */
export interface LinkRef {
  readonly label: string;
  /** The replica's name once registered (what a relay's `via` says). */
  readonly serverName?: string | undefined;
  /** The control link's measured RTT (its PINGs), if any yet: relays go to the fastest. */
  readonly rttMs?: number | undefined;
}

/** What a peer may do outside itself. The manager implements it once for all peers. */
export interface PeerContext<S extends PathSession, L extends LinkRef> {
  /** This gateway's node name (with the peer's, it decides the TLS roles). */
  readonly self: string;
  readonly log: Logger;
  readonly clock: Clock;
  readonly techniques: Techniques;
  /** Tunnel-server links that are up, in configured order starting at `first`. */
  linksUp(first: number): readonly L[];
  /** Asks `link` for a relay; resolves once the relay session was added (or rejects). */
  requestRelay(link: L, peer: string): Promise<unknown>;
  /** Asks `link` to coordinate a TCP punch; resolves once the punched session was added. */
  requestPunch(link: L, peer: string): Promise<unknown>;
  /** A UDP/ICE attempt through `link` that adds its session; undefined: no UDP path here. */
  connectUdp(link: L, peer: Peer<S, L>): Promise<unknown> | undefined;
  /** Dials the peer's LAN addresses (from `info` and what else is known); the first session up. */
  dialLan(peer: string, info: PeerInfo | undefined): Promise<S>;
  /** A session was added: greet the peer on it, count it. */
  pathUp(kind: RemotePath, session: S): void;
  /** The peer's streams held more unread bytes than its budget (metrics). */
  budgetReset(): void;
  /** A path's health verdict changed (metrics); optional. */
  pathHealth?(kind: RemotePath, degraded: boolean): void;
  /** The datagram lane beside a session, for status() (lanes.ts). */
  laneOf?(session: S): LaneStatus | undefined;
  /** Streams to `peer` parked for a new path (lib/tunnel/resume.ts); optional. */
  parkedStreams?(peer: string): number;
  /** A usable session the peer's parked streams may resume on; optional. */
  resumeOn?(session: S): void;
}

interface PathEntry<S> {
  session: S;
  /** `tcp`, `udp`, or `tcp via <replica>` (status, logs). */
  transport: string;
  /** Relay only: the replica carrying it. */
  via?: string;
  upAt: number;
}

export class Peer<S extends PathSession = MuxSession, L extends LinkRef = ControlLink> {
  readonly name: string;
  readonly #ctx: PeerContext<S, L>;

  // --- paths: owned here, live as long as the manager ------------------------------------
  /** One session per path kind; a newer one of a kind replaces (GOAWAY) the older. */
  readonly #sessions = new Map<RemotePath, PathEntry<S>>();
  /** Bytes of this peer's sessions that have closed (status() adds the open ones). */
  #closedBytes = { in: 0, out: 0 };
  /** Each session's health from its PINGs (path-choice.ts); only sessions that can ping. */
  readonly #health = new Map<S, PathHealth>();
  /** When each session's health verdict last changed (/status "since"). */
  readonly #healthSince = new Map<S, number>();
  /** The next round of health PINGs, while a session can be pinged. */
  #healthTimer: Timer | undefined;
  /** When a degraded relay was last replaced (at most one per RELAY_REPLACE_MIN_INTERVAL_MS). */
  #relayReplacedAt = Number.NEGATIVE_INFINITY;
  /** The replica of a relay that was lost or degraded: the next relay goes elsewhere first. */
  #avoidVia: string | undefined;
  /** When this gateway first needed the peer (status: path timings are measured from it). */
  #firstUseAt: number | undefined;
  /** What this peer's streams may hold unread here, across its sessions (issue 16 item 8). */
  readonly budget: ReceiveBudget;

  // --- establishing: from the first session() until a session is up ------------------------
  /** The relay (or, without servers, LAN) attempt callers wait for: one at a time. */
  #connecting: Promise<S> | undefined;
  /** Link index to try first for the next relay; moves on when a relay is lost. */
  #preferred = 0;
  /** The peer's registration as the tunnel-server last told it (LAN addresses, port). */
  info: PeerInfo | undefined;

  // --- upgrade search: while on the relay only ---------------------------------------------
  /** A search is running (LAN, then TCP punch and UDP in parallel). */
  #upgrading = false;
  /** The next search, when one is planned; nextUpgradeAt says when. */
  #upgradeTimer: Timer | undefined;
  /** Wait before the next search if this one finds nothing: doubles, reset by success. */
  #upgradeDelay = UPGRADE_RETRY_START_MS;
  /** When the planned search runs (ms epoch), for status. */
  nextUpgradeAt: number | undefined;

  /** Closed with the manager: adds nothing, plans nothing. */
  #closed = false;

  constructor(ctx: PeerContext<S, L>, name: string) {
    this.#ctx = ctx;
    this.name = name;
    const gate = new LogGate(10_000);
    this.budget = new ReceiveBudget(undefined, (held) => {
      ctx.budgetReset();
      const { log, suppressed } = gate.pass(ctx.clock.now());
      if (log)
        ctx.log.warn(
          { peer: name, held, budget: this.budget.limit, suppressed },
          "peer's streams hold more unread bytes than its budget: reset the fullest",
        );
    });
  }

  /** The best usable session now, if any: a degraded one only when nothing else is usable. */
  best(): S | undefined {
    let degraded: S | undefined;
    for (const kind of PATH_ORDER) {
      const s = this.#sessions.get(kind)?.session;
      if (!s?.usable) continue;
      if (!this.#health.get(s)?.degraded) return s;
      degraded ??= s;
    }
    return degraded;
  }

  pathOf(session: S): RemotePath | undefined {
    for (const [kind, s] of this.#sessions) if (s.session === session) return kind;
    return undefined;
  }

  /** The best usable session, establishing a relay first if there is none. */
  session(): Promise<S> {
    this.#firstUseAt ??= this.#ctx.clock.now();
    const s = this.best();
    if (s) return Promise.resolve(s);
    this.#connecting ??= this.#establish().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  /** A session on path `kind` is up (either end may have started it). */
  add(kind: RemotePath, session: S, transport: string, via?: string): void {
    const ctx = this.#ctx;
    if (this.#closed) {
      session.close();
      return;
    }
    const old = this.#sessions.get(kind);
    if (kind === 'punched' && transport === 'udp' && old?.session.usable && old.transport === 'tcp') {
      session.close(); // lost the race to TCP
      return;
    }
    this.#sessions.set(kind, { session, transport, via, upAt: ctx.clock.now() });
    if (old && old.session !== session) old.session.goAway('replaced by a newer session');
    ctx.log.info({ peer: this.name, path: kind, transport }, 'tunnel path up');
    ctx.pathUp(kind, session);
    if (session.ping) {
      this.#health.set(session, new PathHealth());
      this.#planHealth(HEALTH_FIRST_PING_MS);
    }
    session.once('close', () => this.#onClose(kind, session));
    // A relay the peer asked for (its streams, or streams it parked and resumes here) plans a
    // search on this side too, after the peer's own search has had its turn: before, only the
    // side that asked for a relay searched, and a peer whose search never came left both on
    // the relay with nothing planned (nextUpgradeAt null in a real-cluster run). A search this
    // side plans sooner (its own relay: at once) replaces this one.
    if (kind === 'relay' && !this.#hasDirect()) this.#scheduleUpgrade(UPGRADE_RETRY_START_MS);
    else if (kind !== 'relay') this.#cancelUpgrade();
    // A direct path makes the relay idle: let its streams finish, then free the relay. (Moving
    // them over, MuxSession.moveStreams, is not done yet: a stream the far end has finished is
    // forgotten there before its last bytes are credited, and a move then loses them.)
    if (kind !== 'relay') this.#sessions.get('relay')?.session.goAway('direct path found');
  }

  #onClose(kind: RemotePath, session: S): void {
    const ctx = this.#ctx;
    this.#closedBytes.in += session.bytesIn;
    this.#closedBytes.out += session.bytesOut;
    const entry = this.#sessions.get(kind);
    if (entry?.session === session) this.#sessions.delete(kind);
    this.#health.delete(session);
    this.#healthSince.delete(session);
    if (kind === 'relay' && entry?.session === session) this.#avoidVia = entry.via;
    ctx.log.info(
      {
        peer: this.name,
        path: kind,
        reason: session.closeError ? describeError(session.closeError) : undefined,
      },
      'tunnel path down',
    );
    // Streams parked by this close carry on over what is left, if anything is.
    const parked = ctx.parkedStreams?.(this.name) ?? 0;
    const best = this.best();
    if (!this.#closed && best && parked > 0) ctx.resumeOn?.(best);
    // A lost direct or punched path with the relay still up: look for a direct path again
    // soon (nothing else would plan it: the search is planned when a relay opens, on a failed
    // search and when a tunnel-server link comes back).
    if (!this.#closed && kind !== 'relay' && best && !this.#hasDirect())
      this.#scheduleUpgrade(Math.floor(ctx.clock.random() * LINK_UP_UPGRADE_SPREAD_MS));
    // Keep the peer reachable: a lost relay comes back through another replica at once (so
    // does any lost path that parked streams wait on; the new session resumes them, pathUp).
    if (!this.#closed && !best && (kind === 'relay' || parked > 0)) {
      this.#preferred++;
      const delay = tlsRole(ctx.self, this.name) === 'client' ? 0 : FAILOVER_SERVER_SIDE_WAIT_MS;
      ctx.clock.setTimeout(() => {
        if (this.#closed || this.best()) return;
        this.session().catch((err) =>
          ctx.log.warn({ peer: this.name, err: describeError(err) }, 'relay failover failed'),
        );
      }, delay);
    }
  }

  /** Relay first; without any tunnel-server (cloud outage), a same-site peer on its LAN. */
  async #establish(): Promise<S> {
    try {
      return await this.#relay();
    } catch (err) {
      if (this.#ctx.techniques.lan && (await this.#tryLan())) {
        const s = this.best();
        if (s) return s;
      }
      throw err;
    }
  }

  /**
   * Each link that is up in turn, the fastest (control-link RTT) first, ties in configured
   * order from the preferred one, a replica to avoid (its relay was lost or degraded) last;
   * then the upgrade search at once.
   */
  async #relay(): Promise<S> {
    const ctx = this.#ctx;
    let lastErr: unknown = new EdgemeshError(ErrorCodes.UNAVAILABLE, 'no tunnel-server is reachable');
    const avoid = this.#avoidVia;
    this.#avoidVia = undefined;
    const ranked = rankByRtt(ctx.linksUp(this.#preferred), (l) => l.rttMs);
    const isAvoided = (l: L) => avoid !== undefined && (l.label === avoid || l.serverName === avoid);
    const order = [...ranked.filter((l) => !isAvoided(l)), ...ranked.filter(isAvoided)];
    for (const link of order) {
      try {
        await ctx.requestRelay(link, this.name);
        const s = this.#sessions.get('relay')?.session;
        if (!s) throw new EdgemeshError(ErrorCodes.UNAVAILABLE, 'relay closed at once');
        ctx.log.debug(
          { peer: this.name, server: link.label, rttMs: link.rttMs },
          'relay via the fastest replica up',
        );
        this.#scheduleUpgrade(0);
        return this.best() ?? s;
      } catch (err) {
        lastErr = err;
        ctx.log.debug(
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

  /**
   * A tunnel-server link came up: a peer on the relay retries its search soon, backoff reset.
   * The searches that failed while no server answered (and their doubled backoff, up to
   * 10 min) say nothing about the NATs.
   */
  linkUp(): void {
    if (this.#closed || !this.#sessions.has('relay')) return;
    if (this.#hasDirect()) return;
    this.#upgradeDelay = UPGRADE_RETRY_START_MS;
    this.#scheduleUpgrade(Math.floor(this.#ctx.clock.random() * LINK_UP_UPGRADE_SPREAD_MS));
  }

  /** A direct or punched path is up: the search planned for it is not needed. */
  #cancelUpgrade(): void {
    this.#ctx.clock.clearTimeout(this.#upgradeTimer);
    this.#upgradeTimer = undefined;
    this.nextUpgradeAt = undefined;
  }

  #scheduleUpgrade(delayMs: number): void {
    const clock = this.#ctx.clock;
    if (this.#closed || this.#upgrading) return;
    // An earlier search wins over a later one already planned (a relay opened now asks for
    // one at once while a backed-off retry may be minutes away).
    if (this.#upgradeTimer) {
      if (this.nextUpgradeAt !== undefined && this.nextUpgradeAt <= clock.now() + delayMs) return;
      clock.clearTimeout(this.#upgradeTimer);
      this.#upgradeTimer = undefined;
    }
    this.nextUpgradeAt = clock.now() + delayMs;
    this.#upgradeTimer = clock.setTimeout(() => {
      this.#upgradeTimer = undefined;
      this.#upgrade().catch(() => undefined);
    }, delayMs);
  }

  /**
   * Seeks a direct path: LAN (1 s per address), then TCP punch (3 s) and UDP/ICE (8 s) in
   * parallel. Bounded; nothing found reschedules with backoff.
   */
  async #upgrade(): Promise<void> {
    if (this.#hasDirect()) return;
    const ctx = this.#ctx;
    this.#upgrading = true;
    this.nextUpgradeAt = undefined;
    const t = ctx.techniques;
    let noServer = false;
    try {
      if (t.lan && (await this.#tryLan())) return this.#upgraded();
      const link = ctx.linksUp(this.#preferred)[0];
      // TCP punch and UDP/ICE race; whichever connects first carries new streams (a later
      // TCP success still replaces UDP: it is the faster transport).
      const attempts: Promise<unknown>[] = [];
      if (t.tcpPunch && link) {
        attempts.push(
          ctx.requestPunch(link, this.name).catch((err) => {
            ctx.log.info({ peer: this.name, err: describeError(err) }, 'TCP punch did not connect');
            throw err;
          }),
        );
      }
      const udp = t.udp && link ? ctx.connectUdp(link, this) : undefined;
      if (udp) {
        attempts.push(
          udp.catch((err) => {
            ctx.log.info({ peer: this.name, err: describeError(err) }, 'UDP path did not connect');
            throw err;
          }),
        );
      }
      // No tunnel-server up to punch through: that says nothing about the NATs, so the
      // backoff does not double (linkUp() restarts the search when a server answers again).
      noServer = !link && (t.tcpPunch || t.udp);
      if (attempts.length > 0) {
        await this.#bounded(Promise.any(attempts));
        if (this.#sessions.has('punched')) return this.#upgraded();
      }
    } finally {
      this.#upgrading = false;
    }
    if (!this.#hasDirect()) {
      const delay = this.#upgradeDelay;
      if (!noServer) this.#upgradeDelay = Math.min(UPGRADE_RETRY_MAX_MS, delay * 2);
      ctx.log.info({ peer: this.name, retryInMs: delay }, 'no direct path; staying on the relay');
      this.#scheduleUpgrade(delay);
    }
  }

  /**
   * A direct or punched session that takes new streams. One that is closing (gone away, or
   * dead and not yet noticed) does not count: a search skipped for it was never planned again
   * once it closed, and the peer stayed on the relay (`nextUpgradeAt: null` in a real-cluster run).
   */
  #hasDirect(): boolean {
    for (const kind of ['direct', 'punched'] as const)
      if (this.#sessions.get(kind)?.session.usable) return true;
    return false;
  }

  /** Settles when `work` does or UPGRADE_SEARCH_MAX_MS have passed, whichever is first; never rejects. */
  #bounded(work: Promise<unknown>): Promise<void> {
    const clock = this.#ctx.clock;
    return new Promise<void>((resolve) => {
      const timer = clock.setTimeout(() => {
        this.#ctx.log.warn(
          { peer: this.name, afterMs: UPGRADE_SEARCH_MAX_MS },
          'direct-path search cut short: an attempt did not settle',
        );
        resolve();
      }, UPGRADE_SEARCH_MAX_MS);
      work.then(
        () => {
          clock.clearTimeout(timer);
          resolve();
        },
        () => {
          clock.clearTimeout(timer);
          resolve();
        },
      );
    });
  }

  #upgraded(): void {
    this.#upgradeDelay = UPGRADE_RETRY_START_MS;
  }

  async #tryLan(): Promise<boolean> {
    try {
      const session = await this.#ctx.dialLan(this.name, this.info);
      this.add('direct', session, 'tcp');
      return true;
    } catch {
      return false;
    }
  }

  /** Plans the next round of health PINGs while a session can be pinged (sooner replaces later). */
  #planHealth(delayMs = HEALTH_PING_INTERVAL_MS): void {
    const clock = this.#ctx.clock;
    if (this.#closed || this.#health.size === 0) return;
    if (this.#healthTimer) {
      if (delayMs >= HEALTH_PING_INTERVAL_MS) return;
      clock.clearTimeout(this.#healthTimer);
    }
    this.#healthTimer = clock.setTimeout(() => {
      this.#healthTimer = undefined;
      for (const [kind, entry] of this.#sessions) {
        const { session } = entry;
        const health = this.#health.get(session);
        if (!health || !session.usable || !session.ping) continue;
        session.ping(HEALTH_PING_TIMEOUT_MS).then(
          (rtt) => this.#judge(kind, session, health, rtt),
          () => this.#judge(kind, session, health, 'lost'),
        );
      }
      this.#planHealth();
    }, delayMs);
  }

  #judge(kind: RemotePath, session: S, health: PathHealth, sample: number | 'lost'): void {
    const ctx = this.#ctx;
    if (this.#closed || this.#health.get(session) !== health || !health.sample(sample)) return;
    this.#healthSince.set(session, ctx.clock.now());
    ctx.pathHealth?.(kind, health.degraded);
    if (!health.degraded) {
      ctx.log.info({ peer: this.name, path: kind }, 'tunnel path recovered: new streams take it again');
      // A relay opened for the streams of a degraded direct path is not needed any more.
      if (kind !== 'relay') this.#sessions.get('relay')?.session.goAway('direct path recovered');
      return;
    }
    ctx.log.warn(
      { peer: this.name, path: kind, reason: health.reason },
      'tunnel path degraded: new streams take the next best path',
    );
    const healthy = PATH_ORDER.some((k) => {
      const s = this.#sessions.get(k)?.session;
      return s?.usable && !this.#health.get(s)?.degraded;
    });
    if (healthy) return;
    if (kind === 'relay') {
      if (ctx.clock.now() - this.#relayReplacedAt < RELAY_REPLACE_MIN_INTERVAL_MS) return;
      this.#relayReplacedAt = ctx.clock.now();
      this.#avoidVia = this.#sessions.get('relay')?.via;
    }
    // Something for new streams to take: a relay (a newer relay replaces the degraded one).
    this.#connecting ??= this.#relay().finally(() => {
      this.#connecting = undefined;
    });
    this.#connecting.catch((err) =>
      ctx.log.warn({ peer: this.name, err: describeError(err) }, 'no other path for new streams'),
    );
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
        ...this.#healthOf(session),
        ...datagramsOf(session),
        ...this.#laneOf(session),
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

  #laneOf(session: S): { lane?: LaneStatus } {
    const lane = this.#ctx.laneOf?.(session);
    return lane ? { lane } : {};
  }

  /** A session's health for status(); nothing when it is not pinged. */
  #healthOf(session: S): { health?: PathHealthStatus } {
    const h = this.#health.get(session);
    if (!h) return {};
    const since = this.#healthSince.get(session);
    const last = h.lastSample;
    return {
      health: {
        degraded: h.degraded,
        ...(since === undefined ? {} : { since }),
        ...(h.why === undefined ? {} : { why: h.why }),
        ...(typeof last === 'number' ? { lastRttMs: last } : {}),
      },
    };
  }

  close(): void {
    this.#closed = true;
    this.#ctx.clock.clearTimeout(this.#upgradeTimer);
    this.#ctx.clock.clearTimeout(this.#healthTimer);
    for (const { session } of this.#sessions.values()) session.close();
  }
}

/** A copy of a session's datagram counters for status(); nothing when it carried none. */
function datagramsOf(session: PathSession): { datagrams?: DatagramCounters } {
  const d = session.datagrams;
  if (!d || d.sent + d.dropped + d.framed + d.received + d.refused + d.overflow === 0) return {};
  return { datagrams: { ...d } };
}
