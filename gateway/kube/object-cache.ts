/**
 * What one reflector knows of one kind: object versions by key, and which list results it
 * may trust. Pure (no I/O, no clock): the reflector feeds it LIST results and watch events
 * and forwards the add/update/delete events it returns to the catalog builder.
 *
 * Built for KubeEdge's edge API as well as for a real API server (docs/kubeedge.md):
 * - Replays are no-ops. The edge API starts every watch by replaying every cached object as
 *   ADDED (its resourceVersion is ignored), so an event whose uid and resourceVersion equal
 *   what we hold yields nothing: no catalog revision, no churn.
 * - A LIST only withdraws what it lacks when it is *warm*: `isWarm(items)` says whether the
 *   list can be the whole truth (for Services and Endpoints: it holds `default/kubernetes`,
 *   which every API server has; a cold or partial edge cache does not). A cold list adds
 *   and updates but withdraws nothing; the keys it lacked are reported as `kept`.
 * - Stale replays stay dead. An object a warm LIST showed gone leaves a tombstone (its uid
 *   and resourceVersion); the same version coming back as ADDED — the edge cache replaying
 *   an object whose deletion it missed while offline (kubeedge #2950, #4582) — is ignored.
 *   A new object under that name has another uid, so it is taken.
 */

export type CacheEventType = 'add' | 'update' | 'delete';
export interface CacheEvent {
  type: CacheEventType;
  key: string;
  obj: unknown;
}

interface Version {
  uid: string;
  resourceVersion: string;
}

/** Tombstones kept at most (oldest dropped first): a bound on memory, not a correctness limit. */
export const MAX_TOMBSTONES = 10_000;

type Loose = Record<string, unknown>;
const metadata = (obj: unknown): Loose => {
  const m = (obj as { metadata?: unknown } | null)?.metadata;
  return typeof m === 'object' && m !== null ? (m as Loose) : {};
};

/** `namespace/name` (or `name` for cluster-scoped objects). */
export function objectKey(obj: unknown): string | undefined {
  const m = metadata(obj);
  if (typeof m.name !== 'string' || !m.name) return undefined;
  return typeof m.namespace === 'string' && m.namespace ? `${m.namespace}/${m.name}` : m.name;
}

function versionOf(obj: unknown): Version {
  const m = metadata(obj);
  return {
    uid: typeof m.uid === 'string' ? m.uid : '',
    resourceVersion: typeof m.resourceVersion === 'string' ? m.resourceVersion : '',
  };
}

// An object without uid and resourceVersion (hand-made lists in tests) is never "the same".
const same = (a: Version | undefined, b: Version): boolean =>
  !!a &&
  (b.uid !== '' || b.resourceVersion !== '') &&
  a.uid === b.uid &&
  a.resourceVersion === b.resourceVersion;

/** A Services list is warm when it holds `default/kubernetes`: every API server has it. */
export const holdsKubernetesService = (items: readonly unknown[]): boolean =>
  items.some((o) => objectKey(o) === 'default/kubernetes');

/**
 * An Endpoints or EndpointSlice list is warm when it holds anything. Not the
 * `default/kubernetes` test: Kubernetes 1.36 no longer writes that core/v1 Endpoints
 * object (measured here), so its absence proves nothing; an empty list is what a cold cache
 * answers, while a cluster with Services has endpoints.
 */
export const nonEmpty = (items: readonly unknown[]): boolean => items.length > 0;

export class ObjectCache {
  readonly #isWarm: (items: readonly unknown[]) => boolean;
  readonly #objects = new Map<string, Version>();
  readonly #tombstones = new Map<string, Version>(); // insertion order = age

  /** `isWarm` absent: every list is the whole truth (a real API server, Nodes, own Pods). */
  constructor(opts: { isWarm?: (items: readonly unknown[]) => boolean } = {}) {
    this.#isWarm = opts.isWarm ?? (() => true);
  }

  get size(): number {
    return this.#objects.size;
  }

  has(key: string): boolean {
    return this.#objects.has(key);
  }

  /** One watch event (ADDED, MODIFIED, DELETED; others are the caller's). */
  applyEvent(type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: unknown): CacheEvent | undefined {
    const key = objectKey(obj);
    if (!key) return undefined;
    if (type === 'DELETED') {
      if (!this.#objects.delete(key)) return undefined;
      return { type: 'delete', key, obj };
    }
    const version = versionOf(obj);
    const known = this.#objects.get(key);
    if (same(known, version)) return undefined; // a replay
    if (!known && same(this.#tombstones.get(key), version)) return undefined; // a stale replay
    this.#tombstones.delete(key);
    this.#objects.set(key, version);
    return { type: known ? 'update' : 'add', key, obj };
  }

  /**
   * A LIST result. Adds and updates what it holds; withdraws what it lacks only when warm.
   * `kept`: keys it lacked that stay because the list was cold.
   */
  applyList(items: readonly unknown[]): { events: CacheEvent[]; warm: boolean; kept: string[] } {
    const warm = this.#isWarm(items);
    const events: CacheEvent[] = [];
    const listed = new Set<string>();
    for (const obj of items) {
      const key = objectKey(obj);
      if (!key) continue;
      listed.add(key);
      const event = this.applyEvent('ADDED', obj);
      if (event) events.push(event);
    }
    const kept: string[] = [];
    for (const [key, version] of [...this.#objects]) {
      if (listed.has(key)) continue;
      if (!warm) {
        kept.push(key);
        continue;
      }
      this.#objects.delete(key);
      this.#tombstones.delete(key);
      this.#tombstones.set(key, version);
      if (this.#tombstones.size > MAX_TOMBSTONES) {
        const oldest = this.#tombstones.keys().next().value;
        if (oldest !== undefined) this.#tombstones.delete(oldest);
      }
      events.push({ type: 'delete', key, obj: deletedStub(key) });
    }
    return { events, warm, kept };
  }
}

/** The builder needs only the key of a deleted object. */
function deletedStub(key: string): unknown {
  const slash = key.indexOf('/');
  return {
    metadata: slash < 0 ? { name: key } : { namespace: key.slice(0, slash), name: key.slice(slash + 1) },
  };
}
