import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetnsLab, waitFor } from '../harness/netns.ts';
import { ControlPlane } from './control-plane.ts';
import { buildImages } from './oci-images.ts';
import { RealNode } from './real-node.ts';

// One real node (kubelet + containerd + runc + CNI bridge + kube-proxy) in a network
// namespace beside the control plane: pods from the images we build, kubectl exec and logs
// through the kubelet, an init container with NET_ADMIN writing iptables, a native sidecar,
// a ClusterIP through kube-proxy; and stop() leaves nothing behind.
let lab: NetnsLab;
let cp: ControlPlane;
let node: RealNode;
let images: Awaited<ReturnType<typeof buildImages>>;
const sysctls = ['vm/overcommit_memory', 'kernel/panic', 'kernel/panic_on_oops'];
const readSysctls = () => sysctls.map((k) => readFileSync(`/proc/sys/${k}`, 'utf8').trim());
let sysctlsBefore: string[];

beforeAll(async () => {
  sysctlsBefore = readSysctls();
  images = await buildImages();
  lab = new NetnsLab('ern');
  const ns = await lab.add('node');
  await lab.exec(ns, ['ip', 'link', 'add', 'uplink', 'type', 'bridge']);
  await lab.exec(ns, ['ip', 'addr', 'add', '192.168.77.10/24', 'dev', 'uplink']);
  await lab.exec(ns, ['ip', 'link', 'set', 'uplink', 'up']);
  // A route for ClusterIPs to be looked up at all (kube-proxy rewrites them after routing's
  // first look); the bridge has no ports, so nothing leaves the namespace.
  await lab.exec(ns, ['ip', 'route', 'add', 'default', 'dev', 'uplink']);
  cp = await ControlPlane.start({ netns: ns, address: '192.168.77.10' });
  node = await RealNode.start(
    cp,
    {
      name: 'solo',
      netns: ns,
      address: '192.168.77.10',
      podCidr: '10.244.0.0/24',
      kubeProxy: true,
      images: images.tars,
    },
    lab.tag,
  );
});

afterAll(async () => {
  await node?.stop();
  await cp?.stop();
  await lab?.cleanup();
});

const pods = (client: string, edgemesh: string) => `
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: rules
    image: ${edgemesh}
    securityContext: {capabilities: {add: [NET_ADMIN, NET_RAW]}}
    command: [iptables, -t, nat, -A, OUTPUT, -p, tcp, --dport, '9999', -j, REDIRECT, --to-ports, '8081']
  - name: side
    image: ${client}
    restartPolicy: Always
    command: [sh, -c, 'mkdir -p /s && echo from-sidecar > /s/index.html && exec httpd -f -p 8081 -h /s']
    startupProbe: {tcpSocket: {port: 8081}, periodSeconds: 1}
  containers:
  - name: app
    image: ${client}
    command: [sh, -c, 'mkdir -p /w && echo from-app > /w/index.html && echo app-started && exec httpd -f -p 8080 -h /w']
    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`;

describe('a real node', () => {
  it('registers with a containerd runtime and runs pods: init with NET_ADMIN, native sidecar, exec, logs, ClusterIP', async () => {
    const info = JSON.parse(await cp.kubectl(['get', 'node', 'solo', '-o', 'json'])).status.nodeInfo;
    expect(info.containerRuntimeVersion).toMatch(/^containerd:\/\//);
    // The kubelet rewrote VM-wide sysctls at start; RealNode put them back.
    expect(readSysctls()).toEqual(sysctlsBefore);

    await cp.kubectl(['apply', '-f', '-'], { input: pods(images.client, images.edgemesh) });
    await cp.kubectl(['wait', '--for=condition=Ready', 'pod/web', '--timeout=120s'], { timeoutMs: 130_000 });
    expect(await cp.kubectl(['logs', 'web', '-c', 'app'])).toContain('app-started');
    // The REDIRECT rule the init container (our image's iptables, NET_ADMIN) wrote applies
    // to the pod's own traffic.
    expect(
      (await cp.kubectl(['exec', 'web', '-c', 'app', '--', 'wget', '-qO-', 'http://127.0.0.1:9999/'])).trim(),
    ).toBe('from-sidecar');
    const ip = (await cp.kubectl(['get', 'svc', 'web', '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    const viaClusterIp = await waitFor(
      async () => {
        const r = await lab.run(node.spec.netns, ['curl', '-sf', '--max-time', '1', `http://${ip}/`]);
        return r.code === 0 && r.stdout.trim();
      },
      30_000,
      250,
      'ClusterIP through kube-proxy',
    );
    expect(viaClusterIp).toBe('from-app');
  });

  it('survives a kubelet + containerd restart with its pods running', async () => {
    const uid = (await cp.kubectl(['get', 'pod', 'web', '-o', 'jsonpath={.metadata.uid}'])).trim();
    await node.restartRuntime();
    expect((await cp.kubectl(['get', 'pod', 'web', '-o', 'jsonpath={.metadata.uid}'])).trim()).toBe(uid);
    // The restarted kubelet finds its pods again within a few seconds of being healthy.
    const page = await waitFor(
      () => cp.kubectl(['exec', 'web', '-c', 'app', '--', 'cat', '/w/index.html']).then((o) => o.trim()),
      30_000,
      500,
      'kubectl exec after the restart',
    );
    expect(page).toBe('from-app');
  });

  it('stop() leaves no process, mount, folder or cgroup behind', async () => {
    const shims = await node.tasks();
    expect(shims.size).toBeGreaterThan(0);
    // The sandbox's spec names the pod's network namespace; its containers join it by PID.
    const netnsOfPods: string[] = [];
    for (const id of shims.keys()) {
      const spec = await node.ctr(['containers', 'info', '--spec', id]);
      for (const m of spec.matchAll(/netns\/(cni-[0-9a-f-]+)/g)) netnsOfPods.push(m[1] as string);
    }
    expect(netnsOfPods.length).toBeGreaterThan(0);
    const pids = [...shims.values(), node.kubelet?.pid, node.containerd?.pid].filter((p): p is number => !!p);
    await node.stop();
    const alive = pids.filter((p) => existsSync(`/proc/${p}`));
    expect(alive).toEqual([]);
    const mounts = readFileSync('/proc/mounts', 'utf8');
    expect(mounts.includes(node.dir) || mounts.includes(node.runDir)).toBe(false);
    expect(existsSync(node.dir)).toBe(false);
    expect(existsSync(node.runDir)).toBe(false);
    expect(readdirSync('/var/log/containers').filter((n) => n.startsWith('web_default_'))).toEqual([]);
    for (const hierarchy of readdirSync('/sys/fs/cgroup')) {
      expect(existsSync(`/sys/fs/cgroup/${hierarchy}${node.cgroupRoot}`), hierarchy).toBe(false);
    }
    // The pods' network namespaces (bind mounts under /run/netns) are gone with them.
    expect(readFileSync('/proc/mounts', 'utf8')).not.toMatch(new RegExp(netnsOfPods.join('|') || '^$'));
  });
});
