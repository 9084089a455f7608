import { randomBytes } from 'node:crypto';

/**
 * A single-use secret naming one relay leg or punch probe: issued over a gateway's TLS control
 * session, presented on a raw connection ("EMT1 RELAY|PROBE <token>", lib/tunnel/control.ts
 * parseRawLine: 32 hex digits). 128 random bits: a stranger cannot guess a live one.
 */
export function newToken(): string {
  return randomBytes(16).toString('hex');
}
