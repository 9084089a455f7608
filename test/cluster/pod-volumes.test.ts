import type { V1Pod, V1Volume } from '@kubernetes/client-node';
import { afterAll, describe, expect, it } from 'vitest';
import { GoldenDir } from '../harness/golden.ts';
import { containerMounts, type VolumeSources, volumeContent } from './pod-volumes.ts';

const golden = new GoldenDir(new URL('./testdata', import.meta.url).pathname);
const pod: V1Pod = {
  metadata: { name: 'web-1', namespace: 'demo', uid: 'u-1', labels: { app: 'web' } },
  spec: { containers: [] },
};
const facts = { podIP: '10.244.1.9', hostIP: '192.168.51.11' };
// The API's answers for these cases; the agent wires the real API in the same shape.
const configMaps: Record<string, Record<string, string>> = {
  settings: { greeting: 'hello', level: 'debug' },
  'kube-root-ca.crt': { 'ca.crt': 'CA PEM' },
};
const secrets: Record<string, Record<string, string>> = { creds: { password: 's3cret', user: 'admin' } };
const sources: VolumeSources = {
  configMap: async (name) => configMaps[name],
  secret: async (name) => secrets[name],
  token: async (audience, seconds) => `token(aud=${audience ?? 'api'},exp=${seconds})`,
};

// The volume the ServiceAccount admission plugin adds to every pod.
const kubeApiAccess: V1Volume = {
  name: 'kube-api-access-abcde',
  projected: {
    sources: [
      { serviceAccountToken: { path: 'token', expirationSeconds: 3607 } },
      { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
      { downwardAPI: { items: [{ path: 'namespace', fieldRef: { fieldPath: 'metadata.namespace' } }] } },
    ],
  },
};

const cases: Record<string, V1Volume> = {
  'kube-api-access': kubeApiAccess,
  'configmap-all-keys': { name: 'cfg', configMap: { name: 'settings' } },
  'secret-items': {
    name: 'sec',
    secret: { secretName: 'creds', items: [{ key: 'password', path: 'nested/pw' }] },
  },
  'secret-missing-optional': { name: 'sec', secret: { secretName: 'absent', optional: true } },
  'downward-api': {
    name: 'info',
    downwardAPI: {
      items: [
        { path: 'name', fieldRef: { fieldPath: 'metadata.name' } },
        { path: 'labels/app', fieldRef: { fieldPath: "metadata.labels['app']" } },
      ],
    },
  },
  'empty-dir': { name: 'scratch', emptyDir: { medium: 'Memory' } },
  'host-path-create': { name: 'state', hostPath: { path: '/var/lib/edgemesh', type: 'DirectoryOrCreate' } },
};

describe('volumeContent', () => {
  for (const [name, volume] of Object.entries(cases)) {
    it(name, async () => {
      const content = await volumeContent(pod, volume, sources, facts);
      golden.expect(`${name}.volume.golden`, `${JSON.stringify(content, null, 2)}\n`);
    });
  }

  it('rejects what the node cannot provide, naming the volume', async () => {
    const bad: [V1Volume, RegExp][] = [
      [{ name: 'a', configMap: { name: 'absent' } }, /volume a: configMap demo\/absent not found/],
      [
        { name: 'b', secret: { secretName: 'creds', items: [{ key: 'nope', path: 'x' }] } },
        /volume b: secret demo\/creds has no key nope/,
      ],
      [
        {
          name: 'c',
          configMap: { name: 'settings', items: [{ key: 'greeting', path: '../../etc/passwd' }] },
        },
        /leaves the volume/,
      ],
      [{ name: 'd', hostPath: { path: 'relative/dir' } }, /not absolute/],
      [{ name: 'e', nfs: { server: 'x', path: '/' } }, /volume type nfs is not supported/],
      [
        {
          name: 'f',
          downwardAPI: { items: [{ path: 'cpu', resourceFieldRef: { resource: 'limits.cpu' } }] },
        },
        /only fieldRef/,
      ],
    ];
    for (const [volume, message] of bad) {
      await expect(volumeContent(pod, volume, sources, facts), volume.name).rejects.toThrow(message);
    }
  });

  afterAll(() => {
    expect(golden.unused('.volume.golden')).toEqual([]);
  });
});

describe('containerMounts', () => {
  const volumes = new Map([
    ['cfg', '/data/pod/volumes/cfg'],
    ['state', '/var/lib/edgemesh'],
  ]);

  it('maps volumeMounts to bind mounts, subPath inside the volume', () => {
    const c = {
      name: 'app',
      volumeMounts: [
        { name: 'cfg', mountPath: '/etc/app', readOnly: true },
        { name: 'state', mountPath: '/state/one', subPath: 'one' },
      ],
    };
    expect(containerMounts(c, volumes)).toEqual([
      { source: '/data/pod/volumes/cfg', target: '/etc/app', readOnly: true },
      { source: '/var/lib/edgemesh/one', target: '/state/one', readOnly: false },
    ]);
  });

  it('rejects unknown volumes, relative mount paths and escaping subPaths', () => {
    expect(() =>
      containerMounts({ name: 'app', volumeMounts: [{ name: 'x', mountPath: '/x' }] }, volumes),
    ).toThrow(/app: volumeMount x names no volume/);
    expect(() =>
      containerMounts({ name: 'app', volumeMounts: [{ name: 'cfg', mountPath: 'x' }] }, volumes),
    ).toThrow(/not absolute/);
    expect(() =>
      containerMounts(
        { name: 'app', volumeMounts: [{ name: 'cfg', mountPath: '/x', subPath: '../../..' }] },
        volumes,
      ),
    ).toThrow(/leaves the volume/);
  });
});
