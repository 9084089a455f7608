/**
 * The catalog on disk, for offline autonomy: after a restart the gateway serves the last
 * catalog at once, before (or without) the API server. Written atomically: temp file in the
 * same directory, fsync, rename over the old one, fsync the directory, so a crash or power
 * loss leaves either the old file or the new one, never a torn one. Loaded with the same
 * strict validation as any catalog from outside. Written in state-file.ts's compact format 4
 * (a line at a time); a file of format 1, 2 or 3 (docs/catalog.md; what gateways wrote before)
 * still loads.
 */
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate } from 'node:timers/promises';
import type { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog } from '../lib/catalog/types.ts';
import { describeError } from '../lib/errors.ts';
import { type Logger, silentLogger } from '../lib/log.ts';
import { parseStateFileText, stateFileChunks } from './state-file.ts';

export const STATE_FILE = 'catalog.json';
/** Writes take at most 1 / WRITE_COST_FACTOR of the time under churn (see CatalogPersister). */
export const WRITE_COST_FACTOR = 5;
const MAX_STATE_BYTES = 256 * 1024 * 1024;
let tempCounter = 0;

export async function saveCatalog(dir: string, catalog: Catalog): Promise<void> {
  const chunks = stateFileChunks(catalog); // before the first await: see stateFileChunks
  await mkdir(dir, { recursive: true });
  const target = join(dir, STATE_FILE);
  const temp = join(dir, `.${STATE_FILE}.${process.pid}.${++tempCounter}.tmp`);
  const file = await open(temp, 'w', 0o644);
  try {
    // An empty piece: the tables were made, nothing to write; let the event loop run.
    for (const chunk of chunks) await (chunk === '' ? setImmediate() : file.write(chunk));
    await file.sync();
  } catch (err) {
    await file.close();
    await unlink(temp).catch(() => {});
    throw err;
  }
  await file.close();
  await rename(temp, target);
  const dirHandle = await open(dir, 'r');
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}

/** The persisted catalog, or undefined when there is none or it is unusable (logged). */
export async function loadCatalog(dir: string, log: Logger = silentLogger): Promise<Catalog | undefined> {
  const path = join(dir, STATE_FILE);
  try {
    if ((await stat(path)).size > MAX_STATE_BYTES) throw new Error(`larger than ${MAX_STATE_BYTES} bytes`);
    return parseStateFile(await readFile(path, 'utf8'), path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    log.error({ path, error: describeError(err) }, 'persisted catalog unusable: starting without it');
    return undefined;
  }
}

/** The catalog in a state file's text (formats 1–4, state-file.ts); errors name the file and the path. */
export function parseStateFile(text: string, source: string): Catalog {
  return parseStateFileText(text, source);
}

/**
 * Saves the store's catalog after changes, coalescing bursts: at most one write in flight and
 * one every `delayMs`, or every WRITE_COST_FACTOR × the last write's duration when that is
 * longer (a 10,000-service catalog takes ~0.2 s to encode and write: under steady churn
 * persisting must not take most of a core); `flush()` writes whatever is newer than the last
 * write (on shutdown).
 */
export class CatalogPersister {
  readonly #dir: string;
  readonly #store: CatalogStore;
  readonly #delayMs: number;
  readonly #log: Logger;
  readonly #unsubscribe: () => void;
  #savedRevision = -1;
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();
  #lastWriteMs = 0;

  constructor(dir: string, store: CatalogStore, opts: { delayMs?: number; log?: Logger } = {}) {
    this.#dir = dir;
    this.#store = store;
    this.#delayMs = opts.delayMs ?? 500;
    this.#log = opts.log ?? silentLogger;
    this.#savedRevision = store.current?.revision ?? -1;
    this.#unsubscribe = store.subscribe(() => this.#schedule());
  }

  get savedRevision(): number {
    return this.#savedRevision;
  }

  async flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#writing = this.#writing.then(() => this.#save());
    await this.#writing;
  }

  async close(): Promise<void> {
    this.#unsubscribe();
    await this.flush();
  }

  #schedule(): void {
    if (this.#timer) return;
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        this.#writing = this.#writing.then(() => this.#save());
      },
      Math.max(this.#delayMs, this.#lastWriteMs * WRITE_COST_FACTOR),
    );
  }

  async #save(): Promise<void> {
    const catalog = this.#store.current;
    if (!catalog || catalog.revision === this.#savedRevision) return;
    const started = performance.now();
    try {
      await saveCatalog(this.#dir, catalog);
      this.#lastWriteMs = performance.now() - started;
      this.#savedRevision = catalog.revision;
      this.#log.debug({ revision: catalog.revision }, 'catalog persisted');
    } catch (err) {
      this.#log.error({ dir: this.#dir, error: describeError(err) }, 'persisting the catalog failed');
    }
  }
}
