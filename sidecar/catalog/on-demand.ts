/**
 * The sidecar's on-demand catalog: one `EDGEMESH/1 LOOKUP` connection to the node's gateway
 * (lib/catalog/lookup-protocol.ts). A DNS name or an address the sidecar does not hold is
 * asked for once (concurrent misses for one key share the question), the answer is held
 * (held.ts) and written to the CatalogStore the DNS zone and the proxy read, and the
 * gateway pushes every change of what is held until the sidecar lets it go (idle).
 *
 * Offline autonomy: when the connection drops, what is held keeps being served (misses get
 * 'unavailable': DNS SERVFAIL, the proxy passes through); on reconnect (backoff as the feed's:
 * RETRY_INITIAL_MS doubling to RETRY_MAX_MS, ±20%) every held key is asked again, which
 * subscribes it again and brings it up to date.
 *
 * State: #socket the live connection; #ready once its header is sent (queries may follow at
 * once: the gateway reads them after admission); #inFlight query id → key, kept until the
 * answer arrives (a late answer still counts: the gateway subscribed it); #waiting key →
 * the callers of the one question in flight for it and when it gives up.
 *
 * Timeouts: one timer for all questions, not one per question. Every question waits the same
 * LOOKUP_TIMEOUT_MS, so #waiting's insertion order is deadline order and the timer only
 * watches the oldest. A timer per question lived the whole 2 s after its answer (it was never
 * cleared): a Timeout, its closure and its key per first query survived the young
 * generation's collections and were copied into the old space (docs/scale.md, round 6).
 */
import net from 'node:net';
import { FEED_IDLE_TIMEOUT_MS, MAX_FEED_LINE_BYTES } from '../../lib/catalog/feed.ts';
import { RETRY_INITIAL_MS, RETRY_MAX_MS } from '../../lib/catalog/feed-source.ts';
import {
  ByteLines,
  COMPACT_FORMAT,
  type CompactAnswer,
  decodeCompactAnswer,
  isCompactAnswer,
  parseFormatLine,
} from '../../lib/catalog/lookup-compact.ts';
import {
  decodeReply,
  formatQuery,
  hasEntries,
  keyString,
  type LookupKey,
  type ReplyLine,
  topicFromString,
} from '../../lib/catalog/lookup-protocol.ts';
import type { CatalogSource } from '../../lib/catalog/source.ts';
import type { CatalogStore } from '../../lib/catalog/store.ts';
import { formatRequest, GATEWAY_PORT, parseReply } from '../../lib/gateway-protocol.ts';
import { type Logger, silentLogger } from '../../lib/log.ts';
import { Counter, Gauge, type Registry } from '../../lib/metrics.ts';
import { HeldCatalog, type HeldTicket } from './held.ts';
import type { CatalogLookup, LookupMemo, LookupResult } from './lookup.ts';

/** A lookup not answered in this time fails (DNS SERVFAIL); the gateway is on the same host. */
export const LOOKUP_TIMEOUT_MS = 2_000;
const CLOCK_MS = 100;

type Done = (r: LookupResult) => void;

/**
 * One question in flight: its key (object and text), who waits for it and when it gives up
 * (performance.now() ms). The first caller is a field, later ones (coalesced misses, rare) an
 * array: a first query allocates no array and no promise (docs/scale.md, round 10).
 */
class Question {
  readonly key: LookupKey;
  readonly k: string;
  readonly deadline: number;
  first: Done | undefined;
  more: Done[] | undefined;
  constructor(key: LookupKey, k: string, deadline: number, first: Done | undefined) {
    this.key = key;
    this.k = k;
    this.deadline = deadline;
    this.first = first;
    this.more = undefined;
  }
  add(done: Done): void {
    if (this.first === undefined) this.first = done;
    else if (this.more === undefined) this.more = [done];
    else this.more.push(done);
  }
}

export interface OnDemandOptions {
  host: string;
  port?: number;
  /**
   * A unix socket to connect to instead of host:port. The gateway listens on TCP only; this
   * is for benches comparing the two on one node (bench/lib/first-query.ts --transports).
   */
  path?: string;
  clusterDomain: string;
  /**
   * The highest answer format to ask for: 2 (default) the compact service answer
   * (lib/catalog/lookup-compact.ts), 1 JSON lines only (benches comparing the two).
   */
  format?: 1 | 2;
  log?: Logger;
  registry?: Registry;
  idleMs?: number;
  negativeTtlMs?: number;
  lookupTimeoutMs?: number;
  /** How often idle keys are swept; default a tenth of idleMs, at most 30 s. */
  sweepMs?: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** Silence (no keepalive) after which the connection is dropped. */
  silenceMs?: number;
  now?: () => number;
}

const RESULTS = ['held', 'negative', 'found', 'missing', 'unavailable'] as const;
type Counted = (typeof RESULTS)[number];

export class OnDemandCatalog implements CatalogSource, CatalogLookup {
  readonly #opts: OnDemandOptions;
  readonly #log: Logger;
  readonly #held: HeldCatalog;
  readonly #now: () => number;
  readonly #counts: Record<Counted, number> = { held: 0, negative: 0, found: 0, missing: 0, unavailable: 0 };
  #store: CatalogStore | undefined;
  #socket: net.Socket | undefined;
  #ready = false;
  #stopped = true;
  #attempt = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  /** Fires when the oldest question in #waiting times out; armed only while one waits. */
  #timeoutTimer: NodeJS.Timeout | undefined;
  #timeoutArmed = false;
  /** The delay #timeoutTimer was made with (refresh() re-arms it with that one). */
  #timeoutTimerMs = 0;
  #nextId = 1;
  /** Query id → its question (a reconnect's re-ask has one that no caller waits for). */
  readonly #inFlight = new Map<number, Question>();
  readonly #waiting = new Map<string, Question>();
  /** The time negative answers are checked against: Date.now() read at most every CLOCK_MS. */
  #coarseNow = 0;
  #coarseAt = 0;
  /**
   * Whether the next connection asks for compact answers (`F 2`, lib/catalog/lookup-compact.ts).
   * False for one connection after a gateway refused the question (an older gateway); asked
   * again on the connection after that, so an upgraded gateway is found.
   */
  #askCompact: boolean;

  constructor(opts: OnDemandOptions) {
    this.#opts = opts;
    this.#log = opts.log ?? silentLogger;
    this.#now = opts.now ?? Date.now;
    this.#askCompact = opts.format !== 1;
    this.#held = new HeldCatalog({
      clusterDomain: opts.clusterDomain,
      idleMs: opts.idleMs,
      negativeTtlMs: opts.negativeTtlMs,
    });
    if (opts.registry) this.#metrics(opts.registry);
  }

  get connected(): boolean {
    return this.#ready;
  }

  get held(): HeldCatalog {
    return this.#held;
  }

  async start(store: CatalogStore): Promise<void> {
    this.#store = store;
    this.#stopped = false;
    const idleMs = this.#opts.idleMs ?? 10 * 60_000;
    this.#sweepTimer = setInterval(() => this.#sweep(), this.#opts.sweepMs ?? Math.min(30_000, idleMs / 10));
    this.#sweepTimer.unref();
    this.#connect();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#sweepTimer);
    clearTimeout(this.#timeoutTimer);
    this.#timeoutTimer = undefined;
    this.#timeoutArmed = false;
    this.#socket?.destroy();
    this.#socket = undefined;
    this.#ready = false;
  }

  ensure(key: LookupKey, id?: string, memo?: LookupMemo): Promise<LookupResult> | undefined {
    const k = id ?? keyString(key);
    if (this.#answersNow(k, memo)) return undefined;
    return new Promise((resolve) => this.#wait(key, k, resolve));
  }

  ensureThen(key: LookupKey, id: string, memo: LookupMemo | undefined, done: Done): boolean {
    if (this.#answersNow(id, memo)) return false;
    this.#wait(key, id, done);
    return true;
  }

  /** Whether the store answers `k` now (held, or a cached negative answer); counts it. */
  #answersNow(k: string, memo: LookupMemo | undefined): boolean {
    // The hot path: a held key the caller has asked for before is marked used where it lies.
    const ticket = memo?.held as HeldTicket | undefined;
    if (ticket?.live) {
      ticket.used = true;
      this.#counts.held++;
      return true;
    }
    const state = this.#held.check(k, this.#clock);
    if (state === 'held') {
      if (memo) memo.held = this.#held.ticket(k);
      this.#counts.held++;
      return true;
    }
    if (state === 'negative') {
      this.#counts.negative++;
      return true;
    }
    return false;
  }

  /** `done` is called once, later (never from inside this call), with the lookup's result. */
  #wait(key: LookupKey, k: string, done: Done): void {
    const waiting = this.#waiting.get(k);
    if (waiting) {
      waiting.add(done);
      return;
    }
    if (!this.#ready || !this.#socket) {
      this.#counts.unavailable++;
      queueMicrotask(() => done('unavailable'));
      return;
    }
    const question = new Question(key, k, performance.now() + this.#timeoutMs, done);
    this.#waiting.set(k, question);
    this.#ask(question);
    if (!this.#timeoutArmed) this.#armTimeout(this.#timeoutMs);
  }

  get #timeoutMs(): number {
    return this.#opts.lookupTimeoutMs ?? LOOKUP_TIMEOUT_MS;
  }

  /**
   * Arms the one timeout timer. The same Timeout object is re-armed (refresh(): no new timer)
   * when it was made with this delay: the full timeout, the common case.
   */
  #armTimeout(delayMs: number): void {
    this.#timeoutArmed = true;
    if (this.#timeoutTimer && delayMs === this.#timeoutTimerMs) {
      this.#timeoutTimer.refresh();
      return;
    }
    clearTimeout(this.#timeoutTimer);
    this.#timeoutTimer = setTimeout(this.#expire, delayMs);
    this.#timeoutTimerMs = delayMs;
    this.#timeoutTimer.unref();
  }

  /** Fails the questions past their deadline (the oldest first), then watches the next one. */
  readonly #expire = (): void => {
    this.#timeoutArmed = false;
    const now = performance.now();
    for (const [k, question] of this.#waiting) {
      if (question.deadline > now) {
        this.#armTimeout(Math.max(1, Math.ceil(question.deadline - now)));
        return;
      }
      this.#settle(k, 'unavailable');
    }
  };

  /**
   * A coarse clock for a negative answer's expiry (held.check reads it for those only):
   * lifetimes are seconds, a query costs microseconds.
   */
  readonly #clock = (): number => {
    if (this.#opts.now) return this.#opts.now();
    // performance.now() is monotonic and cheaper than Date.now(); re-read the wall clock rarely.
    const t = performance.now();
    if (t - this.#coarseAt >= CLOCK_MS) {
      this.#coarseAt = t;
      this.#coarseNow = Date.now();
    }
    return this.#coarseNow;
  };

  #ask(question: Question): void {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 2 ** 31 - 1 ? 1 : this.#nextId + 1;
    this.#inFlight.set(id, question);
    this.#socket?.write(formatQuery({ type: 'query', id, key: question.key }));
  }

  #settle(k: string, result: LookupResult): void {
    const question = this.#waiting.get(k);
    if (!question) return;
    this.#waiting.delete(k);
    this.#counts[result]++;
    // Callers run here, not in a later job: one failing must neither skip the others nor
    // reach the socket's data handler (which would drop the connection).
    if (question.first) this.#call(question.first, result);
    if (question.more) for (const done of question.more) this.#call(done, result);
  }

  #call(done: Done, result: LookupResult): void {
    try {
      done(result);
    } catch (err) {
      this.#log.error({ err: (err as Error).message }, 'a lookup caller failed');
    }
  }

  #unsubscribe(topics: string[]): void {
    if (!this.#ready) return; // a new connection starts with no subscriptions
    for (const t of topics)
      this.#socket?.write(formatQuery({ type: 'unsubscribe', topic: topicFromString(t) }));
  }

  /** Tells the store what changed: a snapshot the first time, then increments (see held.drain). */
  #publish(): void {
    const store = this.#store;
    if (!store) return;
    const current = store.current;
    if (!current) {
      this.#held.drain(0);
      // A copy: an in-place store changes the records of what it was given.
      const c = this.#held.catalog();
      const copy = {
        ...c,
        services: { ...c.services },
        pods: { ...c.pods },
        namespaces: { ...c.namespaces },
      };
      store.apply({ type: 'snapshot', catalog: copy });
      return;
    }
    for (const update of this.#held.drain(current.revision)) store.apply(update);
  }

  #sweep(): void {
    const released = this.#held.sweep(this.#now());
    if (released.length === 0) return;
    this.#log.debug({ released: released.length }, 'idle catalog entries released');
    this.#unsubscribe(released);
    this.#publish();
  }

  /** A found service's compact answer (the common first query): held without an answer object. */
  #onCompact(c: CompactAnswer): void {
    const question = this.#inFlight.get(c.id);
    if (!question) throw new Error(`answer to unknown query ${c.id}`);
    this.#inFlight.delete(c.id);
    this.#unsubscribe(
      this.#held.answerService(question.key, c.key, c.entry, c.revision, this.#now(), question.k),
    );
    this.#publish();
    this.#settle(question.k, 'found');
  }

  #onLine(line: ReplyLine): void {
    if (line.type === 'answer') {
      const question = this.#inFlight.get(line.id);
      if (!question) throw new Error(`answer to unknown query ${line.id}`);
      this.#inFlight.delete(line.id);
      this.#unsubscribe(this.#held.answer(question.key, line, this.#now(), question.k));
      this.#publish();
      const found = hasEntries(line.services) || hasEntries(line.pods) || hasEntries(line.namespaces);
      this.#settle(question.k, found ? 'found' : 'missing');
      return;
    }
    if (line.type === 'error') {
      if (line.id === null) throw new Error(`gateway: ${line.message}`);
      const question = this.#inFlight.get(line.id);
      this.#inFlight.delete(line.id);
      this.#log.warn({ key: question?.k, reason: line.message }, 'gateway refused a lookup');
      if (question) this.#settle(question.k, 'unavailable');
      return;
    }
    if (line.type === 'keepalive') return;
    if (this.#held.push(line)) this.#publish();
  }

  #connect(): void {
    if (this.#stopped) return;
    const socket = this.#opts.path
      ? net.connect({ path: this.#opts.path })
      : net.connect({ host: this.#opts.host, port: this.#opts.port ?? GATEWAY_PORT });
    this.#socket = socket;
    const lines = new ByteLines(MAX_FEED_LINE_BYTES);
    let reason = 'connection closed by the gateway';
    const askCompact = this.#askCompact;
    /** The format the gateway granted (`F <m>`); 0 until it says. */
    let granted = 0;
    let refusedFormat = false;
    const drop = (why: string) => {
      reason = why;
      socket.destroy();
    };
    const silenceMs = this.#opts.silenceMs ?? FEED_IDLE_TIMEOUT_MS;
    socket.setNoDelay(true);
    socket.setTimeout(silenceMs, () => drop(`no data for ${silenceMs} ms`));
    socket.on('connect', () => {
      socket.write(formatRequest({ kind: 'lookup' }));
      // Before any query: the gateway reads lines in order, so every answer after it is in that form.
      if (askCompact) socket.write(`F ${COMPACT_FORMAT}\n`);
      this.#ready = true;
      this.#attempt = 0;
      const again = this.#held.heldKeys();
      for (const key of again) this.#ask(new Question(key, keyString(key), 0, undefined));
      this.#log.info({ held: again.length }, 'catalog lookups connected to the gateway');
      // The first connection makes the store synced: cluster names answer from now on.
      if (!this.#store?.synced) this.#publish();
    });
    const onLine = (b: Buffer, start: number, end: number): void => {
      if (socket.destroyed) return;
      if (isCompactAnswer(b, start)) {
        if (granted !== COMPACT_FORMAT) throw new Error('a compact answer before format 2 was granted');
        this.#onCompact(decodeCompactAnswer(b, start, end));
        return;
      }
      const text = b.toString('utf8', start, end);
      if (text.startsWith('F ')) {
        granted = parseFormatLine(text);
        if (!askCompact || (granted !== 1 && granted !== COMPACT_FORMAT))
          throw new Error(`format ${granted} was not asked for`);
        return;
      }
      if (text.startsWith('ERR ')) {
        const reply = parseReply(text);
        throw new Error(reply.ok ? 'malformed reply' : `gateway refused: ${reply.code} ${reply.message}`);
      }
      const line = decodeReply(text);
      // An older gateway refuses `F 2` as a bad line and closes: ask in JSON next time.
      if (line.type === 'error' && line.id === null && askCompact && granted === 0) refusedFormat = true;
      this.#onLine(line);
    };
    socket.on('data', (chunk: Buffer) => {
      try {
        lines.push(chunk, onLine);
      } catch (err) {
        drop(`bad lookup line: ${(err as Error).message}`);
      }
    });
    socket.on('error', (err) => {
      reason = err.message;
    });
    socket.on('close', () => {
      if (this.#socket === socket) this.#socket = undefined;
      if (refusedFormat)
        this.#log.warn(
          {},
          'the gateway does not know compact answers (an older gateway): asking in JSON lines',
        );
      this.#askCompact = !refusedFormat && this.#opts.format !== 1;
      this.#ready = false;
      this.#inFlight.clear();
      for (const k of [...this.#waiting.keys()]) this.#settle(k, 'unavailable');
      if (this.#stopped) return;
      const base = Math.min(
        this.#opts.retryMaxMs ?? RETRY_MAX_MS,
        (this.#opts.retryInitialMs ?? RETRY_INITIAL_MS) * 2 ** this.#attempt,
      );
      const retryInMs = Math.round(base * (0.8 + Math.random() * 0.4));
      this.#attempt = Math.min(this.#attempt + 1, 30);
      this.#log.warn(
        { reason, retryInMs, held: this.#held.stats.keys },
        'catalog lookups lost: serving what is held and reconnecting',
      );
      this.#retryTimer = setTimeout(() => this.#connect(), retryInMs);
    });
  }

  #metrics(registry: Registry): void {
    const counts = this.#counts;
    const reported: Record<Counted, number> = { held: 0, negative: 0, found: 0, missing: 0, unavailable: 0 };
    new Counter({
      name: 'edgemesh_sidecar_lookups_total',
      help:
        'Catalog lookups by result: held (answered from what the sidecar holds), negative (a cached ' +
        'negative answer), found / missing (asked the gateway), unavailable (the gateway could not be asked)',
      labelNames: ['result'],
      registers: [registry],
      collect() {
        // Counted in plain numbers on the hot path; handed to the counter at scrape time.
        for (const r of RESULTS) {
          if (counts[r] > reported[r]) this.inc({ result: r }, counts[r] - reported[r]);
          reported[r] = counts[r];
        }
      },
    });
    const held = this.#held;
    new Gauge({
      name: 'edgemesh_sidecar_held',
      help: 'What the sidecar holds of the catalog: services, pods, namespaces, keys (lookups held), negative',
      labelNames: ['what'],
      registers: [registry],
      collect() {
        for (const [what, n] of Object.entries(held.stats)) this.set({ what }, n);
      },
    });
    const self = this;
    new Gauge({
      name: 'edgemesh_sidecar_gateway_lookup_connected',
      help: '1 while the lookup connection to the gateway is up',
      registers: [registry],
      collect() {
        this.set(self.connected ? 1 : 0);
      },
    });
  }
}
