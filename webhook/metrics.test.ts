import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { certificateValidity, createCa } from '../lib/certs.ts';
import { certificateExpiryMetric } from './metrics.ts';

const expiry = async (registry: Registry) =>
  (await registry.metrics())
    .split('\n')
    .find((l) => l.startsWith('edgemesh_webhook_certificate_expiry_seconds '));

describe('certificateExpiryMetric', () => {
  it("is the served certificate's not-after in Unix seconds, following a reload", async () => {
    const first = createCa('webhook a', { days: 30 }).certPem;
    const second = createCa('webhook b', { days: 365 }).certPem;
    let served = Buffer.from(first);
    const registry = new Registry();
    certificateExpiryMetric(registry, () => served);
    expect(await expiry(registry)).toBe(
      `edgemesh_webhook_certificate_expiry_seconds ${certificateValidity(first).notAfter / 1000}`,
    );
    served = Buffer.from(second);
    expect(await expiry(registry)).toBe(
      `edgemesh_webhook_certificate_expiry_seconds ${certificateValidity(second).notAfter / 1000}`,
    );
  });

  it('reads 0 (expired long ago) for a PEM that does not parse', async () => {
    const registry = new Registry();
    certificateExpiryMetric(registry, () => Buffer.from('-----BEGIN CERTIFICATE-----\nnope\n'));
    expect(await expiry(registry)).toBe('edgemesh_webhook_certificate_expiry_seconds 0');
  });
});
