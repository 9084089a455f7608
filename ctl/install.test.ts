import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { V1Deployment, V1MutatingWebhook } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it, type TestContext } from 'vitest';
import YAML from 'yaml';
import { createCa as createMeshCa } from '../lib/certs.ts';
import { lastLine } from '../manifests/testing/build-tool.ts';
import { createCa, createServingCert, serviceDnsNames } from '../webhook/tls/certs.ts';
import { b64 } from '../webhook/tls/objects.ts';
import { type InstallInput, meshCaCheck, webhookCertCheck } from './check-install.ts';
import { type ClusterState, type PlanInput, planInstall } from './install-plan.ts';
import { BASE_NAMESPACE, installYaml, type RenderInput, renderInstall } from './install-render.ts';
import { type K8sObject, kustomize, MANIFESTS_DIR } from './kustomize.ts';

// `edgemesh install` (issue 17 item 5): the manifests as kustomize renders them (checked
// against the real `kubectl kustomize`), changed only where the flags say, with the TLS
// objects webhook-tls makes, judged by `edgemesh check`'s own certificate checks.

const NOW = new Date(Date.UTC(2026, 11, 6, 8));
const DAY = 86_400_000;
const execFileP = promisify(execFile);
const base = () => kustomize(MANIFESTS_DIR);
const kubeedge = () => kustomize(join(MANIFESTS_DIR, 'overlays', 'kubeedge'));

const webhookCa = createCa(new Date(NOW.getTime() - DAY));
const meshCa = createMeshCa('edgemesh mesh CA', { now: new Date(NOW.getTime() - DAY) });
const certsFor = (ns: string) => ({
  ca: webhookCa,
  serving: createServingCert(
    webhookCa,
    serviceDnsNames('edgemesh-webhook', ns),
    new Date(NOW.getTime() - DAY),
  ),
});
const input = (o: Partial<RenderInput> = {}): RenderInput => ({
  image: 'registry.example/edgemesh:0.2.0',
  namespace: BASE_NAMESPACE,
  settings: { 'tunnel-servers': '198.51.100.7:20006' },
  webhookCerts: certsFor(o.namespace ?? BASE_NAMESPACE),
  meshCa: { kind: 'new', ca: meshCa },
  ...o,
});
const find = (objects: K8sObject[], kind: string, name: string) => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind}/${name}`);
  // biome-ignore lint/suspicious/noExplicitAny: the tests walk rendered objects by their paths
  return o as K8sObject & Record<string, any>;
};
const ids = (objects: K8sObject[]) =>
  objects.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`);
const images = (objects: K8sObject[]) =>
  objects
    .filter((o) => ['Deployment', 'DaemonSet'].includes(o.kind))
    .flatMap((o) =>
      (o as unknown as V1Deployment).spec?.template.spec?.containers.map(
        (c) => `${o.metadata.name}=${c.image}`,
      ),
    );

describe('the manifests without kustomize (ctl/kustomize.ts)', () => {
  let kubectl: string | undefined;
  let skip = '';
  beforeAll(async () => {
    try {
      kubectl = join(
        await lastLine(join(MANIFESTS_DIR, '../test/cluster/build-k8s.sh'), ['kubectl']),
        'kubectl',
      );
    } catch (err) {
      skip = `no kubectl to compare with: ${(err as Error).message}`;
    }
  }, 30 * 60_000);
  const real = async (ctx: TestContext, dir: string) => {
    if (!kubectl) ctx.skip(skip);
    const { stdout } = await execFileP(kubectl as string, ['kustomize', dir], { maxBuffer: 16 << 20 });
    return YAML.parseAllDocuments(stdout).map((d) => d.toJS() as K8sObject);
  };
  for (const [name, dir] of [
    ['the base', MANIFESTS_DIR],
    ['the KubeEdge overlay', join(MANIFESTS_DIR, 'overlays', 'kubeedge')],
    ['the local overlay', join(MANIFESTS_DIR, 'overlays', 'local')],
  ] as const)
    it(`renders ${name} as kubectl kustomize does, objects and order`, async (ctx) => {
      const want = await real(ctx, dir);
      const got = kustomize(dir);
      expect(ids(got)).toEqual(ids(want));
      expect(got).toEqual(want);
    });

  it('refuses a kustomization field it does not implement, naming it', () => {
    const files: Record<string, string> = {
      '/m/kustomization.yaml': 'resources: [a.yaml]\nnamespace: other\n',
      '/m/a.yaml': 'kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n',
    };
    expect(() => kustomize('/m', (p) => files[p])).toThrow(
      "/m/kustomization.yaml: field namespace is not supported by edgemesh install's renderer",
    );
  });
});

describe('renderInstall', () => {
  it('is the kustomize base plus the TLS objects and caBundles, nothing else changed', () => {
    const manifests = base();
    const out = renderInstall(manifests, input({ image: 'ghcr.io/edgemesh/edgemesh:0.1.0', settings: {} }));
    const added = [
      'Secret/edgemesh-webhook-ca',
      'Secret/edgemesh-webhook-tls',
      'Secret/edgemesh-mesh-ca',
      'ConfigMap/edgemesh-mesh-ca',
    ];
    const key = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;
    expect(
      out
        .filter((o) => !manifests.some((m) => key(m) === key(o)))
        .map(key)
        .sort(),
    ).toEqual(added.sort());
    const back = structuredClone(out.filter((o) => !added.includes(key(o))));
    for (const w of find(back, 'MutatingWebhookConfiguration', 'edgemesh-sidecar-injector').webhooks) {
      expect(w.clientConfig.caBundle).toBe(b64(webhookCa.certPem));
      delete w.clientConfig.caBundle;
    }
    expect(back).toEqual(manifests);
    // Secrets before the workloads that mount them, the webhook configuration last.
    const order = ids(out);
    expect(order[0]).toBe('Namespace//edgemesh-system');
    expect(order.at(-1)).toBe('MutatingWebhookConfiguration//edgemesh-sidecar-injector');
    expect(order.indexOf('Secret/edgemesh-system/edgemesh-webhook-tls')).toBeLessThan(
      order.indexOf('Deployment/edgemesh-system/edgemesh-webhook'),
    );
  });

  it("passes edgemesh check's certificate and mesh CA checks, in another namespace too", () => {
    for (const ns of [BASE_NAMESPACE, 'mesh']) {
      const out = renderInstall(base(), input({ namespace: ns }));
      const secret = (name: string, k: string) =>
        Buffer.from(find(out, 'Secret', name).data[k], 'base64').toString();
      const mwc = find(out, 'MutatingWebhookConfiguration', 'edgemesh-sidecar-injector');
      const read: InstallInput = {
        now: NOW,
        namespace: ns,
        caBundles: (mwc.webhooks as V1MutatingWebhook[]).map((w) => ({
          webhook: w.name,
          pem: Buffer.from(w.clientConfig.caBundle ?? '', 'base64').toString(),
        })),
        servingCert: secret('edgemesh-webhook-tls', 'tls.crt'),
        meshCaConfigMap: find(out, 'ConfigMap', 'edgemesh-mesh-ca').data['ca.crt'],
        meshCaSecret: secret('edgemesh-mesh-ca', 'ca.crt'),
      } as InstallInput;
      const results = [...webhookCertCheck(read), meshCaCheck(read)];
      expect(results.map((r) => `${r.status} ${r.message}`).filter((r) => !r.startsWith('pass'))).toEqual([]);
    }
  });

  it('--namespace moves every reference, --image every container, settings land in edgemesh-config', () => {
    const out = renderInstall(
      kubeedge(),
      input({
        namespace: 'mesh',
        settings: {
          'tunnel-servers': '198.51.100.7:20006,203.0.113.9:20006',
          'kubernetes-service-host': '10.0.0.1',
          'kubernetes-service-port': '6443',
        },
      }),
    );
    expect(JSON.stringify(out)).not.toContain('edgemesh-system');
    expect(find(out, 'Namespace', 'mesh').metadata.labels['edgemesh.io/injection']).toBe('disabled');
    expect(find(out, 'ClusterRoleBinding', 'edgemesh-gateway').subjects).toEqual([
      { kind: 'ServiceAccount', name: 'edgemesh-gateway', namespace: 'mesh' },
    ]);
    expect(find(out, 'Deployment', 'edgemesh-signer').spec.template.spec.containers[0].args).toContain(
      '--requester=mesh:edgemesh-tunnel-server',
    );
    const hook = find(out, 'MutatingWebhookConfiguration', 'edgemesh-sidecar-injector').webhooks[0];
    expect(hook.clientConfig.service).toMatchObject({ name: 'edgemesh-webhook', namespace: 'mesh' });
    expect(hook.namespaceSelector.matchExpressions[1].values).toContain('mesh');
    expect(images(out)).toEqual([
      'edgemesh-signer=registry.example/edgemesh:0.2.0',
      'edgemesh-tunnel-server=registry.example/edgemesh:0.2.0',
      'edgemesh-webhook=registry.example/edgemesh:0.2.0',
      'edgemesh-gateway=registry.example/edgemesh:0.2.0',
      'edgemesh-gateway-edge=registry.example/edgemesh:0.2.0',
    ]);
    expect(find(out, 'ConfigMap', 'edgemesh-config').data).toMatchObject({
      'tunnel-servers': '198.51.100.7:20006,203.0.113.9:20006',
      'kubernetes-service-host': '10.0.0.1',
      'kubernetes-service-port': '6443',
    });
    // As YAML: numbers-as-text stay text for the ConfigMap, PEM stays whole.
    const back = YAML.parseAllDocuments(installYaml(out, ['a header'])).map((d) => d.toJS());
    expect(back).toEqual(out);
  });

  it('an existing mesh CA: only its ConfigMap, never a Secret', () => {
    const out = renderInstall(base(), input({ meshCa: { kind: 'existing', certPem: meshCa.certPem } }));
    expect(out.some((o) => o.kind === 'Secret' && o.metadata.name === 'edgemesh-mesh-ca')).toBe(false);
    expect(find(out, 'ConfigMap', 'edgemesh-mesh-ca').data).toEqual({ 'ca.crt': meshCa.certPem });
  });
});

describe('planInstall: what a re-run keeps', () => {
  const ns = BASE_NAMESPACE;
  const serving = createServingCert(
    webhookCa,
    serviceDnsNames('edgemesh-webhook', ns),
    new Date(NOW.getTime() - DAY),
  );
  const installed: ClusterState = {
    server: 'API server https://10.0.0.1:6443 (from ~/.kube/config)',
    webhookTls: {
      'tls.crt': b64(serving.certPem),
      'tls.key': b64(serving.keyPem),
      'ca.crt': b64(webhookCa.certPem),
    },
    webhookCa: { 'ca.crt': b64(webhookCa.certPem), 'ca.key': b64(webhookCa.keyPem) },
    meshCa: { 'ca.crt': b64(meshCa.certPem), 'ca.key': b64(meshCa.keyPem) },
    config: { 'tunnel-servers': '198.51.100.7:20006', 'webhook.yaml': 'port: 9443\n' },
  };
  let made = 0;
  const plan = (o: Partial<PlanInput>) =>
    planInstall({
      namespace: ns,
      meshCaMode: 'auto',
      cluster: { kind: 'read', state: installed },
      flags: {},
      now: NOW,
      dnsNames: serviceDnsNames('edgemesh-webhook', ns),
      newMeshCa: () => {
        made++;
        return meshCa;
      },
      ...o,
    });

  it('keeps the mesh CA, the webhook certificates and tunnel-servers of a running install', () => {
    made = 0;
    const p = plan({});
    expect(p.meshCa).toEqual({ kind: 'existing', certPem: meshCa.certPem });
    expect(made).toBe(0);
    expect(p.webhookCerts).toEqual({ ca: webhookCa, serving });
    expect(p.settings).toEqual({ 'tunnel-servers': '198.51.100.7:20006' });
    expect(p.warnings).toEqual([]);
    expect(p.notes).toEqual([
      'read the current installation from API server https://10.0.0.1:6443 (from ~/.kube/config)',
      "mesh CA: kept (Secret edgemesh-system/edgemesh-mesh-ca exists; only its certificate's ConfigMap is printed)",
      'webhook certificates: kept from the cluster (valid for 30 days or more)',
      'tunnel-servers: kept from ConfigMap edgemesh-system/edgemesh-config (198.51.100.7:20006)',
    ]);
    // A flag wins over the cluster's value.
    expect(plan({ flags: { 'tunnel-servers': '203.0.113.9:20006' } }).settings).toEqual({
      'tunnel-servers': '203.0.113.9:20006',
    });
  });

  it('a fresh cluster gets a new mesh CA and new webhook certificates', () => {
    made = 0;
    const p = plan({
      cluster: {
        kind: 'read',
        state: { ...installed, webhookTls: null, webhookCa: null, meshCa: null, config: null },
      },
    });
    expect(p.meshCa.kind).toBe('new');
    expect(made).toBe(1);
    expect(p.webhookCerts.ca).not.toEqual(webhookCa);
    expect(p.settings).toEqual({});
  });

  it('--mesh-ca=auto refuses to guess without the cluster; new warns over an existing one; skip prints none', () => {
    expect(() => plan({ cluster: { kind: 'unread', why: 'no kubeconfig' } })).toThrow(
      /--mesh-ca=auto: cannot tell whether the cluster already has a mesh CA \(no kubeconfig\)\. Give --mesh-ca=new/,
    );
    const fresh = plan({ meshCaMode: 'new' });
    expect(fresh.meshCa.kind).toBe('new');
    expect(fresh.warnings[0]).toMatch(/^--mesh-ca=new: the cluster already has a mesh CA/);
    expect(plan({ meshCaMode: 'skip' }).meshCa).toEqual({ kind: 'none' });
    expect(plan({ meshCaMode: 'skip', cluster: { kind: 'unread', why: 'x' } }).meshCa).toEqual({
      kind: 'none',
    });
  });

  it('an unusable mesh CA key in the cluster is an error naming the Secret', () => {
    expect(() =>
      plan({
        cluster: {
          kind: 'read',
          state: { ...installed, meshCa: { 'ca.crt': b64(meshCa.certPem), 'ca.key': b64('x') } },
        },
      }),
    ).toThrow(/Secret edgemesh-system\/edgemesh-mesh-ca ca.key/);
  });
});

describe('edgemesh install as a user runs it', () => {
  const bin = new URL('../bin/edgemesh', import.meta.url).pathname;
  const run = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const env = {
        ...process.env,
        KUBECONFIG: '/nonexistent/kubeconfig',
        HOME: '/nonexistent',
        KUBERNETES_SERVICE_HOST: '',
      };
      const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });

  it('prints the stream without a cluster when told what to do with the mesh CA; errors name the flag', async () => {
    const ok = await run([
      'install',
      '--mesh-ca=new',
      '--tunnel-servers',
      '198.51.100.7:20006',
      '--kubeedge',
    ]);
    expect(ok.code, ok.stderr).toBe(0);
    const objects = YAML.parseAllDocuments(ok.stdout)
      .map((d) => d.toJS() as K8sObject)
      .filter(Boolean);
    expect(ids(objects)).toContain('DaemonSet/edgemesh-system/edgemesh-gateway-edge');
    expect(ids(objects)).toContain('Secret/edgemesh-system/edgemesh-mesh-ca');
    expect(ok.stderr).toContain('edgemesh install: mesh CA: new (--mesh-ca=new)');
    const noCluster = await run(['install']);
    expect(noCluster.code).toBe(2);
    expect(noCluster.stdout).toBe('');
    expect(noCluster.stderr).toContain(
      '--mesh-ca=auto: cannot tell whether the cluster already has a mesh CA',
    );
    const bad = await run(['install', '--mesh-ca=skip', '--tunnel-servers', 'tunnel.edgemesh.example:20006']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--tunnel-servers: tunnel.edgemesh.example:20006 is a placeholder');
  }, 60_000);
});
