/**
 * The gateway's `/status` document (issue 17 item 3): what its tunnel knows of each peer,
 * served as JSON on the metrics/health port beside /ready and read by `edgemesh status`
 * through the API server's pods/proxy. Written by gateway/status.ts, read by ctl/status-*.
 *
 *   { "format": "edgemesh.gateway-status/v1",
 *     "node": "edge-1", "now": 1765000000000,          gateway clock, ms since the epoch:
 *                                                     times below are told relative to it
 *     "ready": true, "readiness": "ready",             /ready's first line
 *     "tunnel": { "state": "running", "detail": "tunnel: running, 1 of 1 …", "listenPort": 20006,
 *                 "servers": [{ "address": "198.51.100.200:20006", "name": "ts-0", "up": true,
 *                               "observed": "203.0.113.70:40123",
 *                               "rttMs": 3.2, "preferredRelay": true }] },        since 15.5
 *     "peers": [{ "node": "edge-2", "path": "punched", "rttMs": 3.1, "firstUseAt": …,
 *                 "nextUpgradeAt": null, "bytesIn": 1200, "bytesOut": 800,
 *                 "paths": [{ "path": "punched", "transport": "udp", "via": null, "rttMs": 3.1,
 *                             "streams": 2, "upAt": …, "bytesIn": 1000, "bytesOut": 700,
 *                             "health": { "state": "degraded", "since": …, "lastRttMs": null,  since 15.5
 *                                         "why": { "kind": "loss", "lost": 2, "of": 5 } },
 *                             "datagrams": { "sent": 1200, "dropped": 3, "framed": 5,         since 18
 *                                            "received": 1190, "refused": 0, "overflow": 0 },
 *                             "lane": { "state": "up", "peer": "203.0.113.9:40310",          since 18.2
 *                                       "sent": 1150, "probesSent": 9, "probesTaken": 8, "refused": 0 } }] }],
 *     "omittedPeers": 0,
 *     "nat": { "probes": [{ "at": …, "server": "ts-0", "localPort": 40200, "observed": "203.0.113.70:40200" }],
 *              "punches": [{ "at": …, "peer": "edge-2", "transport": "tcp", "outcome": "refused",
 *                            "detail": "TCP punch to …: connect ECONNREFUSED …" }],
 *              "class": { "nat": "hard", "at": … },                              since 15.5
 *              "birthdays": [{ "peer": "edge-3", "lastAt": …,                     since 15.5
 *                              "outcomes": { "connected": 1, "no-hit": 1 } }] } }
 *
 * Fields marked "since 15.5", "since 18" or "since 18.2" are absent from older gateways' documents: the reader keeps them
 * undefined (shown as "—"), and null where the gateway says "not measured" (rttMs, lastRttMs,
 * class) or "not judged" (health: a path that is not pinged).
 *
 * Bounded both ways: the gateway lists at most MAX_PEERS peers (most recently used first) and
 * says how many it left out; the reader refuses a document over MAX_DOCUMENT_BYTES, with more
 * entries than these bounds, or any field of the wrong type or size, naming the field.
 */

export const STATUS_FORMAT = 'edgemesh.gateway-status/v1';
/** A 1,000-node mesh fits; each peer is ~400 bytes of JSON. */
export const MAX_PEERS = 2000;
export const MAX_SERVERS = 64;
export const MAX_DOCUMENT_BYTES = 4 * 1024 * 1024;
const MAX_TEXT = 1024;

export type PathKind = 'direct' | 'punched' | 'relay';
export type TunnelStateName = 'off' | 'starting' | 'running' | 'unreachable' | 'refused' | 'config';
const PATHS: readonly PathKind[] = ['direct', 'punched', 'relay'];
const STATES: readonly TunnelStateName[] = ['off', 'starting', 'running', 'unreachable', 'refused', 'config'];

export interface PathEntry {
  path: PathKind;
  /** `tcp` or `udp` (punched), `tcp` (direct), `tcp via NAME` (relay). */
  transport: string;
  /** Relay: the tunnel-server replica carrying it. */
  via: string | null;
  rttMs: number | null;
  streams: number;
  upAt: number;
  bytesIn: number;
  bytesOut: number;
  /** Undefined: an older gateway; null: not judged (the path is not pinged). */
  health?: PathHealthEntry | null;
  /** UDP Services' datagrams on this path so far; absent: none (or an older gateway). */
  datagrams?: DatagramEntry;
  /** The datagram lane beside this path's session; absent: none started (or an older gateway). */
  lane?: LaneEntry;
}

/**
 * A path's datagram lane (gateway/tunnel/dgram-lane.ts): a plain UDP socket pair beside the
 * session that carries its datagram channel's messages while `up`. `peer`: where the peer is
 * seen from (null until a probe came through); `sent`: messages on the lane; `refused`:
 * probes that did not authenticate or were replays.
 */
export interface LaneEntry {
  state: 'punching' | 'up' | 'down' | 'closed';
  peer: string | null;
  sent: number;
  probesSent: number;
  probesTaken: number;
  refused: number;
  /**
   * Its congestion window (since 18.2, absent before the window): messages it may have out,
   * out now, smoothed RTT (ms), messages the peer acknowledged, lost, and the window's cuts
   * for loss and for a stall.
   */
  window?: LaneWindowEntry;
}

export interface LaneWindowEntry {
  size: number;
  inFlight: number;
  rttMs: number;
  delivered: number;
  lost: number;
  decreases: number;
  stalls: number;
}
const WINDOW_COUNTS = ['size', 'inFlight', 'delivered', 'lost', 'decreases', 'stalls'] as const;
const LANE_STATES = ['punching', 'up', 'down', 'closed'] as const;

/**
 * A path's datagrams (lib/tunnel/mux.ts DatagramCounters): on the UDP path's datagram channel
 * (sent, dropped by it, received; refused: for no open datagram stream; overflow: its stream
 * held a window unread) or framed on their streams (no channel, or not open).
 */
export interface DatagramEntry {
  sent: number;
  dropped: number;
  framed: number;
  received: number;
  refused: number;
  overflow: number;
}
const DATAGRAM_FIELDS = ['sent', 'dropped', 'framed', 'received', 'refused', 'overflow'] as const;

export type DegradedWhy =
  | { kind: 'loss'; lost: number; of: number }
  | { kind: 'rtt-spike'; rttMs: number; baselineMs: number };

/** A path's verdict from its health PINGs (gateway/tunnel/path-choice.ts PathHealth). */
export interface PathHealthEntry {
  state: 'ok' | 'degraded';
  /** When the verdict last changed; null: ok since the path came up. */
  since: number | null;
  /** Degraded only. */
  why: DegradedWhy | null;
  /** The last health PING's RTT; null: none answered yet, or the last one was lost. */
  lastRttMs: number | null;
}

export interface PeerEntry {
  node: string;
  /** The path new streams take now; null: none up (the next stream sets one up). */
  path: PathKind | null;
  rttMs: number | null;
  firstUseAt: number | null;
  nextUpgradeAt: number | null;
  bytesIn: number;
  bytesOut: number;
  paths: PathEntry[];
}

export interface ServerEntry {
  address: string;
  name: string | null;
  up: boolean;
  /** The address this gateway's link comes from, as the replica sees it (its NAT's mapping). */
  observed: string | null;
  /** The link's local port, to set against `observed`. */
  localPort: number | null;
  /** The control link's PING RTT; null: not measured yet; undefined: an older gateway. */
  rttMs?: number | null;
  /** The replica a new relay asks first (fastest, ties in configured order); undefined: older gateway. */
  preferredRelay?: boolean;
}

/** What punching taught about this node's NAT (gateway/tunnel/status.ts NatObservations). */
export interface NatSection {
  probes: { at: number; server: string; localPort: number; observed: string }[];
  punches: {
    at: number;
    peer: string;
    transport: 'tcp' | 'udp';
    outcome: 'connected' | 'refused' | 'no-answer' | 'failed';
    detail: string | null;
  }[];
  /** The class birthday punching measured; null: not measured; undefined: an older gateway. */
  class?: { nat: NatClassName; at: number } | null;
  /** Birthday attempts per peer, peers with any; undefined: an older gateway. */
  birthdays?: BirthdayEntry[];
}
export const MAX_NAT_ENTRIES = 64;

export type NatClassName = 'easy' | 'hard' | 'unknown';
export type BirthdayOutcome = 'connected' | 'no-hit' | 'failed' | 'skipped';
export const BIRTHDAY_OUTCOMES: readonly BirthdayOutcome[] = ['connected', 'no-hit', 'failed', 'skipped'];
export interface BirthdayEntry {
  peer: string;
  lastAt: number;
  outcomes: Partial<Record<BirthdayOutcome, number>>;
}

export interface GatewayStatus {
  format: typeof STATUS_FORMAT;
  node: string;
  now: number;
  ready: boolean;
  readiness: string;
  tunnel: { state: TunnelStateName; detail: string; listenPort: number | null; servers: ServerEntry[] };
  peers: PeerEntry[];
  omittedPeers: number;
  nat: NatSection;
}

type Loose = Record<string, unknown>;
const isRecord = (v: unknown): v is Loose => typeof v === 'object' && v !== null && !Array.isArray(v);

class Reader {
  readonly where: string;
  constructor(where: string) {
    this.where = where;
  }
  bool(v: unknown, field: string): boolean {
    return typeof v === 'boolean' ? v : this.fail(field, 'is not true or false');
  }
  fail(field: string, what: string): never {
    throw new Error(`${this.where}: ${field} ${what}`);
  }
  record(v: unknown, field: string): Loose {
    return isRecord(v) ? v : this.fail(field, 'is not an object');
  }
  text(v: unknown, field: string): string {
    if (typeof v !== 'string') this.fail(field, 'is not a string');
    if (v.length > MAX_TEXT) this.fail(field, `is longer than ${MAX_TEXT} characters`);
    return v;
  }
  textOrNull(v: unknown, field: string): string | null {
    return v === null || v === undefined ? null : this.text(v, field);
  }
  count(v: unknown, field: string): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
      this.fail(field, 'is not a non-negative integer');
    return v;
  }
  port(v: unknown, field: string): number {
    const n = this.count(v, field);
    return n <= 65535 ? n : this.fail(field, 'is not a port');
  }
  time(v: unknown, field: string): number {
    return this.count(v, field);
  }
  timeOrNull(v: unknown, field: string): number | null {
    return v === null || v === undefined ? null : this.time(v, field);
  }
  msOrNull(v: unknown, field: string): number | null {
    if (v === null || v === undefined) return null;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 3_600_000)
      this.fail(field, 'is not a round-trip time in ms');
    return v;
  }
  /** Absent stays undefined (an older gateway), null stays null, else `read`. */
  optional<T>(v: unknown, read: (v: unknown) => T): T | null | undefined {
    if (v === undefined) return undefined;
    return v === null ? null : read(v);
  }
  list(v: unknown, field: string, max: number): unknown[] {
    if (!Array.isArray(v)) this.fail(field, 'is not a list');
    if (v.length > max) this.fail(field, `has ${v.length} entries, more than ${max}`);
    return v;
  }
  oneOf<T extends string>(v: unknown, field: string, choices: readonly T[]): T {
    if (typeof v !== 'string' || !choices.includes(v as T))
      this.fail(field, `is not one of ${choices.join(', ')}`);
    return v as T;
  }
}

function readDatagrams(r: Reader, v: unknown, f: string): DatagramEntry {
  const e = r.record(v, f);
  const out = {} as DatagramEntry;
  for (const k of DATAGRAM_FIELDS) out[k] = r.count(e[k], `${f}.${k}`);
  return out;
}

function readLane(r: Reader, v: unknown, f: string): LaneEntry {
  const e = r.record(v, f);
  return {
    state: r.oneOf(e.state, `${f}.state`, LANE_STATES),
    peer: r.textOrNull(e.peer, `${f}.peer`),
    sent: r.count(e.sent, `${f}.sent`),
    probesSent: r.count(e.probesSent, `${f}.probesSent`),
    probesTaken: r.count(e.probesTaken, `${f}.probesTaken`),
    refused: r.count(e.refused, `${f}.refused`),
    ...(e.window === undefined ? {} : { window: readLaneWindow(r, e.window, `${f}.window`) }),
  };
}

function readLaneWindow(r: Reader, v: unknown, f: string): LaneWindowEntry {
  const e = r.record(v, f);
  const out = { rttMs: r.msOrNull(e.rttMs, `${f}.rttMs`) ?? 0 } as LaneWindowEntry;
  for (const k of WINDOW_COUNTS) out[k] = r.count(e[k], `${f}.${k}`);
  return out;
}

function readHealth(r: Reader, v: unknown, f: string): PathHealthEntry | null {
  if (v === null) return null;
  const h = r.record(v, f);
  const state = r.oneOf(h.state, `${f}.state`, ['ok', 'degraded'] as const);
  let why: DegradedWhy | null = null;
  if (h.why !== null && h.why !== undefined) {
    const w = r.record(h.why, `${f}.why`);
    const kind = r.oneOf(w.kind, `${f}.why.kind`, ['loss', 'rtt-spike'] as const);
    if (kind === 'loss') {
      const of = r.count(w.of, `${f}.why.of`);
      const lost = r.count(w.lost, `${f}.why.lost`);
      if (lost > of) r.fail(`${f}.why.lost`, `is ${lost}, more than ${f}.why.of (${of})`);
      why = { kind, lost, of };
    } else
      why = {
        kind,
        rttMs: r.msOrNull(w.rttMs, `${f}.why.rttMs`) ?? r.fail(`${f}.why.rttMs`, 'is missing'),
        baselineMs:
          r.msOrNull(w.baselineMs, `${f}.why.baselineMs`) ?? r.fail(`${f}.why.baselineMs`, 'is missing'),
      };
  }
  return {
    state,
    since: r.timeOrNull(h.since, `${f}.since`),
    why,
    lastRttMs: r.msOrNull(h.lastRttMs, `${f}.lastRttMs`),
  };
}

/** Validates a parsed /status document; errors name `where` and the field. Pure. */
export function parseGatewayStatus(doc: unknown, where: string): GatewayStatus {
  const r = new Reader(where);
  const d = r.record(doc, 'the document');
  if (d.format !== STATUS_FORMAT)
    r.fail('format', `is ${JSON.stringify(d.format)}, not ${STATUS_FORMAT} (another edgemesh version?)`);
  const t = r.record(d.tunnel, 'tunnel');
  const servers = r.list(t.servers, 'tunnel.servers', MAX_SERVERS).map((s, i) => {
    const f = `tunnel.servers[${i}]`;
    const e = r.record(s, f);
    return {
      address: r.text(e.address, `${f}.address`),
      name: r.textOrNull(e.name, `${f}.name`),
      up: r.bool(e.up, `${f}.up`),
      observed: r.textOrNull(e.observed, `${f}.observed`),
      localPort:
        e.localPort === null || e.localPort === undefined ? null : r.port(e.localPort, `${f}.localPort`),
      ...(e.rttMs === undefined ? {} : { rttMs: r.msOrNull(e.rttMs, `${f}.rttMs`) }),
      ...(e.preferredRelay === undefined
        ? {}
        : { preferredRelay: r.bool(e.preferredRelay, `${f}.preferredRelay`) }),
    };
  });
  const n = d.nat === undefined ? { probes: [], punches: [] } : r.record(d.nat, 'nat');
  const nat: NatSection = {
    probes: r.list(n.probes, 'nat.probes', MAX_NAT_ENTRIES).map((x, i) => {
      const f = `nat.probes[${i}]`;
      const e = r.record(x, f);
      return {
        at: r.time(e.at, `${f}.at`),
        server: r.text(e.server, `${f}.server`),
        localPort: r.port(e.localPort, `${f}.localPort`),
        observed: r.text(e.observed, `${f}.observed`),
      };
    }),
    punches: r.list(n.punches, 'nat.punches', MAX_NAT_ENTRIES).map((x, i) => {
      const f = `nat.punches[${i}]`;
      const e = r.record(x, f);
      return {
        at: r.time(e.at, `${f}.at`),
        peer: r.text(e.peer, `${f}.peer`),
        transport: r.oneOf(e.transport, `${f}.transport`, ['tcp', 'udp'] as const),
        outcome: r.oneOf(e.outcome, `${f}.outcome`, ['connected', 'refused', 'no-answer', 'failed'] as const),
        detail: r.textOrNull(e.detail, `${f}.detail`),
      };
    }),
  };
  if (n.class !== undefined)
    nat.class = r.optional(n.class, (v) => {
      const c = r.record(v, 'nat.class');
      return {
        nat: r.oneOf(c.nat, 'nat.class.nat', ['easy', 'hard', 'unknown'] as const),
        at: r.time(c.at, 'nat.class.at'),
      };
    });
  if (n.birthdays !== undefined)
    nat.birthdays = r.list(n.birthdays, 'nat.birthdays', MAX_NAT_ENTRIES).map((x, i) => {
      const f = `nat.birthdays[${i}]`;
      const e = r.record(x, f);
      const o = r.record(e.outcomes, `${f}.outcomes`);
      const outcomes: BirthdayEntry['outcomes'] = {};
      for (const [k, v] of Object.entries(o))
        outcomes[r.oneOf(k, `${f}.outcomes key ${JSON.stringify(k.slice(0, 40))}`, BIRTHDAY_OUTCOMES)] =
          r.count(v, `${f}.outcomes.${k}`);
      return { peer: r.text(e.peer, `${f}.peer`), lastAt: r.time(e.lastAt, `${f}.lastAt`), outcomes };
    });
  const peers = r.list(d.peers, 'peers', MAX_PEERS).map((p, i) => {
    const f = `peers[${i}]`;
    const e = r.record(p, f);
    return {
      node: r.text(e.node, `${f}.node`),
      path: e.path === null || e.path === undefined ? null : r.oneOf(e.path, `${f}.path`, PATHS),
      rttMs: r.msOrNull(e.rttMs, `${f}.rttMs`),
      firstUseAt: r.timeOrNull(e.firstUseAt, `${f}.firstUseAt`),
      nextUpgradeAt: r.timeOrNull(e.nextUpgradeAt, `${f}.nextUpgradeAt`),
      bytesIn: r.count(e.bytesIn, `${f}.bytesIn`),
      bytesOut: r.count(e.bytesOut, `${f}.bytesOut`),
      paths: r.list(e.paths, `${f}.paths`, PATHS.length).map((x, j) => {
        const g = `${f}.paths[${j}]`;
        const q = r.record(x, g);
        return {
          path: r.oneOf(q.path, `${g}.path`, PATHS),
          transport: r.text(q.transport, `${g}.transport`),
          via: r.textOrNull(q.via, `${g}.via`),
          rttMs: r.msOrNull(q.rttMs, `${g}.rttMs`),
          streams: r.count(q.streams, `${g}.streams`),
          upAt: r.time(q.upAt, `${g}.upAt`),
          bytesIn: r.count(q.bytesIn, `${g}.bytesIn`),
          bytesOut: r.count(q.bytesOut, `${g}.bytesOut`),
          ...(q.health === undefined ? {} : { health: readHealth(r, q.health, `${g}.health`) }),
          ...(q.datagrams === undefined
            ? {}
            : { datagrams: readDatagrams(r, q.datagrams, `${g}.datagrams`) }),
          ...(q.lane === undefined ? {} : { lane: readLane(r, q.lane, `${g}.lane`) }),
        };
      }),
    };
  });
  const listenPort =
    t.listenPort === null || t.listenPort === undefined ? null : r.count(t.listenPort, 'tunnel.listenPort');
  if (listenPort !== null && listenPort > 65535) r.fail('tunnel.listenPort', 'is not a port');
  return {
    format: STATUS_FORMAT,
    node: r.text(d.node, 'node'),
    now: r.time(d.now, 'now'),
    ready: r.bool(d.ready, 'ready'),
    readiness: r.text(d.readiness, 'readiness'),
    tunnel: {
      state: r.oneOf(t.state, 'tunnel.state', STATES),
      detail: r.text(t.detail, 'tunnel.detail'),
      listenPort,
      servers,
    },
    peers,
    omittedPeers: r.count(d.omittedPeers, 'omittedPeers'),
    nat,
  };
}
