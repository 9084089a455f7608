/**
 * Watches the API (one watcher per node: the gateway) and keeps the CatalogStore in step.
 *
 * What it watches (docs/kubeedge.md has the why):
 *
 * | | cloud node (a full API server) | edge node (`--edge`: KubeEdge's edge API) |
 * |---|---|---|
 * | Services | all | all |
 * | endpoints | EndpointSlices (or core/v1 Endpoints by flag) | core/v1 Endpoints (or slices by flag) |
 * | Pods | this node's only (`spec.nodeName=<node>`) | this node's only |
 * | Nodes | this node's only (`metadata.name=<node>`: its own addresses, for admission) | none |
 * | Namespaces | all (DNS: an empty namespace is NODATA, a missing one NXDOMAIN) | none (not served offline: a namespace exists while it has services) |
 *
 * Pods on other nodes reach the catalog from the endpoints that name them
 * (lib/catalog/from-objects.ts); what this gateway may dial comes only from its own Pods.
 * Other Nodes are not watched: their status changes with every heartbeat, and every gateway
 * would receive every node's (at 1,000 nodes, thousands of events a second across the
 * cluster) for one use — peers' LAN addresses while no tunnel-server answers — which the
 * tunnel's site peers and peer book now serve (gateway/tunnel/peer-book.ts).
 *
 * Before every kind has been listed the gateway may already be serving a catalog it
 * persisted (offline autonomy); events then only feed the builder. The built catalog is
 * adopted once every kind has been listed *and* the Services hold `default/kubernetes` and
 * (when a catalog is already served) the endpoints are not empty: a cold edge cache answers
 * 200 with an empty or partial list, and that is not the cluster. The store then moves to it by per-key increments (diffCatalogs), so
 * sidecars see only what changed while the gateway was away; after that every event's
 * updates go straight to the store. Lists never withdraw what a cold list lacks
 * (gateway/kube/object-cache.ts).
 */
import { CatalogBuilder, diffCatalogs, type ObjectKind } from '../lib/catalog/from-objects.ts';
import { trimObject } from '../lib/catalog/object-fields.ts';
import { describeError, ErrorCodes } from '../lib/errors.ts';
import type { ApiClient } from '../lib/kube/client.ts';
import type { Logger } from '../lib/log.ts';
import { type CacheEvent, holdsKubernetesService, nonEmpty, ObjectCache } from './kube/object-cache.ts';
import { Reflector } from './kube/reflector.ts';
import type { GatewayMetrics } from './metrics.ts';
import type { CatalogSink } from './pod-moves.ts';

export type EndpointsSource = 'endpointslices' | 'endpoints';

/** Watch timeout on a full API server: client-go's informers pick 5–10 min likewise. */
const CLOUD_WATCH_SECONDS = 300;
/** On the edge API: the relist period (how soon a deletion missed offline is learned). */
export const EDGE_RELIST_SECONDS = 60;

export interface WatcherOptions {
  api: ApiClient;
  /** This node: its Pods are watched, and only they make endpoints dialable here. */
  nodeName: string;
  /** KubeEdge's edge API: no Node watch, cold lists recognised, relist after every watch. */
  edge: boolean;
  endpointsSource: EndpointsSource;
  /** Edge only: seconds between relists (the watch timeout). */
  relistSeconds?: number;
  /** Where the catalog goes: the store, or a layer before it (pod-moves.ts). */
  store: CatalogSink;
  /** Hears every event of this node's Pods (pod-moves.ts keeps their uids). */
  onPod?: (key: string, obj: unknown | undefined) => void;
  clusterDomain: string;
  log: Logger;
  metrics: GatewayMetrics;
}

interface KindSpec {
  kind: ObjectKind;
  path: string;
  fieldSelector?: string;
  isWarm?: (items: readonly unknown[]) => boolean;
  /**
   * Whether what this kind's cache holds may replace the current catalog: a cold cache's
   * Services lack default/kubernetes, its endpoints are empty. Absent: always.
   */
  adoptable?: (cache: ObjectCache) => boolean;
}

const hasKubernetes = (cache: ObjectCache) => cache.has('default/kubernetes');
const hasEndpoints = (cache: ObjectCache) => cache.has('default/kubernetes') || cache.size > 0;

/** The kinds a gateway watches, and how (pure: the table in the file comment). */
export function watchedKinds(opts: {
  nodeName: string;
  edge: boolean;
  endpointsSource: EndpointsSource;
}): KindSpec[] {
  const kinds: KindSpec[] = [
    { kind: 'Service', path: '/api/v1/services', isWarm: holdsKubernetesService, adoptable: hasKubernetes },
    opts.endpointsSource === 'endpoints'
      ? { kind: 'Endpoints', path: '/api/v1/endpoints', isWarm: nonEmpty, adoptable: hasEndpoints }
      : {
          kind: 'EndpointSlice',
          path: '/apis/discovery.k8s.io/v1/endpointslices',
          isWarm: nonEmpty,
          adoptable: hasEndpoints,
        },
    {
      kind: 'Pod',
      path: '/api/v1/pods',
      fieldSelector: `spec.nodeName=${opts.nodeName}`,
      // The edge API filters a LIST from its local cache by metadata.name/namespace only,
      // so offline this selector matches nothing: an empty pod list there proves nothing.
      isWarm: opts.edge ? nonEmpty : undefined,
    },
  ];
  if (!opts.edge)
    kinds.push({ kind: 'Node', path: '/api/v1/nodes', fieldSelector: `metadata.name=${opts.nodeName}` });
  if (!opts.edge) kinds.push({ kind: 'Namespace', path: '/api/v1/namespaces' });
  return kinds;
}

export class ClusterWatcher {
  readonly #opts: WatcherOptions;
  readonly #builder: CatalogBuilder;
  readonly #kinds: KindSpec[];
  readonly #caches = new Map<ObjectKind, ObjectCache>();
  readonly #reflectors: Reflector[] = [];
  readonly #listed = new Set<ObjectKind>();
  #synced = false;
  #waitingLogged = false;

  constructor(opts: WatcherOptions) {
    this.#opts = opts;
    this.#kinds = watchedKinds(opts);
    this.#builder = new CatalogBuilder({
      clusterDomain: opts.clusterDomain,
      nodeName: opts.nodeName,
      // A restart's persisted catalog: equal items are shared, not held twice.
      reuse: opts.store.current,
      onProblem: (problem) => {
        opts.metrics.objectProblems.inc();
        opts.log.warn({ problem }, 'object skipped or corrected');
      },
    });
  }

  /** True once every kind has been listed and the built catalog adopted. */
  get synced(): boolean {
    return this.#synced;
  }

  /** The kinds watched, for logs and tests. */
  get kinds(): ObjectKind[] {
    return this.#kinds.map((k) => k.kind);
  }

  start(): void {
    const { api, log, edge } = this.#opts;
    log.info(
      {
        api: api.server,
        edge,
        watch: this.#kinds.map((k) => (k.fieldSelector ? `${k.kind}(${k.fieldSelector})` : k.kind)),
      },
      'watching the API',
    );
    for (const spec of this.#kinds) {
      const cache = new ObjectCache({ isWarm: spec.isWarm });
      this.#caches.set(spec.kind, cache);
      const reflector = new Reflector({
        api,
        path: spec.path,
        fieldSelector: spec.fieldSelector,
        cache,
        relist: edge,
        watchTimeoutSeconds: edge ? (this.#opts.relistSeconds ?? EDGE_RELIST_SECONDS) : CLOUD_WATCH_SECONDS,
        decode: (obj) => trimObject(spec.kind, obj),
        onEvent: (e) => this.#onEvent(spec.kind, e),
        onListed: (info) => this.#onListed(spec.kind, info),
        onError: (err, retryInMs) => this.#onError(spec.kind, err, retryInMs),
      });
      this.#reflectors.push(reflector);
      reflector.start();
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.#reflectors.map((r) => r.stop()));
    this.#opts.api.close();
  }

  #onError(kind: ObjectKind, err: Error, retryInMs: number): void {
    this.#opts.metrics.errors.inc({ code: ErrorCodes.UNAVAILABLE });
    this.#opts.log.warn(
      { kind, error: describeError(err), retryInMs, synced: this.#synced },
      `API list/watch failed: ${whatIsServed(this.#opts.store.current?.revision, this.#synced)}; retrying`,
    );
  }

  #onListed(kind: ObjectKind, info: { count: number; warm: boolean; kept: string[] }): void {
    const { log } = this.#opts;
    if (info.warm) log.info({ kind, count: info.count }, 'listed from the API');
    else
      log.warn(
        { kind, count: info.count, kept: info.kept.length },
        'list looks cold (no default/kubernetes Service, or empty): nothing withdrawn',
      );
    this.#listed.add(kind);
    this.#maybeAdopt();
  }

  #maybeAdopt(): void {
    if (this.#synced || this.#listed.size < this.#kinds.length) return;
    // With no catalog yet there is nothing to withdraw: the Services' test alone suffices.
    const serving = this.#opts.store.current !== undefined;
    const cold = this.#kinds.filter((k) => {
      const cache = this.#caches.get(k.kind);
      if (!k.adoptable || !cache || k.adoptable(cache)) return false;
      return serving || k.kind === 'Service';
    });
    if (cold.length > 0) {
      if (!this.#waitingLogged)
        this.#opts.log.warn(
          { kinds: cold.map((k) => k.kind) },
          `the API looks cold (no default/kubernetes Service yet, or no endpoints): ${whatIsServed(this.#opts.store.current?.revision, false)} until it warms up`,
        );
      this.#waitingLogged = true;
      return;
    }
    this.#adopt();
  }

  #onEvent(kind: ObjectKind, e: CacheEvent): void {
    this.#opts.metrics.kubeEvents.inc({ kind, event: e.type });
    if (kind === 'Pod') this.#opts.onPod?.(e.key, e.type === 'delete' ? undefined : e.obj);
    const updates = this.#builder.handle(kind, e.type, e.obj);
    if (!this.#synced) {
      this.#maybeAdopt(); // a cold cache warming up through the watch
      return;
    }
    for (const update of updates) {
      if (!this.#opts.store.apply(update)) {
        // Cannot happen while the builder and the store agree on revisions; recover anyway.
        this.#opts.log.error({ kind, event: e.type }, 'catalog update out of order: resending a snapshot');
        this.#adopt();
        return;
      }
      if (update.type !== 'snapshot') {
        this.#opts.log.info(
          { kind, event: e.type, key: e.key, revision: update.revision },
          `catalog ${update.type} updated`,
        );
      }
    }
  }

  /** Moves the store to the catalog built from the API objects. */
  #adopt(): void {
    const { store, log } = this.#opts;
    const built = this.#builder.catalog;
    const current = store.current;
    if (!current || current.clusterDomain !== built.clusterDomain) {
      const revision = (current?.revision ?? 0) + 1;
      store.apply({ type: 'snapshot', catalog: { ...built, revision } });
      this.#builder.rebase(revision);
      log.info({ revision, services: Object.keys(built.services).length }, 'catalog built from the API');
    } else {
      const updates = diffCatalogs(current, built);
      for (const update of updates) store.apply(update);
      this.#builder.rebase(store.current?.revision ?? 0);
      log.info(
        { changes: updates.length, revision: store.current?.revision },
        'API synced: persisted catalog brought up to date',
      );
    }
    this.#builder.endReuse();
    this.#synced = true;
  }
}

/**
 * What the node's pods are served while the API cannot be adopted, for logs: a gateway that
 * never had a catalog (none persisted, the API never listed) serves nothing, and must not
 * claim a "last catalog".
 */
export function whatIsServed(revision: number | undefined, synced: boolean): string {
  if (revision === undefined)
    return 'no catalog yet (none persisted, none listed from the API): nothing to serve';
  return synced
    ? `serving the last catalog (revision ${revision})`
    : `serving the persisted catalog (revision ${revision})`;
}
