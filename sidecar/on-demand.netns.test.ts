import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EDGEMESH_BIN, NetnsLab, waitFor } from '../test/harness/netns.ts';
import { proxyUser } from './testing/lab.ts';

// The on-demand catalog end to end with real processes: a node namespace with a stand-in
// Kubernetes API (gateway/testing/fake-api.ts, objects from a file) and the real
// `edgemesh gateway` watching it; a pod namespace with the real `edgemesh sidecar`, given
// only the gateway. The sidecar starts holding nothing, resolves names it did not have by
// asking the gateway, gets an endpoint change pushed, and keeps answering what it holds while
// the gateway is killed, then re-subscribes when it is back.
const NODE_IP = '10.63.0.1';
const POD_IP = '10.63.0.5';
const NODE = process.execPath;
const FAKE_API = new URL('../gateway/testing/fake-api.ts', import.meta.url).pathname;
const lab = new NetnsLab('emo');
const dir = mkdtempSync(join(tmpdir(), 'emo-ondemand-'));
const objectsFile = join(dir, 'objects.json');
let nodeNs: string;
let podNs: string;
let api: ChildProcess;
let gateway: ChildProcess;
let gatewayLog = '';
let sidecarLog = '';

function objects(dbEndpoint: string): unknown[] {
  const svc = (ns: string, name: string, spec: object) => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: ns, name },
    spec,
  });
  const slice = (ns: string, name: string, ip: string, port: number) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { namespace: ns, name: `${name}-x`, labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [ip], conditions: { ready: true }, nodeName: 'edge-n' }],
    ports: [{ name: 'p', port, protocol: 'TCP' }],
  });
  // Endpoints too, as a cluster has them (the gateway here reads the slices).
  const endpoints = (ns: string, name: string, ip: string, port: number) => ({
    apiVersion: 'v1',
    kind: 'Endpoints',
    metadata: { namespace: ns, name },
    subsets: [{ addresses: [{ ip, nodeName: 'edge-n' }], ports: [{ name: 'p', port, protocol: 'TCP' }] }],
  });
  return [
    endpoints('default', 'kubernetes', NODE_IP, 6443),
    endpoints('demo', 'web', POD_IP, 8080),
    endpoints('demo', 'db', dbEndpoint, 5432),
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'empty' } },
    svc('default', 'kubernetes', { clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443 }] }),
    slice('default', 'kubernetes', NODE_IP, 6443),
    svc('demo', 'web', { clusterIP: '10.96.0.20', ports: [{ name: 'p', port: 80 }] }),
    svc('demo', 'api', { clusterIP: '10.96.0.30', ports: [{ name: 'p', port: 80 }] }),
    slice('demo', 'api', POD_IP, 8080),
    endpoints('demo', 'api', POD_IP, 8080),
    slice('demo', 'web', POD_IP, 8080),
    svc('demo', 'db', { clusterIP: 'None', ports: [{ name: 'pg', port: 5432 }] }),
    slice('demo', 'db', dbEndpoint, 5432),
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { namespace: 'demo', name: 'web-0' },
      spec: { nodeName: 'edge-n' },
      status: { phase: 'Running', podIP: POD_IP },
    },
    { apiVersion: 'v1', kind: 'Node', metadata: { name: 'edge-n' }, status: { addresses: [] } },
  ];
}

function startGateway(): ChildProcess {
  const child = lab.spawn(nodeNs, [
    EDGEMESH_BIN,
    'gateway',
    '--node-name=edge-n',
    `--state-dir=${join(dir, 'state')}`,
    `--listen=${NODE_IP}`,
    '--api-server=http://127.0.0.1:6443',
    // A cloud node: Namespaces are watched (an edge API may not serve them).
    '--edge=false',
    '--metrics-port=15090',
  ]);
  child.stderr?.on('data', (c: Buffer) => {
    gatewayLog += c.toString();
  });
  return child;
}

async function apiSynced(mark: number): Promise<void> {
  await waitFor(
    () => /catalog built from the API|API synced/.test(gatewayLog.slice(mark)),
    20_000,
    50,
    'gateway synced with the API',
  );
}

/** `dig +short` from the pod against the sidecar's DNS. */
async function dig(name: string, type = 'A'): Promise<{ status: string; answers: string[] }> {
  const r = await lab.run(podNs, ['dig', '@127.0.0.1', '-p', '15053', '+tries=1', '+time=3', name, type]);
  const status = /status: (\w+)/.exec(r.stdout)?.[1] ?? `no answer: ${r.stdout}${r.stderr}`;
  const answers = (/;; ANSWER SECTION:\n([\s\S]*?)(?:\n\n|$)/.exec(r.stdout)?.[1] ?? '')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.split(/\s+/).slice(3).join(' '));
  return { status, answers: answers.sort() };
}

async function sidecarMetrics(): Promise<string> {
  return (await lab.run(podNs, ['curl', '-sS', '--max-time', '5', 'http://127.0.0.1:15020/metrics'])).stdout;
}

beforeAll(async () => {
  nodeNs = await lab.add('node');
  podNs = await lab.add('pod');
  await lab.link(
    { ns: nodeNs, ifname: 'cbr0', addr: `${NODE_IP}/24` },
    { ns: podNs, ifname: 'eth0', addr: `${POD_IP}/24` },
  );
  await lab.exec(nodeNs, ['ip', 'link', 'set', 'lo', 'up']);
  await lab.exec(podNs, ['ip', 'link', 'set', 'lo', 'up']);
  // A ClusterIP must be routable for the connect to leave the app (the capture takes it first).
  await lab.exec(podNs, ['ip', 'route', 'add', 'default', 'via', NODE_IP]);
  writeFileSync(objectsFile, JSON.stringify(objects('10.244.9.1')));
  api = lab.spawn(nodeNs, [
    NODE,
    FAKE_API,
    '--listen',
    '127.0.0.1',
    '--port',
    '6443',
    '--objects',
    objectsFile,
  ]);
  let apiOut = '';
  api.stdout?.on('data', (c: Buffer) => {
    apiOut += c.toString();
  });
  await waitFor(() => apiOut.includes('ready'), 20_000, 50, 'fake API up');
  // The pod's own server (web's endpoint) and its traffic capture, as in a pod.
  lab.spawn(podNs, ['socat', `TCP-LISTEN:8080,bind=${POD_IP},fork,reuseaddr`, 'SYSTEM:echo web-0']);
  await lab.exec(podNs, [EDGEMESH_BIN, 'init'], { timeoutMs: 60_000 });
  gateway = startGateway();
  await apiSynced(0);
  const sidecar = lab.spawn(
    podNs,
    [
      EDGEMESH_BIN,
      'sidecar',
      '--gateway',
      `${NODE_IP}:15080`,
      '--node-name',
      'edge-n',
      '--upstream',
      NODE_IP,
      '--proxy-listen',
      '127.0.0.1',
    ],
    { ...(await proxyUser(lab, podNs)), env: { ...process.env, EDGEMESH_LOG_LEVEL: 'debug' } },
  );
  sidecar.stderr?.on('data', (c: Buffer) => {
    sidecarLog += c.toString();
  });
  await waitFor(
    async () => {
      if (sidecar.exitCode !== null) throw new Error(`sidecar exited: ${sidecarLog}`);
      const r = await lab.run(podNs, ['curl', '-s', '-m', '1', 'http://127.0.0.1:15021/ready']);
      return r.stdout.startsWith('ready');
    },
    20_000,
    100,
    'sidecar /ready',
  );
}, 60_000);

afterAll(async () => {
  await lab.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe('on-demand catalog: sidecar ↔ real gateway', () => {
  it('starts holding nothing and resolves names it did not have through the gateway', async () => {
    expect(await sidecarMetrics()).toMatch(/^edgemesh_sidecar_held\{what="services"[^}]*\} 0$/m);
    expect(await dig('web.demo.svc.cluster.local')).toEqual({ status: 'NOERROR', answers: ['A 10.96.0.20'] });
    expect(await dig('db.demo.svc.cluster.local')).toEqual({ status: 'NOERROR', answers: ['A 10.244.9.1'] });
    // The PTR of a ClusterIP, asked by address.
    expect(await dig('20.0.96.10.in-addr.arpa', 'PTR')).toEqual({
      status: 'NOERROR',
      answers: ['PTR web.demo.svc.cluster.local.'],
    });
    // Namespaces: one with no services exists (NODATA), a missing one does not, nor a missing service.
    expect(await dig('empty.svc.cluster.local')).toEqual({ status: 'NOERROR', answers: [] });
    expect((await dig('nope.svc.cluster.local')).status).toBe('NXDOMAIN');
    expect((await dig('nope.demo.svc.cluster.local')).status).toBe('NXDOMAIN');
    const m = await sidecarMetrics();
    expect(m).toMatch(/^edgemesh_sidecar_held\{what="services"[^}]*\} 2$/m);
    expect(m).toMatch(/^edgemesh_sidecar_lookups_total\{result="found"[^}]*\} 4$/m);
    expect(m).toMatch(/^edgemesh_sidecar_lookups_total\{result="missing"[^}]*\} 2$/m);
    // Asked again: answered from what is held, the gateway not asked.
    expect(await dig('web.demo.svc.cluster.local')).toEqual({ status: 'NOERROR', answers: ['A 10.96.0.20'] });
    expect(await sidecarMetrics()).toMatch(/^edgemesh_sidecar_lookups_total\{result="found"[^}]*\} 4$/m);
  });

  it("routes a connection to a ClusterIP it did not hold (the proxy's original-dst lookup)", async () => {
    const before = await sidecarMetrics();
    const found = Number(/^edgemesh_sidecar_lookups_total\{result="found"[^}]*\} (\d+)$/m.exec(before)?.[1]);
    // demo/api was never asked for: the proxy asks the gateway for its ClusterIP.
    const r = await lab.run(podNs, ['sh', '-c', 'echo hi | timeout 5 socat -t2 - TCP:10.96.0.30:80']);
    expect(r.stdout).toBe('web-0\n');
    const after = await sidecarMetrics();
    expect(after).toMatch(
      new RegExp(`^edgemesh_sidecar_lookups_total\\{result="found"[^}]*\\} ${found + 1}$`, 'm'),
    );
    expect(after).toMatch(/^edgemesh_proxy_connections_total\{route="service"[^}]*\} 1$/m);
  });

  it('gets an endpoint change pushed', async () => {
    writeFileSync(objectsFile, JSON.stringify(objects('10.244.9.2')));
    process.kill(api.pid as number, 'SIGHUP');
    await waitFor(
      async () => (await dig('db.demo.svc.cluster.local')).answers.join() === 'A 10.244.9.2',
      10_000,
      100,
      'pushed endpoint',
    );
    // Pushed, not asked: the found count did not move.
    expect(await sidecarMetrics()).toMatch(/^edgemesh_sidecar_lookups_total\{result="found"[^}]*\} 5$/m);
  });

  it('keeps answering while the gateway is down, and re-subscribes when it is back', async () => {
    const exited = new Promise((resolve) => gateway.once('exit', resolve));
    process.kill(gateway.pid as number, 'SIGKILL');
    await exited;
    await waitFor(
      async () => /^edgemesh_sidecar_gateway_lookup_connected\{[^}]*\} 0$/m.test(await sidecarMetrics()),
      10_000,
      100,
      'sidecar saw the gateway go',
    );
    expect(await dig('db.demo.svc.cluster.local')).toEqual({ status: 'NOERROR', answers: ['A 10.244.9.2'] });
    expect(await dig('web.demo.svc.cluster.local')).toEqual({ status: 'NOERROR', answers: ['A 10.96.0.20'] });
    // What it never held cannot be answered while the gateway is away.
    expect((await dig('kubernetes.default.svc.cluster.local')).status).toBe('SERVFAIL');
    // Changed while the gateway was away; the restarted gateway serves it to the re-subscribed sidecar.
    writeFileSync(objectsFile, JSON.stringify(objects('10.244.9.3')));
    process.kill(api.pid as number, 'SIGHUP');
    gateway = startGateway();
    await waitFor(
      async () => /^edgemesh_sidecar_gateway_lookup_connected\{[^}]*\} 1$/m.test(await sidecarMetrics()),
      20_000,
      100,
      'sidecar reconnected',
    );
    await waitFor(
      async () => (await dig('db.demo.svc.cluster.local')).answers.join() === 'A 10.244.9.3',
      20_000,
      100,
      'refreshed after re-subscribing',
    );
    // And pushes flow again on the new connection.
    writeFileSync(objectsFile, JSON.stringify(objects('10.244.9.4')));
    process.kill(api.pid as number, 'SIGHUP');
    await waitFor(
      async () => (await dig('db.demo.svc.cluster.local')).answers.join() === 'A 10.244.9.4',
      20_000,
      100,
      'pushed after the restart',
    );
    expect(await dig('kubernetes.default.svc.cluster.local')).toEqual({
      status: 'NOERROR',
      answers: ['A 10.96.0.1'],
    });
  });
});
