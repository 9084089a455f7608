/**
 * The gateway's indexes for on-demand lookups (lookup.ts), beside the catalog's own keyed
 * records (services by `ns/name`, pods by IP, namespaces by name):
 *
 *   address → services   every ClusterIP and endpoint IP to the services that have it
 *   namespace → count    services per namespace ("exists if it has services")
 *
 * Kept up to date from the store's updates: a service update touches only that service's
 * addresses. A snapshot (start, a relist) is compared entry by entry, by identity: the store
 * shares unchanged entries between catalogs, so only what changed is re-indexed.
 *
 * The first catalog's addresses (110,000 at 10,000 services: ~0.15 s of a restart's ~1.1 s
 * before the first LOOKUP answer, docs/scale.md round 5) are indexed in slices (indexSome),
 * not at once: a name or namespace lookup does not need them, so a restarted gateway answers
 * those while the slices run between other work. Whatever needs the addresses first (an IP
 * lookup, a service update or snapshot, `addresses`) indexes the rest at once, so nothing ever
 * sees a partial index.
 */
import { MultiIndex } from '../lib/catalog/compact.ts';
import type { Catalog, CatalogUpdate, ServiceEntry } from '../lib/catalog/types.ts';
import { namespaceExists } from '../lib/catalog/types.ts';

export class CatalogIndex {
  #catalog: Catalog | undefined;
  // One service per address is the common case: a bare string, not a Set each (110,000 Sets
  // were ~15 MB of a gateway's heap at 10,000 services).
  readonly #byIP = new MultiIndex();
  readonly #servicesPerNamespace = new Map<string, number>();
  /**
   * The first catalog's services not yet in #byIP: its services record (never mutated: the
   * store makes a new one per change, and apply finishes this before taking one), its keys,
   * and how many of them are indexed.
   */
  #pending: { services: Record<string, ServiceEntry>; keys: string[]; next: number } | undefined;

  get catalog(): Catalog | undefined {
    return this.#catalog;
  }

  /** Brings the index to `catalog`, which `update` produced from the catalog last applied. */
  apply(catalog: Catalog, update: CatalogUpdate): void {
    if (update.type === 'service' || update.type === 'snapshot') this.#finish();
    const before = this.#catalog;
    this.#catalog = catalog;
    if (update.type === 'snapshot' && before === undefined) {
      // The first catalog: its namespaces now (10,000 counts), its addresses in slices.
      const keys = Object.keys(catalog.services);
      for (const key of keys) this.#count(catalog.services[key].service.namespace, 1);
      if (keys.length > 0) this.#pending = { services: catalog.services, keys, next: 0 };
      return;
    }
    if (update.type === 'service') {
      this.#replace(update.key, before?.services[update.key], update.entry ?? undefined);
      return;
    }
    if (update.type !== 'snapshot') return; // pods and namespaces are looked up in their records
    const old = before?.services ?? {};
    for (const key of Object.keys(old)) {
      if (catalog.services[key] !== old[key]) this.#replace(key, old[key], catalog.services[key]);
    }
    for (const key of Object.keys(catalog.services)) {
      if (old[key] === undefined) this.#replace(key, undefined, catalog.services[key]);
    }
  }

  /** Services with `ip` as a ClusterIP or an endpoint IP (canonical form), sorted, at most `max`. */
  servicesAt(ip: string, max: number): string[] {
    this.#finish();
    return this.#byIP.sorted(ip).slice(0, max);
  }

  namespaceExists(namespace: string): boolean {
    if (!this.#catalog) return false;
    return namespaceExists(this.#catalog, namespace, (this.#servicesPerNamespace.get(namespace) ?? 0) > 0);
  }

  /** Addresses indexed (tests, metrics). */
  get addresses(): number {
    this.#finish();
    return this.#byIP.size;
  }

  /** Whether the first catalog's addresses are still being indexed (indexSome has more to do). */
  get indexing(): boolean {
    return this.#pending !== undefined;
  }

  /** Indexes the addresses of up to `services` more services of the first catalog; true while some are left. */
  indexSome(services: number): boolean {
    const p = this.#pending;
    if (!p) return false;
    const end = Math.min(p.keys.length, p.next + services);
    for (; p.next < end; p.next++) {
      const key = p.keys[p.next];
      for (const ip of addressesOf(p.services[key])) this.#byIP.add(ip, key);
    }
    if (p.next < p.keys.length) return true;
    this.#pending = undefined;
    return false;
  }

  #finish(): void {
    if (this.#pending) this.indexSome(this.#pending.keys.length);
  }

  #replace(key: string, prev: ServiceEntry | undefined, next: ServiceEntry | undefined): void {
    if (prev) {
      for (const ip of addressesOf(prev)) this.#byIP.delete(ip, key);
      this.#count(prev.service.namespace, -1);
    }
    if (next) {
      for (const ip of addressesOf(next)) this.#byIP.add(ip, key);
      this.#count(next.service.namespace, 1);
    }
  }

  #count(namespace: string, delta: number): void {
    const n = (this.#servicesPerNamespace.get(namespace) ?? 0) + delta;
    if (n > 0) this.#servicesPerNamespace.set(namespace, n);
    else this.#servicesPerNamespace.delete(namespace);
  }
}

function addressesOf(entry: ServiceEntry): Set<string> {
  const out = new Set(entry.service.clusterIPs);
  for (const ep of entry.endpoints) out.add(ep.ip);
  return out;
}
