import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { ControlPlane } from '../cluster/control-plane.ts';
import { EDGEMESH_BIN, waitFor } from '../harness/netns.ts';

// Issue 2 against a real API server: the manifests pass the server's own schema validation,
// the TLS bootstrap creates/keeps/rotates certificates and the caBundle, and pods created
// through the API are injected (or not) by our webhook exactly per the contract.
const manifests = new URL('../../manifests', import.meta.url).pathname;
let cp: ControlPlane;
let webhook: ChildProcess | undefined;
let dir: string;
let port: number;

const kubectl = (args: string[], input?: string) => cp.kubectl(args, { input });
const json = async (args: string[]) => JSON.parse(await kubectl([...args, '-o', 'json']));

function edgemesh(args: string[]) {
  return spawnSync(EDGEMESH_BIN, args, {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, KUBECONFIG: cp.localKubeconfig },
  });
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const p = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return p;
}

async function startWebhookFromSecret() {
  const secret = await json(['-n', 'edgemesh-system', 'get', 'secret', 'edgemesh-webhook-tls']);
  writeFileSync(join(dir, 'tls.crt'), Buffer.from(secret.data['tls.crt'], 'base64'));
  writeFileSync(join(dir, 'tls.key'), Buffer.from(secret.data['tls.key'], 'base64'));
  const config = (await json(['-n', 'edgemesh-system', 'get', 'configmap', 'edgemesh-config'])).data[
    'webhook.yaml'
  ];
  writeFileSync(join(dir, 'webhook.yaml'), config);
  webhook = spawn(
    EDGEMESH_BIN,
    [
      'webhook',
      '--host=127.0.0.1',
      `--port=${port}`,
      `--tls-cert=${join(dir, 'tls.crt')}`,
      `--tls-key=${join(dir, 'tls.key')}`,
      `--config=${join(dir, 'webhook.yaml')}`,
      // As a process it has no Pod of its own to learn its image from: name the one the
      // webhook Deployment runs (the shipped manifests' image).
      '--image=ghcr.io/edgemesh/edgemesh:0.1.0',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  webhook.stderr?.on('data', (d) => {
    log += d;
  });
  await waitFor(() => log.includes('webhook listening'), 20_000, 100, `webhook start: ${log}`);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgemesh-e2e-webhook-'));
  port = await freePort();
  cp = await ControlPlane.start();
});

afterAll(async () => {
  if (webhook?.pid && webhook.exitCode === null) process.kill(webhook.pid, 'SIGTERM');
  await cp?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('webhook on a real API server', () => {
  it('renders the kustomize base and overlay, and the API server accepts every object (strict validation)', async () => {
    const base = YAML.parseAllDocuments(await kubectl(['kustomize', manifests])).map((d) => d.toJS());
    expect(base.map((o) => o.kind).sort()).toEqual(
      [
        ...Array(3).fill('ClusterRole'), // gateway, tunnel-server, signer
        ...Array(3).fill('ClusterRoleBinding'),
        'ConfigMap',
        'DaemonSet',
        ...Array(3).fill('Deployment'), // webhook, tunnel-server, signer
        'MutatingWebhookConfiguration',
        'Namespace',
        ...Array(2).fill('NetworkPolicy'), // webhook (API server only), signer (no ingress)
        'PodDisruptionBudget',
        ...Array(2).fill('Role'), // webhook (own pod), tunnel-server (pods of its namespace)
        ...Array(2).fill('RoleBinding'),
        ...Array(2).fill('Service'),
        ...Array(4).fill('ServiceAccount'),
      ].sort(),
    );
    // The bootstrap needs the namespace; say so clearly when it is missing.
    const early = edgemesh(['webhook-tls']);
    expect(early.status).toBe(1);
    expect(early.stderr).toMatch(
      /Secret edgemesh-system\/edgemesh-webhook-(ca|tls): HTTP 404: namespaces "edgemesh-system" not found \(apply the manifests first/,
    );
    // A server dry run of namespaced objects needs their namespace to exist.
    await kubectl(['apply', '--validate=strict', '-f', join(manifests, 'base/namespace.yaml')]);
    await kubectl([
      'apply',
      '--dry-run=server',
      '--validate=strict',
      '-k',
      join(manifests, 'overlays/local'),
    ]);
    const out = await kubectl(['apply', '--validate=strict', '-k', manifests]);
    expect(out).toContain(
      'mutatingwebhookconfiguration.admissionregistration.k8s.io/edgemesh-sidecar-injector created',
    );
  });

  it('TLS bootstrap creates the Secret and caBundle, is idempotent, and rotates on --rotate', async () => {
    const first = edgemesh(['webhook-tls', '--ip-san=127.0.0.1']);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/secret created, caBundle updated/);
    expect(first.stdout).toMatch(/mesh CA created/);
    const meshCa = await json(['-n', 'edgemesh-system', 'get', 'secret', 'edgemesh-mesh-ca']);
    expect(new X509Certificate(Buffer.from(meshCa.data['ca.crt'], 'base64')).ca).toBe(true);
    const secret = await json(['-n', 'edgemesh-system', 'get', 'secret', 'edgemesh-webhook-tls']);
    const mwc = await json(['get', 'mutatingwebhookconfiguration', 'edgemesh-sidecar-injector']);
    for (const w of mwc.webhooks) expect(w.clientConfig.caBundle).toBe(secret.data['ca.crt']);
    const cert = new X509Certificate(Buffer.from(secret.data['tls.crt'], 'base64'));
    expect(cert.checkHost('edgemesh-webhook.edgemesh-system.svc')).toBeTruthy();
    expect(cert.verify(new X509Certificate(Buffer.from(secret.data['ca.crt'], 'base64')).publicKey)).toBe(
      true,
    );

    const again = edgemesh(['webhook-tls', '--ip-san=127.0.0.1']);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/secret unchanged, caBundle unchanged \(valid\); mesh CA unchanged/);
    const same = await json(['-n', 'edgemesh-system', 'get', 'secret', 'edgemesh-webhook-tls']);
    expect(same.metadata.resourceVersion).toBe(secret.metadata.resourceVersion);

    const rotated = edgemesh(['webhook-tls', '--ip-san=127.0.0.1', '--rotate']);
    expect(rotated.status, rotated.stderr).toBe(0);
    expect(rotated.stdout).toMatch(/secret updated, caBundle updated/);
    const after = await json(['-n', 'edgemesh-system', 'get', 'secret', 'edgemesh-webhook-tls']);
    expect(after.data['ca.crt']).not.toBe(secret.data['ca.crt']);
    const mwc2 = await json(['get', 'mutatingwebhookconfiguration', 'edgemesh-sidecar-injector']);
    for (const w of mwc2.webhooks) expect(w.clientConfig.caBundle).toBe(after.data['ca.crt']);
  });

  it('injects pods created through the API exactly per the contract', async () => {
    // The API server reaches the webhook by URL (no kube-proxy here).
    const url = `https://127.0.0.1:${port}/mutate`;
    const toUrl = [0, 1].flatMap((i) => [
      { op: 'remove', path: `/webhooks/${i}/clientConfig/service` },
      { op: 'add', path: `/webhooks/${i}/clientConfig/url`, value: url },
    ]);
    await kubectl([
      'patch',
      'mutatingwebhookconfiguration',
      'edgemesh-sidecar-injector',
      '--type=json',
      '-p',
      JSON.stringify(toUrl),
    ]);
    await startWebhookFromSecret();
    const ns = (name: string, label?: string) =>
      `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${name}\n${label ? `  labels: {edgemesh.io/injection: ${label}}\n` : ''}`;
    await kubectl(
      ['apply', '-f', '-'],
      [ns('demo', 'enabled'), ns('plain'), ns('opted-out-ns', 'disabled')].join('---\n'),
    );
    const pod = (name: string, namespace: string, labels: Record<string, string> = {}, extra = '') =>
      `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n  namespace: ${namespace}\n  labels: ${JSON.stringify(labels)}\nspec:\n  containers: [{name: app, image: busybox}]\n${extra}`;
    const cases: Array<[string, string, Record<string, string>, string, boolean]> = [
      ['in-labelled', 'demo', {}, '', true],
      ['opted-out', 'demo', { 'sidecar.edgemesh.io/inject': 'false' }, '', false],
      ['host-net', 'demo', {}, '  hostNetwork: true\n', false],
      ['unlabelled', 'plain', {}, '', false],
      ['opted-in', 'plain', { 'sidecar.edgemesh.io/inject': 'true' }, '', true],
      ['disabled-ns', 'opted-out-ns', { 'sidecar.edgemesh.io/inject': 'true' }, '', false],
      ['system', 'kube-system', { 'sidecar.edgemesh.io/inject': 'true' }, '', false],
    ];
    // The API server may take a moment to trust the new caBundle/URL: retry the first create.
    await waitFor(
      async () => {
        await kubectl(['apply', '-f', '-'], pod('probe', 'demo'));
        await kubectl(['-n', 'demo', 'delete', 'pod', 'probe', '--wait=false']);
        return true;
      },
      30_000,
      500,
      'first admission through the webhook',
    );
    for (const [name, namespace, labels, extra] of cases)
      await kubectl(['apply', '-f', '-'], pod(name, namespace, labels, extra));
    for (const [name, namespace, , , injected] of cases) {
      const got = await json(['-n', namespace, 'get', 'pod', name]);
      const inits = (got.spec.initContainers ?? []).map((c: { name: string }) => c.name);
      if (injected) {
        expect(inits, `${namespace}/${name}`).toEqual(['edgemesh-init', 'edgemesh-proxy']);
        expect(got.spec.initContainers[1].restartPolicy).toBe('Always');
        expect(got.metadata.annotations['sidecar.edgemesh.io/status']).toContain('edgemesh-proxy');
        expect(got.spec.securityContext.sysctls).toContainEqual({
          name: 'net.ipv4.ip_local_reserved_ports',
          value: '15000-15100',
        });
      } else {
        expect(inits, `${namespace}/${name}`).toEqual([]);
      }
    }
    // A malformed traffic annotation is refused at admission with the reason.
    await expect(
      kubectl(
        ['apply', '-f', '-'],
        pod('bad', 'demo', {}, '').replace(
          '  labels: {}',
          '  labels: {}\n  annotations: {traffic.edgemesh.io/exclude-outbound-ports: "http"}',
        ),
      ),
    ).rejects.toThrow(/traffic.edgemesh.io\/exclude-outbound-ports: "http" is not a port/);
  });
});
