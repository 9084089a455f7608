import { Gauge, type Registry } from 'prom-client';
import { certificateValidity } from '../lib/certs.ts';

/**
 * `edgemesh_webhook_certificate_expiry_seconds`: when the serving certificate in use expires
 * (not-after, Unix seconds), read from `current()` at scrape time so a reload shows at once.
 * With failurePolicy Fail, an expired webhook certificate blocks pod creation in labelled
 * namespaces; the alert (manifests/monitoring) warns 14 days ahead. A PEM Node cannot parse
 * here reads as 0, long expired: the alert fires for a certificate nothing can check.
 */
export function certificateExpiryMetric(registry: Registry, current: () => Buffer): void {
  let parsed: { pem: Buffer; notAfter: number | undefined } | undefined;
  new Gauge({
    name: 'edgemesh_webhook_certificate_expiry_seconds',
    help: 'When the serving TLS certificate in use expires (not-after, Unix time in seconds)',
    registers: [registry],
    collect() {
      const pem = current();
      if (parsed?.pem !== pem) parsed = { pem, notAfter: notAfter(pem) };
      this.set((parsed.notAfter ?? 0) / 1000);
    },
  });
}

function notAfter(pem: Buffer): number | undefined {
  try {
    return certificateValidity(pem.toString('utf8')).notAfter;
  } catch {
    return undefined;
  }
}
