/**
 * The gateway's `/status` (lib/gateway-status.ts has the document): what the tunnel manager
 * knows of each peer, for `edgemesh status`. Served on the metrics/health listener beside
 * /ready and /metrics, so it is reachable exactly where those are (the node's address and
 * loopback, never all interfaces) and through the API server's pods/proxy; nothing new
 * listens. It tells peers' node names, paths and byte counts, nothing a /metrics scrape
 * could not already sum up, and no addresses but the tunnel-servers' view of this node.
 */
import {
  type GatewayStatus,
  MAX_NAT_ENTRIES,
  MAX_PEERS,
  MAX_SERVERS,
  type PathEntry,
  type PathHealthEntry,
  type PeerEntry,
  STATUS_FORMAT,
} from '../lib/gateway-status.ts';
import type { TunnelReadiness } from './streams.ts';
import { rankByRtt } from './tunnel/path-choice.ts';
import type { PathHealthStatus, PeerStatus, ServerStatus, TunnelStatus } from './tunnel/status.ts';

export interface StatusInput {
  node: string;
  now: number;
  /** The /ready answer now (readiness.ts). */
  ready: { status: number; body: string };
  /** Absent: no tunnel configured. */
  readiness: TunnelReadiness | undefined;
  /** Absent: not running yet (enrolling), or no tunnel. */
  tunnel: TunnelStatus | undefined;
}

const lastUse = (p: PeerStatus): number =>
  Math.max(p.firstUseAt ?? 0, ...Object.values(p.paths).map((x) => x?.upAt ?? 0));

const ms = (v: number | undefined) => (v === undefined ? null : Math.round(v * 1000) / 1000);

function healthEntry(h: PathHealthStatus): PathHealthEntry {
  const why =
    !h.degraded || !h.why
      ? null
      : h.why.kind === 'loss'
        ? { ...h.why }
        : {
            kind: h.why.kind,
            rttMs: ms(h.why.rttMs) ?? 0,
            baselineMs: ms(h.why.baselineMs) ?? 0,
          };
  return { state: h.degraded ? 'degraded' : 'ok', since: h.since ?? null, why, lastRttMs: ms(h.lastRttMs) };
}

/**
 * The replica a new relay asks first: the fastest link that is up, ties in configured order
 * (peer.ts #relay ranks the same way; a peer whose relay through it was just lost tries it
 * last, which this node-wide view does not show). None up: none preferred.
 */
function preferredRelay(servers: readonly ServerStatus[]): ServerStatus | undefined {
  return rankByRtt(
    servers.filter((s) => s.up),
    (s) => s.rttMs,
  )[0];
}

function peerEntry(p: PeerStatus): PeerEntry {
  const paths: PathEntry[] = [];
  for (const kind of ['direct', 'punched', 'relay'] as const) {
    const x = p.paths[kind];
    if (!x) continue;
    paths.push({
      path: kind,
      transport: x.transport,
      via: x.via ?? null,
      rttMs: ms(x.rttMs),
      streams: x.streams,
      upAt: x.upAt,
      bytesIn: x.bytesIn,
      bytesOut: x.bytesOut,
      health: x.health ? healthEntry(x.health) : null,
      ...(x.datagrams ? { datagrams: { ...x.datagrams } } : {}),
      ...(x.lane
        ? {
            lane: {
              state: x.lane.state,
              peer: x.lane.peer ?? null,
              sent: x.lane.counters.sent,
              probesSent: x.lane.counters.probesSent,
              probesTaken: x.lane.counters.probesTaken,
              refused: Object.values(x.lane.counters.refused).reduce((n, k) => n + (k ?? 0), 0),
              window: { ...x.lane.window },
            },
          }
        : {}),
    });
  }
  return {
    node: p.node,
    path: p.path ?? null,
    rttMs: p.rttMs === undefined ? null : Math.round(p.rttMs * 1000) / 1000,
    firstUseAt: p.firstUseAt ?? null,
    nextUpgradeAt: p.nextUpgradeAt ?? null,
    bytesIn: p.bytesIn,
    bytesOut: p.bytesOut,
    paths,
  };
}

/**
 * The MAX_PEERS most recently used peers, by node name: what /status lists and what the
 * per-peer metrics (metrics.ts peerMetrics) have series for, so both stay bounded alike.
 */
export function recentPeers(all: readonly PeerStatus[]): PeerStatus[] {
  const kept = [...all].sort((a, b) => lastUse(b) - lastUse(a)).slice(0, MAX_PEERS);
  return kept.sort((a, b) => a.node.localeCompare(b.node));
}

/** Pure: the document for what holds now, peers bounded to MAX_PEERS (most recently used). */
export function gatewayStatus(input: StatusInput): GatewayStatus {
  const all = input.tunnel?.peers ?? [];
  const kept = recentPeers(all);
  const servers = (input.tunnel?.servers ?? []).slice(0, MAX_SERVERS);
  const preferred = preferredRelay(servers);
  return {
    format: STATUS_FORMAT,
    node: input.node,
    now: input.now,
    ready: input.ready.status === 200,
    readiness: input.ready.body.split('\n')[0] ?? '',
    tunnel: {
      state: input.readiness?.state ?? 'off',
      detail: input.readiness?.detail ?? 'tunnel: off (no tunnel-servers configured: same-node streams only)',
      listenPort: input.tunnel?.listenPort ?? null,
      servers: servers.map((s) => ({
        address: s.address,
        name: s.name ?? null,
        up: s.up,
        observed: s.observed ?? null,
        localPort: s.localPort ?? null,
        rttMs: s.up ? ms(s.rttMs) : null,
        preferredRelay: s === preferred,
      })),
    },
    peers: kept.map(peerEntry),
    omittedPeers: all.length - kept.length,
    nat: {
      probes: (input.tunnel?.nat?.probes ?? []).slice(0, MAX_NAT_ENTRIES),
      punches: (input.tunnel?.nat?.punches ?? [])
        .slice(0, MAX_NAT_ENTRIES)
        .map((p) => ({ ...p, detail: p.detail ?? null })),
      // Absent where nothing measures them (birthday punching off): shown as "—", not "none".
      ...(input.tunnel?.natClass === undefined
        ? {}
        : { class: input.tunnel.natClass === null ? null : { ...input.tunnel.natClass } }),
      ...(input.tunnel?.birthdays === undefined
        ? {}
        : {
            birthdays: [...input.tunnel.birthdays]
              .sort((a, b) => b.lastAt - a.lastAt)
              .slice(0, MAX_NAT_ENTRIES)
              .map((b) => ({ peer: b.peer, lastAt: b.lastAt, outcomes: { ...b.outcomes } })),
          }),
    },
  };
}
