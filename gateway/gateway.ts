/**
 * One gateway per node: the persisted catalog first (served at once, before the API
 * answers), then the API watcher, the sidecar listener (feed + CONNECT) and persistence.
 */

import type net from 'node:net';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import { CatalogStore } from '../lib/catalog/store.ts';
import { compactWhenQuiet, keepHeapInBudget } from '../lib/heap.ts';
import { type ApiClient, apiFromKubeConfig } from '../lib/kube/client.ts';
import type { Logger } from '../lib/log.ts';
import { createRegistry, defaultMetricsHosts, serveMetricsOn } from '../lib/metrics.ts';
import { Admission } from './admission.ts';
import { FeedHub } from './feed.ts';
import { LookupHub } from './lookup.ts';
import { gatewayMetrics, tunnelStateMetrics } from './metrics.ts';
import { CatalogPersister, loadCatalog } from './persist.ts';
import { PodMoves, podIdentity, podMovesMessage, receivePodMoves } from './pod-moves.ts';
import { readinessAnswer } from './readiness.ts';
import { startSidecarServer } from './server.ts';
import { gatewayStatus } from './status.ts';
import { InProcessTunnel, LocalDialer, type Tunnel, type TunnelFactory } from './streams.ts';
import { followUdpIdle } from './udp-idle.ts';
import { ClusterWatcher, type EndpointsSource } from './watcher.ts';

export interface GatewayOptions {
  nodeName: string;
  stateDir: string;
  listenHost: string;
  listenPort: number;
  clusterDomain: string;
  /**
   * The API to watch: a client (lib/kube/client.ts), or a KubeConfig to make one from. Absent: no
   * API watch (the gateway serves its persisted catalog only; used by tests).
   */
  api?: ApiClient;
  kubeConfig?: KubeConfig;
  /** KubeEdge's edge API (watcher.ts has what changes). Default false. */
  edge?: boolean;
  /** Default: core/v1 Endpoints on the edge API, EndpointSlices elsewhere. */
  endpointsSource?: EndpointsSource;
  /** Edge only: seconds between relists. */
  relistSeconds?: number;
  /** Absent: no metrics listener. */
  metricsPort?: number;
  /** Addresses for /metrics and /ready (default: `defaultMetricsHosts([listenHost])`). */
  metricsHosts?: string[];
  /**
   * The tunnel to peer gateways, or a factory that gets this gateway's LocalDialer (for the
   * tunnel's far end). Absent: only same-node streams; others get UNAVAILABLE.
   */
  tunnel?: Tunnel | TunnelFactory;
  log: Logger;
  persistDelayMs?: number;
  headerTimeoutMs?: number;
  /**
   * Admit loopback sources and this node's own addresses to the sidecar port besides the
   * node's pods (admission.ts). Default true.
   */
  allowNodeLocal?: boolean;
  /** How long an unknown source waits to become a pod of this node. Default ADMISSION_HOLD_MS. */
  admissionHoldMs?: number;
}

export interface Gateway {
  store: CatalogStore;
  registry: Registry;
  dialer: LocalDialer;
  server: net.Server;
  watcher: ClusterWatcher | undefined;
  persister: CatalogPersister;
  close(): Promise<void>;
}

export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const { log } = opts;
  // Pods in place: ~100,000 of them at 10,000 services (CatalogStore says why that is safe here).
  const store = new CatalogStore({ inPlace: ['pods'] });
  // From the first allocation: a start's or restart's burst (the state file, every list built
  // into the catalog) must stay inside the container's limit (lib/heap.ts says how).
  const budget = keepHeapInBudget({
    onCollected: (info) =>
      log.debug(
        { ms: Math.round(info.ms), heapMB: Math.round(info.usedAfter / 2 ** 20) },
        'heap collected: over the memory budget',
      ),
  });
  const persisted = await loadCatalog(opts.stateDir, log);
  if (persisted) {
    store.apply({ type: 'snapshot', catalog: persisted });
    log.info(
      { revision: persisted.revision, services: Object.keys(persisted.services).length },
      'serving the persisted catalog until the API answers',
    );
  }
  const persister = new CatalogPersister(opts.stateDir, store, { log, delayMs: opts.persistDelayMs });
  // The start's burst (a state file decoded, every list built into the catalog, the first
  // snapshot line) leaves about half the heap as garbage that a quiet gateway would keep.
  const compactor = compactWhenQuiet({
    onCompacted: (info) =>
      log.info(
        { ms: Math.round(info.ms), rssMB: Math.round(info.rssAfter / 2 ** 20) },
        'heap compacted after a burst',
      ),
  });
  const feed = new FeedHub(store, { log });
  const registry = createRegistry('gateway');
  const metrics = gatewayMetrics(registry, store, () => feed.clients);
  const lookup = new LookupHub(store, { log, registry });
  const admission = new Admission(store, {
    nodeName: opts.nodeName,
    allowNodeLocal: opts.allowNodeLocal ?? true,
    holdMs: opts.admissionHoldMs,
  });
  // Pods that moved while the API was away: ours announced to peers, theirs taken for their pods.
  let tunnel: Tunnel | undefined;
  const podMoves = new PodMoves(store, {
    nodeName: opts.nodeName,
    onLocalChange: (moves) => tunnel?.broadcast?.(podMovesMessage(moves)),
  });
  const dialer = new LocalDialer(
    opts.nodeName,
    store,
    undefined,
    (ip) => podMoves.translate(ip),
    undefined,
    (ip) => lookup.servicesAt(ip),
  );
  // Open UDP flows to a Service's endpoints follow a changed edgemesh.io/udp-idle-timeout.
  const unfollowUdpIdle = followUdpIdle(store);
  const messages = {
    greeting: () => podMovesMessage(podMoves.local),
    receive: (peer: string, message: Record<string, unknown>) =>
      receivePodMoves(podMoves, peer, message, log),
  };
  tunnel =
    typeof opts.tunnel === 'function'
      ? await opts.tunnel(dialer, { store, registry, messages })
      : opts.tunnel;
  if (tunnel) tunnelStateMetrics(registry, tunnel);
  const server = await startSidecarServer({
    host: opts.listenHost,
    port: opts.listenPort,
    nodeName: opts.nodeName,
    store,
    feed,
    lookup,
    dialer,
    // Without a tunnel, a stream to another node gets a clear UNAVAILABLE answer.
    tunnel: tunnel ?? new InProcessTunnel(),
    admission,
    podMoves,
    log,
    metrics,
    headerTimeoutMs: opts.headerTimeoutMs,
  });
  log.info(
    { listen: `${opts.listenHost}:${opts.listenPort}`, node: opts.nodeName },
    'sidecar listener ready',
  );
  let metricsServer: { close(): void } | undefined;
  if (opts.metricsPort !== undefined) {
    const ready = () =>
      readinessAnswer({
        synced: store.synced,
        revision: store.current?.revision,
        tunnel: tunnel?.readiness?.(),
      });
    metricsServer = await serveMetricsOn(
      registry,
      opts.metricsHosts ?? defaultMetricsHosts([opts.listenHost]),
      {
        port: opts.metricsPort,
        routes: {
          '/ready': ready,
          // `edgemesh status` (status.ts): on this listener only, so reachable where /ready is.
          '/status': () => ({
            status: 200,
            type: 'application/json',
            body: `${JSON.stringify(
              gatewayStatus({
                node: opts.nodeName,
                now: Date.now(),
                ready: ready(),
                readiness: tunnel?.readiness?.(),
                tunnel: tunnel?.status?.(),
              }),
            )}\n`,
          }),
        },
      },
    );
  }
  let watcher: ClusterWatcher | undefined;
  const api = opts.api ?? (opts.kubeConfig ? apiFromKubeConfig(opts.kubeConfig) : undefined);
  if (api) {
    const edge = opts.edge ?? false;
    watcher = new ClusterWatcher({
      api,
      nodeName: opts.nodeName,
      edge,
      endpointsSource: opts.endpointsSource ?? (edge ? 'endpoints' : 'endpointslices'),
      relistSeconds: opts.relistSeconds,
      store: podMoves,
      onPod: (key, obj) => podMoves.apiPod(key, obj === undefined ? undefined : podIdentity(obj)),
      clusterDomain: opts.clusterDomain,
      log,
      metrics,
    });
    watcher.start();
  }
  return {
    store,
    registry,
    dialer,
    server,
    watcher,
    persister,
    async close() {
      compactor.stop();
      unfollowUdpIdle();
      budget.stop();
      await watcher?.stop();
      feed.close();
      lookup.close();
      admission.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await tunnel?.close?.();
      metricsServer?.close();
      await persister.close();
    },
  };
}
