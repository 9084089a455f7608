/**
 * LIST then WATCH one kind, for as long as the gateway runs, through an ObjectCache (replays
 * and cold lists handled there) into `onEvent`.
 *
 * The loop, and why each step:
 * - LIST. On failure: `onError`, then retry after RETRY_INITIAL_MS doubling to RETRY_MAX_MS
 *   (one log line per attempt, not one per few hundred ms). In pages of LIST_PAGE_SIZE
 *   (`limit`/`continue`) as client-go's reflector does. KubeEdge's edge API ignores `limit`
 *   and answers the whole list without `continue`: one page. Either way each item is decoded
 *   and cut down (`decode`) as the body streams in (client.ts `list`, list-body.ts): no page's
 *   body or whole parse is ever held, and the event loop (the heap budget's timer, a sidecar's
 *   LOOKUP) runs between the body's chunks. A `continue` token that expired (410) fails the
 *   list, which starts over.
 * - WATCH from the list's resourceVersion with bookmarks and `timeoutSeconds`; a deadline
 *   of timeout + WATCH_GRACE_MS ends a watch the server keeps open and silent (the edge
 *   API does so while its cloud link is down; a dead TCP path does so too).
 * - A watch that ends normally is resumed from the last resourceVersion seen. `410 Gone`
 *   (real API servers only; the edge API never sends it) or any other error → LIST again.
 * - `relist: true` (the edge API): every watch end is followed by a LIST. The edge API's
 *   watch replays its whole local cache anyway, and only a LIST made while it is connected
 *   reaches the cloud, so this is how deletions it missed offline are learned; the watch
 *   timeout is then the relist period.
 */
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { type ApiClient, ApiError, cause } from '../../lib/kube/client.ts';
import type { CacheEvent, ObjectCache } from './object-cache.ts';

export const RETRY_INITIAL_MS = 1_000;
export const RETRY_MAX_MS = 30_000;
/** How long past `timeoutSeconds` a watch may stay open before we end it ourselves. */
export const WATCH_GRACE_MS = 30_000;
/** Items per LIST page (client-go's reflector uses 500 too). */
export const LIST_PAGE_SIZE = 500;
/**
 * A listed kind's events are handed to `onEvent` this many per event-loop turn: building 10,000
 * EndpointSlices into the catalog is a few hundred ms, during which sidecars' LOOKUPs and the
 * heap budget's checks (lib/heap.ts) would otherwise wait.
 */
export const LIST_EVENTS_PER_TURN = 500;
/** A watch shorter than this is followed by a pause of the difference (no tight loop). */
const MIN_WATCH_MS = 1_000;

export interface ReflectorOptions {
  api: ApiClient;
  /** Collection path, e.g. `/api/v1/services`. */
  path: string;
  fieldSelector?: string;
  cache: ObjectCache;
  /** Server-side watch timeout; the client ends the watch WATCH_GRACE_MS later at the latest. */
  watchTimeoutSeconds: number;
  /** LIST again after every watch (the edge API); otherwise resume from the resourceVersion. */
  relist: boolean;
  onEvent(event: CacheEvent): void;
  onListed(info: { count: number; warm: boolean; kept: string[] }): void;
  onError(err: Error, retryInMs: number): void;
  /** Applied to every listed item and watched object before the cache sees it (object-fields.ts). */
  decode?: (obj: unknown) => unknown;
  /** Test hook: items per LIST page. */
  pageSize?: number;
  /** Test hook: shorter retry delays. */
  retryInitialMs?: number;
}

export class Reflector {
  readonly #opts: ReflectorOptions;
  readonly #stop = new AbortController();
  #running: Promise<void> | undefined;

  constructor(opts: ReflectorOptions) {
    this.#opts = opts;
  }

  start(): void {
    this.#running ??= this.#run();
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#running;
  }

  async #run(): Promise<void> {
    const o = this.#opts;
    const stop = this.#stop.signal;
    const initial = o.retryInitialMs ?? RETRY_INITIAL_MS;
    let delay = initial;
    while (!stop.aborted) {
      try {
        let resourceVersion = await this.#list();
        delay = initial;
        for (;;) {
          const started = Date.now();
          const end = await this.#watch(resourceVersion);
          if (stop.aborted) return;
          // A server that ends watches at once must not make us spin.
          const lasted = Date.now() - started;
          if (lasted < MIN_WATCH_MS)
            await sleep(MIN_WATCH_MS - lasted, undefined, { signal: stop }).catch(() => {});
          if (stop.aborted || end.gone || o.relist) break;
          resourceVersion = end.resourceVersion;
        }
      } catch (err) {
        if (stop.aborted) return;
        o.onError(err instanceof Error ? err : new Error(String(err)), delay);
        await sleep(delay, undefined, { signal: stop }).catch(() => {});
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    }
  }

  #query(extra: Record<string, string>): string {
    const q = new URLSearchParams(extra);
    if (this.#opts.fieldSelector) q.set('fieldSelector', this.#opts.fieldSelector);
    const text = q.toString();
    return text ? `${this.#opts.path}?${text}` : this.#opts.path;
  }

  async #list(): Promise<string> {
    const o = this.#opts;
    const decode = o.decode ?? ((obj: unknown) => obj);
    const items: unknown[] = [];
    let resourceVersion = '';
    let next = '';
    do {
      const query: Record<string, string> = { limit: String(o.pageSize ?? LIST_PAGE_SIZE) };
      if (next) query.continue = next;
      const path = this.#query(query);
      // Each item decoded as it streams in: the page's body is never held whole (list-body.ts).
      const meta = await o.api.list(path, (item) => items.push(decode(item)), this.#stop.signal);
      if (meta.resourceVersion) resourceVersion = meta.resourceVersion;
      next = meta.continue;
    } while (next);
    const { events, warm, kept } = o.cache.applyList(items);
    const count = items.length;
    items.length = 0; // the events hold what is still needed
    for (let i = 0; i < events.length; i++) {
      o.onEvent(events[i]);
      // Handled: the builder keeps what it built, not the listed object.
      (events as (CacheEvent | undefined)[])[i] = undefined;
      if ((i + 1) % LIST_EVENTS_PER_TURN === 0) {
        await nextTurn();
        if (this.#stop.signal.aborted) throw new Error('stopped while applying a list');
      }
    }
    o.onListed({ count, warm, kept });
    return resourceVersion;
  }

  /** One watch; resolves with the last resourceVersion seen, or `gone` after a 410. */
  async #watch(since: string): Promise<{ resourceVersion: string; gone: boolean }> {
    const o = this.#opts;
    const deadline = new AbortController();
    const onStop = () => deadline.abort();
    this.#stop.signal.addEventListener('abort', onStop);
    const timer = setTimeout(onStop, o.watchTimeoutSeconds * 1000 + WATCH_GRACE_MS);
    let resourceVersion = since;
    let gone = false;
    const query: Record<string, string> = {
      watch: '1',
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(o.watchTimeoutSeconds),
    };
    if (since) query.resourceVersion = since;
    const path = this.#query(query);
    try {
      await o.api.watch(
        path,
        (line) => {
          const { type, object } = (line ?? {}) as { type?: unknown; object?: unknown };
          const rv = (object as { metadata?: { resourceVersion?: unknown } } | undefined)?.metadata
            ?.resourceVersion;
          if (type === 'ERROR') {
            const status = object as { code?: unknown; message?: unknown };
            if (status?.code === 410) {
              gone = true;
              deadline.abort();
              return;
            }
            throw new ApiError(o.api.server + path, `watch error: ${String(status?.message ?? 'unknown')}`);
          }
          if (typeof rv === 'string' && rv) resourceVersion = rv;
          if (type === 'BOOKMARK') return;
          if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') return;
          const event = o.cache.applyEvent(type, o.decode ? o.decode(object) : object);
          if (event) o.onEvent(event);
        },
        deadline.signal,
      );
    } catch (err) {
      if (!deadline.signal.aborted) throw err instanceof ApiError ? err : new Error(cause(err));
    } finally {
      clearTimeout(timer);
      this.#stop.signal.removeEventListener('abort', onStop);
    }
    return { resourceVersion, gone };
  }
}
