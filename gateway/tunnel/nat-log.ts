/**
 * The NAT observations the tunnel keeps for `edgemesh netcheck` (status.ts NatObservations):
 * punch probes and punch outcomes, the latest first, bounded however long the gateway runs.
 * Nothing is sent to learn them; the paths record what they did anyway.
 */
import { describeError } from '../../lib/errors.ts';
import type { NatObservations } from './status.ts';

/** Observations kept per kind: enough for a verdict, bounded however long the gateway runs. */
export const NAT_KEEP = 16;

/** `text` with IPv4 / bracketed IPv6 addresses (and ports) replaced by ADDR. */
export function withoutAddresses(text: string): string {
  return text.replace(/\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\[[0-9a-fA-F:.]+\](?::\d+)?/g, 'ADDR');
}

/** A punch error in NAT terms: RST (refused) and silence (dropped) call for different paths. */
export function punchOutcome(message: string): 'refused' | 'no-answer' | 'failed' {
  if (/ECONNREFUSED|refused|ECONNRESET/i.test(message)) return 'refused';
  if (/timed out|ETIMEDOUT|did not connect in|did not answer/i.test(message)) return 'no-answer';
  return 'failed';
}

export class NatLog {
  readonly #nat: NatObservations = { probes: [], punches: [] };
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** A punch probe: the fresh local port and the address `server` saw it from. */
  probe(server: string, localPort: number, observed: string): void {
    this.#nat.probes.unshift({ at: this.#now(), server, localPort, observed });
    this.#nat.probes.length = Math.min(this.#nat.probes.length, NAT_KEEP);
  }

  /** A punch attempt's outcome (TCP on both ends; UDP on the end that opened it). */
  punch(peer: string, transport: 'tcp' | 'udp', err?: unknown): void {
    // The peer's public address is left out: /status is readable from this node's LAN.
    const detail = err === undefined ? undefined : withoutAddresses(describeError(err));
    this.#nat.punches.unshift({
      at: this.#now(),
      peer,
      transport,
      outcome: detail === undefined ? 'connected' : punchOutcome(detail),
      ...(detail === undefined ? {} : { detail: detail.slice(0, 300) }),
    });
    this.#nat.punches.length = Math.min(this.#nat.punches.length, NAT_KEEP);
  }

  /** A copy: the caller may keep it while new observations arrive. */
  snapshot(): NatObservations {
    return { probes: [...this.#nat.probes], punches: [...this.#nat.punches] };
  }
}
