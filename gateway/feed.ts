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
/** Each pod needs one feed; more from one address is a bug or an attack. */
export const MAX_FEED_CLIENTS_PER_ADDRESS = 16;
export const MAX_FEED_CLIENTS = 5_000;

export interface FeedHubOptions {
  log?: Logger;
  keepaliveMs?: number;
  maxBufferedBytes?: number;
  maxClientsPerAddress?: number;
  maxClients?: number;
}

export class FeedHub {
  readonly #store: CatalogStore;
  readonly #log: Logger;
  readonly #maxBuffered: number;
  readonly #maxPerAddress: number;
  readonly #maxClients: number;
  readonly #perAddress = new Map<string, number>();
  readonly #clients = new Set<Socket>();
  readonly #unsubscribe: () => void;
  readonly #keepalive: NodeJS.Timeout;
  // The encoded snapshot of the current catalog, made once for all the clients that ask.
  // Lines are encoded once into a Buffer that every socket's queue shares (a string would be
  // copied per socket: 1,000 sidecars × a 6 MB snapshot). Held weakly: shared while some
  // socket still queues it, then left to the GC (at 10,000 services it is 30 MB that a
  // gateway would otherwise keep until the catalog next changes).
  #snapshot: { catalog: WeakRef<Catalog>; line: WeakRef<Buffer> } | undefined;

  constructor(store: CatalogStore, opts: FeedHubOptions = {}) {
    this.#store = store;
    this.#log = opts.log ?? silentLogger;
    this.#maxBuffered = opts.maxBufferedBytes ?? MAX_BUFFERED_FEED_BYTES;
    this.#maxPerAddress = opts.maxClientsPerAddress ?? MAX_FEED_CLIENTS_PER_ADDRESS;
    this.#maxClients = opts.maxClients ?? MAX_FEED_CLIENTS;
    this.#unsubscribe = store.subscribe((_catalog, update) =>
      this.#broadcast(Buffer.from(encodeFeedLine(update))),
    );
    this.#keepalive = setInterval(() => {
      // Also to clients still waiting for a first catalog, so they do not time out meanwhile.
      const revision = this.#store.current?.revision ?? 0;
      this.#broadcast(Buffer.from(encodeFeedLine({ type: 'keepalive', revision })));
    }, opts.keepaliveMs ?? KEEPALIVE_INTERVAL_MS);
    this.#keepalive.unref();
  }

  get clients(): number {
    return this.#clients.size;
  }

  /**
   * Why a new feed client from `address` would be refused (too many), or undefined. The
   * caller answers the refusal; attach() only takes clients that passed.
   */
  refusal(address: string): string | undefined {
    if (this.#clients.size >= this.#maxClients) return `gateway serves at most ${this.#maxClients} feeds`;
    if ((this.#perAddress.get(address) ?? 0) >= this.#maxPerAddress) {
      return `at most ${this.#maxPerAddress} feeds per address`;
    }
    return undefined;
  }

  /** Takes over a connection whose FEED header has been read. */
  attach(socket: Socket, peer: string): void {
    const address = socket.remoteAddress ?? '';
    this.#clients.add(socket);
    this.#perAddress.set(address, (this.#perAddress.get(address) ?? 0) + 1);
    socket.on('close', () => {
      this.#clients.delete(socket);
      const left = (this.#perAddress.get(address) ?? 1) - 1;
      if (left > 0) this.#perAddress.set(address, left);
      else this.#perAddress.delete(address);
      this.#log.info({ peer, clients: this.#clients.size }, 'feed client left');
    });
    socket.on('error', () => {}); // 'close' follows
    socket.on('data', () => {}); // nothing more is expected; keep reading so a FIN is seen
    // The listener allows half-open sockets (for CONNECT); a feed client that ends is gone.
    socket.on('end', () => socket.destroy());
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

  #snapshotLine(catalog: Catalog): Buffer {
    const held = this.#snapshot?.catalog.deref() === catalog ? this.#snapshot?.line.deref() : undefined;
    if (held) return held;
    const line = Buffer.from(encodeFeedLine({ type: 'snapshot', catalog }));
    this.#snapshot = { catalog: new WeakRef(catalog), line: new WeakRef(line) };
    return line;
  }

  #broadcast(line: Buffer): void {
    for (const socket of this.#clients) this.#write(socket, line);
  }

  #write(socket: Socket, line: Buffer): void {
    if (socket.writableLength > this.#maxBuffered) {
      this.#log.warn({ queued: socket.writableLength }, 'feed client too slow: dropping it');
      socket.destroy();
      return;
    }
    socket.write(line);
  }
}
