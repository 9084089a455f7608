/**
 * UDP flow table: which endpoint each client's datagrams to a service go to. Pure (clock
 * injected, no sockets, no timers); the UDP proxy (next step, see docs/udp.md) owns one and
 * keeps the upstream socket of each flow in `value`.
 *
 * A flow is (client addr:port, original destination addr:port). UDP has no close, so a flow
 * ends when it has been idle for its service's timeout — 30 s by default: kube-proxy leaves
 * UDP flows to the kernel's conntrack, whose net.netfilter.nf_conntrack_udp_timeout is 30 s
 * (120 s once replies have been seen, nf_conntrack_udp_timeout_stream) — or when the table
 * is full.
 *
 * State, by owner and lifetime:
 *   #flows       Map in least-recently-active order (a touch moves the flow to the end), so
 *                eviction at the bound takes the first entry: O(1), no sorting.
 *   flow fields  client/dst/key fixed at creation; endpoint replaced on re-pick;
 *                lastActive updated on every datagram either way; idleMs set at creation
 *                and again when the service's annotation changes (retime).
 * Expiry runs on a coarse sweep the caller schedules (one interval for the whole table, e.g.
 * every 1 s), never a timer per flow: a timer per flow costs ~200 bytes and a heap operation
 * per datagram.
 */

/** kube-proxy leaves UDP flows to conntrack, whose default UDP timeout is 30 s. */
export const DEFAULT_IDLE_MS = 30_000;
/** Bound on flows per sidecar: a port scan or a client spraying source ports cannot grow memory. */
export const DEFAULT_MAX_FLOWS = 16_384;

export interface Flow<V> {
  /** `client|dst`, the table key. */
  readonly key: string;
  /** The app's socket address, "ip:port" ("[ip]:port" for IPv6). */
  readonly client: string;
  /** Where the app sent the datagram (ClusterIP:port), as the capture reported it. */
  readonly dst: string;
  /** Chosen endpoint id (ip:port, as the balancer's Choice.id). */
  endpoint: string;
  lastActive: number;
  /**
   * This flow's idle timeout (the service's annotation, or the table default); changed by
   * `retime` when the service's annotation changes, read by the next sweep.
   */
  idleMs: number;
  /** The proxy's per-flow state (e.g. the upstream socket); undefined in pure use. */
  value: V | undefined;
}

export interface FlowTableOptions {
  idleMs?: number;
  maxFlows?: number;
  now?: () => number;
}

/** Why a flow left the table, handed to onEnd so the proxy can close its upstream socket. */
export type EndReason = 'idle' | 'evicted' | 'removed';

export interface Route {
  /** Ids of the service port's ready endpoints at this moment. */
  readonly ready: ReadonlySet<string>;
  /** Picks an endpoint for a new flow (the service's Balancer); undefined when none is ready. */
  pick(): string | undefined;
  /** Per-service idle timeout (annotation); the table default when absent. */
  readonly idleMs?: number;
}

/**
 * A route's idle timeout when it is one (a positive finite number of ms), else undefined: the
 * table's default. The catalog validates the annotation (1s..1h); this guards the table from
 * a route built elsewhere, since 0 or NaN would end a flow on its first sweep, or never.
 */
function usableIdle(ms: number | undefined): number | undefined {
  return ms !== undefined && ms > 0 && Number.isFinite(ms) ? ms : undefined;
}

export type Lookup<V> =
  | { readonly kind: 'new' | 'existing' | 'repicked'; readonly flow: Flow<V> }
  | { readonly kind: 'no-endpoint' };

export class FlowTable<V = unknown> {
  readonly #flows = new Map<string, Flow<V>>();
  readonly #idleMs: number;
  readonly #maxFlows: number;
  readonly #now: () => number;
  readonly #onEnd: (flow: Flow<V>, reason: EndReason) => void;

  constructor(options: FlowTableOptions = {}, onEnd: (flow: Flow<V>, reason: EndReason) => void = () => {}) {
    this.#idleMs = options.idleMs ?? DEFAULT_IDLE_MS;
    this.#maxFlows = options.maxFlows ?? DEFAULT_MAX_FLOWS;
    this.#now = options.now ?? Date.now;
    this.#onEnd = onEnd;
    if (!(this.#idleMs > 0)) {
      throw new RangeError(`udp flow idle timeout must be > 0 ms, got ${this.#idleMs}`);
    }
    if (!Number.isInteger(this.#maxFlows) || this.#maxFlows < 1) {
      throw new RangeError(`udp flow bound must be a positive integer, got ${this.#maxFlows}`);
    }
  }

  get size(): number {
    return this.#flows.size;
  }

  /**
   * The flow for a datagram from `client` to `dst`, created (with an endpoint from
   * route.pick) when there is none, re-picked when its endpoint has left route.ready.
   * Counts as activity. An idle flow not yet swept is treated as gone: a new pick.
   */
  lookup(client: string, dst: string, route: Route): Lookup<V> {
    const key = `${client}|${dst}`;
    const now = this.#now();
    const flow = this.#flows.get(key);
    if (flow && now - flow.lastActive < flow.idleMs) {
      this.#touch(flow, now);
      if (route.ready.has(flow.endpoint)) return { kind: 'existing', flow };
      const endpoint = route.pick();
      if (endpoint === undefined) return { kind: 'no-endpoint' };
      // The upstream socket (value) stays: the proxy re-targets it; the client keeps its flow.
      flow.endpoint = endpoint;
      return { kind: 'repicked', flow };
    }
    if (flow) this.#end(flow, 'idle');
    const endpoint = route.pick();
    if (endpoint === undefined) return { kind: 'no-endpoint' };
    while (this.#flows.size >= this.#maxFlows) {
      const oldest = this.#flows.values().next().value as Flow<V>;
      this.#end(oldest, 'evicted');
    }
    const created: Flow<V> = {
      key,
      client,
      dst,
      endpoint,
      lastActive: now,
      idleMs: usableIdle(route.idleMs) ?? this.#idleMs,
      value: undefined,
    };
    this.#flows.set(key, created);
    return { kind: 'new', flow: created };
  }

  /** A reply came back from the endpoint: the flow stays alive (both directions count). */
  touch(flow: Flow<V>): void {
    if (this.#flows.get(flow.key) === flow) this.#touch(flow, this.#now());
  }

  /** Every flow, least recently active first (e.g. to re-pick after a catalog change). */
  values(): IterableIterator<Flow<V>> {
    return this.#flows.values();
  }

  get(client: string, dst: string): Flow<V> | undefined {
    return this.#flows.get(`${client}|${dst}`);
  }

  /**
   * The flow's service changed its idle timeout (`ms` undefined: it dropped the annotation,
   * back to the table's default). Applies from the next sweep, measured from the flow's last
   * activity as before: a flow already idle longer than a shorter timeout ends then; a longer
   * one keeps a flow the old one would have ended.
   */
  retime(flow: Flow<V>, ms: number | undefined): void {
    flow.idleMs = usableIdle(ms) ?? this.#idleMs;
  }

  /** Drops a flow now (its upstream socket failed). */
  remove(flow: Flow<V>): void {
    if (this.#flows.get(flow.key) === flow) this.#end(flow, 'removed');
  }

  /**
   * Ends every flow idle for at least its timeout; returns how many. Called on one coarse
   * interval for the whole table, so a flow lives between idleMs and idleMs + interval.
   * Visits every flow: timeouts differ per service, so activity order is not expiry order.
   */
  sweep(): number {
    const now = this.#now();
    let ended = 0;
    for (const flow of this.#flows.values()) {
      if (now - flow.lastActive >= flow.idleMs) {
        this.#end(flow, 'idle');
        ended++;
      }
    }
    return ended;
  }

  #touch(flow: Flow<V>, now: number): void {
    flow.lastActive = now;
    // Move to the end: the Map's order stays least-recently-active first, for eviction.
    this.#flows.delete(flow.key);
    this.#flows.set(flow.key, flow);
  }

  #end(flow: Flow<V>, reason: EndReason): void {
    this.#flows.delete(flow.key);
    this.#onEnd(flow, reason);
  }
}
