/**
 * The gateway's side of the catalog feed: every connected sidecar gets the current snapshot,
 * then each update the store applies, then a keepalive every KEEPALIVE_INTERVAL_MS (one
 * timer for all clients). A client that was connected before the gateway had any catalog
 * gets the first snapshot when it arrives. A client that cannot keep up (more than
 * maxBufferedBytes queued) is dropped; it reconnects and starts again from a snapshot.
 */
import type { Socket } from 'node:net';
import { encodeFeedLine, KEEPALIVE_INTERVAL_MS } from '../lib/catalog/feed.ts';
import type { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog } from '../lib/catalog/types.ts';
import { type Logger, silentLogger } from '../lib/log.ts';

export const MAX_BUFFERED_FEED_BYTES = 64 * 1024 * 1024;

export interface FeedHubOptions {
  log?: Logger;
  keepaliveMs?: number;
  maxBufferedBytes?: number;
}

export class FeedHub {
  readonly #store: CatalogStore;
  readonly #log: Logger;
  readonly #maxBuffered: number;
  readonly #clients = new Set<Socket>();
  readonly #unsubscribe: () => void;
  readonly #keepalive: NodeJS.Timeout;
  // The encoded snapshot of the current catalog, made once for all the clients that ask.
  #snapshot: { catalog: Catalog; line: string } | undefined;

  constructor(store: CatalogStore, opts: FeedHubOptions = {}) {
    this.#store = store;
    this.#log = opts.log ?? silentLogger;
    this.#maxBuffered = opts.maxBufferedBytes ?? MAX_BUFFERED_FEED_BYTES;
    this.#unsubscribe = store.subscribe((_catalog, update) => this.#broadcast(encodeFeedLine(update)));
    this.#keepalive = setInterval(() => {
      // Also to clients still waiting for a first catalog, so they do not time out meanwhile.
      const revision = this.#store.current?.revision ?? 0;
      this.#broadcast(encodeFeedLine({ type: 'keepalive', revision }));
    }, opts.keepaliveMs ?? KEEPALIVE_INTERVAL_MS);
    this.#keepalive.unref();
  }

  get clients(): number {
    return this.#clients.size;
  }

  /** Takes over a connection whose FEED header has been read. */
  attach(socket: Socket, peer: string): void {
    this.#clients.add(socket);
    socket.on('close', () => {
      this.#clients.delete(socket);
      this.#log.info({ peer, clients: this.#clients.size }, 'feed client left');
    });
    socket.on('error', () => {}); // 'close' follows
    socket.on('data', () => {}); // nothing more is expected; keep reading so a FIN is seen
    socket.setNoDelay(true);
    const catalog = this.#store.current;
    this.#log.info({ peer, revision: catalog?.revision, clients: this.#clients.size }, 'feed client joined');
    if (catalog) this.#write(socket, this.#snapshotLine(catalog));
  }

  close(): void {
    this.#unsubscribe();
    clearInterval(this.#keepalive);
    for (const socket of this.#clients) socket.destroy();
    this.#clients.clear();
  }

  #snapshotLine(catalog: Catalog): string {
    if (this.#snapshot?.catalog !== catalog) {
      this.#snapshot = { catalog, line: encodeFeedLine({ type: 'snapshot', catalog }) };
    }
    return this.#snapshot.line;
  }

  #broadcast(line: string): void {
    for (const socket of this.#clients) this.#write(socket, line);
  }

  #write(socket: Socket, line: string): void {
    if (socket.writableLength > this.#maxBuffered) {
      this.#log.warn({ queued: socket.writableLength }, 'feed client too slow: dropping it');
      socket.destroy();
      return;
    }
    socket.write(line);
  }
}
