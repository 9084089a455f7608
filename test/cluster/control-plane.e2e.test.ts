import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetnsLab, waitFor } from '../harness/netns.ts';
import { ControlPlane } from './control-plane.ts';

// The real control plane in a "cloud" namespace: the controller-manager turns a Deployment
// into a ReplicaSet and Pods, the scheduler binds them only once a schedulable Node
// exists, RBAC denies what it should, admission webhooks are called, TLS is verified, and
// stop() leaves no process or data behind.
describe('control plane', () => {
  const lab = new NetnsLab('emk');
  let cp: ControlPlane;
  let cloud: string;
  const address = '192.168.50.1';

  beforeAll(async () => {
    cloud = await lab.add('cloud');
    // The API server's address, on the namespace's loopback (no dummy driver everywhere).
    await lab.exec(cloud, ['ip', 'addr', 'add', `${address}/32`, 'dev', 'lo']);
    cp = await ControlPlane.start({ netns: cloud, address });
  }, 30 * 60_000); // a cold machine builds the Kubernetes binaries first (about 8 min here)

  afterAll(async () => {
    await cp?.stop();
    await lab.cleanup();
  });

  const getJson = async (args: string[]) => JSON.parse(await cp.kubectl([...args, '-o', 'json']));

  it('serves the API over TLS that verifies against its CA, inside the namespace and via the local relay', async () => {
    expect(cp.server).toBe(`https://${address}:6443`);
    const version = await getJson(['version']);
    expect(version.serverVersion.gitVersion).toBe('v1.36.3');
    // start() returns only once the controller-manager has made the default ServiceAccount
    // (pods cannot be admitted before that).
    expect((await getJson(['get', 'serviceaccount', 'default', '-n', 'default'])).kind).toBe(
      'ServiceAccount',
    );
    // Without the CA the serving cert is rejected.
    const insecure = await lab.run(cloud, ['curl', '-sS', '--max-time', '5', `${cp.server}/readyz`]);
    expect(insecure.code).not.toBe(0);
    expect(insecure.stderr).toMatch(/certificate/i);
    const verified = await lab.exec(cloud, [
      'curl',
      '-sS',
      '--max-time',
      '5',
      '--cacert',
      cp.pki.caCert,
      `${cp.server}/readyz`,
    ]);
    expect(verified.stdout).toBe('ok');
    // The test process (root namespace) uses the same API server through the socket relay.
    const nodes = await cp
      .kubeConfig()
      .makeApiClient((await import('@kubernetes/client-node')).CoreV1Api)
      .listNode();
    expect(nodes.items).toEqual([]);
  });

  it('authorizes with RBAC: a fresh service account may not list pods, the admin may', async () => {
    await cp.kubectl(['create', 'namespace', 'e2e']);
    const sa = await cp
      .kubectl(['auth', 'can-i', 'list', 'pods', '-n', 'e2e', '--as=system:serviceaccount:e2e:default'])
      .catch((err: Error) => err.message);
    expect(sa).toMatch(/\bno\b/);
    expect((await cp.kubectl(['auth', 'can-i', 'list', 'pods', '-n', 'e2e'])).trim()).toBe('yes');
  });

  it('runs a Deployment through ReplicaSet to Pods, and binds them once a Node is Ready', async () => {
    await cp.kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: 'web', namespace: 'e2e' },
        spec: {
          replicas: 2,
          selector: { matchLabels: { app: 'web' } },
          template: {
            metadata: { labels: { app: 'web' } },
            spec: { containers: [{ name: 'nginx', image: 'nginx:1.27' }] },
          },
        },
      }),
    });
    const rs = await waitFor(
      async () => (await getJson(['get', 'replicasets', '-n', 'e2e'])).items[0],
      30_000,
      250,
      'a ReplicaSet',
    );
    expect(rs.metadata.ownerReferences[0]).toMatchObject({ kind: 'Deployment', name: 'web' });
    const pods = await waitFor(
      async () => {
        const items = (await getJson(['get', 'pods', '-n', 'e2e'])).items;
        return items.length === 2 && items;
      },
      30_000,
      250,
      'two pods',
    );
    for (const pod of pods)
      expect(pod.metadata.ownerReferences[0]).toMatchObject({ kind: 'ReplicaSet', name: rs.metadata.name });
    // No node yet: the scheduler tried and reported why it could not bind.
    await waitFor(
      async () => {
        const items = (await getJson(['get', 'pods', '-n', 'e2e'])).items;
        return items.every(
          (p: {
            spec: { nodeName?: string };
            status: { conditions?: { type: string; reason?: string }[] };
          }) =>
            !p.spec.nodeName &&
            p.status.conditions?.some((c) => c.type === 'PodScheduled' && c.reason === 'Unschedulable'),
        );
      },
      30_000,
      250,
      'pods reported unschedulable',
    );

    await cp.kubectl(['create', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: 'node-x', labels: { 'kubernetes.io/hostname': 'node-x' } },
      }),
    });
    const now = new Date().toISOString();
    await cp.kubectl([
      'patch',
      'node',
      'node-x',
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({
        status: {
          conditions: [
            {
              type: 'Ready',
              status: 'True',
              reason: 'KubeletReady',
              lastHeartbeatTime: now,
              lastTransitionTime: now,
            },
          ],
          capacity: { cpu: '4', memory: '8Gi', pods: '110' },
          allocatable: { cpu: '4', memory: '8Gi', pods: '110' },
        },
      }),
    ]);
    // The node lifecycle controller lifts the not-ready taint, then the scheduler binds.
    await waitFor(
      async () => {
        const items = (await getJson(['get', 'pods', '-n', 'e2e'])).items;
        return (
          items.length === 2 &&
          items.every((p: { spec: { nodeName?: string } }) => p.spec.nodeName === 'node-x')
        );
      },
      60_000,
      500,
      'pods bound to node-x',
    );
  });

  it('calls admission webhooks (a failing one with failurePolicy Fail blocks pod creation)', async () => {
    await cp.kubectl(['create', 'namespace', 'hooked']);
    await cp.kubectl(['label', 'namespace', 'hooked', 'e2e-webhook=on']);
    await cp.kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind: 'MutatingWebhookConfiguration',
        metadata: { name: 'e2e-unreachable' },
        webhooks: [
          {
            name: 'unreachable.e2e.edgemesh.io',
            clientConfig: { url: 'https://127.0.0.1:1/mutate' },
            rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'] }],
            namespaceSelector: { matchLabels: { 'e2e-webhook': 'on' } },
            failurePolicy: 'Fail',
            sideEffects: 'None',
            admissionReviewVersions: ['v1'],
            timeoutSeconds: 5,
          },
        ],
      }),
    });
    const run = (ns: string) =>
      cp.kubectl(['run', 'probe', '-n', ns, '--image=busybox', '--restart=Never']).then(
        () => 'created',
        (err: Error) => err.message,
      );
    expect(await run('hooked')).toMatch(/failed calling webhook "unreachable.e2e.edgemesh.io"/);
    expect(await run('e2e')).toBe('created');
  });

  it('stops every component by PID and removes its data', async () => {
    const pids = Object.values(cp.pids).filter((p): p is number => typeof p === 'number');
    expect(pids.length).toBe(5); // etcd, socket relay, apiserver, controller-manager, scheduler
    await cp.stop();
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(existsSync(cp.dataDir)).toBe(false);
  });
});
