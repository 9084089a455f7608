/**
 * Streams the gateway carries for sidecars: the local dialer (targets on this node), the
 * interface a tunnel implements for targets on other nodes (`Tunnel`: gateway/tunnel/'s
 * TunnelManager and GatewayTunnel, InProcessTunnel in tests), and `splice`, which joins a
 * stream to its target wherever the gateway does (the sidecar listener, the tunnel's far end).
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Registry } from 'prom-client';
import type { CatalogStore } from '../lib/catalog/store.ts';
import { canonicalIP } from '../lib/catalog/validate.ts';
import { EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import { isLocalPodEndpoint, type ServicesAt } from './local-endpoint.ts';
import type { RemotePath, TunnelStatus } from './tunnel/status.ts';
import { dialUdpFlow, type UdpFlow, type UdpFlowOptions } from './udp-flow.ts';
import { udpIdleFor } from './udp-idle.ts';

export type { RemotePath } from './tunnel/status.ts';

export interface StreamTarget {
  ip: string;
  port: number;
  /**
   * 'udp': a datagram stream (lib/tunnel/frame.ts OPEN_DATAGRAM) — its far end is a UDP flow
   * (gateway/udp-flow.ts) to a UDP port of a local pod endpoint. Absent or 'tcp': a byte stream.
   */
  transport?: 'tcp' | 'udp';
}

/**
 * Carries a stream to a pod endpoint on another node. The far gateway must dial the target
 * only through its own LocalDialer (which refuses anything but its local pod endpoints) and
 * the returned promise rejects with an EdgemeshError (DIAL_REFUSED, UNAVAILABLE, ...) when
 * it cannot. `path` is the path the stream took.
 */
export interface Tunnel {
  openStream(peerNode: string, target: StreamTarget): Promise<{ stream: Duplex; path: RemotePath }>;
  /** Sends a message to every peer with a session now (PeerMessages), if the tunnel can. */
  broadcast?(message: Record<string, unknown>): void;
  /** Called when the gateway shuts down, if present. */
  close?(): Promise<void>;
  /** Whether the tunnel counts against the gateway's readiness (/ready), if it can tell. */
  readiness?(): TunnelReadiness;
  /** Peers and paths for /status (status.ts); undefined until the tunnel runs. */
  status?(): TunnelStatus | undefined;
}

/**
 * The tunnel's part of the gateway's /ready. Not ready only when the tunnel cannot start
 * because of this node's own setup (`config`: an unreadable or invalid mesh CA, a placeholder
 * tunnel-servers setting, the tunnel port taken) or a tunnel-server answered and refused it
 * (`refused`: enrolment denied, a server certificate our mesh CA does not sign) — things an
 * operator must fix. No tunnel-server reachable right now (`unreachable`, or `running` with
 * no server link up) is ready: an edge node cut off from the cloud still serves its own pods
 * from the persisted catalog and reaches peers it knows from its peer book.
 */
export interface TunnelReadiness {
  state: 'starting' | 'running' | 'unreachable' | 'refused' | 'config';
  ready: boolean;
  /** One line for /ready's body: what holds and why. */
  detail: string;
  /** Tunnel-server links registered now, of how many configured (once running). */
  serversUp?: number;
  servers?: number;
}

/**
 * Makes the tunnel once the gateway's LocalDialer exists: the tunnel's far end must dial
 * through it (e.g. `dialTarget: (t) => dialer.dial(t)`).
 */
export type TunnelFactory = (
  dialer: LocalDialer,
  /**
   * The gateway's catalog (peer nodes' LAN addresses), metrics registry, and what it says
   * to peers (their messages come back to it), for the tunnel.
   */
  context: { store: CatalogStore; registry: Registry; messages?: PeerMessages },
) => Promise<Tunnel>;

/**
 * Messages between gateways over their tunnel sessions (CONTROL frames; pod-moves.ts is the
 * user). The peer's name is its session's TLS identity, never something the message says.
 */
export interface PeerMessages {
  /** Sent on every new session with a peer, so it learns the current state at once. */
  greeting(): Record<string, unknown> | undefined;
  receive(peer: string, message: Record<string, unknown>): void;
}

export const DIAL_TIMEOUT_MS = 5_000;

/** Dials targets on this node, after checking they are current endpoints of local pods. */
export class LocalDialer {
  readonly nodeName: string;
  readonly #store: CatalogStore;
  readonly #timeoutMs: number;
  readonly #translate: (ip: string) => string;
  readonly #udp: UdpFlowOptions;
  readonly #servicesAt: ServicesAt | undefined;

  constructor(
    nodeName: string,
    store: CatalogStore,
    timeoutMs = DIAL_TIMEOUT_MS,
    /** Maps a target IP before the check (pod-moves.ts: a moved pod's old IP → its new one). */
    translate: (ip: string) => string = (ip) => ip,
    /**
     * UDP flows' default idle timeout and reply bound (udp-flow.ts defaults); a flow to an
     * endpoint of a Service with edgemesh.io/udp-idle-timeout takes that Service's instead.
     */
    udp: UdpFlowOptions = {},
    /** The services at an address, kept up to date (the lookup hub's index): each check reads only those. */
    servicesAt?: ServicesAt,
  ) {
    this.nodeName = nodeName;
    this.#store = store;
    this.#timeoutMs = timeoutMs;
    this.#translate = translate;
    this.#udp = udp;
    this.#servicesAt = servicesAt;
  }

  /**
   * Throws DIAL_REFUSED unless the target is a local pod endpoint — a TCP port of it, or for
   * `transport: 'udp'` a UDP port — and UNAVAILABLE without a catalog.
   */
  check(target: StreamTarget): void {
    const catalog = this.#store.current;
    if (!catalog) throw new EdgemeshError(ErrorCodes.UNAVAILABLE, 'gateway has no catalog yet');
    const ip = canonicalIP(target.ip);
    const udp = target.transport === 'udp';
    if (
      !ip ||
      !isLocalPodEndpoint(catalog, this.nodeName, ip, target.port, udp ? 'UDP' : 'TCP', this.#servicesAt)
    ) {
      throw new EdgemeshError(
        ErrorCodes.DIAL_REFUSED,
        `${target.ip}:${target.port}${udp ? '/udp' : ''} is not an endpoint of a pod on node ${this.nodeName}`,
      );
    }
  }

  /**
   * A UDP flow to a UDP port of a local pod endpoint (the far end of a datagram stream), idle
   * after its Service's timeout (udp-idle.ts; the longest if Services share the endpoint) or
   * else the dialer's default: the sidecar ends the flow after the Service's timeout, and
   * this end must not end it sooner.
   */
  dialUdp(requested: StreamTarget): Promise<UdpFlow> {
    const ip = canonicalIP(requested.ip);
    const target = ip ? { ip: this.#translate(ip), port: requested.port } : requested;
    try {
      this.check({ ...target, transport: 'udp' });
    } catch (err) {
      return Promise.reject(err);
    }
    const catalog = this.#store.current; // check() passed: there is one
    const canonical = canonicalIP(target.ip);
    const idleMs = catalog && canonical ? udpIdleFor(catalog, canonical, target.port) : undefined;
    return dialUdpFlow(target, idleMs === undefined ? this.#udp : { ...this.#udp, idleMs });
  }

  /**
   * Checks, then connects (half-close allowed). Never throws: rejects with DIAL_REFUSED for a
   * target that is not a local pod endpoint and UNAVAILABLE when the dial fails. (A synchronous
   * throw here once escaped into the tunnel's frame handler and closed the whole session.)
   */
  dial(requested: StreamTarget & { transport?: 'tcp' }): Promise<net.Socket>;
  /** A datagram stream's target: a UDP flow (dialUdp). */
  dial(requested: StreamTarget): Promise<net.Socket | UdpFlow>;
  dial(requested: StreamTarget): Promise<net.Socket | UdpFlow> {
    if (requested.transport === 'udp') return this.dialUdp(requested);
    const ip = canonicalIP(requested.ip);
    const target = ip ? { ip: this.#translate(ip), port: requested.port } : requested;
    try {
      this.check(target);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: target.ip, port: target.port, allowHalfOpen: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, `dial ${target.ip}:${target.port} timed out`));
      }, this.#timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.setKeepAlive(true, 60_000);
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, `dial ${target.ip}:${target.port}: ${err.message}`));
      });
    });
  }
}

/**
 * A tunnel manager inside one process: "peer gateways" are LocalDialers registered by node
 * name. For tests, and as the reference for what a real tunnel must do at the far end.
 */
export class InProcessTunnel implements Tunnel {
  readonly #peers = new Map<string, LocalDialer>();

  register(dialer: LocalDialer): void {
    this.#peers.set(dialer.nodeName, dialer);
  }

  async openStream(peerNode: string, target: StreamTarget): Promise<{ stream: Duplex; path: RemotePath }> {
    const far = this.#peers.get(peerNode);
    if (!far) throw new EdgemeshError(ErrorCodes.UNAVAILABLE, `no tunnel to node ${peerNode}`);
    return { stream: await far.dial(target), path: 'direct' };
  }
}
