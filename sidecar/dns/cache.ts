import type { InspectedResponse } from './message.ts';

/**
 * A bounded cache of upstream responses. Entries live for the response's own TTL (negative
 * answers for the SOA minimum, RFC 2308), capped by `maxTtl`; served copies have their TTLs
 * counted down. Bounded by entry count and bytes; least recently used entries go first
 * (a Map keeps insertion order; a hit re-inserts).
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
    });
    this.#bytes += r.bytes.length;
    while (this.#entries.size > this.#maxEntries || this.#bytes > this.#maxBytes) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#delete(oldest);
    }
  }

  /** A fresh copy of the cached response with TTLs reduced by its age, or undefined. */
  get(key: string): Buffer | undefined {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    const now = this.#now();
    if (now >= e.expiresAt) {
      this.#delete(key);
      return undefined;
    }
    this.#entries.delete(key);
    this.#entries.set(key, e);
    const out = Buffer.from(e.bytes);
    const age = Math.floor((now - e.storedAt) / 1000);
    if (age > 0) {
      for (let i = 0; i < e.ttlOffsets.length; i++)
        out.writeUInt32BE(Math.max(0, e.ttls[i] - age), e.ttlOffsets[i]);
    }
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
