import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlPlane } from '../test/cluster/control-plane.ts';
import { NetnsLab } from '../test/harness/netns.ts';
import { TokenReviewVerifier } from './enrol.ts';

// Enrolment proof against a real API server: projected service-account tokens from the
// TokenRequest API, checked with TokenReview, bound to a pod whose spec.nodeName must be
// the node the gateway claims.
describe('TokenReview enrolment verifier', () => {
  const lab = new NetnsLab('emt');
  const namespace = 'edgemesh-system';
  let cp: ControlPlane;
  let kc: KubeConfig;
  let core: CoreV1Api;
  let verifier: TokenReviewVerifier;

  async function pod(name: string, nodeName: string, serviceAccountName: string) {
    return core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name },
        spec: { nodeName, serviceAccountName, containers: [{ name: 'gateway', image: 'edgemesh' }] },
      },
    });
  }

  async function token(
    serviceAccount: string,
    opts: { pod?: { name: string; uid: string }; audience?: string } = {},
  ) {
    const r = await core.createNamespacedServiceAccountToken({
      name: serviceAccount,
      namespace,
      body: {
        spec: {
          audiences: [opts.audience ?? 'edgemesh-tunnel'],
          expirationSeconds: 600,
          ...(opts.pod
            ? { boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: opts.pod.name, uid: opts.pod.uid } }
            : {}),
        },
      },
    });
    return r.status?.token ?? '';
  }

  beforeAll(async () => {
    const cloud = await lab.add('cloud');
    await lab.exec(cloud, ['ip', 'addr', 'add', '192.168.52.1/32', 'dev', 'lo']);
    cp = await ControlPlane.start({ netns: cloud, address: '192.168.52.1' });
    kc = cp.kubeConfig();
    core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    for (const name of ['edgemesh-gateway', 'someone-else']) {
      await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
    }
    verifier = new TokenReviewVerifier(kc, { serviceAccount: `${namespace}:edgemesh-gateway` });
  }, 30 * 60_000);

  afterAll(async () => {
    await cp?.stop();
    await lab.cleanup();
  });

  it('enrols the node the token-bound gateway pod runs on, and no other', async () => {
    const p = await pod('gw-a', 'node-a', 'edgemesh-gateway');
    const t = await token('edgemesh-gateway', { pod: { name: 'gw-a', uid: p.metadata?.uid ?? '' } });
    await expect(verifier.verify({ node: 'node-a', token: t })).resolves.toBeUndefined();
    await expect(verifier.verify({ node: 'node-b', token: t })).rejects.toThrow(
      /node-a, not node-b|runs on node-a, not node-b/,
    );
  });

  it('refuses tokens of another account, another audience, unbound, garbage, or of a deleted pod', async () => {
    const other = await pod('other-a', 'node-a', 'someone-else');
    const foreign = await token('someone-else', { pod: { name: 'other-a', uid: other.metadata?.uid ?? '' } });
    await expect(verifier.verify({ node: 'node-a', token: foreign })).rejects.toThrow(
      /belongs to system:serviceaccount:edgemesh-system:someone-else/,
    );
    const p = await pod('gw-c', 'node-c', 'edgemesh-gateway');
    const bound = { name: 'gw-c', uid: p.metadata?.uid ?? '' };
    await expect(
      verifier.verify({
        node: 'node-c',
        token: await token('edgemesh-gateway', { pod: bound, audience: 'api' }),
      }),
    ).rejects.toThrow(/not authenticated/);
    await expect(verifier.verify({ node: 'node-c', token: await token('edgemesh-gateway') })).rejects.toThrow(
      /not bound to a pod/,
    );
    await expect(verifier.verify({ node: 'node-c', token: 'not.a.jwt' })).rejects.toThrow(
      /not authenticated/,
    );
    const t = await token('edgemesh-gateway', { pod: bound });
    await expect(verifier.verify({ node: 'node-c', token: t })).resolves.toBeUndefined();
    await core.deleteNamespacedPod({ name: 'gw-c', namespace, gracePeriodSeconds: 0 });
    // The pod is gone: its token no longer proves anything.
    await expect(verifier.verify({ node: 'node-c', token: t })).rejects.toThrow(
      /not authenticated|not found/i,
    );
  });
});
