/**
 * Request/reply matching on the tunnel-server links. A gateway asks a replica for a relay
 * (`connect`, answered by `relay`) or a TCP punch (`punch`, answered by `punch-go`); the
 * answer carries the request's id. A request is done when the work its answer starts is done
 * (the relay leg joined, the punched connection secured), so the caller can look at the
 * peer's sessions right after. An `error` with the id fails it; no answer in time fails it
 * too, and the caller moves on (to the next replica, or the next technique).
 */
import { randomBytes } from 'node:crypto';
import { EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { ToGateway, ToServer } from '../../lib/tunnel/control.ts';

/** What a request is sent on: a tunnel-server link (server-link.ts), as far as requests go. */
export interface RequestLink {
  readonly label: string;
  /** False when the link is down: nothing was sent. */
  send(msg: ToServer): boolean;
}

export type RequestMessage = { t: 'connect' | 'punch'; peer: string };

interface Waiter {
  resolve(m: ToGateway): void;
  reject(e: Error): void;
}

export class Requests {
  readonly #pending = new Map<string, Waiter>();
  readonly #newId: () => string;

  constructor(newId: () => string = () => randomBytes(8).toString('hex')) {
    this.#newId = newId;
  }

  /** Sends `msg` with a fresh id; settles with the answer, its error, or a timeout. */
  request(link: RequestLink, msg: RequestMessage, timeoutMs: number): Promise<ToGateway> {
    const id = this.#newId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new EdgemeshError(
            ErrorCodes.UNAVAILABLE,
            `${link.label} did not answer ${msg.t} in ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      if (!link.send({ ...msg, id })) {
        this.#pending.get(id)?.reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, `${link.label} is down`));
        this.#pending.delete(id);
      }
    });
  }

  /**
   * An answer: the request with its id resolves with `msg` once `work` (what the answer
   * started) is done, or rejects with work's error. False when no request waits for it (the
   * peer asked, or ours timed out): the caller then deals with work's failure itself.
   */
  answer(msg: ToGateway & { id: string }, work: Promise<unknown>): boolean {
    const waiting = this.#pending.get(msg.id);
    if (!waiting) return false;
    this.#pending.delete(msg.id);
    work.then(() => waiting.resolve(msg), waiting.reject);
    return true;
  }

  /** An `error` answer: the request with `id` rejects with `err`. False when none waits. */
  fail(id: string | undefined, err: Error): boolean {
    const waiting = id ? this.#pending.get(id) : undefined;
    if (!waiting || !id) return false;
    this.#pending.delete(id);
    waiting.reject(err);
    return true;
  }

  /** Requests still waiting (tests). */
  get size(): number {
    return this.#pending.size;
  }
}
