/** The catalog: types, store, validation, building from Kubernetes objects, and sources. */
export { type FeedEvent, GatewayFeedSource } from './feed-source.ts';
export { catalogFileSource, objectsFileSource } from './file-source.ts';
export { buildCatalog, CatalogBuilder, diffCatalogs, objectKind } from './from-objects.ts';
export { catalogFromObjectsFile, parseObjectsText } from './objects-file.ts';
export type { CatalogSource } from './source.ts';
export { applyUpdate, CatalogStore } from './store.ts';
export * from './types.ts';
export {
  CatalogValidationError,
  canonicalIP,
  parseCatalogJSON,
  validateCatalog,
  validateUpdate,
} from './validate.ts';
