import type { Address } from '../lib/tunnel/control.ts';
import { realSchedule, type Schedule } from './timer.ts';
import { newToken } from './token.ts';

/**
 * Punch coordination: a gateway's 'punch' gives each of the two gateways a probe token; each
 * dials the server from the port it will punch from and presents it ("EMT1 PROBE <token>"),
 * which tells the server that port's public mapping. When both probes are in, each gateway is
 * told the other's mapping ('punch-go') and both dial at once. No sockets here: testable alone.
 *
 * Timeout: PUNCH_TIMEOUT_MS from the request for both probes, then the tokens die and the
 * requester gets an error. The probes go out as soon as the gateways read their 'probe'
 * message, and a NAT mapping that waits longer may be gone; the gateways retry.
 */
export const PUNCH_TIMEOUT_MS = 5_000;

export interface Punch {
  /** The requester's request id (in 'probe', 'punch-go' and the timeout's error). */
  id: string;
  /** Requester first. */
  nodes: [string, string];
  tokens: [string, string];
  /** Each node's probe's source address, once it came. */
  observed: [Address | undefined, Address | undefined];
  /** Frees the requester's pending slot (pending.ts): when both probes came or at the timeout. */
  release: () => void;
  cancelTimer: () => void;
}

export type ProbeResult =
  /** Unknown, expired or already used token. */
  | { kind: 'refused' }
  | { kind: 'waiting' }
  /** Both probes in: the punch is gone from the table; tell both nodes. */
  | { kind: 'go'; punch: Punch; observed: [Address, Address] };

export interface PunchesOptions {
  /** Called for a punch whose probes did not both come in time (its tokens are dead). */
  onTimeout: (punch: Punch) => void;
  timeoutMs?: number;
  schedule?: Schedule;
  token?: () => string;
}

export class Punches {
  /**
   * probe token → its punch and which node's probe it is; owned here. A punch's entries go
   * one by one as probes arrive (a token is single-use), the rest when it completes or times out.
   */
  readonly #byToken = new Map<string, { punch: Punch; index: 0 | 1 }>();
  readonly #opts: Required<PunchesOptions>;

  constructor(opts: PunchesOptions) {
    this.#opts = { timeoutMs: PUNCH_TIMEOUT_MS, schedule: realSchedule, token: newToken, ...opts };
  }

  /** Live probe tokens (two per punch waiting for both probes, one when one came). */
  get tokens(): number {
    return this.#byToken.size;
  }

  start(id: string, requester: string, peer: string, release: () => void): Punch {
    const punch: Punch = {
      id,
      nodes: [requester, peer],
      tokens: [this.#opts.token(), this.#opts.token()],
      observed: [undefined, undefined],
      release,
      cancelTimer: () => undefined,
    };
    punch.cancelTimer = this.#opts.schedule(() => {
      for (const t of punch.tokens) this.#byToken.delete(t);
      release();
      this.#opts.onTimeout(punch);
    }, this.#opts.timeoutMs);
    punch.tokens.forEach((t, index) => {
      this.#byToken.set(t, { punch, index: index as 0 | 1 });
    });
    return punch;
  }

  /** A probe came with `token` from `observed`. */
  probe(token: string, observed: Address): ProbeResult {
    const entry = this.#byToken.get(token);
    if (!entry) return { kind: 'refused' };
    this.#byToken.delete(token);
    const { punch, index } = entry;
    punch.observed[index] = observed;
    const [oa, ob] = punch.observed;
    if (!oa || !ob) return { kind: 'waiting' };
    punch.cancelTimer();
    punch.release();
    return { kind: 'go', punch, observed: [oa, ob] };
  }
}
