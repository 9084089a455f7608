import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { containerArgv, ImageError, imageKind } from './images.ts';
import { validateOptions } from './node-agent.ts';
import { nodeStatus } from './nodes.ts';
import { containerEnv, EnvError, expandVars } from './pod-env.ts';
import { IpPool, parseCidr } from './pod-network.ts';
import { runProbe, UnsupportedProbe } from './probes.ts';

const pod: V1Pod = {
  metadata: { name: 'client-7f', namespace: 'demo', uid: 'u-1', labels: { app: 'client' } },
  spec: { nodeName: 'node-a', serviceAccountName: 'client-sa', containers: [] },
};
const facts = {
  podIP: '10.244.1.7',
  hostIP: '192.168.50.11',
  configMaps: { 'demo/settings': { level: 'debug' } },
  secrets: { 'demo/creds': { token: 's3cret' } },
};
const field = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } });

describe('containerEnv (downward API)', () => {
  it('resolves fieldRefs, key refs and $(VAR) references to earlier variables', () => {
    const c: V1Container = {
      name: 'edgemesh-proxy',
      env: [
        field('POD_NAME', 'metadata.name'),
        field('POD_NAMESPACE', 'metadata.namespace'),
        field('POD_IP', 'status.podIP'),
        field('NODE_NAME', 'spec.nodeName'),
        field('HOST_IP', 'status.hostIP'),
        field('SA', 'spec.serviceAccountName'),
        field('APP', "metadata.labels['app']"),
        { name: 'EDGEMESH_GATEWAY', value: '$(HOST_IP):15080' },
        { name: 'LITERAL', value: '$$(HOST_IP) $(UNKNOWN)' },
        { name: 'LEVEL', valueFrom: { configMapKeyRef: { name: 'settings', key: 'level' } } },
        { name: 'TOKEN', valueFrom: { secretKeyRef: { name: 'creds', key: 'token' } } },
        { name: 'MAYBE', valueFrom: { secretKeyRef: { name: 'creds', key: 'absent', optional: true } } },
      ],
    };
    expect(containerEnv(pod, c, facts)).toEqual({
      POD_NAME: 'client-7f',
      POD_NAMESPACE: 'demo',
      POD_IP: '10.244.1.7',
      NODE_NAME: 'node-a',
      HOST_IP: '192.168.50.11',
      SA: 'client-sa',
      APP: 'client',
      EDGEMESH_GATEWAY: '192.168.50.11:15080',
      LITERAL: '$(HOST_IP) $(UNKNOWN)',
      LEVEL: 'debug',
      TOKEN: 's3cret',
    });
  });

  it('rejects what it cannot resolve, naming the container and variable', () => {
    const missing: V1Container = {
      name: 'app',
      env: [{ name: 'X', valueFrom: { configMapKeyRef: { name: 'nope', key: 'k' } } }],
    };
    expect(() => containerEnv(pod, missing, facts)).toThrow(EnvError);
    expect(() => containerEnv(pod, missing, facts)).toThrow(/app: env X: configmap demo\/nope has no key k/);
    const unsupported: V1Container = { name: 'app', env: [field('Y', 'status.phase')] };
    expect(() => containerEnv(pod, unsupported, facts)).toThrow(/fieldRef status.phase is not supported/);
    const resource: V1Container = {
      name: 'app',
      env: [{ name: 'Z', valueFrom: { resourceFieldRef: { resource: 'limits.cpu' } } }],
    };
    expect(() => containerEnv(pod, resource, facts)).toThrow(
      /supports fieldRef, configMapKeyRef and secretKeyRef only/,
    );
  });

  it('expands only well-formed references', () => {
    expect(expandVars('$(A)-$(B)-$$-$(', { A: '1', B: '2' })).toBe('1-2-$-$(');
  });
});

describe('image table', () => {
  const programs = {
    edgemeshBin: '/repo/bin/edgemesh',
    node: '/repo/node',
    httpServer: '/repo/http-server.ts',
  };
  const where = { namespace: 'demo', name: 'web-1', node: 'node-b' };

  it('knows images by their last path segment, ignoring tag and digest', () => {
    expect(imageKind('docker.io/library/nginx:1.27')).toBe('http-server');
    expect(imageKind('nginx@sha256:abc')).toBe('http-server');
    expect(imageKind('curlimages/curl:8.10.1')).toBe('shell');
    expect(imageKind('ghcr.io/edgemesh/edgemesh:0.1.0')).toBe('edgemesh');
    expect(imageKind('redis:7')).toBeUndefined();
  });

  it('runs edgemesh images as our CLI with the args the webhook wrote', () => {
    const c = {
      name: 'edgemesh-init',
      image: 'ghcr.io/edgemesh/edgemesh:0.1.0',
      args: ['init', '--proxy-uid=1337'],
    };
    expect(containerArgv(c, where, {}, programs)).toEqual(['/repo/bin/edgemesh', 'init', '--proxy-uid=1337']);
    const withCommand = { ...c, command: ['/usr/local/bin/edgemesh', 'sidecar'], args: ['--node=$(NODE)'] };
    expect(containerArgv(withCommand, where, { NODE: 'node-b' }, programs)).toEqual([
      '/repo/bin/edgemesh',
      'sidecar',
      '--node=node-b',
    ]);
    expect(() => containerArgv({ ...c, command: ['sh'] }, where, {}, programs)).toThrow(ImageError);
  });

  it('serves nginx-like images on their TCP container ports, 80 by default', () => {
    const c = {
      name: 'nginx',
      image: 'nginx',
      ports: [{ containerPort: 8080 }, { containerPort: 53, protocol: 'UDP' }],
    };
    expect(containerArgv(c, where, {}, programs)).toEqual([
      '/repo/node',
      '/repo/http-server.ts',
      '--ports=8080',
      '--pod=demo/web-1',
      '--node=node-b',
    ]);
    expect(containerArgv({ name: 'nginx', image: 'nginx' }, where, {}, programs)).toContain('--ports=80');
  });

  it('runs busybox-like command/args as written, else sleeps', () => {
    expect(
      containerArgv(
        { name: 'c', image: 'busybox', command: ['sh', '-c', 'echo $(X)'] },
        where,
        { X: 'hi' },
        programs,
      ),
    ).toEqual(['sh', '-c', 'echo hi']);
    expect(containerArgv({ name: 'c', image: 'busybox' }, where, {}, programs)).toEqual([
      'sleep',
      'infinity',
    ]);
  });

  it('refuses unknown images by name', () => {
    expect(() => containerArgv({ name: 'db', image: 'redis:7' }, where, {}, programs)).toThrow(
      /db: image redis:7 is not in the test node's image table/,
    );
  });
});

describe('pod addresses', () => {
  it('parses CIDRs to their network and gateway and rejects garbage', () => {
    expect(parseCidr('10.244.1.77/24')).toEqual({
      octets: [10, 244, 1, 0],
      prefix: 24,
      gateway: '10.244.1.1',
    });
    for (const bad of ['10.244.1.0', '10.244.1.0/33', '300.1.1.1/24', 'x/24', '10.244.1.0/24 ']) {
      expect(() => parseCidr(bad), bad).toThrow(/not an IPv4 CIDR/);
    }
  });

  it('hands out each address once, from .2, reuses released ones, and reports exhaustion', () => {
    const pool = new IpPool('10.244.3.0/29');
    const got = [1, 2, 3, 4, 5].map(() => pool.allocate());
    expect(got).toEqual(['10.244.3.2', '10.244.3.3', '10.244.3.4', '10.244.3.5', '10.244.3.6']);
    expect(() => pool.allocate()).toThrow(/exhausted/);
    pool.release('10.244.3.4');
    expect(pool.allocate()).toBe('10.244.3.4');
    expect(() => new IpPool('10.0.0.0/8')).toThrow(/prefix/);
  });

  it('does not hand a released address out again while others are free', () => {
    const pool = new IpPool('10.244.4.0/24');
    const first = pool.allocate();
    pool.release(first);
    expect(pool.allocate()).toBe('10.244.4.3');
  });
});

describe('node agent options', () => {
  const node = { name: 'node-a', netns: 'emk1-node-a', address: '192.168.51.11', podCidr: '10.244.1.0/24' };
  it('accepts a valid set of nodes', () => {
    expect(() =>
      validateOptions({ nodes: [node, { ...node, name: 'node-b' }], netnsPrefix: 'emk1a2b' }),
    ).not.toThrow();
  });
  it('rejects bad fields, naming them', () => {
    const bad: [Parameters<typeof validateOptions>[0], RegExp][] = [
      [{ nodes: [node], netnsPrefix: 'Bad Prefix' }, /netnsPrefix "Bad Prefix"/],
      [{ nodes: [], netnsPrefix: 'emk' }, /nodes: at least one node/],
      [
        { nodes: [{ ...node, name: 'Node_A' }], netnsPrefix: 'emk' },
        /nodes\[0\].name "Node_A": not a DNS subdomain/,
      ],
      [{ nodes: [node, node], netnsPrefix: 'emk' }, /nodes\[1\].name node-a: listed twice/],
      [
        { nodes: [{ ...node, address: '192.168.51.300' }], netnsPrefix: 'emk' },
        /nodes\[0\].address "192.168.51.300"/,
      ],
      [
        { nodes: [{ ...node, podCidr: '10.244.1.0' }], netnsPrefix: 'emk' },
        /nodes\[0\].podCidr: not an IPv4 CIDR/,
      ],
      [
        { nodes: [{ ...node, podCidr: '10.0.0.0/8' }], netnsPrefix: 'emk' },
        /nodes\[0\].podCidr: pod CIDR 10.0.0.0\/8: prefix/,
      ],
      [{ nodes: [node], netnsPrefix: 'emk', clusterDns: 'dns' }, /clusterDns dns: not an IPv4 address/],
    ];
    for (const [opts, message] of bad) expect(() => validateOptions(opts), String(message)).toThrow(message);
  });
});

describe('node status', () => {
  it('reports a Ready node with its InternalIP, capacity and kubelet version, heartbeats at now', () => {
    const status = nodeStatus(
      { name: 'node-a', netns: 'x', address: '192.168.51.11', podCidr: '10.244.1.0/24' },
      'v1.36.3',
      '2026-01-02T03:04:05Z',
    );
    expect(status.conditions?.map((c) => [c.type, c.status])).toEqual([
      ['Ready', 'True'],
      ['MemoryPressure', 'False'],
      ['DiskPressure', 'False'],
      ['PIDPressure', 'False'],
    ]);
    expect(status.conditions?.every((c) => (c.lastHeartbeatTime as unknown) === '2026-01-02T03:04:05Z')).toBe(
      true,
    );
    expect(status.addresses).toEqual([
      { type: 'InternalIP', address: '192.168.51.11' },
      { type: 'Hostname', address: 'node-a' },
    ]);
    expect(status.allocatable).toEqual(status.capacity);
    expect(status.capacity?.pods).toBe('110');
    expect(status.nodeInfo?.kubeletVersion).toBe('v1.36.3');
  });
});

describe('probes that cannot run', () => {
  const target = { podIP: '10.244.1.2', nodeNetns: 'none', podNetns: 'none', user: undefined };
  it('names an unknown named port and an unsupported kind', async () => {
    const container = { name: 'web', ports: [{ name: 'http', containerPort: 80 }] };
    await expect(
      runProbe({ httpGet: { port: 'metrics', path: '/' } }, { ...target, container }),
    ).rejects.toThrow(/web: probe port "metrics" names no container port/);
    await expect(runProbe({ tcpSocket: { port: 70000 } }, { ...target, container })).rejects.toThrow(
      UnsupportedProbe,
    );
    await expect(runProbe({ grpc: { port: 80 } }, { ...target, container })).rejects.toThrow(
      /only httpGet, tcpSocket and exec probes/,
    );
  });
});
