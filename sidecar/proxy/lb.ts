/**
 * Load balancing over one service port's ready endpoints. Deterministic given its inputs
 * (random source and clock are injected), so every policy is unit-tested exactly.
 *
 * Policies:
 *   round-robin        next endpoint in turn (the default)
 *   random             uniform choice
 *   least-connections  fewest open connections/requests; ties broken round-robin
 *   consistent-hash    a hash ring (many virtual points per endpoint) keyed by the client IP
 *                      or, on HTTP ports, a request header; "bounded load" (Mirrokni et al.,
 *                      2016): an endpoint already carrying more than `loadFactor` × the mean
 *                      load is skipped for the next one on the ring, so one hot key cannot
 *                      pile everything onto one pod.
 * sessionAffinity ClientIP (Kubernetes): a client IP sticks to the endpoint it got until
 * `timeoutSeconds` pass without a new connection from it; the first pick for an IP goes
 * through the consistent-hash ring so restarts of the sidecar mostly keep the same choice.
 */
import { createHash } from 'node:crypto';
import type { LbPolicy } from '../../lib/catalog/types.ts';

/** An endpoint as the balancer sees it: a stable id (ip:port) and the caller's payload. */
export interface Choice<T> {
  id: string;
  value: T;
}

export interface BalancerOptions {
  policy: LbPolicy;
  /** ClientIP session affinity timeout; absent means no affinity. */
  affinityTimeoutMs?: number;
  /** Bounded-load factor for consistent hashing (c in the paper); 1.25 as in HAProxy/Envoy. */
  loadFactor?: number;
  /** Virtual points per endpoint on the ring. */
  ringPoints?: number;
  random?: () => number;
  now?: () => number;
  /** Bound on remembered client IPs (oldest dropped first) so a scan cannot grow memory. */
  maxAffinityEntries?: number;
}

export const EJECT_BASE_MS = 5_000;
export const EJECT_MAX_MS = 60_000;

export interface PickKey {
  clientIp?: string;
  /** For consistent-hash on HTTP: the value of the configured header. */
  hashKey?: string;
}

export class Balancer<T> {
  readonly policy: LbPolicy;
  readonly #options: Required<Omit<BalancerOptions, 'affinityTimeoutMs'>> & { affinityTimeoutMs?: number };
  #choices: Choice<T>[] = [];
  #byId = new Map<string, Choice<T>>();
  #next = 0;
  /** Open connections (or in-flight requests) per endpoint id. */
  #active = new Map<string, number>();
  #totalActive = 0;
  #ring: { point: number; id: string }[] = [];
  #affinity = new Map<string, { id: string; expires: number }>();
  /** Outlier ejection: endpoints whose connects failed, and until when they are skipped. */
  #ejected = new Map<string, { until: number; failures: number }>();

  constructor(options: BalancerOptions) {
    this.policy = options.policy;
    this.#options = {
      loadFactor: 1.25,
      ringPoints: 64,
      random: Math.random,
      now: Date.now,
      maxAffinityEntries: 10_000,
      ...options,
    };
  }

  get size(): number {
    return this.#choices.length;
  }

  /** Client IPs currently remembered for session affinity. */
  get affinityEntries(): number {
    return this.#affinity.size;
  }

  /** Replaces the endpoint set (after a catalog change); counts for kept endpoints survive. */
  setChoices(choices: Choice<T>[]): void {
    const sameIds =
      choices.length === this.#choices.length && choices.every((c, i) => c.id === this.#choices[i].id);
    this.#choices = choices;
    this.#byId = new Map(choices.map((c) => [c.id, c]));
    for (const id of this.#ejected.keys()) if (!this.#byId.has(id)) this.#ejected.delete(id);
    if (sameIds) return;
    if (this.#next >= choices.length) this.#next = 0;
    if (this.policy === 'consistent-hash' || this.#options.affinityTimeoutMs !== undefined) {
      this.#ring = buildRing(
        choices.map((c) => c.id),
        this.#options.ringPoints,
      );
    }
  }

  /**
   * Picks an endpoint, never one in `exclude` (endpoints that already failed for this
   * connection). Returns undefined when none is left.
   */
  pick(key: PickKey = {}, excluded?: ReadonlySet<string>): Choice<T> | undefined {
    const exclude = this.#withEjected(excluded);
    const eligible = (c: Choice<T>) => !exclude?.has(c.id);
    if (!this.#choices.some(eligible)) return undefined;
    const timeout = this.#options.affinityTimeoutMs;
    if (timeout !== undefined && key.clientIp) return this.#pickSticky(key.clientIp, timeout, exclude);
    switch (this.policy) {
      case 'random': {
        const pool = exclude?.size ? this.#choices.filter(eligible) : this.#choices;
        return pool[Math.min(pool.length - 1, Math.floor(this.#options.random() * pool.length))];
      }
      case 'least-connections':
        return this.#pickLeast(exclude);
      case 'consistent-hash': {
        const hashKey = key.hashKey ?? key.clientIp;
        return hashKey === undefined ? this.#pickRoundRobin(exclude) : this.#pickHashed(hashKey, exclude);
      }
      default:
        return this.#pickRoundRobin(exclude);
    }
  }

  /**
   * A connect to `id` failed: skip it for EJECT_BASE_MS, doubling with each further failure
   * up to EJECT_MAX_MS, so a dead or black-holed endpoint stops costing every new connection
   * a connect timeout before the kubelet marks it unready. When every endpoint is ejected the
   * ejection is ignored (like Envoy's panic threshold): trying beats refusing outright.
   */
  reportFailure(id: string): void {
    const failures = (this.#ejected.get(id)?.failures ?? 0) + 1;
    const ms = Math.min(EJECT_BASE_MS * 2 ** (failures - 1), EJECT_MAX_MS);
    this.#ejected.set(id, { until: this.#options.now() + ms, failures });
  }

  reportSuccess(id: string): void {
    if (this.#ejected.size > 0) this.#ejected.delete(id);
  }

  ejected(id: string): boolean {
    return (this.#ejected.get(id)?.until ?? 0) > this.#options.now();
  }

  #withEjected(exclude?: ReadonlySet<string>): ReadonlySet<string> | undefined {
    if (this.#ejected.size === 0) return exclude;
    const now = this.#options.now();
    const out = new Set(exclude);
    for (const [id, e] of this.#ejected) if (e.until > now) out.add(id);
    if (out.size === (exclude?.size ?? 0)) return exclude;
    return this.#choices.some((c) => !out.has(c.id)) ? out : exclude;
  }

  /** Counts a connection/request as open on `id` (least-connections and bounded load use it). */
  acquire(id: string): void {
    this.#active.set(id, (this.#active.get(id) ?? 0) + 1);
    this.#totalActive++;
  }

  release(id: string): void {
    const n = this.#active.get(id);
    if (!n) return;
    if (n === 1) this.#active.delete(id);
    else this.#active.set(id, n - 1);
    this.#totalActive--;
  }

  active(id: string): number {
    return this.#active.get(id) ?? 0;
  }

  #pickRoundRobin(exclude?: ReadonlySet<string>): Choice<T> | undefined {
    const n = this.#choices.length;
    for (let i = 0; i < n; i++) {
      const c = this.#choices[(this.#next + i) % n];
      if (!exclude?.has(c.id)) {
        this.#next = (this.#next + i + 1) % n;
        return c;
      }
    }
    return undefined;
  }

  #pickLeast(exclude?: ReadonlySet<string>): Choice<T> | undefined {
    const n = this.#choices.length;
    let best: Choice<T> | undefined;
    let bestIndex = 0;
    for (let i = 0; i < n; i++) {
      const index = (this.#next + i) % n;
      const c = this.#choices[index];
      if (exclude?.has(c.id)) continue;
      if (!best || this.active(c.id) < this.active(best.id)) {
        best = c;
        bestIndex = index;
      }
    }
    this.#next = (bestIndex + 1) % n;
    return best;
  }

  #pickHashed(hashKey: string, exclude?: ReadonlySet<string>): Choice<T> | undefined {
    const ring = this.#ring;
    if (ring.length === 0) return undefined;
    // Bounded load: capacity = ceil(c × (total + 1) / n); the +1 counts the connection being placed.
    const cap = Math.ceil((this.#options.loadFactor * (this.#totalActive + 1)) / this.#choices.length);
    let i = lowerBound(ring, hash32(hashKey));
    let fallback: Choice<T> | undefined;
    const seen = new Set<string>();
    for (let step = 0; step < ring.length && seen.size < this.#choices.length; step++, i++) {
      const id = ring[i % ring.length].id;
      if (seen.has(id)) continue;
      seen.add(id);
      const c = this.#byId.get(id);
      if (!c || exclude?.has(id)) continue;
      fallback ??= c;
      if (this.active(id) < cap) return c;
    }
    return fallback;
  }

  #pickSticky(clientIp: string, timeoutMs: number, exclude?: ReadonlySet<string>): Choice<T> | undefined {
    const now = this.#options.now();
    const entry = this.#affinity.get(clientIp);
    let choice: Choice<T> | undefined;
    if (entry && entry.expires > now && !exclude?.has(entry.id)) choice = this.#byId.get(entry.id);
    choice ??= this.#pickHashed(clientIp, exclude);
    if (!choice) return undefined;
    // Re-insert so Map order is least-recently-used first; drop the oldest past the bound.
    this.#affinity.delete(clientIp);
    this.#affinity.set(clientIp, { id: choice.id, expires: now + timeoutMs });
    if (this.#affinity.size > this.#options.maxAffinityEntries) {
      const oldest = this.#affinity.keys().next().value;
      if (oldest !== undefined) this.#affinity.delete(oldest);
    }
    return choice;
  }
}

/** 32-bit hash (first 4 bytes of SHA-1): stable across processes and well spread. */
export function hash32(text: string): number {
  return createHash('sha1').update(text).digest().readUInt32BE(0);
}

function buildRing(ids: string[], points: number): { point: number; id: string }[] {
  const ring: { point: number; id: string }[] = [];
  for (const id of ids) for (let i = 0; i < points; i++) ring.push({ point: hash32(`${id}#${i}`), id });
  ring.sort((a, b) => a.point - b.point || (a.id < b.id ? -1 : 1));
  return ring;
}

function lowerBound(ring: { point: number }[], point: number): number {
  let lo = 0;
  let hi = ring.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ring[mid].point < point) lo = mid + 1;
    else hi = mid;
  }
  return lo % ring.length;
}
