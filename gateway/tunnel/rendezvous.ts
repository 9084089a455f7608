/**
 * The rendezvous side of the tunnel: the control links to every tunnel-server replica
 * (server-link.ts, one per replica), what they say turned into calls of a dispatch table
 * (one typed handler per message kind: adding a kind to lib/tunnel/control.ts ToGateway
 * does not compile until it has one), and the requests this gateway makes on them
 * (requests.ts). It knows nothing of peers or paths: the manager supplies the handlers.
 *
 *   registered   consumed by the link itself (it is how a link comes up)
 *   error        with the id of a request of ours: that request fails; else a warning
 *   relay        answers a `connect` (or the peer's): join the relay leg
 *   probe        a punch starts: probe the server from a fresh port
 *   punch-go     answers a `punch` (or the peer's): simultaneous open
 *   signal       ICE signalling for the UDP path
 *   site-peers   same-site gateways, remembered for outages
 */
import { EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Address, ToGateway } from '../../lib/tunnel/control.ts';
import type { TlsIdentity } from '../../lib/tunnel/identity.ts';
import { type RequestLink, type RequestMessage, Requests } from './requests.ts';
import type { ServerAddress } from './server-link.ts';
import type { ServerStatus } from './status.ts';

/** A control link as the rendezvous uses it (server-link.ts ServerLink; a fake in tests). */
export interface ControlLink extends RequestLink {
  readonly address: ServerAddress;
  /** The replica's name, once registered. */
  readonly serverName: string | undefined;
  readonly up: boolean;
  readonly observed: Address | undefined;
  readonly localPort: number | undefined;
  /** Round-trip time of the link's PINGs, once measured (relays go via the fastest replica). */
  readonly rttMs: number | undefined;
  identity: TlsIdentity;
  on(event: 'message', listener: (msg: ToGateway) => void): unknown;
  on(event: 'up', listener: () => void): unknown;
  start(): void;
  waitUp(timeoutMs: number): Promise<boolean>;
  close(): void;
}

type Message<K extends ToGateway['t']> = Extract<ToGateway, { t: K }>;

/** What the rendezvous does not handle itself: one handler per message kind. */
export type ControlHandlers = {
  [K in Exclude<ToGateway['t'], 'registered' | 'error'>]: (link: ControlLink, msg: Message<K>) => void;
};

type DispatchTable = {
  [K in ToGateway['t']]: (link: ControlLink, msg: Message<K>) => void;
};

export interface RendezvousOptions {
  links: ControlLink[];
  handlers: ControlHandlers;
  /** A link registered (again): a tunnel-server answers now. */
  onLinkUp(link: ControlLink): void;
  log: Logger;
  requests?: Requests;
}

export class Rendezvous {
  readonly #links: ControlLink[];
  readonly #table: DispatchTable;
  readonly #requests: Requests;
  readonly #log: Logger;

  constructor(opts: RendezvousOptions) {
    this.#links = opts.links;
    this.#log = opts.log;
    this.#requests = opts.requests ?? new Requests();
    this.#table = {
      ...opts.handlers,
      registered: () => undefined,
      error: (link, msg) => this.#onError(link, msg),
    };
    for (const link of this.#links) {
      link.on('message', (msg) => this.dispatch(link, msg));
      link.on('up', () => opts.onLinkUp(link));
    }
  }

  /** Connects every link (each reconnects with backoff on its own from then on). */
  start(): void {
    for (const link of this.#links) link.start();
  }

  /** Calls the handler for msg's kind. */
  dispatch(link: ControlLink, msg: ToGateway): void {
    (this.#table[msg.t] as (link: ControlLink, msg: ToGateway) => void)(link, msg);
  }

  /** Links that are up, in configured order starting at `first`. */
  linksUp(first = 0): ControlLink[] {
    const n = this.#links.length;
    return Array.from({ length: n }, (_, i) => this.#links[(first + i) % n]).filter((l) => l.up);
  }

  /** Sends a request on `link` and waits for its answer (requests.ts). */
  request(link: ControlLink, msg: RequestMessage, timeoutMs: number): Promise<ToGateway> {
    return this.#requests.request(link, msg, timeoutMs);
  }

  /** An answer's work: a request of ours waiting for it settles with it (requests.ts answer). */
  answer(msg: ToGateway & { id: string }, work: Promise<unknown>): boolean {
    return this.#requests.answer(msg, work);
  }

  /** Resolves when at least one link is registered (or after timeoutMs). */
  ready(timeoutMs: number): Promise<boolean> {
    return Promise.any(
      this.#links.map((l) => l.waitUp(timeoutMs).then((up) => (up ? true : Promise.reject()))),
    ).catch(() => false);
  }

  /** New links use `identity` when they reconnect; registered ones keep theirs. */
  setIdentity(identity: TlsIdentity): void {
    for (const link of this.#links) link.identity = identity;
  }

  status(): ServerStatus[] {
    return this.#links.map((l) => ({
      address: l.label,
      name: l.serverName,
      up: l.up,
      observed: l.observed ? `${l.observed.ip}:${l.observed.port}` : undefined,
      ...(l.rttMs === undefined ? {} : { rttMs: Math.round(l.rttMs * 100) / 100 }),
      ...(l.localPort === undefined ? {} : { localPort: l.localPort }),
    }));
  }

  close(): void {
    for (const l of this.#links) l.close();
  }

  #onError(link: ControlLink, msg: Message<'error'>): void {
    const err = new EdgemeshError(ErrorCodes.UNAVAILABLE, `${link.label}: ${msg.message}`);
    if (!this.#requests.fail(msg.id, err))
      this.#log.warn({ server: link.label, reason: msg.message }, 'tunnel-server error');
  }
}
