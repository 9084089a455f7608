import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import type { V1Container, V1Deployment, V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import YAML from 'yaml';
import { silentLogger } from '../lib/log.ts';
import { injectionSection, withImage } from '../webhook/config.ts';
import { injectText } from '../webhook/manual.ts';
import { readOwnImage } from '../webhook/own-image.ts';
import { lastLine } from './testing/build-tool.ts';

// The manifests as `kubectl kustomize` renders them: an overlay that only retags the image
// (`images:`) retags every workload and, through the webhook's own image, the containers it
// injects; nothing in the render still names the upstream image.
const manifests = import.meta.dirname;
const buildScript = join(manifests, '../test/cluster/build-k8s.sh');
const execFileP = promisify(execFile);
type Obj = Record<string, unknown> & { kind: string; metadata: { name: string; namespace?: string } };

let kubectl: string | undefined;
let skipReason = '';
let dir: string;

/** build-k8s.sh builds kubectl once (Go module proxy) or reuses the cached one; its last line is the bin dir. */
const findKubectl = async () => join(await lastLine(buildScript, ['kubectl']), 'kubectl');

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgemesh-kustomize-'));
  try {
    kubectl = await findKubectl();
  } catch (err) {
    skipReason = `no kubectl to run kustomize with: ${(err as Error).message}`;
    console.warn(`manifests/kustomize.test.ts skipped: ${skipReason}`);
  }
}, 30 * 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function render(ctx: TestContext, path: string): Promise<{ text: string; objects: Obj[] }> {
  if (!kubectl) ctx.skip(skipReason);
  const { stdout } = await execFileP(kubectl as string, ['kustomize', path], { maxBuffer: 16 << 20 });
  return { text: stdout, objects: YAML.parseAllDocuments(stdout).map((d) => d.toJS() as Obj) };
}

/** An overlay in a temp dir over `base` (a path in this repo) with the given kustomization lines. */
function overlay(name: string, base: string, body: string): string {
  const path = join(dir, name);
  mkdirSync(path, { recursive: true });
  writeFileSync(
    join(path, 'kustomization.yaml'),
    `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ${relative(path, base)}\n${body}`,
  );
  return path;
}

const find = (objects: Obj[], kind: string, name: string) => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind}/${name} in the render`);
  return o;
};

function workloadImages(objects: Obj[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const o of objects) {
    if (!['Deployment', 'DaemonSet'].includes(o.kind)) continue;
    const spec = (o as unknown as V1Deployment).spec?.template.spec;
    const containers: V1Container[] = [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])];
    out[`${o.kind}/${o.metadata.name}`] = containers.map((c) => c.image ?? '');
  }
  return out;
}

/**
 * What the rendered webhook injects: its config from the rendered ConfigMap, its own image
 * from a Pod made of the rendered Deployment's template (what the API server would return for
 * it), then the injected containers of an app pod.
 */
async function injectedImages(objects: Obj[]): Promise<{ images: string[]; from: string }> {
  const config = find(objects, 'ConfigMap', 'edgemesh-config') as unknown as { data: Record<string, string> };
  const file = YAML.parse(config.data['webhook.yaml']) as { injection?: unknown };
  const { settings, image } = injectionSection(file.injection, undefined, 'webhook.yaml');
  const deployment = find(objects, 'Deployment', 'edgemesh-webhook') as unknown as V1Deployment;
  const own = await readOwnImage({
    podName: 'edgemesh-webhook-7d9f-abcde',
    namespace: 'edgemesh-system',
    log: silentLogger,
    readPod: async (namespace, name) =>
      ({ ...deployment.spec?.template, metadata: { name, namespace } }) as V1Pod,
  });
  const injection = image
    ? withImage(settings, image.value, image.from)
    : withImage(settings, own.image, own.from);
  const app =
    'kind: Pod\nmetadata: {name: app, namespace: shop}\nspec: {containers: [{name: app, image: nginx}]}\n';
  const pod = YAML.parse(injectText(app, injection).yaml) as V1Pod;
  return {
    images: (pod.spec?.initContainers ?? []).map((c) => `${c.name}=${c.image}`),
    from: image ? image.from : own.from,
  };
}

describe('kubectl kustomize of the manifests', () => {
  it('an overlay with only images: retags every workload and the injected containers', async (ctx) => {
    const path = overlay(
      'retag',
      manifests,
      'images:\n  - { name: ghcr.io/edgemesh/edgemesh, newName: localhost/edgemesh, newTag: 0.1.0-abc }\n',
    );
    const { text, objects } = await render(ctx, path);
    const image = 'localhost/edgemesh:0.1.0-abc';
    expect(workloadImages(objects)).toEqual({
      'Deployment/edgemesh-webhook': [image],
      'DaemonSet/edgemesh-gateway': [image],
      'Deployment/edgemesh-tunnel-server': [image],
      'Deployment/edgemesh-signer': [image],
    });
    expect(await injectedImages(objects)).toEqual({
      images: [`edgemesh-init=${image}`, `edgemesh-proxy=${image}`],
      from: 'Pod edgemesh-system/edgemesh-webhook-7d9f-abcde container webhook',
    });
    // Nothing still names the upstream image: not the ConfigMap, not a comment-free string.
    expect(text).not.toContain('ghcr.io/edgemesh');
  });

  it('a tag-only override (newTag) reaches the injected containers too', async (ctx) => {
    const path = overlay(
      'tag',
      join(manifests, 'base'),
      'images:\n  - { name: ghcr.io/edgemesh/edgemesh, newTag: 0.2.0 }\n',
    );
    const { objects } = await render(ctx, path);
    expect((await injectedImages(objects)).images).toEqual([
      'edgemesh-init=ghcr.io/edgemesh/edgemesh:0.2.0',
      'edgemesh-proxy=ghcr.io/edgemesh/edgemesh:0.2.0',
    ]);
  });

  it('the base injects its own 0.1.0 image, and lets the webhook read its Pod for it', async (ctx) => {
    const { objects } = await render(ctx, manifests);
    expect(Object.values(workloadImages(objects)).flat()).toEqual(
      Array(4).fill('ghcr.io/edgemesh/edgemesh:0.1.0'),
    );
    expect((await injectedImages(objects)).images).toEqual([
      'edgemesh-init=ghcr.io/edgemesh/edgemesh:0.1.0',
      'edgemesh-proxy=ghcr.io/edgemesh/edgemesh:0.1.0',
    ]);
    // What the webhook needs for that: its Pod's name and namespace, a token, get on pods.
    const deployment = find(objects, 'Deployment', 'edgemesh-webhook') as unknown as V1Deployment;
    const pod = deployment.spec?.template.spec;
    expect(pod?.automountServiceAccountToken).toBe(true);
    expect(pod?.serviceAccountName).toBe('edgemesh-webhook');
    const container = pod?.containers.find((c) => c.name === 'webhook');
    expect(container?.env).toEqual(
      expect.arrayContaining([
        { name: 'EDGEMESH_POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
        { name: 'EDGEMESH_POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      ]),
    );
    const role = find(objects, 'Role', 'edgemesh-webhook');
    expect(role.metadata.namespace).toBe('edgemesh-system');
    expect(role.rules).toEqual([{ apiGroups: [''], resources: ['pods'], verbs: ['get'] }]);
    const binding = find(objects, 'RoleBinding', 'edgemesh-webhook');
    expect(binding.roleRef).toEqual({
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'Role',
      name: 'edgemesh-webhook',
    });
    expect(binding.subjects).toEqual([
      { kind: 'ServiceAccount', name: 'edgemesh-webhook', namespace: 'edgemesh-system' },
    ]);
  });

  it('an explicit injection.image in the ConfigMap still wins over the webhook image', async (ctx) => {
    const path = overlay(
      'explicit',
      manifests,
      `images:
  - { name: ghcr.io/edgemesh/edgemesh, newName: localhost/edgemesh, newTag: 0.1.0-abc }
patches:
  - target: { kind: ConfigMap, name: edgemesh-config }
    patch: |-
      - op: replace
        path: /data/webhook.yaml
        value: |
          injection:
            image: mirror.example/edgemesh:pinned
`,
    );
    const { objects } = await render(ctx, path);
    expect(await injectedImages(objects)).toEqual({
      images: [
        'edgemesh-init=mirror.example/edgemesh:pinned',
        'edgemesh-proxy=mirror.example/edgemesh:pinned',
      ],
      from: 'webhook.yaml injection.image',
    });
  });

  it('manifests/overlays/local still builds', async (ctx) => {
    const { objects } = await render(ctx, join(manifests, 'overlays/local'));
    const mwc = find(objects, 'MutatingWebhookConfiguration', 'edgemesh-sidecar-injector') as unknown as {
      webhooks: { clientConfig: { url?: string } }[];
    };
    expect(mwc.webhooks.map((w) => w.clientConfig.url)).toEqual([
      'https://127.0.0.1:9443/mutate',
      'https://127.0.0.1:9443/mutate',
    ]);
  });

  it('manifests/overlays/kubeedge: the base gateway off edge nodes, an edge-mode gateway on them', async (ctx) => {
    const { objects } = await render(ctx, join(manifests, 'overlays/kubeedge'));
    type Ds = {
      spec: {
        template: {
          spec: {
            automountServiceAccountToken?: boolean;
            affinity?: unknown;
            containers: V1Container[];
          };
        };
      };
    };
    const cloud = find(objects, 'DaemonSet', 'edgemesh-gateway') as unknown as Ds;
    const edge = find(objects, 'DaemonSet', 'edgemesh-gateway-edge') as unknown as Ds;
    const term = (op: string) => ({
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [{ matchExpressions: [{ key: 'node-role.kubernetes.io/edge', operator: op }] }],
        },
      },
    });
    expect(cloud.spec.template.spec.affinity).toEqual(term('DoesNotExist'));
    expect(edge.spec.template.spec.affinity).toEqual(term('Exists'));
    expect(edge.spec.template.spec.automountServiceAccountToken).toBe(false);
    expect(edge.spec.template.spec.containers[0].args).toContain('--api-server=http://127.0.0.1:10550');
    expect(cloud.spec.template.spec.containers[0].args?.join(' ')).not.toContain('--api-server');
  });

  it('metrics listeners get the address their probes and scrapes use (never 0.0.0.0; issue 16 item 10)', async (ctx) => {
    const { objects } = await render(ctx, join(manifests, 'overlays/kubeedge'));
    const container = (kind: string, name: string) =>
      (find(objects, kind, name) as unknown as V1Deployment).spec?.template.spec?.containers[0];
    // hostNetwork gateways: /metrics and /ready on the node's IP (the kubelet probes it) and loopback.
    for (const name of ['edgemesh-gateway', 'edgemesh-gateway-edge']) {
      const c = container('DaemonSet', name);
      expect(c?.env).toContainEqual({
        name: 'HOST_IP',
        valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } },
      });
      expect(c?.readinessProbe?.httpGet).toMatchObject({ path: '/ready', port: 15090 });
      expect(c?.readinessProbe?.httpGet?.host).toBeUndefined(); // the pod's IP = the node's
    }
    // The tunnel-server's /metrics on its pod IP.
    expect(container('Deployment', 'edgemesh-tunnel-server')?.env).toContainEqual({
      name: 'POD_IP',
      valueFrom: { fieldRef: { fieldPath: 'status.podIP' } },
    });
  });

  it('only the signer mounts a CA key; the tunnel-server asks it through the CSR API (issue 16 items 9, 10)', async (ctx) => {
    const { objects } = await render(ctx, join(manifests, 'overlays/kubeedge'));
    type Volume = {
      name: string;
      secret?: { secretName: string; items?: { key: string }[] };
      configMap?: { name: string };
    };
    const pods = objects
      .filter((o) => ['Deployment', 'DaemonSet'].includes(o.kind))
      .map((o) => ({ name: o.metadata.name, spec: (o as unknown as V1Deployment).spec?.template.spec }));
    // Which workloads can read which Secret key.
    const keyHolders = pods.flatMap(({ name, spec }) =>
      ((spec?.volumes ?? []) as Volume[])
        .filter((v) => v.secret && (!v.secret.items || v.secret.items.some((i) => i.key.endsWith('.key'))))
        .map(
          (v) =>
            `${name}:${v.secret?.secretName}:${(v.secret?.items ?? []).map((i) => i.key).join(',') || '*'}`,
        ),
    );
    expect(keyHolders.sort()).toEqual([
      'edgemesh-signer:edgemesh-mesh-ca:*',
      'edgemesh-webhook:edgemesh-webhook-tls:tls.crt,tls.key',
    ]);
    // Gateways and the tunnel-server get the mesh CA certificate from a ConfigMap.
    for (const { name, spec } of pods.filter((p) => /gateway|tunnel-server/.test(p.name)))
      expect(
        ((spec?.volumes ?? []) as Volume[]).find((v) => v.name === 'mesh-ca' || v.name === 'ca'),
        name,
      ).toMatchObject({
        configMap: { name: 'edgemesh-mesh-ca' },
      });
    const ts = pods.find((p) => p.name === 'edgemesh-tunnel-server')?.spec?.containers[0];
    expect(ts?.args).toContain('--signer=kubernetes');
    expect(ts?.args?.join(' ')).not.toContain('--ca-key');
    type Rule = { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] };
    const rules = (kind: string, name: string) =>
      (find(objects, kind, name) as unknown as { rules: Rule[] }).rules;
    // The tunnel-server: create/get/delete CSRs, never approve or sign; pods only in its namespace.
    expect(rules('ClusterRole', 'edgemesh-tunnel-server')).toEqual([
      { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
      {
        apiGroups: ['certificates.k8s.io'],
        resources: ['certificatesigningrequests'],
        verbs: ['create', 'get', 'delete'],
      },
    ]);
    expect(find(objects, 'Role', 'edgemesh-tunnel-server').metadata.namespace).toBe('edgemesh-system');
    expect(rules('Role', 'edgemesh-tunnel-server')).toEqual([
      { apiGroups: [''], resources: ['pods'], verbs: ['get'] },
    ]);
    expect(rules('ClusterRole', 'edgemesh-signer')).toContainEqual({
      apiGroups: ['certificates.k8s.io'],
      resources: ['signers'],
      resourceNames: ['edgemesh.io/node', 'edgemesh.io/tunnel-server'],
      verbs: ['approve', 'sign'],
    });
    // The webhook port: everything but the pod network (the API server has no pod identity).
    const policy = find(objects, 'NetworkPolicy', 'edgemesh-webhook') as unknown as {
      spec: { ingress: { ports: unknown[]; from: { ipBlock: { cidr: string; except?: string[] } }[] }[] };
    };
    expect(policy.spec.ingress).toEqual([
      {
        ports: [{ port: 9443, protocol: 'TCP' }],
        from: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.244.0.0/16'] } }, { ipBlock: { cidr: '::/0' } }],
      },
    ]);
  });
});
