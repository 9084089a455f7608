import type { InspectedResponse } from './message.ts';

/**
 * A bounded cache of upstream responses. Entries live for the response's own TTL (negative
 * answers for the SOA minimum, RFC 2308), capped by `maxTtl`; served copies have their TTLs
 * counted down. Bounded by entry count and bytes. Eviction is "second chance" (CLOCK): the
 * oldest entry goes unless it was used since it was last passed over, so a hit only sets a
 * flag instead of re-inserting into the Map.
 */
export interface CacheOptions {
  maxEntries?: number;
  maxBytes?: number;
  /** Milliseconds clock, replaceable in tests. */
  now?: () => number;
}

interface Entry {
  bytes: Buffer;
  ttlOffsets: number[];
  ttls: number[];
  storedAt: number;
  expiresAt: number;
  used: boolean;
}

/** A cached response: `bytes` is shared (never modify it); TTLs are `age` seconds too high. */
export interface CacheHit {
  bytes: Buffer;
  ttlOffsets: number[];
  ttls: number[];
  age: number;
}

/** Counts the TTLs in `out` (a copy of `hit.bytes`, possibly longer) down by the hit's age. */
export function ageTtls(out: Buffer, hit: CacheHit): void {
  if (hit.age <= 0) return;
  for (let i = 0; i < hit.ttlOffsets.length; i++)
    out.writeUInt32BE(Math.max(0, hit.ttls[i] - hit.age), hit.ttlOffsets[i]);
}

export class ResponseCache {
  readonly #entries = new Map<string, Entry>();
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  readonly #now: () => number;
  #bytes = 0;

  constructor(opts: CacheOptions = {}) {
    this.#maxEntries = opts.maxEntries ?? 4096;
    this.#maxBytes = opts.maxBytes ?? 4 * 1024 * 1024;
    this.#now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.#entries.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Key of a question: lower-case name, type, class and the header bits that change answers. */
  static key(name: string, qtype: number, qclass: number, flags: number, dnssecOk: boolean): string {
    return `${name}|${qtype}|${qclass}|${flags}|${dnssecOk ? 1 : 0}`;
  }

  put(key: string, r: InspectedResponse): void {
    if (r.cacheTtl <= 0 || r.bytes.length > this.#maxBytes / 16) return;
    this.#delete(key);
    const now = this.#now();
    this.#entries.set(key, {
      bytes: r.bytes,
      ttlOffsets: r.ttlOffsets,
      ttls: r.ttls,
      storedAt: now,
      expiresAt: now + r.cacheTtl * 1000,
      used: false,
    });
    this.#bytes += r.bytes.length;
    // Each used entry is passed over at most once per eviction, so this loop is bounded.
    let chances = this.#entries.size;
    while (this.#entries.size > this.#maxEntries || this.#bytes > this.#maxBytes) {
      const [oldest, e] = this.#entries.entries().next().value ?? [];
      if (oldest === undefined || !e) break;
      if (e.used && chances-- > 0) {
        e.used = false;
        this.#entries.delete(oldest);
        this.#entries.set(oldest, e);
      } else {
        this.#delete(oldest);
      }
    }
  }

  /** The cached response for `key`, or undefined (expired entries are dropped here). */
  get(key: string): CacheHit | undefined {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    const now = this.#now();
    if (now >= e.expiresAt) {
      this.#delete(key);
      return undefined;
    }
    e.used = true;
    return {
      bytes: e.bytes,
      ttlOffsets: e.ttlOffsets,
      ttls: e.ttls,
      age: Math.floor((now - e.storedAt) / 1000),
    };
  }

  /** A copy of the cached response with its TTLs counted down, or undefined. */
  copy(key: string): Buffer | undefined {
    const hit = this.get(key);
    if (!hit) return undefined;
    const out = Buffer.from(hit.bytes);
    ageTtls(out, hit);
    return out;
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  #delete(key: string): void {
    const e = this.#entries.get(key);
    if (!e) return;
    this.#entries.delete(key);
    this.#bytes -= e.bytes.length;
  }
}
