import { X509Certificate } from 'node:crypto';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/log.ts';
import { ControlPlane } from '../../test/cluster/control-plane.ts';
import { type BootstrapOptions, bootstrapTls } from './bootstrap.ts';
import { createCa, createServingCert, serviceDnsNames } from './certs.ts';

// Issue 16 item 10 (the webhook pod mounted its CA's private key) and item 9 (the mesh CA
// key reached every node whose pod mounted its Secret), against a real API server: the
// webhook's CA key lives in its own Secret, the Secret the webhook mounts holds only the
// serving pair (and the CA certificate); an install from before is migrated; the mesh CA's
// certificate is published in a ConfigMap for gateways and tunnel-servers.
const namespace = 'edgemesh-system';
let cp: ControlPlane;
let kc: KubeConfig;
let core: CoreV1Api;

const opts = (over: Partial<BootstrapOptions> = {}): BootstrapOptions => ({
  namespace,
  service: 'edgemesh-webhook',
  secretName: 'edgemesh-webhook-tls',
  caSecretName: 'edgemesh-webhook-ca',
  webhookConfigName: 'edgemesh-sidecar-injector',
  clusterDomain: 'cluster.local',
  ipAddresses: [],
  extraDnsNames: [],
  rotate: false,
  now: new Date(),
  meshCaSecret: 'edgemesh-mesh-ca',
  ...over,
});
const data = async (name: string) => (await core.readNamespacedSecret({ name, namespace })).data ?? {};
const pem = (b64: string | undefined) => Buffer.from(b64 ?? '', 'base64').toString();

beforeAll(async () => {
  cp = await ControlPlane.start();
  kc = cp.kubeConfig();
  core = kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: namespace } } });
}, 30 * 60_000);

afterAll(async () => {
  await cp?.stop();
});

describe('edgemesh webhook-tls against a real API server', () => {
  it('moves the CA key of an older install out of the Secret the webhook mounts, keeping the CA', async () => {
    // What the previous version wrote: one Secret with the CA key in it.
    const ca = createCa(new Date());
    const serving = createServingCert(
      ca,
      serviceDnsNames('edgemesh-webhook', namespace, 'cluster.local'),
      new Date(),
    );
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    await core.createNamespacedSecret({
      namespace,
      body: {
        metadata: { name: 'edgemesh-webhook-tls' },
        type: 'kubernetes.io/tls',
        data: {
          'tls.crt': b64(serving.certPem),
          'tls.key': b64(serving.keyPem),
          'ca.crt': b64(ca.certPem),
          'ca.key': b64(ca.keyPem),
        },
      },
    });
    const r = await bootstrapTls(kc, opts(), silentLogger);
    expect(r.secret).toBe('updated');
    expect(r.reason).toMatch(
      /the CA key moves from Secret edgemesh-system\/edgemesh-webhook-tls to Secret edgemesh-system\/edgemesh-webhook-ca/,
    );
    const mounted = await data('edgemesh-webhook-tls');
    expect(Object.keys(mounted).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    const caSecret = await data('edgemesh-webhook-ca');
    expect(pem(caSecret['ca.key'])).toBe(ca.keyPem);
    // Same CA (the caBundle does not change), and the serving certificate chains to it.
    expect(pem(mounted['ca.crt'])).toBe(ca.certPem);
    expect(
      new X509Certificate(pem(mounted['tls.crt'])).verify(new X509Certificate(ca.certPem).publicKey),
    ).toBe(true);
    // Idempotent afterwards.
    const again = await bootstrapTls(kc, opts(), silentLogger);
    expect(again.secret).toBe('unchanged');
  });

  it('a rotation writes the new CA key only to its own Secret', async () => {
    const before = await data('edgemesh-webhook-ca');
    const r = await bootstrapTls(kc, opts({ rotate: true }), silentLogger);
    expect(r.secret).toBe('updated');
    const caSecret = await data('edgemesh-webhook-ca');
    expect(caSecret['ca.key']).not.toBe(before['ca.key']);
    const mounted = await data('edgemesh-webhook-tls');
    expect(mounted['ca.key']).toBeUndefined();
    expect(mounted['ca.crt']).toBe(caSecret['ca.crt']);
  });

  it('publishes the mesh CA certificate (never its key) in a ConfigMap', async () => {
    const secret = await data('edgemesh-mesh-ca');
    expect(secret['ca.key']).toBeTruthy();
    const cm = await core.readNamespacedConfigMap({ name: 'edgemesh-mesh-ca', namespace });
    expect(cm.data).toEqual({ 'ca.crt': pem(secret['ca.crt']) });
    // An install whose ConfigMap is missing gets it back, with the same CA.
    await core.deleteNamespacedConfigMap({ name: 'edgemesh-mesh-ca', namespace });
    const r = await bootstrapTls(kc, opts(), silentLogger);
    expect(r.meshCa).toBe('unchanged');
    const again = await core.readNamespacedConfigMap({ name: 'edgemesh-mesh-ca', namespace });
    expect(again.data?.['ca.crt']).toBe(pem(secret['ca.crt']));
  });
});
