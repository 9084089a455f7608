/**
 * Catalog sources that follow a file: `--catalog-file` (catalog JSON, docs/catalog.md) and
 * `--objects` (Kubernetes objects). The directory is watched rather than the file so that
 * editors' rename-replace and Kubernetes ConfigMap symlink swaps (`..data`) are seen too;
 * events are debounced, and a file whose text did not change is not re-applied. A bad new
 * file is logged and the last good catalog stays in the store.
 */
import { type FSWatcher, watch } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { EdgemeshError, ErrorCodes } from '../errors.ts';
import { type Logger, silentLogger } from '../log.ts';
import { buildCatalog } from './from-objects.ts';
import { MAX_OBJECTS_FILE_BYTES, parseObjectsText } from './objects-file.ts';
import type { CatalogSource } from './source.ts';
import type { CatalogStore } from './store.ts';
import type { Catalog } from './types.ts';
import { parseCatalogJSON } from './validate.ts';

export const MAX_CATALOG_FILE_BYTES = 64 * 1024 * 1024;

/** Turns file text into a catalog (throws a descriptive error); `previous` is the store's catalog. */
export type CatalogParser = (text: string, path: string, previous: Catalog | undefined) => Catalog;

export interface FileSourceOptions {
  log?: Logger;
  /** Quiet time after the last change event before reloading (editors write in bursts). */
  debounceMs?: number;
  clusterDomain?: string;
}

export class FileCatalogSource implements CatalogSource {
  readonly path: string;
  readonly #parse: CatalogParser;
  readonly #log: Logger;
  readonly #debounceMs: number;
  readonly #maxBytes: number;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastText: string | undefined;
  #store: CatalogStore | undefined;
  #loading: Promise<void> = Promise.resolve();

  constructor(path: string, parse: CatalogParser, maxBytes: number, opts: FileSourceOptions = {}) {
    this.path = path;
    this.#parse = parse;
    this.#maxBytes = maxBytes;
    this.#log = opts.log ?? silentLogger;
    this.#debounceMs = opts.debounceMs ?? 100;
  }

  async start(store: CatalogStore): Promise<void> {
    this.#store = store;
    await this.#load(true);
    this.#watcher = watch(dirname(this.path), () => this.#schedule());
    this.#watcher.on('error', (err) =>
      this.#log.error({ err, path: this.path }, 'catalog file watch failed'),
    );
  }

  async stop(): Promise<void> {
    this.#watcher?.close();
    this.#watcher = undefined;
    clearTimeout(this.#timer);
    await this.#loading;
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#loading = this.#loading.then(() => this.#load(false));
    }, this.#debounceMs);
  }

  async #load(first: boolean): Promise<void> {
    const store = this.#store;
    if (!store) return;
    try {
      const size = (await stat(this.path)).size;
      if (size > this.#maxBytes) throw new Error(`larger than ${this.#maxBytes} bytes`);
      const text = await readFile(this.path, 'utf8');
      if (text === this.#lastText) return;
      const catalog = this.#parse(text, this.path, store.current);
      this.#lastText = text;
      store.apply({ type: 'snapshot', catalog });
      this.#log.info(
        { path: this.path, revision: catalog.revision, services: Object.keys(catalog.services).length },
        first ? 'catalog loaded from file' : 'catalog file changed: reloaded',
      );
    } catch (err) {
      const message = err instanceof EdgemeshError ? err.message : `${this.path}: ${(err as Error).message}`;
      if (first) throw new EdgemeshError(ErrorCodes.CATALOG, message, { cause: err });
      // Keep serving the last good catalog; the next change event tries again.
      this.#log.error(
        { path: this.path, error: message },
        'catalog file rejected: keeping the last good catalog',
      );
    }
  }
}

/** `--catalog-file FILE`: catalog JSON as the gateway feed carries it, validated strictly. */
export function catalogFileSource(path: string, opts: FileSourceOptions = {}): FileCatalogSource {
  return new FileCatalogSource(path, (text, p) => parseCatalogJSON(text, p), MAX_CATALOG_FILE_BYTES, opts);
}

/** `--objects FILE`: Kubernetes objects turned into a catalog by the gateway's code. */
export function objectsFileSource(path: string, opts: FileSourceOptions = {}): FileCatalogSource {
  const log = opts.log ?? silentLogger;
  const parse: CatalogParser = (text, p, previous) => {
    const { catalog, problems } = buildCatalog(parseObjectsText(text, p), {
      clusterDomain: opts.clusterDomain,
    });
    for (const problem of problems) log.warn({ path: p, problem }, 'object skipped or corrected');
    return { ...catalog, revision: (previous?.revision ?? 0) + 1 };
  };
  return new FileCatalogSource(path, parse, MAX_OBJECTS_FILE_BYTES, opts);
}
