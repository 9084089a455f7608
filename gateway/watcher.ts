/**
 * Watches Services, EndpointSlices, Pods and Nodes (one watcher per node: the gateway) and
 * keeps the CatalogStore in step.
 *
 * Before all four kinds have been listed the gateway may already be serving a catalog it
 * persisted (offline autonomy); events then only feed the builder. Once every kind has been
 * listed the built catalog is adopted: the store moves to it by per-key increments
 * (diffCatalogs), so sidecars see only what changed while the gateway was away. After that
 * every event's updates go straight to the store.
 *
 * client-node informers stop on a list/watch error (other than 410 Gone, which they handle
 * by relisting); we restart them with backoff (RESTART_INITIAL_MS doubling to
 * RESTART_MAX_MS), and a relist after 410 reports deletions itself.
 */
import {
  CoreV1Api,
  DiscoveryV1Api,
  type Informer,
  KubeConfig,
  type KubernetesObject,
  makeInformer,
} from '@kubernetes/client-node';
import {
  CatalogBuilder,
  diffCatalogs,
  type EventType,
  type ObjectKind,
} from '../lib/catalog/from-objects.ts';
import type { CatalogStore } from '../lib/catalog/store.ts';
import { describeError, ErrorCodes } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { GatewayMetrics } from './metrics.ts';

export const RESTART_INITIAL_MS = 1_000;
export const RESTART_MAX_MS = 30_000;
const KINDS: readonly ObjectKind[] = ['Service', 'EndpointSlice', 'Pod', 'Node'];

/** In-cluster config, a kubeconfig file, or a plain URL (KubeEdge's edge API, 127.0.0.1:10550, has no auth). */
export function loadKubeConfig(opts: { kubeconfig?: string; apiServer?: string }): KubeConfig {
  const kc = new KubeConfig();
  if (opts.apiServer) {
    kc.loadFromOptions({
      clusters: [{ name: 'edge', server: opts.apiServer, skipTLSVerify: false }],
      users: [{ name: 'edge' }],
      contexts: [{ name: 'edge', cluster: 'edge', user: 'edge' }],
      currentContext: 'edge',
    });
  } else if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else kc.loadFromCluster();
  return kc;
}

export interface WatcherOptions {
  kubeConfig: KubeConfig;
  store: CatalogStore;
  clusterDomain: string;
  log: Logger;
  metrics: GatewayMetrics;
}

export class ClusterWatcher {
  readonly #opts: WatcherOptions;
  readonly #builder: CatalogBuilder;
  readonly #informers = new Map<ObjectKind, Informer<KubernetesObject>>();
  readonly #listed = new Set<ObjectKind>();
  readonly #restartDelay = new Map<ObjectKind, number>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #synced = false;
  #stopped = false;

  constructor(opts: WatcherOptions) {
    this.#opts = opts;
    this.#builder = new CatalogBuilder({
      clusterDomain: opts.clusterDomain,
      onProblem: (problem) => opts.log.warn({ problem }, 'object skipped or corrected'),
    });
  }

  /** True once every kind has been listed and the built catalog adopted. */
  get synced(): boolean {
    return this.#synced;
  }

  start(): void {
    const kc = this.#opts.kubeConfig;
    const core = kc.makeApiClient(CoreV1Api);
    const discovery = kc.makeApiClient(DiscoveryV1Api);
    const sources: Record<ObjectKind, { path: string; list: () => Promise<unknown> }> = {
      Service: { path: '/api/v1/services', list: () => core.listServiceForAllNamespaces({}) },
      EndpointSlice: {
        path: '/apis/discovery.k8s.io/v1/endpointslices',
        list: () => discovery.listEndpointSliceForAllNamespaces({}),
      },
      Pod: { path: '/api/v1/pods', list: () => core.listPodForAllNamespaces({}) },
      Node: { path: '/api/v1/nodes', list: () => core.listNode({}) },
    };
    for (const kind of KINDS) {
      const { path, list } = sources[kind];
      const listFn = async () => {
        const result = (await list()) as {
          items: KubernetesObject[];
          metadata?: { resourceVersion?: string };
        };
        // The informer adds the items right after this resolves; count the kind as listed then.
        setImmediate(() => this.#onListed(kind, result.items.length));
        return result;
      };
      const informer = makeInformer<KubernetesObject>(kc, path, listFn as never);
      for (const event of ['add', 'update', 'delete'] as const) {
        informer.on(event, (obj) => this.#onEvent(kind, event, obj));
      }
      informer.on('error', (err) => this.#onError(kind, err));
      this.#informers.set(kind, informer);
      this.#startInformer(kind);
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers) clearTimeout(t);
    await Promise.all([...this.#informers.values()].map((i) => i.stop().catch(() => {})));
  }

  #startInformer(kind: ObjectKind): void {
    if (this.#stopped) return;
    this.#informers
      .get(kind)
      ?.start()
      .catch((err: unknown) => this.#onError(kind, err));
  }

  #onError(kind: ObjectKind, err: unknown): void {
    if (this.#stopped) return;
    const delay = this.#restartDelay.get(kind) ?? RESTART_INITIAL_MS;
    this.#restartDelay.set(kind, Math.min(delay * 2, RESTART_MAX_MS));
    this.#opts.metrics.errors.inc({ code: ErrorCodes.UNAVAILABLE });
    this.#opts.log.warn(
      { kind, error: describeError(err), retryInMs: delay, synced: this.#synced },
      'API list/watch failed: serving the last catalog and retrying',
    );
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      this.#startInformer(kind);
    }, delay);
    this.#timers.add(timer);
  }

  #onListed(kind: ObjectKind, count: number): void {
    this.#restartDelay.delete(kind);
    this.#opts.log.info({ kind, count }, 'listed from the API');
    this.#listed.add(kind);
    if (!this.#synced && this.#listed.size === KINDS.length) this.#adopt();
  }

  #onEvent(kind: ObjectKind, event: EventType, obj: KubernetesObject): void {
    this.#opts.metrics.kubeEvents.inc({ kind, event });
    const updates = this.#builder.handle(kind, event, obj);
    if (!this.#synced) return;
    for (const update of updates) {
      if (!this.#opts.store.apply(update)) {
        // Cannot happen while the builder and the store agree on revisions; recover anyway.
        this.#opts.log.error({ kind, event }, 'catalog update out of order: resending a snapshot');
        this.#adopt();
        return;
      }
      if (update.type !== 'snapshot') {
        this.#opts.log.info(
          {
            kind,
            event,
            name: obj.metadata?.name,
            namespace: obj.metadata?.namespace,
            revision: update.revision,
          },
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
    this.#synced = true;
  }
}
