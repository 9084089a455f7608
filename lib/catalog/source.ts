import type { CatalogStore } from './store.ts';

/**
 * Where a sidecar's catalog comes from: the node's gateway feed (GatewayFeedSource), a
 * catalog file (CatalogFileSource) or a Kubernetes objects file (objectsFileSource). A source
 * writes into the store; readers only ever look at the store.
 */
export interface CatalogSource {
  /**
   * Starts feeding `store`. File sources resolve after the first load and reject when the
   * first file is unusable; the gateway feed resolves at once and keeps retrying in the
   * background (DNS answers SERVFAIL for cluster names until the store has synced).
   */
  start(store: CatalogStore): Promise<void>;
  /** Stops watching/connecting; the store keeps the last catalog. */
  stop(): Promise<void>;
}
