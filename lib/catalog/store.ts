import type { Catalog, CatalogUpdate } from './types.ts';

export type CatalogListener = (catalog: Catalog, update: CatalogUpdate) => void;

type RecordName = 'services' | 'pods' | 'nodes' | 'namespaces';
/** Which records increments change in place (see CatalogStore): all, none, or those named. */
export type InPlace = boolean | readonly RecordName[];

/**
 * Holds the current catalog in memory and tells listeners about every change. Sources (the
 * gateway feed, a catalog file, --objects) write to it; the DNS server and the proxy read
 * `current` on each query/connection, so an update is visible at once. `synced` is false
 * until the first snapshot: DNS answers SERVFAIL for cluster names until then.
 */
export class CatalogStore {
  #catalog: Catalog | undefined;
  #listeners = new Set<CatalogListener>();
  readonly #inPlace: InPlace;

  /**
   * `inPlace`: increments change the current catalog's records in place (a new top-level
   * object still comes with each revision): `true` for all of them, or the records named.
   * For a store whose readers never keep an old catalog (the on-demand sidecar: its DNS zone
   * applies the increments, its route table is rebuilt per catalog object): copying every
   * record on every answer made a first query cost O(what is held), ~0.6 ms at 1,000
   * services. The gateway's store copies services, nodes and namespaces (its lookup index
   * un-indexes a service from the previous catalog's entry) but changes `pods` in place: at
   * 10,000 services it holds ~100,000 pods (derived from endpoints), and copying that record
   * per pod update was O(100,000) time and a few MB of garbage each (docs/scale.md); no
   * reader of the gateway's pods keeps an old catalog for them (a snapshot brings a new record).
   */
  constructor(opts: { inPlace?: InPlace } = {}) {
    this.#inPlace = opts.inPlace ?? false;
  }

  get current(): Catalog | undefined {
    return this.#catalog;
  }

  get synced(): boolean {
    return this.#catalog !== undefined;
  }

  /** Applies an update. Returns false (and changes nothing) for an out-of-order increment. */
  apply(update: CatalogUpdate): boolean {
    const next = applyUpdate(this.#catalog, update, this.#inPlace);
    if (!next) return false;
    this.#catalog = next;
    for (const listener of this.#listeners) listener(next, update);
    return true;
  }

  subscribe(listener: CatalogListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}

/**
 * The catalog after `update`, or undefined when the update cannot apply (an increment
 * before any snapshot, or one whose revision is not the next). Pure unless `inPlace` (see
 * CatalogStore): unchanged parts are shared.
 */
export function applyUpdate(
  catalog: Catalog | undefined,
  update: CatalogUpdate,
  inPlace: InPlace = false,
): Catalog | undefined {
  if (update.type === 'snapshot') return update.catalog;
  if (!catalog || update.revision !== catalog.revision + 1) return undefined;
  const own = (name: RecordName) => inPlace === true || (inPlace !== false && inPlace.includes(name));
  switch (update.type) {
    case 'service': {
      const services = own('services') ? catalog.services : { ...catalog.services };
      if (update.entry) services[update.key] = update.entry;
      else delete services[update.key];
      return { ...catalog, revision: update.revision, services };
    }
    case 'pod': {
      const pods = own('pods') ? catalog.pods : { ...catalog.pods };
      if (update.pod) pods[update.ip] = update.pod;
      else delete pods[update.ip];
      return { ...catalog, revision: update.revision, pods };
    }
    case 'node': {
      const nodes = own('nodes') ? catalog.nodes : { ...catalog.nodes };
      if (update.node) nodes[update.name] = update.node;
      else delete nodes[update.name];
      return { ...catalog, revision: update.revision, nodes };
    }
    case 'namespace': {
      const namespaces =
        own('namespaces') && catalog.namespaces ? catalog.namespaces : { ...catalog.namespaces };
      if (update.namespace) namespaces[update.name] = update.namespace;
      else delete namespaces[update.name];
      return { ...catalog, revision: update.revision, namespaces };
    }
  }
}
