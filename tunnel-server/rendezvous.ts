import type net from 'node:net';
import { ErrorCodes } from '../lib/errors.ts';
import { plainIp, type ToServer, tlsRole } from '../lib/tunnel/control.ts';
import type { ServerMetrics } from './metrics.ts';
import { PendingRequests } from './pending.ts';
import { Punches } from './punch.ts';
import type { GatewayRegistry } from './registry.ts';
import type { Relay } from './relay.ts';

export type Request = Exclude<ToServer, { t: 'register' }>;

/**
 * What a registered gateway asks of the server about a peer, answered over the control
 * sessions in the registry:
 *   - signal: ICE signalling, forwarded to the peer as is;
 *   - connect: a relay pair (relay.ts), each side told its token, role and the other's info;
 *   - punch: a probe token each (punch.ts), then both told the other's mapping.
 * Both peers must be registered here. Requests that create state count against the
 * requester's pending cap (pending.ts) until they complete or time out.
 */
export class Rendezvous {
  readonly #name: string;
  readonly #registry: GatewayRegistry;
  readonly #relay: Relay;
  readonly #metrics: ServerMetrics;
  /** Relay pairs and punches waiting, per requester (released by relay-pairs.ts / punch.ts). */
  readonly #pending = new PendingRequests();
  /** Punches waiting for their probes (5 s each). */
  readonly #punches: Punches;

  constructor(opts: { name: string; registry: GatewayRegistry; relay: Relay; metrics: ServerMetrics }) {
    this.#name = opts.name;
    this.#registry = opts.registry;
    this.#relay = opts.relay;
    this.#metrics = opts.metrics;
    this.#punches = new Punches({
      onTimeout: (p) =>
        this.#registry.send(p.nodes[0], {
          t: 'error',
          id: p.id,
          code: ErrorCodes.UNAVAILABLE,
          message: 'punch probes did not arrive in time',
        }),
    });
  }

  request(node: string, msg: Request): void {
    const registry = this.#registry;
    const peer = registry.get(msg.peer);
    const self = registry.get(node);
    const refuse = (message: string) =>
      registry.send(node, { t: 'error', id: msg.id, code: ErrorCodes.UNAVAILABLE, message });
    if (!peer || !self || msg.peer === node) {
      refuse(`node ${msg.peer} is not registered at ${this.#name}`);
      return;
    }
    if (msg.t === 'signal') {
      registry.send(msg.peer, { t: 'signal', id: msg.id, peer: node, data: msg.data });
      return;
    }
    if (this.#pending.full(node)) {
      this.#metrics.refused.inc({ reason: 'pending-limit' });
      refuse('too many pending requests');
      return;
    }
    if (msg.t === 'connect') {
      if (this.#relay.atLimit(node, msg.peer)) {
        this.#metrics.refused.inc({ reason: 'relay-limit' });
        refuse(`relay limit of ${this.#relay.limits.maxRelaysPerNode} per node reached`);
        return;
      }
      const tokens = this.#relay.open(node, msg.peer, this.#pending.hold(node));
      registry.send(node, {
        t: 'relay',
        id: msg.id,
        peer: msg.peer,
        token: tokens.a,
        role: tlsRole(node, msg.peer),
        info: peer.info,
      });
      registry.send(msg.peer, {
        t: 'relay',
        id: msg.id,
        peer: node,
        token: tokens.b,
        role: tlsRole(msg.peer, node),
        info: self.info,
      });
      return;
    }
    // punch
    const p = this.#punches.start(msg.id, node, msg.peer, this.#pending.hold(node));
    this.#metrics.punches.inc();
    p.tokens.forEach((t, i) => {
      registry.send(p.nodes[i], { t: 'probe', id: p.id, peer: p.nodes[1 - i], token: t });
    });
  }

  /**
   * A raw connection presented probe token `token`: answered with its source address and
   * closed. False when the token is not (or no longer) valid: the caller refuses it.
   */
  probe(socket: net.Socket, token: string): boolean {
    const observed = { ip: plainIp(socket.remoteAddress), port: socket.remotePort ?? 0 };
    const r = this.#punches.probe(token, observed);
    if (r.kind === 'refused') return false;
    socket.end(`OK ${observed.ip} ${observed.port}\n`);
    if (r.kind === 'go') {
      const [a, b] = r.punch.nodes;
      const [oa, ob] = r.observed;
      this.#registry.send(a, { t: 'punch-go', id: r.punch.id, peer: b, addr: ob, role: tlsRole(a, b) });
      this.#registry.send(b, { t: 'punch-go', id: r.punch.id, peer: a, addr: oa, role: tlsRole(b, a) });
    }
    return true;
  }
}
