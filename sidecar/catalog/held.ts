/**
 * What an on-demand sidecar holds of the catalog (pure: no sockets, no timers; the clock is
 * passed in). on-demand.ts drives it from the gateway connection.
 *
 *   keys     lookup key → the topics its last answer named and when it was last used, or a
 *            negative answer and when it expires
 *   topics   service / pod / namespace → its current value (null: deleted since) and how many
 *            keys hold it; a topic no key holds is released (the gateway is told to unsubscribe)
 *
 * Lifetimes: a positive key lives until idle for `idleMs` (no DNS query or connection used it);
 * it does not expire otherwise, because the gateway pushes every change of its topics. A use
 * only sets a flag (the hot path reads no clock); sweep() turns the flag into the sweep's time,
 * so a key is released between idleMs and idleMs + two sweep intervals after its last use. A
 * negative key lives `negativeTtlMs` (CoreDNS's negative cache does the same: a name created
 * just after is seen within that time). `catalog()` is the held part of the catalog, the
 * shape the DNS zone and the proxy's route table are built from.
 */

import { samePorts } from '../../lib/catalog/lookup-compact.ts';
import type { Answer, LookupKey } from '../../lib/catalog/lookup-protocol.ts';
import { keyString, topicString } from '../../lib/catalog/lookup-protocol.ts';
import {
  CATALOG_FORMAT,
  type Catalog,
  type CatalogUpdate,
  type EndpointPort,
  type NamespaceInfo,
  type PodInfo,
  type ServiceEntry,
} from '../../lib/catalog/types.ts';

/** A service held for 10 minutes after its last use: long enough that a pod calling it every few minutes never waits. */
export const DEFAULT_IDLE_MS = 10 * 60_000;
/** As CoreDNS's default negative cache for cluster names (5 s, the zone's TTL). */
export const DEFAULT_NEGATIVE_TTL_MS = 5_000;

type Value =
  | { kind: 'svc'; key: string; value: ServiceEntry | null }
  | { kind: 'pod'; ip: string; value: PodInfo | null }
  | { kind: 'ns'; name: string; value: NamespaceInfo | null };

interface TopicState {
  refs: number;
  held: Value;
}

/**
 * A held key's state as a caller may keep it (ticket()): while `live`, setting `used` is what
 * check() does for it, without the map lookup.
 */
export interface HeldTicket {
  readonly live: boolean;
  used: boolean;
}

/**
 * One shape for both kinds (the hot path reads it on every held DNS answer: a monomorphic load).
 * Positive: `key` and `topics` set, `used` since the last sweep, `lastUsed` the sweep that saw
 * it used (or the answer's time). Negative: `key` undefined, `until` when it expires.
 */
class KeyState implements HeldTicket {
  key: LookupKey | undefined;
  topics: string[];
  used = false;
  live = true;
  lastUsed: number;
  until: number;
  constructor(key: LookupKey | undefined, topics: string[], lastUsed: number, until: number) {
    this.key = key;
    this.topics = topics;
    this.lastUsed = lastUsed;
    this.until = until;
  }
}

export type CheckResult = 'held' | 'negative' | 'miss';

const NO_TOPICS: string[] = [];

export interface HeldOptions {
  clusterDomain: string;
  idleMs?: number;
  negativeTtlMs?: number;
}

export class HeldCatalog {
  readonly #domain: string;
  readonly #idleMs: number;
  readonly #negativeTtlMs: number;
  readonly #keys = new Map<string, KeyState>();
  readonly #topics = new Map<string, TopicState>();
  #revision = 0;
  #catalog: Catalog | undefined;
  /** answer()'s list of the topics an answer names, reused (held as an exact-size copy). */
  readonly #scratch: string[] = [];
  /** Topics whose held value changed since the last drain(), with that value (null: gone). */
  readonly #changed = new Map<string, Value>();

  constructor(opts: HeldOptions) {
    this.#domain = opts.clusterDomain;
    this.#idleMs = opts.idleMs ?? DEFAULT_IDLE_MS;
    this.#negativeTtlMs = opts.negativeTtlMs ?? DEFAULT_NEGATIVE_TTL_MS;
  }

  /**
   * Whether `key` is answered by what is held (and marks it used), or must be asked for.
   * `clock` is read only for a negative answer (its expiry): a held key costs one map lookup.
   */
  check(key: string, clock: () => number): CheckResult {
    const state = this.#keys.get(key);
    if (state === undefined) return 'miss';
    if (state.key !== undefined) {
      state.used = true;
      return 'held';
    }
    if (clock() < state.until) return 'negative';
    this.#keys.delete(key);
    state.live = false;
    return 'miss';
  }

  /** The state of a key held positively, to mark it used directly while it stays live; or undefined. */
  ticket(key: string): HeldTicket | undefined {
    const state = this.#keys.get(key);
    return state?.key !== undefined ? state : undefined;
  }

  /**
   * Records the answer to `key`: what it named is held (and subscribed at the gateway), or
   * it is a negative answer. Returns the topics no key holds any more (to unsubscribe).
   * `k`: keyString(key), when the caller has it.
   */
  answer(key: LookupKey, answer: Answer, now: number, k = keyString(key)): string[] {
    this.#revision = Math.max(this.#revision, answer.revision);
    // The answer's records are held as they are (decodeReply checked them in place); no
    // intermediate arrays: a first DNS query's garbage is what the 1 MB young generation pays for.
    const topics = this.#scratch;
    topics.length = 0;
    for (const key in answer.services)
      this.#hold(topics, `svc ${key}`, {
        kind: 'svc',
        key,
        value: compactEntry(answer.services[key]),
      });
    for (const ip in answer.pods)
      this.#hold(topics, `pod ${ip}`, { kind: 'pod', ip, value: answer.pods[ip] });
    for (const name in answer.namespaces)
      this.#hold(topics, `ns ${name}`, { kind: 'ns', name, value: answer.namespaces[name] });
    return this.#keep(key, k, topics, now);
  }

  /**
   * answer() for an answer naming one service and nothing else (a compact answer,
   * lib/catalog/lookup-compact.ts): no answer object and no for-in over its records.
   */
  answerService(
    key: LookupKey,
    serviceKey: string,
    entry: ServiceEntry,
    revision: number,
    now: number,
    k = keyString(key),
  ): string[] {
    this.#revision = Math.max(this.#revision, revision);
    const topics = this.#scratch;
    topics.length = 0;
    this.#hold(topics, `svc ${serviceKey}`, { kind: 'svc', key: serviceKey, value: compactEntry(entry) });
    return this.#keep(key, k, topics, now);
  }

  /** Holds `key` with the topics its answer named (none: a negative answer); returns the released ones. */
  #keep(key: LookupKey, k: string, topics: string[], now: number): string[] {
    const prev = this.#keys.get(k);
    if (prev) prev.live = false;
    if (topics.length > 0) {
      // An exact-size copy: an array grown by push from empty has room for 17, and the
      // common answer names one topic (152 bytes held per key instead of 24).
      const held = topics.slice();
      const state = new KeyState(key, held, prev?.key !== undefined ? prev.lastUsed : now, 0);
      state.used = prev?.used ?? false;
      this.#keys.set(k, state);
    } else this.#keys.set(k, new KeyState(undefined, NO_TOPICS, now, now + this.#negativeTtlMs));
    this.#catalog = undefined;
    return prev?.key !== undefined ? this.#release(prev.topics) : NO_TOPICS;
  }

  /** One topic an answer named (its text as topicOf makes it): held, or one more key on it. */
  #hold(topics: string[], t: string, v: Value): void {
    topics.push(t);
    const state = this.#topics.get(t);
    if (state) {
      state.refs++;
      if (state.held.value !== v.value) this.#changed.set(t, v);
      state.held = v;
    } else {
      this.#topics.set(t, { refs: 1, held: v });
      this.#changed.set(t, v);
    }
  }

  /** Applies a pushed update of a held topic. Returns false when nothing held changed. */
  push(update: CatalogUpdate): boolean {
    if (update.type === 'snapshot' || update.type === 'node') return false;
    const held: Value =
      update.type === 'service'
        ? { kind: 'svc', key: update.key, value: update.entry && compactEntry(update.entry) }
        : update.type === 'pod'
          ? { kind: 'pod', ip: update.ip, value: update.pod }
          : { kind: 'ns', name: update.name, value: update.namespace };
    const state = this.#topics.get(topicOf(held));
    this.#revision = Math.max(this.#revision, update.revision);
    if (!state) return false; // unsubscribed meanwhile
    state.held = held;
    this.#changed.set(topicOf(held), held);
    this.#catalog = undefined;
    return true;
  }

  /**
   * Drops keys idle for idleMs and expired negative answers; returns the topics released. A
   * key used since the last sweep counts as used now.
   */
  sweep(now: number): string[] {
    const released: string[] = [];
    for (const [k, state] of this.#keys) {
      if (state.key !== undefined) {
        if (state.used) {
          state.used = false;
          state.lastUsed = now;
        }
        if (now - state.lastUsed < this.#idleMs) continue;
        this.#keys.delete(k);
        state.live = false;
        released.push(...this.#release(state.topics));
      } else if (now >= state.until) {
        this.#keys.delete(k);
        state.live = false;
      }
    }
    return released;
  }

  /** The keys held positively (asked again after a reconnect, to re-subscribe). */
  heldKeys(): LookupKey[] {
    const out: LookupKey[] = [];
    for (const state of this.#keys.values()) if (state.key !== undefined) out.push(state.key);
    return out;
  }

  get stats(): { keys: number; negative: number; services: number; pods: number; namespaces: number } {
    let negative = 0;
    for (const s of this.#keys.values()) if (s.key === undefined) negative++;
    const count = { svc: 0, pod: 0, ns: 0 };
    for (const t of this.#topics.values()) if (t.held.value) count[t.held.kind]++;
    return { keys: this.#keys.size, negative, services: count.svc, pods: count.pod, namespaces: count.ns };
  }

  /**
   * What changed since the last call, as catalog updates numbered from `revision` + 1 (the
   * store's): the DNS zone applies them one by one instead of re-reading all that is held.
   */
  drain(revision: number): CatalogUpdate[] {
    // Exact size: one update per first query, and push from [] reserves 17 slots.
    const out = new Array<CatalogUpdate>(this.#changed.size);
    let i = 0;
    for (const v of this.#changed.values()) {
      revision++;
      out[i++] =
        v.kind === 'svc'
          ? { type: 'service', revision, key: v.key, entry: v.value }
          : v.kind === 'pod'
            ? { type: 'pod', revision, ip: v.ip, pod: v.value }
            : { type: 'namespace', revision, name: v.name, namespace: v.value };
    }
    this.#changed.clear();
    return out;
  }

  /** The held part of the catalog; the same object until something held changes. */
  catalog(): Catalog {
    if (this.#catalog) return this.#catalog;
    const c: Catalog = {
      format: CATALOG_FORMAT,
      revision: this.#revision,
      clusterDomain: this.#domain,
      services: {},
      pods: {},
      nodes: {},
      namespaces: {},
    };
    for (const { held } of this.#topics.values()) {
      if (!held.value) continue;
      if (held.kind === 'svc') c.services[held.key] = held.value;
      else if (held.kind === 'pod') c.pods[held.ip] = held.value;
      else c.namespaces![held.name] = held.value;
    }
    this.#catalog = c;
    return c;
  }

  #release(topics: string[]): string[] {
    const released: string[] = [];
    for (const t of topics) {
      const state = this.#topics.get(t);
      if (!state) continue;
      if (--state.refs > 0) continue;
      this.#topics.delete(t);
      if (state.held.value) this.#changed.set(t, { ...state.held, value: null } as Value);
      released.push(t);
      this.#catalog = undefined;
    }
    return released;
  }
}

/**
 * Makes the endpoints of `entry` whose ports equal the previous distinct list's share that
 * array (in place; returns `entry`). The endpoints of one EndpointSlice carry the same ports
 * and the answer's JSON repeats them per endpoint: shared, ~1 KB less of a 10-endpoint
 * service is held, and what the sidecar holds is what each young-generation collection copies
 * (docs/scale.md, round 6). The gateway shares them the same way (lib/catalog/from-objects.ts);
 * entries are never changed once held, so a shared array is never written. Node names need
 * nothing: JSON.parse already makes each short string once (a heap snapshot shows none held
 * per first query).
 */
export function compactEntry(entry: ServiceEntry): ServiceEntry {
  const eps = entry.endpoints;
  let shared: EndpointPort[] | undefined;
  for (let i = 0; i < eps.length; i++) {
    const ports = eps[i].ports;
    if (shared !== undefined && shared !== ports && samePorts(shared, ports)) eps[i].ports = shared;
    else shared = ports;
  }
  return entry;
}

function topicOf(v: Value): string {
  return topicString(
    v.kind === 'svc'
      ? { kind: 'svc', key: v.key }
      : v.kind === 'pod'
        ? { kind: 'pod', ip: v.ip }
        : { kind: 'ns', namespace: v.name },
  );
}
