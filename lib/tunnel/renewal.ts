import type { CertificateValidity } from '../certs.ts';

/**
 * When to renew a certificate, and how long to wait after a failed attempt: pure, so the
 * schedule is unit-tested without timers (lib/tunnel/renewer.ts runs it).
 *
 *   renew at   notBefore + lifetime × (2/3 − 0.1 × random): between 57 % and 67 % of the
 *              lifetime. A third of the lifetime (30 days for a 90-day node certificate) is
 *              left for retries through a cloud outage; the jitter spreads the gateways that
 *              enrolled together (a cluster's first start) over 10 % of the lifetime, so they
 *              do not all ask the tunnel-servers at once.
 *   retry      1 s, doubling to 5 min; while the certificate is still valid, never more than
 *              a quarter of what is left (a short certificate gets several attempts before it
 *              expires), but at least 1 s.
 */
export const RENEW_FRACTION = 2 / 3;
export const RENEW_JITTER = 0.1;
export const RETRY_START_MS = 1_000;
export const RETRY_MAX_MS = 300_000;
/**
 * setTimeout's longest delay (2^31 − 1 ms, ~24.8 days); a longer one fires at once. Waits
 * past it (a 90-day certificate renews after ~55 days) are taken in steps of this size.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The moment (ms epoch) to renew; `random` in [0, 1) picks the point in the jitter window. */
export function renewalTime(v: CertificateValidity, random: number): number {
  const lifetime = v.notAfter - v.notBefore;
  return v.notBefore + Math.floor(lifetime * (RENEW_FRACTION - RENEW_JITTER * random));
}

/** Whether a certificate loaded at start is past its latest renewal point (or expired). */
export function renewalDue(v: CertificateValidity, now: number): boolean {
  return now >= renewalTime(v, 0);
}

/** The wait before retry number `attempt` (0 for the first retry after a failure). */
export function retryDelay(attempt: number, v: CertificateValidity, now: number): number {
  const backoff = Math.min(RETRY_MAX_MS, RETRY_START_MS * 2 ** Math.min(attempt, 30));
  const left = v.notAfter - now;
  if (left <= 0) return backoff;
  return Math.max(RETRY_START_MS, Math.min(backoff, Math.floor(left / 4)));
}

/** Why a certificate cannot be used now, or undefined: for errors that name the cause. */
export function validityProblem(v: CertificateValidity, now: number): string | undefined {
  if (now > v.notAfter) return `expired at ${new Date(v.notAfter).toISOString()}`;
  if (now < v.notBefore) return `not valid before ${new Date(v.notBefore).toISOString()}`;
  return undefined;
}
