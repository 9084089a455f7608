/**
 * What the tunnel tells about itself: the document behind the gateway's /status
 * (gateway/status.ts turns it into lib/gateway-status.ts's format; `edgemesh status` and
 * `edgemesh netcheck` read that). Types only, imported by the stream interface
 * (gateway/streams.ts) as well as the tunnel, so it imports nothing of either.
 */
import type { PathKind } from '../../lib/gateway-protocol.ts';
import type { LaneWindowEntry } from '../../lib/gateway-status.ts';
import type { DatagramCounters } from '../../lib/tunnel/mux.ts';

/**
 * A path to a peer gateway, best first: `direct` (TCP to its LAN address), `punched` (TCP
 * simultaneous open or a UDP/ICE channel, coordinated by a tunnel-server), `relay` (spliced
 * by a tunnel-server). The sidecar protocol's path kinds without `local`.
 */
export type RemotePath = Exclude<PathKind, 'local'>;

/** New streams take the first usable path in this order. */
export const PATH_ORDER: readonly RemotePath[] = ['direct', 'punched', 'relay'];

export interface PathStatus {
  rttMs: number | undefined;
  streams: number;
  transport: string;
  /** Relay only: the tunnel-server replica carrying it (its name, else its address). */
  via?: string;
  upAt: number;
  bytesIn: number;
  bytesOut: number;
  /** The health verdict from its PINGs (path-choice.ts PathHealth); absent: not pinged. */
  health?: PathHealthStatus;
  /** UDP Services' datagrams on this path (lib/tunnel/mux.ts); absent: none yet. */
  datagrams?: DatagramCounters;
  /** The datagram lane beside this path's session (lanes.ts); absent: none started. */
  lane?: LaneStatus;
}

/** A datagram lane's state (dgram-lane.ts): punching until a probe comes through, then up. */
export type LaneState = 'punching' | 'up' | 'down' | 'closed';

export interface LaneCounters {
  probesSent: number;
  probesTaken: number;
  /** Probes and answers refused, by why (never answered). */
  refused: Partial<Record<'short' | 'version' | 'kind' | 'auth' | 'stale', number>>;
  /** Messages given to the socket, and send errors (ENETUNREACH, EPERM: counted, not thrown). */
  sent: number;
  sendErrors: number;
}

export interface LaneStatus {
  state: LaneState;
  /** Where the peer is seen from (the source of its newest probe). */
  peer?: string;
  counters: LaneCounters;
  /** Its congestion window (lane-window.ts), as /status reports it. */
  window: LaneWindowEntry;
}

/** Why a path was judged degraded: PING loss in the window, or an RTT spike on its baseline. */
export type DegradedWhy =
  | { kind: 'loss'; lost: number; of: number }
  | { kind: 'rtt-spike'; rttMs: number; baselineMs: number };

export interface PathHealthStatus {
  degraded: boolean;
  /** When the verdict last changed (ms epoch); absent: never (ok since the path came up). */
  since?: number;
  /** Degraded only: why. */
  why?: DegradedWhy;
  /** The last health PING's round trip (ms); absent: none yet, or the last one was lost. */
  lastRttMs?: number;
}

export interface PeerStatus {
  node: string;
  path: RemotePath | undefined;
  rttMs: number | undefined;
  paths: Partial<Record<RemotePath, PathStatus>>;
  /** Session bytes with this peer since this gateway started, closed paths included. */
  bytesIn: number;
  bytesOut: number;
  /** When this gateway first needed the peer (ms epoch): path timings are measured from here. */
  firstUseAt: number | undefined;
  /** When the background search for a direct path runs next (ms epoch), if scheduled. */
  nextUpgradeAt: number | undefined;
}

export interface ServerStatus {
  address: string;
  name: string | undefined;
  up: boolean;
  observed: string | undefined;
  /** The link's own local port (observed's port differs when the NAT changed it). */
  localPort?: number;
  /** The link's PING round trip (ms), once measured: relays go via the fastest replica. */
  rttMs?: number;
}

export interface TunnelStatus {
  node: string;
  listenPort: number;
  servers: ServerStatus[];
  peers: PeerStatus[];
  /** What the tunnel learnt of this node's NAT (`edgemesh netcheck`); nothing is sent for it. */
  nat?: NatObservations;
  /**
   * The NAT class birthday punching measured (nat-type.ts); null: not measured yet;
   * absent: birthday punching off (nothing measures it).
   */
  natClass?: { nat: 'easy' | 'hard' | 'unknown'; at: number } | null;
  /** Birthday punch attempts by peer and outcome (birthday.ts), peers with any; absent: off. */
  birthdays?: BirthdayTally[];
}

export type BirthdayOutcome = 'connected' | 'no-hit' | 'failed' | 'skipped';

export interface BirthdayTally {
  peer: string;
  outcomes: Partial<Record<BirthdayOutcome, number>>;
  /** The last attempt's end (ms epoch). */
  lastAt: number;
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
