import type net from 'node:net';
import type { Logger } from '../lib/log.ts';
import type { RelayLimits } from './limits.ts';
import type { ServerMetrics } from './metrics.ts';
import { RateLimiter } from './rate-limit.ts';
import { RelayPairs } from './relay-pairs.ts';
import { RelaySplicer } from './relay-splice.ts';

/**
 * The relay: pairs of legs waiting for their gateways (relay-pairs.ts, 10 s), spliced when
 * both are in (relay-splice.ts, with the per-node rate limit), and the per-node cap on
 * concurrent relayed sessions (limits.ts RelayLimits).
 */
export class Relay {
  readonly #pairs: RelayPairs<net.Socket>;
  readonly #splicer: RelaySplicer;
  readonly limits: RelayLimits;

  constructor(opts: { limits: RelayLimits; metrics: ServerMetrics; log: Logger }) {
    this.limits = opts.limits;
    this.#pairs = new RelayPairs<net.Socket>({
      onExpired: (legs) => {
        for (const s of legs) s.destroy();
      },
    });
    const rate = opts.limits.bytesPerSecondPerNode;
    this.#splicer = new RelaySplicer({
      limiter: rate > 0 ? new RateLimiter(rate) : undefined,
      metrics: opts.metrics,
      log: opts.log,
    });
  }

  /** node → relayed sessions it is in now (for the busiest-node gauge). */
  get activeByNode(): ReadonlyMap<string, number> {
    return this.#splicer.activeByNode;
  }

  /** Whether `a` or `b` already has as many relayed sessions as the per-node cap allows. */
  atLimit(a: string, b: string): boolean {
    const limit = this.limits.maxRelaysPerNode;
    return limit > 0 && (this.#splicer.active(a) >= limit || this.#splicer.active(b) >= limit);
  }

  /** A new pair between `a` and `b`: each one's leg token. `release` frees `a`'s pending slot. */
  open(a: string, b: string, release: () => void): { a: string; b: string } {
    return this.#pairs.open(a, b, release);
  }

  /**
   * A raw connection presented relay token `token`: held until its partner comes, then
   * spliced. False when the token is not (or no longer) valid: the caller refuses it.
   */
  arrive(token: string, socket: net.Socket): boolean {
    const r = this.#pairs.arrive(token, socket);
    if (r.kind === 'refused') return false;
    socket.on('error', () => undefined);
    if (r.kind === 'paired')
      this.#splicer.splice(r.arrived.node, r.arrived.conn, r.partner.node, r.partner.conn);
    return true;
  }
}
