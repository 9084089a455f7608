import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuthenticationV1Api, CoreV1Api, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetnsLab, waitFor } from '../harness/netns.ts';
import { ControlPlane } from './control-plane.ts';
import { NodeAgent, type TestNode } from './node-agent.ts';

// Pods run for real: a Deployment behind a Service on two nodes (each its own namespace,
// linked to the cloud namespace that holds the control plane), pods in namespaces of
// their own with addresses from their node's CIDR, EndpointSlices filled from the status
// the agent reports, curl between pods, init containers and native sidecars, deletion.
//
//   cloud 192.168.50.1 (API server) ── 192.168.51.0/24 ── node-a 192.168.51.11, pods 10.244.1.0/24
//                                   └─ 192.168.52.0/24 ── node-b 192.168.52.11, pods 10.244.2.0/24
// The cloud routes each pod CIDR to its node (host-gw style) so pods reach across nodes.
// A cold machine builds the Kubernetes binaries first (about 8 min here, with progress).
const COLD_BUILD_MS = 30 * 60_000;

describe('node agent', () => {
  const lab = new NetnsLab('emk');
  let cp: ControlPlane;
  let agent: NodeAgent;
  const nodes: TestNode[] = [];

  beforeAll(async () => {
    const cloud = await lab.add('cloud');
    await lab.exec(cloud, ['ip', 'addr', 'add', '192.168.50.1/32', 'dev', 'lo']);
    await lab.exec(cloud, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    for (const [i, name] of ['node-a', 'node-b'].entries()) {
      const site = 51 + i;
      const ns = await lab.add(name);
      await lab.link(
        { ns: cloud, ifname: `to-${name}`, addr: `192.168.${site}.1/24` },
        { ns, ifname: 'eth0', addr: `192.168.${site}.11/24` },
      );
      await lab.exec(ns, ['ip', 'route', 'add', 'default', 'via', `192.168.${site}.1`]);
      await lab.exec(cloud, ['ip', 'route', 'add', `10.244.${i + 1}.0/24`, 'via', `192.168.${site}.11`]);
      nodes.push({ name, netns: ns, address: `192.168.${site}.11`, podCidr: `10.244.${i + 1}.0/24` });
    }
    cp = await ControlPlane.start({ netns: cloud, address: '192.168.50.1' });
    agent = await NodeAgent.start({
      kubeConfig: cp.kubeConfig(),
      // Each node acts as system:node:<name>: the Node authorizer and NodeRestriction apply.
      nodeCredentials: (name) => cp.nodeKubeConfig(name),
      nodes,
      netnsPrefix: lab.tag,
      // No kube-proxy here: in-cluster clients dial the API server's own address.
      kubernetesService: { host: '192.168.50.1', port: 6443 },
    });
    await cp.kubectl(['create', 'namespace', 'demo']);
  }, COLD_BUILD_MS);

  afterAll(async () => {
    await agent?.stop();
    await cp?.stop();
    await lab.cleanup();
  });

  const getJson = async (args: string[]) => JSON.parse(await cp.kubectl([...args, '-o', 'json']));
  const apply = (obj: object) => cp.kubectl(['apply', '-f', '-'], { input: JSON.stringify(obj) });
  type Pod = {
    metadata: { name: string; uid: string };
    spec: { nodeName: string };
    status: {
      phase: string;
      podIP?: string;
      hostIP?: string;
      conditions?: { type: string; status: string }[];
      initContainerStatuses?: { name: string; state: Record<string, { exitCode?: number }> }[];
      containerStatuses?: {
        name: string;
        restartCount: number;
        state: Record<string, unknown>;
        lastState?: { terminated?: { exitCode: number } };
      }[];
    };
  };
  const ready = (p: Pod) =>
    p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
  const podsOf = async (selector: string): Promise<Pod[]> =>
    (await getJson(['get', 'pods', '-n', 'demo', '-l', selector])).items;
  const readyPods = (selector: string, count: number) =>
    waitFor(
      async () => {
        const pods = await podsOf(selector);
        return pods.length === count && pods.every(ready) && pods;
      },
      60_000,
      250,
      `${count} ready pods ${selector}`,
    );
  const inCidr = (ip: string, node: TestNode) => ip.startsWith(node.podCidr.replace(/0\/24$/, ''));
  const nodeByName = (name: string) => nodes.find((n) => n.name === name) as TestNode;

  it('registers Ready nodes with their InternalIP, pod CIDR and a fresh Lease', async () => {
    const list = await waitFor(
      async () => {
        const items = (await getJson(['get', 'nodes'])).items;
        // The node lifecycle controller lifts the not-ready taint once it sees Ready.
        return (
          items.length === 2 &&
          items.every((n: { spec: { taints?: unknown[] } }) => !n.spec.taints?.length) &&
          items
        );
      },
      60_000,
      250,
      'two untainted nodes',
    );
    for (const node of nodes) {
      const obj = list.find((n: { metadata: { name: string } }) => n.metadata.name === node.name);
      expect(obj.spec.podCIDR).toBe(node.podCidr);
      expect(obj.status.addresses).toContainEqual({ type: 'InternalIP', address: node.address });
      expect(obj.status.conditions.find((c: { type: string }) => c.type === 'Ready').status).toBe('True');
      const lease = await getJson(['get', 'lease', node.name, '-n', 'kube-node-lease']);
      expect(lease.spec.holderIdentity).toBe(node.name);
      expect(Date.now() - Date.parse(lease.spec.renewTime)).toBeLessThan(30_000);
    }
  });

  it("acts for each node with that node's own kubelet identity, which the API server confines to it", async () => {
    const kc = await cp.nodeKubeConfig('node-a');
    const nodeA = kc.makeApiClient(CoreV1Api);
    const who = await kc.makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: {} });
    expect(who.status?.userInfo?.username).toBe('system:node:node-a');
    expect(who.status?.userInfo?.groups).toContain('system:nodes');
    // Its own Node: fine. Another node's, or a Secret no pod of its references: refused.
    await nodeA.readNode({ name: 'node-a' });
    const refused = async (p: Promise<unknown>) =>
      p.then(
        () => 'allowed',
        (err: { code?: number }) => err.code,
      );
    expect(
      await refused(
        nodeA.patchNodeStatus(
          { name: 'node-b', body: { status: { conditions: [{ type: 'Ready', status: 'False' }] } } },
          setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
        ),
      ),
    ).toBe(403);
    await cp.kubectl(['-n', 'demo', 'create', 'secret', 'generic', 'unrelated', '--from-literal=k=v']);
    expect(await refused(nodeA.readNamespacedSecret({ name: 'unrelated', namespace: 'demo' }))).toBe(403);
  });

  it('runs a Deployment behind a Service: pods Running with IPs from their node, listed in the EndpointSlice', async () => {
    await apply({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web', namespace: 'demo' },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: 'web' } },
        template: {
          metadata: { labels: { app: 'web' } },
          spec: {
            // One per node, so the client below talks both to its own node and across.
            topologySpreadConstraints: [
              {
                maxSkew: 1,
                topologyKey: 'kubernetes.io/hostname',
                whenUnsatisfiable: 'DoNotSchedule',
                labelSelector: { matchLabels: { app: 'web' } },
              },
            ],
            containers: [
              {
                name: 'nginx',
                image: 'nginx:1.27',
                ports: [{ containerPort: 80 }],
                readinessProbe: { httpGet: { path: '/', port: 80 }, periodSeconds: 1 },
              },
            ],
          },
        },
      },
    });
    await apply({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'demo' },
      spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 12345, targetPort: 80 }] },
    });
    const pods = await readyPods('app=web', 2);
    expect(new Set(pods.map((p) => p.spec.nodeName))).toEqual(new Set(['node-a', 'node-b']));
    for (const p of pods) {
      const node = nodeByName(p.spec.nodeName);
      expect(p.status.phase).toBe('Running');
      expect(p.status.hostIP).toBe(node.address);
      expect(inCidr(p.status.podIP ?? '', node), `${p.status.podIP} in ${node.podCidr}`).toBe(true);
    }
    const ips = pods.map((p) => p.status.podIP).sort();
    const slice = await waitFor(
      async () => {
        const items = (
          await getJson(['get', 'endpointslices', '-n', 'demo', '-l', 'kubernetes.io/service-name=web'])
        ).items;
        const addrs = (items[0]?.endpoints ?? [])
          .filter((e: { conditions: { ready: boolean } }) => e.conditions.ready)
          .map((e: { addresses: string[] }) => e.addresses[0])
          .sort();
        return JSON.stringify(addrs) === JSON.stringify(ips) && items[0];
      },
      30_000,
      250,
      'EndpointSlice with both pod IPs ready',
    );
    expect(slice.ports).toEqual([{ name: 'http', port: 80, protocol: 'TCP' }]);
  });

  it('lets a client pod curl each server pod by IP (same node and across), with downward-API env resolved', async () => {
    const field = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } });
    await apply({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'client', namespace: 'demo', labels: { app: 'client' } },
      spec: {
        nodeSelector: { 'kubernetes.io/hostname': 'node-a' },
        containers: [
          {
            name: 'curl',
            image: 'curlimages/curl:8.10.1',
            command: [
              'sh',
              '-c',
              'echo "env $(POD_NAME) $POD_NAMESPACE $POD_IP $NODE_NAME $HOST_IP"; exec sleep infinity',
            ],
            env: [
              field('POD_NAME', 'metadata.name'),
              field('POD_NAMESPACE', 'metadata.namespace'),
              field('POD_IP', 'status.podIP'),
              field('NODE_NAME', 'spec.nodeName'),
              field('HOST_IP', 'status.hostIP'),
            ],
          },
        ],
      },
    });
    const [client] = await readyPods('app=client', 1);
    const expected = `env client demo ${client?.status.podIP} node-a ${nodeByName('node-a').address}`;
    await waitFor(
      async () => (await agent.logs('demo', 'client', 'curl')).includes(expected),
      10_000,
      100,
      expected,
    );
    for (const server of await podsOf('app=web')) {
      const r = await agent.exec('demo', 'client', [
        'curl',
        '-sS',
        '--max-time',
        '5',
        `http://${server.status.podIP}/`,
      ]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toContain(
        `served by pod demo/${server.metadata.name} on node ${server.spec.nodeName} port 80`,
      );
      expect(r.stdout).toContain(`to ${client?.status.podIP}`);
    }
  });

  it('runs init containers in order (our edgemesh init writes iptables in the pod) and keeps a native sidecar running as its uid', async () => {
    await apply({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'meshed', namespace: 'demo', labels: { app: 'meshed' } },
      spec: {
        initContainers: [
          {
            name: 'edgemesh-init',
            image: 'ghcr.io/edgemesh/edgemesh:0.1.0',
            args: ['init', '--proxy-uid=1337', '--proxy-gid=1337'],
          },
          {
            name: 'sidecar',
            image: 'busybox',
            restartPolicy: 'Always',
            command: ['sleep', 'infinity'],
            securityContext: { runAsUser: 1337, runAsGroup: 1337 },
          },
        ],
        containers: [{ name: 'app', image: 'nginx', ports: [{ containerPort: 8080 }] }],
      },
    });
    const [pod] = await readyPods('app=meshed', 1);
    expect(pod?.status.initContainerStatuses?.[0]?.state.terminated?.exitCode).toBe(0);
    expect(pod?.status.initContainerStatuses?.[1]?.state.running).toBeDefined();
    const netns = agent.podNetns('demo', 'meshed') as string;
    const rules = execFileSync('ip', ['netns', 'exec', netns, 'iptables-save'], { encoding: 'utf8' });
    expect(rules).toMatch(/edgemesh/i);
    expect(rules).toMatch(/REDIRECT --to-ports 15001/);
    const uids = execFileSync('ip', ['netns', 'pids', netns], { encoding: 'utf8' })
      .split(/\s+/)
      .filter(Boolean)
      .map((pid) => {
        const status = readFileSync(`/proc/${pid}/status`, 'utf8');
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
        return { cmd, uid: /^Uid:\s+(\d+)/m.exec(status)?.[1] };
      });
    expect(uids).toContainEqual({ cmd: 'sleep infinity', uid: '1337' });
    expect(uids.find((u) => u.cmd.includes('http-server.ts'))?.uid).toBe('0');
    // exec as a named container runs as that container's user.
    expect((await agent.exec('demo', 'meshed', ['id', '-u'], { container: 'sidecar' })).stdout.trim()).toBe(
      '1337',
    );
    expect((await agent.exec('demo', 'meshed', ['id', '-u'])).stdout.trim()).toBe('0');
    await expect(agent.exec('demo', 'meshed', ['id'], { container: 'nope' })).rejects.toThrow(
      /has no container nope/,
    );
  });

  it('retries a failing init container with back-off (Init:Error, Init:CrashLoopBackOff), never starting its app', async () => {
    await apply({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'broken', namespace: 'demo', labels: { app: 'broken' } },
      spec: {
        initContainers: [{ name: 'fail', image: 'busybox', command: ['sh', '-c', 'exit 3'] }],
        containers: [{ name: 'app', image: 'nginx' }],
      },
    });
    const seen = new Set<string>();
    await waitFor(
      async () => {
        const line = await cp.kubectl(['get', 'pod', 'broken', '-n', 'demo', '--no-headers']);
        const status = line.trim().split(/\s+/)[2] ?? '';
        seen.add(status);
        return seen.has('Init:Error') && seen.has('Init:CrashLoopBackOff');
      },
      30_000,
      100,
      'kubectl showing Init:Error and then Init:CrashLoopBackOff',
    );
    const pod = (await podsOf('app=broken'))[0] as Pod & {
      status: {
        initContainerStatuses: { restartCount: number; lastState?: { terminated?: { exitCode: number } } }[];
      };
    };
    expect(pod.status.phase).toBe('Pending');
    expect(pod.status.initContainerStatuses[0]?.restartCount).toBeGreaterThanOrEqual(1);
    expect(pod.status.initContainerStatuses[0]?.lastState?.terminated?.exitCode).toBe(3);
    expect(pod.status.containerStatuses?.[0]?.state.waiting).toBeDefined();
  });

  it('restarts a container whose liveness probe fails', async () => {
    await apply({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'unhealthy', namespace: 'demo', labels: { app: 'unhealthy' } },
      spec: {
        containers: [
          {
            name: 'c',
            image: 'busybox',
            command: ['sleep', 'infinity'],
            livenessProbe: {
              exec: { command: ['test', '-e', '/nonexistent/edgemesh'] },
              periodSeconds: 1,
              failureThreshold: 2,
            },
          },
        ],
      },
    });
    await waitFor(
      async () => ((await podsOf('app=unhealthy'))[0]?.status.containerStatuses?.[0]?.restartCount ?? 0) >= 1,
      30_000,
      250,
      'a liveness restart',
    );
  });

  it('holds app containers until a native sidecar passes its startup probe, and restarts a crashing app with back-off', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'emk-gate-'));
    const mark = join(dir, 'sidecar-started');
    try {
      await apply({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'gated', namespace: 'demo', labels: { app: 'gated' } },
        spec: {
          initContainers: [
            {
              name: 'sidecar',
              image: 'busybox',
              restartPolicy: 'Always',
              env: [{ name: 'MARK', value: mark }],
              command: ['sh', '-c', 'sleep 2 && touch "$MARK" && exec sleep infinity'],
              startupProbe: {
                exec: { command: ['test', '-e', mark] },
                periodSeconds: 1,
                failureThreshold: 30,
              },
            },
          ],
          containers: [
            {
              name: 'app',
              image: 'busybox',
              env: [{ name: 'MARK', value: mark }],
              command: ['sh', '-c', 'test -e "$MARK" || echo started-before-sidecar; echo app-run; exit 1'],
            },
          ],
        },
      });
      const status = await waitFor(
        async () => {
          const [pod] = await podsOf('app=gated');
          const app = pod?.status.containerStatuses?.[0];
          return app && app.restartCount >= 1 && app.lastState?.terminated?.exitCode === 1 && app;
        },
        30_000,
        250,
        'the app restarted after exiting 1',
      );
      expect(status.name).toBe('app');
      expect(existsSync(mark)).toBe(true);
      const logs = await agent.logs('demo', 'gated', 'app');
      expect(logs).toContain('app-run');
      expect(logs).not.toContain('started-before-sidecar');
      const [pod] = await podsOf('app=gated');
      expect(pod?.status.phase).toBe('Running');
      expect(ready(pod as Pod)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs a hostNetwork pod in the node namespace with the node address, reachable from another node', async () => {
    await apply({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'hostnet', namespace: 'demo', labels: { app: 'hostnet' } },
      spec: {
        hostNetwork: true,
        nodeSelector: { 'kubernetes.io/hostname': 'node-b' },
        containers: [
          {
            name: 'web',
            image: 'nginx',
            ports: [{ name: 'web', containerPort: 18080 }],
            readinessProbe: { tcpSocket: { port: 'web' }, periodSeconds: 1 },
          },
        ],
      },
    });
    const [pod] = await readyPods('app=hostnet', 1);
    const nodeB = nodeByName('node-b');
    expect(pod?.status.podIP).toBe(nodeB.address);
    expect(agent.podNetns('demo', 'hostnet')).toBe(nodeB.netns);
    const r = await agent.exec('demo', 'client', [
      'curl',
      '-sS',
      '--max-time',
      '5',
      `http://${nodeB.address}:18080/`,
    ]);
    expect(r.stdout).toContain('served by pod demo/hostnet on node node-b port 18080');
  });

  it('runs a hostNetwork DaemonSet with a hostPath state dir on every node (the gateway shape)', async () => {
    const state = mkdtempSync(join(tmpdir(), 'emk-ds-'));
    try {
      await apply({
        apiVersion: 'apps/v1',
        kind: 'DaemonSet',
        metadata: { name: 'ds', namespace: 'demo' },
        spec: {
          selector: { matchLabels: { app: 'ds' } },
          template: {
            metadata: { labels: { app: 'ds' } },
            spec: {
              hostNetwork: true,
              volumes: [{ name: 'state', hostPath: { path: `${state}/nodes`, type: 'DirectoryOrCreate' } }],
              containers: [
                {
                  name: 'agent',
                  image: 'busybox',
                  env: [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
                  volumeMounts: [{ name: 'state', mountPath: '/var/lib/emk-ds' }],
                  command: ['sh', '-c', 'hostname -I > /var/lib/emk-ds/$NODE_NAME; exec sleep infinity'],
                },
              ],
            },
          },
        },
      });
      const pods = await readyPods('app=ds', 2);
      for (const node of nodes) {
        const pod = pods.find((p) => p.spec.nodeName === node.name);
        expect(pod?.status.podIP).toBe(node.address);
        // Written from inside the node's network namespace, through the hostPath mount.
        await waitFor(
          () => existsSync(`${state}/nodes/${node.name}`),
          10_000,
          100,
          `${node.name} state file`,
        );
        expect(readFileSync(`${state}/nodes/${node.name}`, 'utf8')).toContain(node.address);
      }
      await cp.kubectl(['-n', 'demo', 'delete', 'daemonset', 'ds', '--wait=true', '--timeout=60s']);
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });

  it('mounts volumes: configMap (read-only), secret items, downwardAPI, emptyDir shared, hostPath, and a token that authenticates', async () => {
    const base = mkdtempSync(join(tmpdir(), 'emk-volumes-'));
    try {
      await cp.kubectl([
        '-n',
        'demo',
        'create',
        'configmap',
        'settings',
        '--from-literal=greeting=hello-from-configmap',
      ]);
      await cp.kubectl([
        '-n',
        'demo',
        'create',
        'secret',
        'generic',
        'creds',
        '--from-literal=password=s3cret-value',
      ]);
      const mounts = [
        { name: 'cfg', mountPath: `${base}/cfg`, readOnly: true },
        { name: 'sec', mountPath: `${base}/sec` },
        { name: 'info', mountPath: `${base}/info` },
        { name: 'scratch', mountPath: `${base}/scratch` },
        { name: 'host', mountPath: `${base}/host` },
      ];
      const sa = '/var/run/secrets/kubernetes.io/serviceaccount';
      await apply({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'volumes', namespace: 'demo', labels: { app: 'volumes' } },
        spec: {
          volumes: [
            { name: 'cfg', configMap: { name: 'settings' } },
            { name: 'sec', secret: { secretName: 'creds', items: [{ key: 'password', path: 'nested/pw' }] } },
            {
              name: 'info',
              downwardAPI: { items: [{ path: 'podname', fieldRef: { fieldPath: 'metadata.name' } }] },
            },
            { name: 'scratch', emptyDir: {} },
            { name: 'host', hostPath: { path: `${base}/on-host`, type: 'DirectoryOrCreate' } },
          ],
          containers: [
            {
              name: 'writer',
              image: 'busybox',
              volumeMounts: mounts,
              command: ['sh', '-c', `echo from-writer > ${base}/scratch/note; exec sleep infinity`],
            },
            {
              name: 'reader',
              image: 'busybox',
              volumeMounts: mounts,
              command: [
                'sh',
                '-c',
                [
                  `B=${base}`,
                  'for i in $(seq 100); do [ -e $B/scratch/note ] && break; sleep 0.1; done',
                  'echo "cfg=$(cat $B/cfg/greeting) sec=$(cat $B/sec/nested/pw) info=$(cat $B/info/podname) note=$(cat $B/scratch/note)"',
                  'echo x > $B/cfg/x || echo cfg-read-only',
                  'echo hostpath-write > $B/host/out',
                  `curl -sS --cacert ${sa}/ca.crt -H "Authorization: Bearer $(cat ${sa}/token)" https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/demo/pods`,
                  'exec sleep infinity',
                ].join('\n'),
              ],
            },
          ],
        },
      });
      await readyPods('app=volumes', 1);
      const logs = await waitFor(
        async () => {
          const text = await agent.logs('demo', 'volumes', 'reader');
          return text.includes('"kind": "Status"') && text;
        },
        20_000,
        100,
        'the reader to finish',
      );
      expect(logs).toContain('cfg=hello-from-configmap sec=s3cret-value info=volumes note=from-writer');
      expect(logs).toContain('cfg-read-only');
      // The projected token is real: the API server authenticates it (and RBAC says no).
      expect(logs).toContain(
        'pods is forbidden: User \\"system:serviceaccount:demo:default\\" cannot list resource \\"pods\\"',
      );
      expect(readFileSync(`${base}/on-host/out`, 'utf8')).toBe('hostpath-write\n');
      // Mounts are private to the pod's processes: the host sees empty mount points.
      expect(existsSync(`${base}/cfg/greeting`)).toBe(false);
      // exec as a container sees that container's mounts; plain exec in the pod does not.
      const asReader = await agent.exec(
        'demo',
        'volumes',
        ['cat', `${sa}/namespace`, `${base}/cfg/greeting`],
        {
          container: 'reader',
        },
      );
      expect(asReader.stdout).toBe('demohello-from-configmap');
      expect((await agent.exec('demo', 'volumes', ['cat', `${base}/cfg/greeting`])).code).not.toBe(0);
    } finally {
      await cp.kubectl(['-n', 'demo', 'delete', 'pod', 'volumes', '--wait=true']).catch(() => undefined);
      rmSync(base, { recursive: true, force: true });
    }
  });

  it('rides out an API server restart: pods keep running, the watch resumes and new pods start', async () => {
    const before = await readyPods('app=web', 2);
    await cp.stopApiServer();
    // Pods are processes on the nodes: they go on serving while the API is away.
    const server = before[0] as Pod;
    const during = await agent.exec('demo', 'client', [
      'curl',
      '-sS',
      '--max-time',
      '5',
      `http://${server.status.podIP}/`,
    ]);
    expect(during.stdout).toContain(`served by pod demo/${server.metadata.name}`);
    await new Promise((r) => setTimeout(r, 2_000));
    await cp.startApiServer();
    await apply({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'after-outage', namespace: 'demo', labels: { app: 'after-outage' } },
      spec: { containers: [{ name: 'c', image: 'busybox' }] },
    });
    await readyPods('app=after-outage', 1);
    expect((await readyPods('app=web', 2)).map((p) => p.metadata.uid).sort()).toEqual(
      before.map((p) => p.metadata.uid).sort(),
    );
  });

  it('deletes a pod gracefully: processes stopped, namespace removed, pod gone, replaced and re-listed', async () => {
    const [victim] = await podsOf('app=web');
    if (!victim) throw new Error('no web pod');
    const netns = agent.podNetns('demo', victim.metadata.name) as string;
    const pids = execFileSync('ip', ['netns', 'pids', netns], { encoding: 'utf8' })
      .split(/\s+/)
      .filter(Boolean);
    expect(pids.length).toBeGreaterThan(0);
    await cp.kubectl(['delete', 'pod', victim.metadata.name, '-n', 'demo', '--wait=true', '--timeout=60s']);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(netns);
    for (const pid of pids) expect(() => process.kill(Number(pid), 0)).toThrow();
    const pods = await readyPods('app=web', 2);
    expect(pods.map((p) => p.metadata.uid)).not.toContain(victim.metadata.uid);
    await waitFor(
      async () => {
        const items = (
          await getJson(['get', 'endpointslices', '-n', 'demo', '-l', 'kubernetes.io/service-name=web'])
        ).items;
        const addrs = (items[0]?.endpoints ?? []).map((e: { addresses: string[] }) => e.addresses[0]).sort();
        return JSON.stringify(addrs) === JSON.stringify(pods.map((p) => p.status.podIP).sort());
      },
      // The previous test restarted the API server: kube-controller-manager's watches come back
      // with backoff, so the slice can trail the pod's readiness by tens of seconds (one CI run
      // timed out at 30 s). Eventual consistency is what is checked, not its speed.
      90_000,
      250,
      'EndpointSlice following the replacement',
    );
  }, 180_000);
});
