/**
 * The gateway's side of the on-demand catalog (`EDGEMESH/1 LOOKUP`, body in
 * lib/catalog/lookup-protocol.ts): answers a sidecar's lookups from the catalog and its
 * indexes (catalog-index.ts), subscribes the connection to what each answer named, and sends
 * it the updates of those topics only. Fan-out is per topic (topic → subscribed
 * connections), so an update costs in proportion to the sidecars that hold it, and a
 * sidecar's traffic to what its pod uses.
 *
 * Limits: MAX_SUBSCRIPTIONS per connection, the feed's per-address and total connection
 * caps, a query line at most MAX_QUERY_LINE_BYTES, and a client more than maxBufferedBytes
 * behind is dropped (it reconnects and asks again for what it holds).
 */
import type { Socket } from 'node:net';
import { encodeFeedLine, KEEPALIVE_INTERVAL_MS, LineSplitter } from '../lib/catalog/feed.ts';
import {
  COMPACT_FORMAT,
  compactAnswerHead,
  compactServiceTail,
  parseFormatLine,
} from '../lib/catalog/lookup-compact.ts';
import {
  type Answer,
  answerHead,
  encodeAnswer,
  encodeReply,
  type LookupKey,
  MAX_QUERY_LINE_BYTES,
  MAX_SERVICES_PER_IP,
  MAX_SUBSCRIPTIONS,
  parseQuery,
  serviceAnswerTail,
  topicString,
} from '../lib/catalog/lookup-protocol.ts';
import type { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog, CatalogUpdate, ServiceEntry } from '../lib/catalog/types.ts';
import { type Logger, silentLogger } from '../lib/log.ts';
import { Counter, Gauge, type Registry } from '../lib/metrics.ts';
import { CatalogIndex } from './catalog-index.ts';
import { MAX_FEED_CLIENTS, MAX_FEED_CLIENTS_PER_ADDRESS } from './feed.ts';

export const MAX_BUFFERED_LOOKUP_BYTES = 16 * 1024 * 1024;
/**
 * Service entries whose answer JSON is kept (weakly: an entry replaced by a new version
 * takes its text with it); past this many the cache starts over, so it holds at most the text
 * of this many entries (~2 KB each with 10 endpoints) whatever the sidecars ask.
 */
const MAX_ENTRY_JSON = 4096;
/**
 * Services whose addresses are indexed per event-loop turn at start (catalog-index.ts): ~11
 * addresses each, ~5 ms a slice, so a name lookup waits at most that for the indexing.
 */
const INDEX_SLICE_SERVICES = 500;

export interface LookupHubOptions {
  log?: Logger;
  registry?: Registry;
  keepaliveMs?: number;
  maxBufferedBytes?: number;
  maxClientsPerAddress?: number;
  maxClients?: number;
}

interface Client {
  socket: Socket;
  address: string;
  /** Topic strings this connection is subscribed to. */
  topics: Set<string>;
  /** Found services are answered in the compact form (lookup-compact.ts): the sidecar asked `F 2`. */
  compact: boolean;
}

interface HubMetrics {
  lookups: Counter<'kind' | 'result'>;
  pushes: Counter<'topic'>;
}

export class LookupHub {
  readonly #store: CatalogStore;
  readonly #index = new CatalogIndex();
  readonly #log: Logger;
  readonly #maxBuffered: number;
  readonly #maxPerAddress: number;
  readonly #maxClients: number;
  readonly #clients = new Set<Client>();
  readonly #perAddress = new Map<string, number>();
  /** Topic string → its subscribers. */
  readonly #subscribers = new Map<string, Set<Client>>();
  readonly #unsubscribe: () => void;
  readonly #keepalive: NodeJS.Timeout;
  readonly #metrics: HubMetrics | undefined;
  #indexing: NodeJS.Immediate | undefined;
  /** A service entry's JSON, for answers: the store never changes an entry it has handed out. */
  #entryJSON = new WeakMap<ServiceEntry, string>();
  #entryJSONCount = 0;
  /**
   * A one-service answer's text after its head (serviceAnswerTail), per entry: the same
   * bounds as #entryJSON. Text, not a Buffer: head + tail in one socket.write of a string cost
   * 27–29 µs of gateway CPU per answer against 25–53 µs for a corked write of head and a
   * cached Buffer and 40–69 µs for one Buffer copied together (docs/scale.md, round 6).
   */
  #serviceTail = new WeakMap<ServiceEntry, string>();
  #serviceTailCount = 0;
  /** The same for the compact form (compactServiceTail), with the same bounds. */
  #compactTail = new WeakMap<ServiceEntry, string>();
  #compactTailCount = 0;

  constructor(store: CatalogStore, opts: LookupHubOptions = {}) {
    this.#store = store;
    this.#log = opts.log ?? silentLogger;
    this.#maxBuffered = opts.maxBufferedBytes ?? MAX_BUFFERED_LOOKUP_BYTES;
    this.#maxPerAddress = opts.maxClientsPerAddress ?? MAX_FEED_CLIENTS_PER_ADDRESS;
    this.#maxClients = opts.maxClients ?? MAX_FEED_CLIENTS;
    if (store.current) this.#index.apply(store.current, { type: 'snapshot', catalog: store.current });
    this.#indexInSlices();
    this.#unsubscribe = store.subscribe((catalog, update) => this.#onUpdate(catalog, update));
    this.#keepalive = setInterval(() => {
      const line = Buffer.from(
        encodeFeedLine({ type: 'keepalive', revision: this.#store.current?.revision ?? 0 }),
      );
      for (const c of this.#clients) this.#write(c, line);
    }, opts.keepaliveMs ?? KEEPALIVE_INTERVAL_MS);
    this.#keepalive.unref();
    this.#metrics = opts.registry && hubMetrics(opts.registry, this);
  }

  /**
   * The first catalog's addresses, a slice per event-loop turn: a restart's listener opens and
   * answers by name while they are indexed; an IP lookup that comes first indexes the rest then.
   */
  #indexInSlices(): void {
    if (!this.#index.indexing) return;
    this.#indexing = setImmediate(() => {
      this.#indexing = undefined;
      if (this.#index.indexSome(INDEX_SLICE_SERVICES)) this.#indexInSlices();
    });
  }

  /**
   * The keys of the services with `ip` as a ClusterIP or an endpoint IP, as of the catalog the
   * hub last applied (local-endpoint.ts checks a dial against them instead of walking the catalog).
   */
  servicesAt(ip: string): string[] {
    return this.#index.servicesAt(ip, Number.MAX_SAFE_INTEGER);
  }

  get clients(): number {
    return this.#clients.size;
  }

  get subscriptions(): number {
    let n = 0;
    for (const c of this.#clients) n += c.topics.size;
    return n;
  }

  /** Why a new connection from `address` would be refused, or undefined (as FeedHub.refusal). */
  refusal(address: string): string | undefined {
    if (this.#clients.size >= this.#maxClients)
      return `gateway serves at most ${this.#maxClients} lookup connections`;
    if ((this.#perAddress.get(address) ?? 0) >= this.#maxPerAddress)
      return `at most ${this.#maxPerAddress} lookup connections per address`;
    return undefined;
  }

  /** Takes over a connection whose LOOKUP header has been read; `early` is what came after it. */
  attach(socket: Socket, peer: string, early: Buffer = Buffer.alloc(0)): void {
    const client: Client = { socket, address: socket.remoteAddress ?? '', topics: new Set(), compact: false };
    this.#clients.add(client);
    this.#perAddress.set(client.address, (this.#perAddress.get(client.address) ?? 0) + 1);
    const lines = new LineSplitter(MAX_QUERY_LINE_BYTES);
    const onData = (chunk: Buffer) => {
      try {
        for (const line of lines.push(chunk)) this.#onLine(client, line.replace(/\r$/, ''));
      } catch (err) {
        this.#log.info({ peer, err: (err as Error).message }, 'lookup client sent a bad line: closing');
        socket.end(encodeReply({ type: 'error', id: null, message: (err as Error).message }));
        socket.removeListener('data', onData);
        setTimeout(() => socket.destroy(), 2_000).unref();
      }
    };
    socket.on('close', () => {
      this.#clients.delete(client);
      for (const t of client.topics) this.#dropSubscriber(t, client);
      const left = (this.#perAddress.get(client.address) ?? 1) - 1;
      if (left > 0) this.#perAddress.set(client.address, left);
      else this.#perAddress.delete(client.address);
      this.#log.debug({ peer, clients: this.#clients.size }, 'lookup client left');
    });
    socket.on('error', () => {}); // 'close' follows
    socket.on('end', () => socket.destroy());
    socket.setNoDelay(true);
    socket.on('data', onData);
    this.#log.debug({ peer, clients: this.#clients.size }, 'lookup client joined');
    if (early.length > 0) onData(early);
    socket.resume();
  }

  close(): void {
    this.#unsubscribe();
    clearInterval(this.#keepalive);
    if (this.#indexing) clearImmediate(this.#indexing);
    for (const c of this.#clients) c.socket.destroy();
    this.#clients.clear();
    this.#subscribers.clear();
  }

  #onLine(client: Client, text: string): void {
    if (text.startsWith('F ')) {
      this.#format(client, text);
      return;
    }
    const line = parseQuery(text);
    if (line.type === 'unsubscribe') {
      const t = topicString(line.topic);
      if (client.topics.delete(t)) this.#dropSubscriber(t, client);
      return;
    }
    const catalog = this.#index.catalog;
    if (!catalog) {
      this.#write(client, encodeReply({ type: 'error', id: line.id, message: 'gateway has no catalog yet' }));
      return;
    }
    if (line.key.kind === 'svc') {
      this.#answerService(client, catalog, line.id, `${line.key.namespace}/${line.key.name}`);
      return;
    }
    const answer = this.#answer(catalog, line.id, line.key);
    // Topic strings as topicString() writes them.
    const topics = [
      ...Object.keys(answer.services).map((key) => `svc ${key}`),
      ...Object.keys(answer.pods).map((ip) => `pod ${ip}`),
      ...Object.keys(answer.namespaces).map((namespace) => `ns ${namespace}`),
    ];
    const fresh = topics.filter((t) => !client.topics.has(t));
    if (!this.#subscribe(client, fresh, line.key.kind, line.id)) return;
    this.#metrics?.lookups.inc({ kind: line.key.kind, result: topics.length > 0 ? 'found' : 'missing' });
    // A string, not a Buffer: one recipient, and the socket encodes it as it writes.
    this.#write(client, encodeAnswer(answer, this.#encodeEntry));
  }

  /**
   * Subscribes `client` to `fresh` topics (ones it does not hold yet), or, past
   * MAX_SUBSCRIPTIONS, answers the lookup `id` with an error and counts it refused: false then.
   */
  #subscribe(client: Client, fresh: readonly string[], kind: LookupKey['kind'], id: number): boolean {
    if (client.topics.size + fresh.length > MAX_SUBSCRIPTIONS) {
      this.#metrics?.lookups.inc({ kind, result: 'refused' });
      const message = `at most ${MAX_SUBSCRIPTIONS} subscriptions per connection`;
      this.#write(client, encodeReply({ type: 'error', id, message }));
      return false;
    }
    for (const t of fresh) {
      client.topics.add(t);
      const set = this.#subscribers.get(t);
      if (set) set.add(client);
      else this.#subscribers.set(t, new Set([client]));
    }
    return true;
  }

  /**
   * A service by name (every DNS miss for a service name): its answer is a head of a few
   * dozen bytes and the entry's cached tail, written as one string, and one topic.
   * The same line and subscriptions as the general path (#answer, encodeAnswer).
   */
  #answerService(client: Client, catalog: Catalog, id: number, key: string): void {
    const entry = catalog.services[key];
    const topic = `svc ${key}`;
    if (entry && !client.topics.has(topic) && !this.#subscribe(client, [topic], 'svc', id)) return;
    this.#metrics?.lookups.inc({ kind: 'svc', result: entry ? 'found' : 'missing' });
    if (entry && client.compact) {
      this.#writeCompact(client, id, catalog.revision, key, entry);
      return;
    }
    const head = answerHead(id, catalog.revision);
    if (!entry) {
      this.#write(client, `${head}{},"pods":{},"namespaces":{}}\n`);
      return;
    }
    let tail = this.#serviceTail.get(entry);
    if (tail === undefined) {
      tail = serviceAnswerTail(key, this.#encodeEntry(entry));
      if (++this.#serviceTailCount > MAX_ENTRY_JSON) {
        this.#serviceTail = new WeakMap();
        this.#serviceTailCount = 1;
      }
      this.#serviceTail.set(entry, tail);
    }
    this.#write(client, head + tail);
  }

  /**
   * `F <n>`: the sidecar reads formats up to n; the answer says which one this connection gets
   * (lookup-compact.ts). Asked again, the last answer holds.
   */
  #format(client: Client, text: string): void {
    client.compact = parseFormatLine(text) >= COMPACT_FORMAT;
    this.#write(client, `F ${client.compact ? COMPACT_FORMAT : 1}\n`);
  }

  /** A found service's compact answer: the head and the entry's cached tail, one string. */
  #writeCompact(client: Client, id: number, revision: number, key: string, entry: ServiceEntry): void {
    let tail = this.#compactTail.get(entry);
    if (tail === undefined) {
      tail = compactServiceTail(key, entry);
      if (++this.#compactTailCount > MAX_ENTRY_JSON) {
        this.#compactTail = new WeakMap();
        this.#compactTailCount = 1;
      }
      this.#compactTail.set(entry, tail);
    }
    this.#write(client, compactAnswerHead(id, revision) + tail);
  }

  readonly #encodeEntry = (entry: ServiceEntry): string => {
    let json = this.#entryJSON.get(entry);
    if (json === undefined) {
      json = JSON.stringify(entry);
      if (++this.#entryJSONCount > MAX_ENTRY_JSON) {
        this.#entryJSON = new WeakMap();
        this.#entryJSONCount = 1;
      }
      this.#entryJSON.set(entry, json);
    }
    return json;
  };

  /** A namespace's or an address's answer (a service's: #answerService). */
  #answer(catalog: Catalog, id: number, key: Exclude<LookupKey, { kind: 'svc' }>): Answer {
    const answer: Answer = {
      type: 'answer',
      id,
      revision: catalog.revision,
      services: {},
      pods: {},
      namespaces: {},
    };
    if (key.kind === 'ns') {
      if (this.#index.namespaceExists(key.namespace))
        answer.namespaces[key.namespace] = catalog.namespaces?.[key.namespace] ?? { name: key.namespace };
    } else {
      for (const k of this.#index.servicesAt(key.ip, MAX_SERVICES_PER_IP))
        answer.services[k] = catalog.services[k];
      const pod = catalog.pods[key.ip];
      if (pod) answer.pods[key.ip] = pod;
    }
    return answer;
  }

  #dropSubscriber(topic: string, client: Client): void {
    const set = this.#subscribers.get(topic);
    set?.delete(client);
    if (set?.size === 0) this.#subscribers.delete(topic);
  }

  /** Index first (answers after this see the new catalog), then the subscribers of what changed. */
  #onUpdate(catalog: Catalog, update: CatalogUpdate): void {
    const before = this.#index.catalog;
    // Namespaces whose existence may change with this update (the "has services" fallback).
    const namespaces = new Set<string>();
    if (update.type === 'service') {
      const prev = before?.services[update.key];
      if (prev) namespaces.add(prev.service.namespace);
      if (update.entry) namespaces.add(update.entry.service.namespace);
    } else if (update.type === 'namespace') {
      namespaces.add(update.name);
    } else if (update.type === 'snapshot') {
      for (const t of this.#subscribers.keys()) if (t.startsWith('ns ')) namespaces.add(t.slice(3));
    }
    const existed = new Map([...namespaces].map((ns) => [ns, this.#index.namespaceExists(ns)]));
    this.#index.apply(catalog, update);
    const revision = catalog.revision;
    switch (update.type) {
      case 'service':
        this.#push(`svc ${update.key}`, () => encodeFeedLine(update));
        break;
      case 'pod':
        this.#push(`pod ${update.ip}`, () => encodeFeedLine(update));
        break;
      case 'snapshot':
        for (const t of [...this.#subscribers.keys()]) {
          if (t.startsWith('svc ')) {
            const key = t.slice(4);
            const entry = catalog.services[key] ?? null;
            if (entry !== (before?.services[key] ?? null))
              this.#push(t, () => encodeFeedLine({ type: 'service', revision, key, entry }));
          } else if (t.startsWith('pod ')) {
            const ip = t.slice(4);
            const pod = catalog.pods[ip] ?? null;
            if (pod !== (before?.pods[ip] ?? null))
              this.#push(t, () => encodeFeedLine({ type: 'pod', revision, ip, pod }));
          }
        }
        break;
    }
    for (const [name, was] of existed) {
      const now = this.#index.namespaceExists(name);
      if (now === was) continue;
      const namespace = now ? (catalog.namespaces?.[name] ?? { name }) : null;
      this.#push(`ns ${name}`, () => encodeFeedLine({ type: 'namespace', revision, name, namespace }));
    }
  }

  /** Sends a topic's update to its subscribers, encoded once (and only when someone holds it). */
  #push(topic: string, encode: () => string): void {
    const subscribers = this.#subscribers.get(topic);
    if (!subscribers) return;
    const line = Buffer.from(encode());
    this.#metrics?.pushes.inc({ topic: topic.slice(0, topic.indexOf(' ')) }, subscribers.size);
    for (const c of subscribers) this.#write(c, line);
  }

  #write(client: Client, line: Buffer | string): void {
    // A client more than maxBufferedBytes behind is dropped (it reconnects and asks again).
    if (client.socket.writableLength > this.#maxBuffered) {
      this.#log.warn({ queued: client.socket.writableLength }, 'lookup client too slow: dropping it');
      client.socket.destroy();
      return;
    }
    client.socket.write(line);
  }
}

function hubMetrics(registry: Registry, hub: LookupHub): HubMetrics {
  new Gauge({
    name: 'edgemesh_gateway_lookup_clients',
    help: 'Sidecars connected for on-demand lookups',
    registers: [registry],
    collect() {
      this.set(hub.clients);
    },
  });
  new Gauge({
    name: 'edgemesh_gateway_lookup_subscriptions',
    help: 'Topics (services, pods, namespaces) subscribed, over all lookup connections',
    registers: [registry],
    collect() {
      this.set(hub.subscriptions);
    },
  });
  return {
    lookups: new Counter({
      name: 'edgemesh_gateway_lookups_total',
      help: 'On-demand lookups by kind (svc, ns, ip) and result (found, missing, refused)',
      labelNames: ['kind', 'result'],
      registers: [registry],
    }),
    pushes: new Counter({
      name: 'edgemesh_gateway_lookup_pushes_total',
      help: 'Updates sent to subscribed sidecars, by topic kind (svc, pod, ns)',
      labelNames: ['topic'],
      registers: [registry],
    }),
  };
}
