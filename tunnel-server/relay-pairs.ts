import { realSchedule, type Schedule } from './timer.ts';
import { newToken } from './token.ts';

/**
 * A gateway's 'connect' makes a relay pair: one leg per gateway, each named by a token the
 * server hands out over that gateway's control session. Each gateway then dials the server
 * and presents its token ("EMT1 RELAY <token>"); when both legs are here they are spliced
 * (relay.ts). This table is the matching, with no sockets of its own (`C` is whatever the
 * caller attaches to a leg): testable alone.
 *
 * Timeout: a pair waits RELAY_PARTNER_TIMEOUT_MS from its creation for both legs; then the
 * legs that came are handed back to be closed and the tokens die. Both gateways dial as soon
 * as they read the 'relay' message, so 10 s is many round trips; the requester retries.
 */
export const RELAY_PARTNER_TIMEOUT_MS = 10_000;

export interface RelayLeg<C> {
  node: string;
  token: string;
  /** Set when the gateway has dialled in with this leg's token. */
  conn?: C;
}

interface Pair<C> {
  id: number;
  legs: [RelayLeg<C>, RelayLeg<C>];
  /** Frees the requester's pending slot (pending.ts): at the splice or at the timeout. */
  release: () => void;
  cancelTimer: () => void;
}

export type Arrival<C> =
  /** Unknown, expired or already used token: the connection is refused. */
  | { kind: 'refused' }
  /** First leg of its pair: hold the connection until the partner comes (or the timeout). */
  | { kind: 'waiting' }
  /** Both legs here: the pair is gone from the table; splice `arrived` with `partner`. */
  | { kind: 'paired'; arrived: { node: string; conn: C }; partner: { node: string; conn: C } };

export interface RelayPairsOptions<C> {
  /** Called with the connections of a pair that timed out, to be closed. */
  onExpired: (conns: C[]) => void;
  timeoutMs?: number;
  schedule?: Schedule;
  token?: () => string;
}

export class RelayPairs<C> {
  // Both maps are owned here and change together: a pair is in #pairs and its two tokens in
  // #byToken from open() until it is paired or expires, then all three entries go at once.
  /** pair id → pair (both legs: the partner of a leg is the pair's other leg, no scan). */
  readonly #pairs = new Map<number, Pair<C>>();
  /** leg token → its pair and which of the two legs it is. */
  readonly #byToken = new Map<string, { pair: Pair<C>; side: 0 | 1 }>();
  #nextId = 1;
  readonly #opts: Required<RelayPairsOptions<C>>;

  constructor(opts: RelayPairsOptions<C>) {
    this.#opts = {
      timeoutMs: RELAY_PARTNER_TIMEOUT_MS,
      schedule: realSchedule,
      token: newToken,
      ...opts,
    };
  }

  /** Pairs waiting for a leg. */
  get size(): number {
    return this.#pairs.size;
  }

  /** A new pair between `a` (the requester) and `b`: the tokens to hand each of them. */
  open(a: string, b: string, release: () => void): { a: string; b: string } {
    const id = this.#nextId++;
    const legs: [RelayLeg<C>, RelayLeg<C>] = [
      { node: a, token: this.#opts.token() },
      { node: b, token: this.#opts.token() },
    ];
    const pair: Pair<C> = {
      id,
      legs,
      release,
      cancelTimer: this.#opts.schedule(() => this.#expire(pair), this.#opts.timeoutMs),
    };
    this.#pairs.set(id, pair);
    legs.forEach((leg, side) => {
      this.#byToken.set(leg.token, { pair, side: side as 0 | 1 });
    });
    return { a: legs[0].token, b: legs[1].token };
  }

  /** A gateway dialled in with `token`. */
  arrive(token: string, conn: C): Arrival<C> {
    const entry = this.#byToken.get(token);
    if (!entry) return { kind: 'refused' };
    const { pair, side } = entry;
    const leg = pair.legs[side];
    if (leg.conn !== undefined) return { kind: 'refused' };
    leg.conn = conn;
    const other = pair.legs[1 - side];
    if (other.conn === undefined) return { kind: 'waiting' };
    this.#remove(pair);
    pair.cancelTimer();
    pair.release();
    return {
      kind: 'paired',
      arrived: { node: leg.node, conn },
      partner: { node: other.node, conn: other.conn },
    };
  }

  #expire(pair: Pair<C>): void {
    if (!this.#pairs.has(pair.id)) return;
    this.#remove(pair);
    pair.release();
    this.#opts.onExpired(pair.legs.flatMap((l) => (l.conn === undefined ? [] : [l.conn])));
  }

  #remove(pair: Pair<C>): void {
    this.#pairs.delete(pair.id);
    for (const leg of pair.legs) this.#byToken.delete(leg.token);
  }
}
