/**
 * Tells the node's gateway which pod this sidecar serves, from the pod's own IP:
 * `EDGEMESH/1 HELLO <namespace> <name> <uid>` (lib/gateway-protocol.ts).
 *
 * Why: a pod whose sandbox is recreated while the cloud is unreachable gets a new IP that no
 * API reports; this HELLO is how its gateway (and through it, every peer gateway) learns it
 * (gateway/pod-moves.ts). Sent at start, then every ANNOUNCE_INTERVAL_MS (a restarted gateway
 * keeps the catalog on disk but not the moves it told its peers), and retried with backoff
 * while the gateway does not confirm. A refusal is normal while the gateway is still learning
 * the pod from the API: the retry settles it.
 */
import net from 'node:net';
import { formatRequest, MAX_HEADER_BYTES, parseReply, takeLine } from '../lib/gateway-protocol.ts';
import { type Logger, silentLogger } from '../lib/log.ts';
import { LogGate } from '../lib/log-gate.ts';

export const ANNOUNCE_INTERVAL_MS = 30_000;
export const ANNOUNCE_RETRY_INITIAL_MS = 500;
const ANNOUNCE_TIMEOUT_MS = 5_000;

export interface PodIdentity {
  namespace: string;
  name: string;
  uid: string;
}

export interface AnnouncerOptions {
  host: string;
  port: number;
  pod: PodIdentity;
  log?: Logger;
  intervalMs?: number;
  retryInitialMs?: number;
}

/** One HELLO: resolves when the gateway answers OK, rejects with what it said or what failed. */
export function announceOnce(opts: { host: string; port: number; pod: PodIdentity }): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: opts.host, port: opts.port });
    let buffered = Buffer.alloc(0);
    const done = (err?: Error) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(
      () => done(new Error('no answer from the gateway in time')),
      ANNOUNCE_TIMEOUT_MS,
    );
    socket.once('connect', () => socket.write(formatRequest({ kind: 'hello', ...opts.pod })));
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length > MAX_HEADER_BYTES) return done(new Error('gateway reply too long'));
      const taken = takeLine(buffered);
      if (!taken) return;
      try {
        const reply = parseReply(taken.line);
        done(reply.ok ? undefined : new Error(`${reply.code} ${reply.message}`));
      } catch (err) {
        done(err as Error);
      }
    });
    socket.once('error', (err) => done(err));
    socket.once('close', () => done(new Error('gateway closed without a reply')));
  });
}

export class PodAnnouncer {
  readonly #opts: Required<Omit<AnnouncerOptions, 'log'>>;
  readonly #log: Logger;
  readonly #failures = new LogGate(60_000);
  #timer: NodeJS.Timeout | undefined;
  #retryMs: number;
  #confirmed = false;
  #stopped = false;

  constructor(opts: AnnouncerOptions) {
    this.#opts = {
      host: opts.host,
      port: opts.port,
      pod: opts.pod,
      intervalMs: opts.intervalMs ?? ANNOUNCE_INTERVAL_MS,
      retryInitialMs: opts.retryInitialMs ?? ANNOUNCE_RETRY_INITIAL_MS,
    };
    this.#log = opts.log ?? silentLogger;
    this.#retryMs = this.#opts.retryInitialMs;
  }

  /** True once the gateway has confirmed this pod at least once. */
  get confirmed(): boolean {
    return this.#confirmed;
  }

  start(): void {
    this.#stopped = false;
    this.#run();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #run(): void {
    const { pod } = this.#opts;
    announceOnce(this.#opts).then(
      () => {
        if (!this.#confirmed)
          this.#log.info({ pod: `${pod.namespace}/${pod.name}` }, 'the gateway knows this pod at its IP');
        this.#confirmed = true;
        this.#retryMs = this.#opts.retryInitialMs;
        this.#schedule(this.#opts.intervalMs);
      },
      (err: Error) => {
        const gate = this.#failures.pass();
        if (gate.log)
          this.#log.info(
            { pod: `${pod.namespace}/${pod.name}`, reason: err.message, suppressed: gate.suppressed },
            'HELLO not confirmed yet; retrying',
          );
        this.#schedule(this.#retryMs);
        this.#retryMs = Math.min(this.#retryMs * 2, this.#opts.intervalMs);
      },
    );
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => this.#run(), ms);
    this.#timer.unref();
  }
}
