/**
 * Rendezvous state (a relay pair waiting for its legs, a punch waiting for its probes) is
 * created when a gateway asks: this counts what each node has pending, so one misbehaving
 * gateway cannot grow the server's memory. Every pending request also times out on its own
 * (relay.ts, punch.ts); this cap bounds what can pile up before it does.
 */
export const MAX_PENDING_PER_NODE = 64;

export class PendingRequests {
  /** node → requests it has pending (> 0; a node with none has no entry). Owned here. */
  readonly #byNode = new Map<string, number>();
  readonly #max: number;

  constructor(max = MAX_PENDING_PER_NODE) {
    this.#max = max;
  }

  /** Whether `node` is at its cap (a new request is refused). */
  full(node: string): boolean {
    return this.count(node) >= this.#max;
  }

  count(node: string): number {
    return this.#byNode.get(node) ?? 0;
  }

  /** Counts a pending request against `node`; returns its release (idempotent). */
  hold(node: string): () => void {
    this.#byNode.set(node, this.count(node) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const n = this.count(node) - 1;
      if (n > 0) this.#byNode.set(node, n);
      else this.#byNode.delete(node);
    };
  }
}
