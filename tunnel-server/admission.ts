import type { ConnectionLimits } from './limits.ts';

export type Refusal = 'connection-limit' | 'connection-limit-ip';

/**
 * Open TCP connections, in all and per source IP, against their caps (limits.ts): counted
 * from accept to close, whatever the connection turns out to be. Pure counting; the listener
 * calls `admit` on accept and `leave` on close.
 */
export class ConnectionCaps {
  readonly limits: ConnectionLimits;
  /** Open connections now. */
  #total = 0;
  /** source IP → its open connections (> 0; an IP with none has no entry). */
  readonly #byIp = new Map<string, number>();

  constructor(limits: ConnectionLimits) {
    this.limits = limits;
  }

  get total(): number {
    return this.#total;
  }

  from(ip: string): number {
    return this.#byIp.get(ip) ?? 0;
  }

  /** Counts a new connection from `ip`; or says which cap it is over (and counts nothing). */
  admit(ip: string): Refusal | undefined {
    const fromIp = this.from(ip);
    if (this.#total >= this.limits.maxConnections) return 'connection-limit';
    if (fromIp >= this.limits.maxConnectionsPerIp) return 'connection-limit-ip';
    this.#total++;
    this.#byIp.set(ip, fromIp + 1);
    return undefined;
  }

  /** An admitted connection from `ip` closed. */
  leave(ip: string): void {
    this.#total--;
    const n = this.from(ip) - 1;
    if (n > 0) this.#byIp.set(ip, n);
    else this.#byIp.delete(ip);
  }
}
