import type { Duplex } from 'node:stream';
import type { Logger } from '../lib/log.ts';
import { splice } from '../lib/splice.ts';
import type { RateLimiter } from './rate-limit.ts';

/** What the splice counts (metrics.ts ServerMetrics, or fakes in tests). */
export interface SpliceMetrics {
  relays: { inc(): void; dec(): void };
  relayBytes: { inc(n: number): void };
}

/**
 * Joins two relay legs byte for byte (what flows is the gateways' own TLS: nothing here is
 * parsed) with the mesh's splice (lib/splice.ts: backpressure, half-close, a reset ends
 * both), counting each leg's bytes and charging them to its node's rate limit when one is
 * set. A limit pauses the sending leg, never cuts it.
 */
export class RelaySplicer {
  /**
   * node → relayed sessions it is in now (> 0; none: no entry). Owned here: +1 per node at a
   * splice, −1 when it ends; read for the per-node relay cap and the busiest-node gauge.
   */
  readonly #activeByNode = new Map<string, number>();
  readonly #limiter: Pick<RateLimiter, 'charge'> | undefined;
  readonly #metrics: SpliceMetrics;
  readonly #log: Logger;

  constructor(opts: { limiter?: Pick<RateLimiter, 'charge'>; metrics: SpliceMetrics; log: Logger }) {
    this.#limiter = opts.limiter;
    this.#metrics = opts.metrics;
    this.#log = opts.log;
  }

  get activeByNode(): ReadonlyMap<string, number> {
    return this.#activeByNode;
  }

  active(node: string): number {
    return this.#activeByNode.get(node) ?? 0;
  }

  /** Splices `a` (from `nodeA`) with `b` (from `nodeB`); both are destroyed when it ends. */
  splice(nodeA: string, a: Duplex, nodeB: string, b: Duplex): void {
    for (const n of [nodeA, nodeB]) this.#activeByNode.set(n, this.active(n) + 1);
    this.#metrics.relays.inc();
    this.#log.info({ a: nodeA, b: nodeB }, 'relay spliced');
    const limiter = this.#limiter;
    const relayBytes = this.#metrics.relayBytes;
    splice(a, b, {
      // Each chunk counted and charged to the node that sent it; a limit pauses that leg.
      onChunk: (from, bytes) => {
        relayBytes.inc(bytes);
        return limiter ? limiter.charge(from === 'a' ? nodeA : nodeB, bytes) : 0;
      },
      onEnd: () => {
        this.#metrics.relays.dec();
        for (const n of [nodeA, nodeB]) {
          const left = this.active(n) - 1;
          if (left > 0) this.#activeByNode.set(n, left);
          else this.#activeByNode.delete(n);
        }
      },
    });
  }
}
