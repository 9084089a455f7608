/**
 * The sidecar's side of the catalog feed: connects to the node's gateway (hostIP:15080),
 * asks `FEED <revision>`, applies the snapshot and the increments to a CatalogStore. On a
 * revision gap, an invalid line, an error reply, silence, or a lost connection it reconnects
 * with backoff and asks again; the store keeps serving the last catalog meanwhile.
 *
 * State: #socket is the live connection (or none); #attempt counts failures since the last
 * good snapshot and sets the backoff (RETRY_INITIAL_MS doubling to RETRY_MAX_MS, ±20%
 * jitter so the sidecars of a node do not reconnect in lockstep after a gateway restart).
 */
import net from 'node:net';
import { formatRequest, GATEWAY_PORT, parseReply } from '../gateway-protocol.ts';
import { type Logger, silentLogger } from '../log.ts';
import { decodeFeedLine, FEED_IDLE_TIMEOUT_MS, LineSplitter, MAX_FEED_LINE_BYTES } from './feed.ts';
import type { CatalogSource } from './source.ts';
import type { CatalogStore } from './store.ts';

export const RETRY_INITIAL_MS = 200;
export const RETRY_MAX_MS = 5_000;

export interface FeedSourceOptions {
  host: string;
  port?: number;
  log?: Logger;
  idleTimeoutMs?: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
  maxLineBytes?: number;
  /** Called on every state change: for metrics and tests. */
  onEvent?: (event: FeedEvent) => void;
}

export type FeedEvent =
  | { kind: 'connected' }
  | { kind: 'snapshot'; revision: number }
  | { kind: 'update'; revision: number }
  | { kind: 'disconnected'; reason: string; retryInMs: number };

export class GatewayFeedSource implements CatalogSource {
  readonly #opts: Required<Omit<FeedSourceOptions, 'onEvent' | 'log'>>;
  readonly #log: Logger;
  readonly #onEvent: (event: FeedEvent) => void;
  #store: CatalogStore | undefined;
  #socket: net.Socket | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #attempt = 0;
  #stopped = true;

  constructor(opts: FeedSourceOptions) {
    this.#opts = {
      host: opts.host,
      port: opts.port ?? GATEWAY_PORT,
      idleTimeoutMs: opts.idleTimeoutMs ?? FEED_IDLE_TIMEOUT_MS,
      retryInitialMs: opts.retryInitialMs ?? RETRY_INITIAL_MS,
      retryMaxMs: opts.retryMaxMs ?? RETRY_MAX_MS,
      maxLineBytes: opts.maxLineBytes ?? MAX_FEED_LINE_BYTES,
    };
    this.#log = opts.log ?? silentLogger;
    this.#onEvent = opts.onEvent ?? (() => {});
  }

  #connected = false;

  /** True while a connection is open and its snapshot has arrived. */
  get connected(): boolean {
    return this.#connected;
  }

  async start(store: CatalogStore): Promise<void> {
    this.#store = store;
    this.#stopped = false;
    this.#connect();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    this.#socket?.destroy();
    this.#socket = undefined;
    this.#connected = false;
  }

  #connect(): void {
    const store = this.#store;
    if (this.#stopped || !store) return;
    const { host, port } = this.#opts;
    const socket = net.connect({ host, port });
    this.#socket = socket;
    const splitter = new LineSplitter(this.#opts.maxLineBytes);
    let sawSnapshot = false;
    let closedReason = 'connection closed by the gateway';
    const drop = (reason: string) => {
      closedReason = reason;
      socket.destroy();
    };
    socket.setNoDelay(true);
    socket.setTimeout(this.#opts.idleTimeoutMs, () => drop(`no data for ${this.#opts.idleTimeoutMs} ms`));
    socket.on('connect', () => {
      this.#onEvent({ kind: 'connected' });
      socket.write(formatRequest({ kind: 'feed', revision: store.current?.revision ?? 0 }));
    });
    socket.on('data', (chunk: Buffer) => {
      let lines: string[];
      try {
        lines = splitter.push(chunk);
      } catch (err) {
        return drop((err as Error).message);
      }
      for (const text of lines) {
        if (socket.destroyed) return;
        if (!sawSnapshot && text.startsWith('ERR ')) {
          const reply = (() => {
            try {
              return parseReply(text);
            } catch {
              return undefined;
            }
          })();
          return drop(
            reply && !reply.ok ? `gateway refused: ${reply.code} ${reply.message}` : 'malformed reply',
          );
        }
        let line: ReturnType<typeof decodeFeedLine>;
        try {
          line = decodeFeedLine(text);
        } catch (err) {
          return drop(`invalid feed line: ${(err as Error).message}`);
        }
        if (line.type === 'keepalive') {
          if (sawSnapshot && line.revision !== store.current?.revision) {
            return drop(
              `missed updates: at revision ${store.current?.revision}, gateway at ${line.revision}`,
            );
          }
          continue;
        }
        if (!sawSnapshot && line.type !== 'snapshot') return drop('feed did not start with a snapshot');
        if (!store.apply(line)) {
          const got = line.type === 'snapshot' ? line.catalog.revision : line.revision;
          return drop(`revision gap: at ${store.current?.revision}, got ${got}`);
        }
        if (line.type === 'snapshot') {
          sawSnapshot = true;
          this.#connected = true;
          this.#attempt = 0;
          this.#log.info({ revision: line.catalog.revision }, 'catalog snapshot from gateway');
          this.#onEvent({ kind: 'snapshot', revision: line.catalog.revision });
        } else {
          this.#log.debug({ type: line.type, revision: line.revision }, 'catalog update from gateway');
          this.#onEvent({ kind: 'update', revision: line.revision });
        }
      }
    });
    socket.on('error', (err) => {
      closedReason = err.message;
    });
    socket.on('close', () => {
      if (this.#socket === socket) this.#socket = undefined;
      this.#connected = false;
      if (this.#stopped) return;
      const base = Math.min(this.#opts.retryMaxMs, this.#opts.retryInitialMs * 2 ** this.#attempt);
      const retryInMs = Math.round(base * (0.8 + Math.random() * 0.4));
      this.#attempt = Math.min(this.#attempt + 1, 30);
      this.#log.warn(
        { reason: closedReason, retryInMs, revision: store.current?.revision },
        'catalog feed lost: keeping the last catalog and reconnecting',
      );
      this.#onEvent({ kind: 'disconnected', reason: closedReason, retryInMs });
      this.#retryTimer = setTimeout(() => this.#connect(), retryInMs);
    });
  }
}
