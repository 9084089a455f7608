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

  get catalog(): Catalog | undefined {
    return this.#catalog;
  }

  /** Brings the index to `catalog`, which `update` produced from the catalog last applied. */
  apply(catalog: Catalog, update: CatalogUpdate): void {
    const before = this.#catalog;
    this.#catalog = catalog;
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
    return this.#byIP.sorted(ip).slice(0, max);
  }

  namespaceExists(namespace: string): boolean {
    if (!this.#catalog) return false;
    return namespaceExists(this.#catalog, namespace, (this.#servicesPerNamespace.get(namespace) ?? 0) > 0);
  }

  /** Addresses indexed (tests, metrics). */
  get addresses(): number {
    return this.#byIP.size;
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
