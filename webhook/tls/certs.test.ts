import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createCa, createServingCert, inspect, rotationReason, serviceDnsNames } from './certs.ts';

const DAY = 86_400_000;
const names = serviceDnsNames('edgemesh-webhook', 'edgemesh-system');

describe('webhook certificates', () => {
  const now = new Date('2026-11-21T00:00:00Z');
  const ca = createCa(now);
  const serving = createServingCert(ca, names, now, ['198.51.100.10']);

  it('names every DNS form of the Service and verifies against the CA with node:crypto', () => {
    expect(names).toEqual([
      'edgemesh-webhook',
      'edgemesh-webhook.edgemesh-system',
      'edgemesh-webhook.edgemesh-system.svc',
      'edgemesh-webhook.edgemesh-system.svc.cluster.local',
    ]);
    const x = new X509Certificate(serving.certPem);
    expect(x.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(x.checkHost('edgemesh-webhook.edgemesh-system.svc')).toBe('edgemesh-webhook.edgemesh-system.svc');
    expect(x.checkIP('198.51.100.10')).toBe('198.51.100.10');
    expect(new X509Certificate(ca.certPem).ca).toBe(true);
    expect(x.ca).toBe(false);
    expect(inspect(serving.certPem).ipAddresses).toEqual(['198.51.100.10']);
  });

  it('decides rotation: valid, near expiry, wrong names, foreign CA, mismatched key, missing', () => {
    expect(rotationReason({ ca, serving }, names, now)).toBeUndefined();
    expect(rotationReason({ ca, serving }, names, new Date(now.getTime() + 340 * DAY))).toMatch(
      /serving certificate expires in 2[0-9] days/,
    );
    expect(rotationReason({ ca, serving }, [...names, 'extra.example'], now)).toMatch(/lacks extra.example/);
    const other = createCa(now);
    expect(rotationReason({ ca: other, serving }, names, now)).toMatch(/not signed by the stored CA/);
    const second = createServingCert(ca, names, now);
    expect(
      rotationReason({ ca, serving: { certPem: serving.certPem, keyPem: second.keyPem } }, names, now),
    ).toMatch(/key does not match/);
    expect(rotationReason(undefined, names, now)).toMatch(/no certificates/);
    expect(rotationReason({ ca, serving: { certPem: 'garbage', keyPem: 'x' } }, names, now)).toMatch(
      /unreadable/,
    );
  });
});
