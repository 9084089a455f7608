import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { certificateValidity } from '../certs.ts';
import type { Logger } from '../log.ts';
import { Registry } from '../metrics.ts';
import { createCA, issueIdentity, type TlsIdentity } from './identity.ts';
import { CertificateRenewer, certificateMetrics } from './renewer.ts';

const DAY = 86_400_000;
const ca = createCA();
const issue = (days: number) => issueIdentity(ca, { kind: 'node', name: 'n1' }, { days });

function recordingLogger(lines: { level: string; obj: unknown; msg?: string }[]): Logger {
  const at =
    (level: string) =>
    (obj: object | string, msg?: string): void => {
      lines.push({ level, obj, msg });
    };
  const log: Logger = {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: () => log,
  };
  return log;
}

async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}) {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = (m?.values ?? []).find((x) =>
    Object.entries(labels).every(([k, want]) => (x.labels as Record<string, unknown>)[k] === want),
  );
  return v?.value;
}

describe('CertificateRenewer', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.parse('2026-12-01T00:00:00Z') });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function setup(first: TlsIdentity, renew: () => Promise<TlsIdentity>) {
    const registry = new Registry();
    const lines: { level: string; obj: unknown; msg?: string }[] = [];
    const renewed: TlsIdentity[] = [];
    const r = new CertificateRenewer({
      what: 'node certificate /state/tunnel.crt',
      current: first,
      renew,
      onRenewed: (id) => renewed.push(id),
      metrics: certificateMetrics('edgemesh_gateway', registry),
      log: recordingLogger(lines),
      random: () => 0,
    });
    return { r, registry, lines, renewed };
  }

  it('renews at two thirds of the lifetime, hands the new identity over, and schedules the next', async () => {
    const first = issue(30 / 86_400); // 30 s, backdated 3 s: renewal 19 s after issue
    const { r, registry, renewed } = setup(first, async () => issue(30 / 86_400));
    r.start();
    expect(await metricValue(registry, 'edgemesh_gateway_certificate_expiry_seconds')).toBe(
      certificateValidity(first.certPem).notAfter / 1000,
    );
    await vi.advanceTimersByTimeAsync(18_000);
    expect(renewed).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(renewed).toHaveLength(1);
    expect(r.identity).toBe(renewed[0]);
    expect(r.validity.serial).not.toBe(certificateValidity(first.certPem).serial);
    await vi.advanceTimersByTimeAsync(20_000);
    expect(renewed).toHaveLength(2);
    expect(await metricValue(registry, 'edgemesh_gateway_certificate_renewals_total', { result: 'ok' })).toBe(
      2,
    );
    expect(await metricValue(registry, 'edgemesh_gateway_certificate_expiry_seconds')).toBe(
      r.validity.notAfter / 1000,
    );
    r.close();
  });

  it('a 90-day certificate is not renewed early (timers cannot wait past 24.8 days in one go)', async () => {
    const { r, renewed } = setup(issue(90), async () => issue(90));
    r.start();
    await vi.advanceTimersByTimeAsync(59 * DAY);
    expect(renewed).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(2 * DAY);
    expect(renewed).toHaveLength(1);
    r.close();
  });

  it('retries with backoff; once expired, logs an error naming the file and the cause', async () => {
    let failing = true;
    const { r, registry, lines, renewed } = setup(issue(30 / 86_400), async () => {
      if (failing) throw new Error('connect ECONNREFUSED 198.51.100.11:20007');
      return issue(90);
    });
    r.start();
    await vi.advanceTimersByTimeAsync(19_000); // first attempt: 11 s left
    expect(lines.filter((l) => l.level === 'warn')).toHaveLength(1);
    expect(lines.find((l) => l.level === 'warn')?.msg).toBe(
      'node certificate /state/tunnel.crt: renewal failed, retrying',
    );
    await vi.advanceTimersByTimeAsync(30_000); // past expiry, still failing
    const errors = lines.filter((l) => l.level === 'error');
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0].msg).toMatch(
      /^node certificate \/state\/tunnel\.crt expired at .* and could not be renewed/,
    );
    expect(JSON.stringify(errors[0].obj)).toContain('ECONNREFUSED 198.51.100.11:20007');
    const failures = await metricValue(registry, 'edgemesh_gateway_certificate_renewals_total', {
      result: 'error',
    });
    expect(failures).toBeGreaterThanOrEqual(4);
    failing = false;
    // Attempts clustered before expiry grew the backoff to its 5-minute cap.
    await vi.advanceTimersByTimeAsync(301_000);
    expect(renewed).toHaveLength(1);
    expect(await metricValue(registry, 'edgemesh_gateway_certificate_renewals_total', { result: 'ok' })).toBe(
      1,
    );
    r.close();
  });

  it('refuses a renewed certificate that is not valid now', async () => {
    const expired = { ...issue(30 / 86_400) };
    const { r, registry, renewed } = setup(issue(30 / 86_400), async () => expired);
    await vi.advanceTimersByTimeAsync(40_000); // `expired` is now past its not-after
    r.start();
    await vi.advanceTimersByTimeAsync(500);
    expect(renewed).toHaveLength(0);
    expect(
      await metricValue(registry, 'edgemesh_gateway_certificate_renewals_total', { result: 'error' }),
    ).toBe(1);
    r.close();
  });
});
