import { describe, expect, it } from 'vitest';
import { certificateValidity } from '../certs.ts';
import { createCA, issueIdentity } from './identity.ts';
import {
  RETRY_MAX_MS,
  RETRY_START_MS,
  renewalDue,
  renewalTime,
  retryDelay,
  validityProblem,
} from './renewal.ts';

const DAY = 86_400_000;
const v90 = { serial: '01', notBefore: 0, notAfter: 90 * DAY };

describe('certificate renewal schedule', () => {
  it('renews between 57 % and 67 % of the lifetime, by the jitter', () => {
    expect(renewalTime(v90, 0)).toBe(60 * DAY);
    expect(renewalTime(v90, 0.999_999)).toBeGreaterThan(51 * DAY);
    expect(renewalTime(v90, 0.5)).toBe(Math.floor(90 * DAY * (2 / 3 - 0.05)));
  });

  it('a certificate at start is kept until its latest renewal point, replaced after', () => {
    expect(renewalDue(v90, 59 * DAY)).toBe(false);
    expect(renewalDue(v90, 60 * DAY)).toBe(true);
    expect(renewalDue(v90, 91 * DAY)).toBe(true);
  });

  it('retries 1 s doubling to 5 min, at most a quarter of what is left, at least 1 s', () => {
    const now = 61 * DAY; // 29 days left: the backoff alone decides
    expect([0, 1, 2, 3].map((a) => retryDelay(a, v90, now))).toEqual([1000, 2000, 4000, 8000]);
    expect(retryDelay(20, v90, now)).toBe(RETRY_MAX_MS);
    expect(retryDelay(1000, v90, now)).toBe(RETRY_MAX_MS); // no overflow
    // 20 s left: never more than 5 s, so several attempts happen before it expires.
    expect(retryDelay(10, v90, 90 * DAY - 20_000)).toBe(5_000);
    expect(retryDelay(10, v90, 90 * DAY - 1_000)).toBe(RETRY_START_MS);
    // Expired: the plain backoff (enrolment needs no valid certificate).
    expect(retryDelay(3, v90, 91 * DAY)).toBe(8000);
  });

  it('names why a certificate is not valid now', () => {
    expect(validityProblem(v90, DAY)).toBeUndefined();
    expect(validityProblem(v90, 91 * DAY)).toBe(`expired at ${new Date(90 * DAY).toISOString()}`);
    expect(validityProblem({ ...v90, notBefore: 2 * DAY }, DAY)).toMatch(/^not valid before /);
  });

  it('short certificates are backdated by a tenth of their life, so renewal falls after issue', () => {
    const ca = createCA();
    const before = Date.now();
    const id = issueIdentity(ca, { kind: 'node', name: 'n1' }, { days: 30_000 / DAY });
    const v = certificateValidity(id.certPem);
    // X.509 keeps whole seconds.
    expect(v.notAfter - v.notBefore).toBe(33_000);
    expect(renewalTime(v, 0.999)).toBeGreaterThan(before);
    // A 90-day certificate keeps the minute of clock-skew allowance.
    const long = certificateValidity(issueIdentity(ca, { kind: 'node', name: 'n1' }).certPem);
    expect(long.notAfter - long.notBefore).toBe(90 * DAY + 60_000);
  });
});
