/**
 * Compact building blocks for the catalog builder (from-objects.ts), which at 10,000
 * services × 10 endpoints holds 100,000 endpoints and as many derived pods.
 *
 * - MultiIndex: key → values, holding one value as a bare string (the common case: an IP
 *   owned by one service, a service with one slice) and a Set only for more. A Set per key
 *   costs ~150 bytes; 100,000 of them were 15 MB of the gateway's heap.
 * - Interner: one copy of values that repeat across objects (node names and namespaces on
 *   100,000 endpoints; the same port list on most slices). Bounded: past `max` distinct
 *   values new ones are returned as they are, so hostile input cannot grow it without end.
 *   Interned values are shared: nobody may mutate them (the catalog is never mutated).
 */

export class MultiIndex {
  readonly #map = new Map<string, string | Set<string>>();

  get size(): number {
    return this.#map.size;
  }

  add(key: string, value: string): void {
    const held = this.#map.get(key);
    if (held === undefined) this.#map.set(key, value);
    else if (typeof held === 'string') {
      if (held !== value) this.#map.set(key, new Set([held, value]));
    } else held.add(value);
  }

  delete(key: string, value: string): void {
    const held = this.#map.get(key);
    if (held === undefined) return;
    if (typeof held === 'string') {
      if (held === value) this.#map.delete(key);
      return;
    }
    held.delete(value);
    if (held.size === 1) this.#map.set(key, held.values().next().value as string);
    else if (held.size === 0) this.#map.delete(key);
  }

  /** The values under `key`, sorted (callers pick the first as the winner). */
  sorted(key: string): string[] {
    const held = this.#map.get(key);
    if (held === undefined) return [];
    return typeof held === 'string' ? [held] : [...held].sort();
  }
}

export const MAX_INTERNED = 100_000;

export class Interner<T> {
  readonly #map = new Map<string, T>();
  readonly #max: number;

  constructor(max = MAX_INTERNED) {
    this.#max = max;
  }

  /** The held value for `key`, else `value` (held from now on while there is room). */
  get(key: string, value: T): T {
    const held = this.#map.get(key);
    if (held !== undefined) return held;
    if (this.#map.size < this.#max) this.#map.set(key, value);
    return value;
  }

  /** A string: its held copy. */
  string(this: Interner<string>, s: string): string {
    return this.get(s, s);
  }
}
