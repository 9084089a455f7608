import type { Duplex } from 'node:stream';
import type { Logger } from '../lib/log.ts';
import type { RateLimiter } from './rate-limit.ts';

/** What the splice counts (metrics.ts ServerMetrics, or fakes in tests). */
export interface SpliceMetrics {
  relays: { inc(): void; dec(): void };
  relayBytes: { inc(n: number): void };
}

/**
 * Joins two relay legs byte for byte (what flows is the gateways' own TLS: nothing here is
 * parsed), with backpressure, half-close, and each node's rate limit when one is set. A
 * limit pauses the sending leg, never cuts it.
 *
 * (gateway/streams.ts and sidecar/proxy/splice.ts have splices of their own: those join
 * plaintext streams with their own timeouts and results; this one charges bytes to a node.)
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
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      a.destroy();
      b.destroy();
      this.#metrics.relays.dec();
      for (const n of [nodeA, nodeB]) {
        const left = this.active(n) - 1;
        if (left > 0) this.#activeByNode.set(n, left);
        else this.#activeByNode.delete(n);
      }
    };
    this.#pipeOneWay(nodeA, a, b, finish);
    this.#pipeOneWay(nodeB, b, a, finish);
  }

  // Bytes from `from` (sent by `node`) to `to`, with backpressure, half-close, and the
  // node's rate limit when one is set.
  #pipeOneWay(node: string, from: Duplex, to: Duplex, finish: () => void): void {
    const limiter = this.#limiter;
    const relayBytes = this.#metrics.relayBytes;
    from.on('data', (chunk: Buffer) => {
      relayBytes.inc(chunk.length);
      if (!to.write(chunk)) from.pause();
      if (limiter) {
        const wait = limiter.charge(node, chunk.length);
        if (wait > 0) {
          from.pause();
          setTimeout(() => {
            if (to.writableNeedDrain) return; // 'drain' resumes it
            from.resume();
          }, wait).unref();
        }
      }
    });
    to.on('drain', () => from.resume());
    from.on('end', () => to.end());
    from.on('close', () => {
      // A clean half-close keeps the other direction open; a reset ends both.
      if (!from.readableEnded || to.writableFinished) finish();
    });
    from.on('error', finish);
    from.resume();
  }
}
