import { EventEmitter } from 'node:events';
import { describeError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import {
  type Address,
  FEATURES,
  parseToGateway,
  type ToGateway,
  type ToServer,
} from '../../lib/tunnel/control.ts';
import type { TlsIdentity } from '../../lib/tunnel/identity.ts';
import { MuxSession } from '../../lib/tunnel/mux.ts';
import { connectTls } from '../../lib/tunnel/tls.ts';

/**
 * A gateway's control connection to one tunnel-server replica: TLS with the node's
 * certificate, registration, then control messages both ways. Reconnects forever with
 * backoff (0.5 s doubling to 10 s: a replica restart is noticed within seconds, a long outage
 * costs one attempt every 10 s). A gateway keeps one link per replica.
 */
export interface ServerAddress {
  host: string;
  port: number;
}

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 10_000;

export class ServerLink extends EventEmitter<{ message: [msg: ToGateway]; up: []; down: [] }> {
  readonly address: ServerAddress;
  /** Used by the next connection; replaced on renewal (an established session keeps its own). */
  identity: TlsIdentity;
  readonly #register: { lan: string[]; port: number };
  readonly #log: Logger;
  #session: MuxSession | undefined;
  #registered = false;
  #closed = false;
  #backoff = BACKOFF_START_MS;
  #timer: NodeJS.Timeout | undefined;
  /** The replica's name and the address it sees us from, once registered. */
  serverName: string | undefined;
  observed: Address | undefined;
  /** This end's port of the link's TCP connection: against `observed`, what the NAT did to it. */
  localPort: number | undefined;

  constructor(
    address: ServerAddress,
    identity: TlsIdentity,
    register: { lan: string[]; port: number },
    log: Logger,
  ) {
    super();
    this.address = address;
    this.identity = identity;
    this.#register = register;
    this.#log = log.child({ server: `${address.host}:${address.port}` });
  }

  get label(): string {
    return `${this.address.host}:${this.address.port}`;
  }

  /**
   * The link's round-trip time from its PINGs (the mux's 10 s keepalive, and one at
   * registration so the first relay request already has a measure): which replica relays.
   */
  get rttMs(): number | undefined {
    return this.up ? this.#session?.rttMs : undefined;
  }

  get up(): boolean {
    return this.#registered && !!this.#session?.usable;
  }

  start(): void {
    this.#connect();
  }

  send(msg: ToServer): boolean {
    if (!this.up) return false;
    this.#session?.sendControl(msg as unknown as Record<string, unknown>);
    return true;
  }

  /** Resolves when registered, or after `timeoutMs` with false. */
  waitUp(timeoutMs: number): Promise<boolean> {
    if (this.up) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.removeListener('up', onUp);
        resolve(false);
      }, timeoutMs);
      const onUp = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.once('up', onUp);
    });
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#session?.close();
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    try {
      const { socket } = await connectTls({
        identity: this.identity,
        expect: { kind: 'tunnel-server' },
        host: this.address.host,
        port: this.address.port,
        timeoutMs: 5000,
      });
      socket.setNoDelay(true);
      this.localPort = socket.localPort;
      if (this.#closed) {
        socket.destroy();
        return;
      }
      const session = new MuxSession(socket, { role: 'client', peer: this.label, log: this.#log });
      this.#session = session;
      session.on('control', (raw) => {
        let msg: ToGateway;
        try {
          msg = parseToGateway(raw);
        } catch (err) {
          session.close(err as Error);
          return;
        }
        if (msg.t === 'registered') {
          this.#registered = true;
          this.#backoff = BACKOFF_START_MS;
          this.serverName = msg.server;
          this.observed = msg.observed;
          this.#log.info({ observed: msg.observed, name: msg.server }, 'registered with tunnel-server');
          this.emit('up');
          // Two PINGs: the first after a fresh TLS session pays for warm-up, the second is the measure.
          session
            .ping()
            .then(() => session.ping())
            .catch(() => undefined);
          return;
        }
        this.emit('message', msg);
      });
      session.once('close', (err) => {
        const wasUp = this.#registered;
        this.#registered = false;
        this.#session = undefined;
        this.#log.warn({ err: err ? describeError(err) : undefined }, 'tunnel-server link down');
        if (wasUp) this.emit('down');
        this.#retry();
      });
      session.sendControl({
        t: 'register',
        lan: this.#register.lan,
        port: this.#register.port,
        features: [...FEATURES],
      });
    } catch (err) {
      this.#log.debug({ err: describeError(err) }, 'tunnel-server connect failed');
      this.#retry();
    }
  }

  #retry(): void {
    if (this.#closed) return;
    const delay = this.#backoff;
    this.#backoff = Math.min(BACKOFF_MAX_MS, this.#backoff * 2);
    this.#timer = setTimeout(() => this.#connect(), delay);
    this.#timer.unref();
  }
}
