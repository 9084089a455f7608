import { describe, expect, it } from 'vitest';
import { createCa as createMeshCa } from '../../lib/certs.ts';
import { createCa, createServingCert, inspect, serviceDnsNames } from './certs.ts';
import {
  b64,
  existingMeshCaCert,
  planWebhookCertificates,
  setCaBundles,
  storedWebhookCertificates,
  webhookSecrets,
} from './objects.ts';

// What webhook-tls writes and edgemesh install prints come from these: the plan keeps what
// is valid and keeps the CA (so the caBundle) across serving-certificate renewals.
const NOW = new Date(Date.UTC(2026, 11, 6, 8));
const DAY = 86_400_000;
const names = serviceDnsNames('edgemesh-webhook', 'edgemesh-system');

describe('planWebhookCertificates', () => {
  const ca = createCa(new Date(NOW.getTime() - 10 * DAY));
  const serving = createServingCert(ca, names, new Date(NOW.getTime() - 10 * DAY));
  const plan = (stored: Parameters<typeof planWebhookCertificates>[0]['stored'], rotate = false) =>
    planWebhookCertificates({ stored, dnsNames: names, ipAddresses: [], now: NOW, rotate });

  it('makes a CA and a serving certificate when nothing is stored', () => {
    const p = plan(undefined);
    expect(p.reason).toBe('no certificates stored yet');
    expect(p.newCa).toBe(true);
    expect(inspect(p.certs.serving.certPem).issuedBy(p.certs.ca)).toBe(true);
    expect(inspect(p.certs.serving.certPem).dnsNames).toEqual(names);
  });

  it('keeps valid certificates as they are', () => {
    const p = plan({ ca, serving });
    expect(p).toEqual({ certs: { ca, serving }, reason: undefined, newCa: false });
  });

  it('renews an expiring serving certificate from the same CA (the caBundle stays)', () => {
    const old = createServingCert(ca, names, new Date(NOW.getTime() - 350 * DAY));
    const p = plan({ ca, serving: old });
    expect(p.reason).toMatch(/serving certificate expires in \d+ days/);
    expect(p.newCa).toBe(false);
    expect(p.certs.ca).toBe(ca);
    expect(p.certs.serving.certPem).not.toBe(old.certPem);
  });

  it('replaces the CA when asked, or when it did not sign the serving certificate', () => {
    expect(plan({ ca, serving }, true)).toMatchObject({ newCa: true, reason: 'rotation forced (--rotate)' });
    const other = createCa(NOW, 'other');
    expect(plan({ ca: other, serving })).toMatchObject({ newCa: true });
  });
});

describe('the objects', () => {
  it('reads back the certificates it wrote, CA from its own Secret first', () => {
    const ca = createCa(NOW);
    const serving = createServingCert(ca, names, NOW);
    const s = webhookSecrets('ns', { secret: 'tls', caSecret: 'ca' }, { ca, serving });
    expect(s.serving.type).toBe('kubernetes.io/tls');
    expect(Object.keys(s.serving.data ?? {})).toEqual(['tls.crt', 'tls.key', 'ca.crt']);
    expect(Object.keys(s.ca.data ?? {})).toEqual(['ca.crt', 'ca.key']);
    expect(storedWebhookCertificates(s.serving.data, s.ca.data)).toEqual({ ca, serving });
    expect(storedWebhookCertificates(undefined, s.ca.data)).toBeUndefined();
  });

  it('sets every caBundle and says whether one changed', () => {
    const hooks = [{ clientConfig: {} }, { clientConfig: { caBundle: b64('x') } }];
    expect(setCaBundles(hooks, 'PEM')).toBe(true);
    expect(hooks.map((h) => (h.clientConfig as { caBundle?: string }).caBundle)).toEqual([
      b64('PEM'),
      b64('PEM'),
    ]);
    expect(setCaBundles(hooks, 'PEM')).toBe(false);
  });

  it('an existing mesh CA is read with its key checked, naming where', () => {
    const mesh = createMeshCa('edgemesh mesh CA', { now: NOW });
    expect(existingMeshCaCert({ 'ca.crt': b64(mesh.certPem), 'ca.key': b64(mesh.keyPem) }, 'S')).toBe(
      mesh.certPem,
    );
    expect(existingMeshCaCert({ 'ca.crt': b64(mesh.certPem) }, 'S')).toBeUndefined();
    expect(() =>
      existingMeshCaCert({ 'ca.crt': b64(mesh.certPem), 'ca.key': b64('junk') }, 'Secret x/y'),
    ).toThrow(/Secret x\/y ca.key/);
  });
});
