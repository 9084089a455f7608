/**
 * The catalog as the proxy reads it: a RouteTable compiled when the catalog's revision
 * changes, and one Balancer per service port that survives catalog updates (so round-robin
 * position, connection counts and session affinity carry over when endpoints change).
 */
import type { CatalogStore } from '../../lib/catalog/store.ts';
import type { Service } from '../../lib/catalog/types.ts';
import { Balancer } from './lb.ts';
import { normalizeIp, type Route, RouteTable, type Target } from './route.ts';

export type ServiceRoute = Extract<Route, { kind: 'service' }>;

export class Router {
  readonly #store: CatalogStore;
  #table: RouteTable | undefined;
  #balancers = new Map<string, { balancer: Balancer<Target>; service: Service; revision: number }>();
  /** Told after a new table is compiled, so owners of per-target state (pools) can prune. */
  onTableChange: ((table: RouteTable) => void) | undefined;

  constructor(store: CatalogStore) {
    this.#store = store;
  }

  /** Undefined until the catalog has synced: then every destination passes through. */
  get table(): RouteTable | undefined {
    const catalog = this.#store.current;
    if (!catalog) return undefined;
    if (!this.#table || this.#table !== tableCache.get(catalog)) {
      let table = tableCache.get(catalog);
      if (!table) {
        table = new RouteTable(catalog);
        tableCache.set(catalog, table);
      }
      this.#table = table;
      for (const key of this.#balancers.keys()) if (!table.serviceKeys.has(key)) this.#balancers.delete(key);
      this.onTableChange?.(table);
    }
    return this.#table;
  }

  resolve(ip: string, port: number): Route {
    const table = this.table;
    if (table) return table.resolve(ip, port);
    return { kind: 'passthrough', target: { id: `${ip}:${port}`, ip, port } };
  }

  /**
   * Calls `listener` after every catalog change. The store calls its listeners synchronously
   * inside apply(), once the new catalog is current: before any connection is routed by it.
   */
  subscribe(listener: () => void): () => void {
    return this.#store.subscribe(() => listener());
  }

  /**
   * Every original destination that resolves to a service port (each ClusterIP × TCP port),
   * with its route as resolve() returns it; empty until the catalog has synced.
   */
  serviceDestinations(): { ip: string; port: number; route: ServiceRoute }[] {
    const table = this.table;
    const catalog = this.#store.current;
    if (!table || !catalog) return [];
    const out: { ip: string; port: number; route: ServiceRoute }[] = [];
    for (const { service } of Object.values(catalog.services)) {
      for (const ip of service.clusterIPs) {
        for (const port of service.ports) {
          const route = table.resolve(ip, port.port);
          if (route.kind === 'service') out.push({ ip: normalizeIp(ip), port: port.port, route });
        }
      }
    }
    return out;
  }

  /** The balancer of a service port, with its endpoint set brought up to date. */
  balancer(route: ServiceRoute): Balancer<Target> {
    const revision = this.#table?.revision ?? -1;
    let entry = this.#balancers.get(route.key);
    if (entry && entry.service !== route.service && !sameLbSettings(entry.service, route.service)) {
      entry = undefined; // policy or affinity changed: start afresh
    }
    if (!entry) {
      const affinity = route.service.sessionAffinity;
      const balancer = new Balancer<Target>({
        policy: route.service.lbPolicy,
        ...(affinity.type === 'ClientIP' ? { affinityTimeoutMs: affinity.timeoutSeconds * 1000 } : {}),
      });
      balancer.setChoices(route.targets.map((t) => ({ id: t.id, value: t })));
      entry = { balancer, service: route.service, revision };
      this.#balancers.set(route.key, entry);
    } else if (entry.revision !== revision) {
      entry.balancer.setChoices(route.targets.map((t) => ({ id: t.id, value: t })));
      entry.service = route.service;
      entry.revision = revision;
    }
    return entry.balancer;
  }
}

// Tables are cached per catalog object (catalogs are immutable snapshots in the store).
const tableCache = new WeakMap<object, RouteTable>();

function sameLbSettings(a: Service, b: Service): boolean {
  const affinity = (s: Service) =>
    s.sessionAffinity.type === 'ClientIP' ? `ClientIP/${s.sessionAffinity.timeoutSeconds}` : 'None';
  return a.lbPolicy === b.lbPolicy && affinity(a) === affinity(b);
}
