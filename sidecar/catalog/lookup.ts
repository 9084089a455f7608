/**
 * How the DNS server and the proxy make sure the catalog store holds what a query or a
 * connection needs before they read it. With the full catalog in-process (`--catalog-file`,
 * `--objects`, the feed) the store holds everything: HOLDS_EVERYTHING. With the on-demand
 * catalog (on-demand.ts) a miss asks the node's gateway.
 */
import type { LookupKey } from '../../lib/catalog/lookup-protocol.ts';

/** found / missing: the gateway answered (the store now says so); unavailable: it could not be asked. */
export type LookupResult = 'found' | 'missing' | 'unavailable';

/**
 * A caller's per-key slot (the DNS resolver keeps one per query name): the lookup may keep
 * there what answers the key again without a map lookup. Opaque to the caller.
 */
export interface LookupMemo {
  held?: unknown;
}

export interface CatalogLookup {
  /**
   * Undefined when the store answers `key` now (what is held, or a cached negative answer);
   * otherwise a promise that settles once it does. Never rejects. `id`: keyString(key), when
   * the caller keeps it (the DNS resolver: the hot path then builds no string); `memo`: the
   * caller's slot for this key.
   */
  ensure(key: LookupKey, id?: string, memo?: LookupMemo): Promise<LookupResult> | undefined;
  /**
   * ensure() with a callback instead of a promise (the DNS resolver's first query: no promise,
   * no reaction job, no second closure). False when the store answers `key` now; true when
   * `done` will be called once, later, with the result. Optional: callers fall back to ensure().
   */
  ensureThen?(
    key: LookupKey,
    id: string,
    memo: LookupMemo | undefined,
    done: (r: LookupResult) => void,
  ): boolean;
}

export const HOLDS_EVERYTHING: CatalogLookup = { ensure: () => undefined };
