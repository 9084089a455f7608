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
  // The encoded snapshot of the current catalog, made only when a FEED client needs it (a
  // client joins, or a new snapshot arrives while clients are connected: sidecars are
  // on-demand by default and never ask, and at 10,000 services encoding is ~1 s of CPU and
  // 30 MB that a restart would otherwise spend before anyone wanted it), and once for all the
  // clients that get it at that revision. Encoded in pieces of Buffers that every socket's
  // queue shares (a string would be copied per socket: 1,000 sidecars × a 6 MB snapshot; one
  // 30 MB string beside its 30 MB Buffer was the start's largest single allocation). Held
  // strongly while some socket still has it queued, so a client joining meanwhile shares it;
  // then only weakly, left to the GC (30 MB that a gateway would otherwise keep until the
  // catalog next changes).
  #snapshot:
    | { catalog: WeakRef<Catalog>; pieces: WeakRef<Buffer[]>; held: Buffer[] | undefined; queued: number }
    | undefined;
  #snapshotsEncoded = 0;

  constructor(store: CatalogStore, opts: FeedHubOptions = {}) {
    this.#store = store;
    this.#log = opts.log ?? silentLogger;
    this.#maxBuffered = opts.maxBufferedBytes ?? MAX_BUFFERED_FEED_BYTES;
    this.#maxPerAddress = opts.maxClientsPerAddress ?? MAX_FEED_CLIENTS_PER_ADDRESS;
    this.#maxClients = opts.maxClients ?? MAX_FEED_CLIENTS;
    this.#unsubscribe = store.subscribe((catalog, update) => {
      if (this.#clients.size === 0) return; // nobody to tell; a client joining gets a snapshot
      if (update.type === 'snapshot') {
        for (const socket of this.#clients) this.#writeSnapshot(socket, catalog);
      } else this.#broadcast(Buffer.from(encodeFeedLine(update)));
    });
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

  /** How many times a snapshot was encoded (for tests: once per revision that a client got). */
  get snapshotsEncodedForTest(): number {
    return this.#snapshotsEncoded;
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
    if (catalog) this.#writeSnapshot(socket, catalog);
  }

  close(): void {
    this.#unsubscribe();
    clearInterval(this.#keepalive);
    for (const socket of this.#clients) socket.destroy();
    this.#clients.clear();
  }

  #writeSnapshot(socket: Socket, catalog: Catalog): void {
    if (this.#droppedAsSlow(socket)) return;
    let snapshot = this.#snapshot;
    let pieces = snapshot?.catalog.deref() === catalog ? snapshot?.pieces.deref() : undefined;
    if (!snapshot || !pieces) {
      pieces = encodeSnapshotPieces(catalog);
      this.#snapshotsEncoded++;
      snapshot = { catalog: new WeakRef(catalog), pieces: new WeakRef(pieces), held: pieces, queued: 0 };
      this.#snapshot = snapshot;
    }
    const held = snapshot;
    held.held = pieces;
    held.queued++;
    const last = pieces.length - 1;
    for (let i = 0; i < last; i++) socket.write(pieces[i] as Buffer);
    // Written, or the socket is gone (the callback gets its error): one queue fewer holds it.
    socket.write(pieces[last] as Buffer, () => {
      if (--held.queued === 0) held.held = undefined;
    });
  }

  #broadcast(line: Buffer): void {
    for (const socket of this.#clients) this.#write(socket, line);
  }

  #write(socket: Socket, line: Buffer): void {
    if (!this.#droppedAsSlow(socket)) socket.write(line);
  }

  #droppedAsSlow(socket: Socket): boolean {
    if (socket.writableLength <= this.#maxBuffered) return false;
    this.#log.warn({ queued: socket.writableLength }, 'feed client too slow: dropping it');
    socket.destroy();
    return true;
  }
}

/** Pieces of about this many characters: small enough that no one string or Buffer is large. */
const SNAPSHOT_PIECE_CHARS = 64 * 1024;

/**
 * The bytes of `encodeFeedLine({ type: 'snapshot', catalog })`, in Buffers of about
 * SNAPSHOT_PIECE_CHARS: the catalog's records (services, pods, nodes, namespaces: up to
 * 100,000 keys) entry by entry, anything else as JSON.stringify writes it, in the same order,
 * so a client reads the same line (feed.test.ts compares the two).
 */
export function encodeSnapshotPieces(catalog: Catalog): Buffer[] {
  const pieces: Buffer[] = [];
  let text = '{"type":"snapshot","catalog":{';
  const cut = () => {
    if (text.length < SNAPSHOT_PIECE_CHARS) return;
    pieces.push(Buffer.from(text));
    text = '';
  };
  let firstField = true;
  for (const [field, value] of Object.entries(catalog)) {
    if (value === undefined || typeof value === 'function') continue; // as JSON.stringify
    text += `${firstField ? '' : ','}${JSON.stringify(field)}:`;
    firstField = false;
    if (!isPlainRecord(value)) {
      text += JSON.stringify(value);
      cut();
      continue;
    }
    text += '{';
    let firstEntry = true;
    for (const key in value) {
      const json = JSON.stringify(value[key]);
      if (json === undefined) continue;
      text += `${firstEntry ? '' : ','}${JSON.stringify(key)}:${json}`;
      firstEntry = false;
      cut();
    }
    text += '}';
  }
  text += '}}\n';
  pieces.push(Buffer.from(text));
  return pieces;
}

const isPlainRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' &&
  v !== null &&
  !Array.isArray(v) &&
  Object.getPrototypeOf(v) === Object.prototype &&
  typeof (v as { toJSON?: unknown }).toJSON !== 'function';
