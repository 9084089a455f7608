import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { V1Deployment } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { lastLine } from './testing/build-tool.ts';

// The Helm chart (charts/edgemesh) renders, with its default values, exactly the objects of
// the kustomize base, and with kubeedge.enabled those of the KubeEdge overlay: compared as
// parsed objects sorted by kind/namespace/name, so a change to one install path that is not
// made to the other fails here. The real helm and kubectl binaries render them; a missing
// helm fails (CI runs scripts/setup, which builds it) instead of skipping.
const manifests = import.meta.dirname;
const root = join(manifests, '..');
const chart = join(root, 'charts/edgemesh');
const helmScript = join(root, 'test/cluster/build-helm.sh');
const k8sScript = join(root, 'test/cluster/build-k8s.sh');
const execFileP = promisify(execFile);
type Obj = Record<string, unknown> & { kind: string; metadata: { name: string; namespace?: string } };

let helm = '';
let kubectl = '';

beforeAll(async () => {
  // build-helm.sh needs Go to build a missing helm; say what to run rather than skip.
  try {
    helm = await lastLine(helmScript, []);
  } catch (err) {
    throw new Error(
      `no helm binary to render charts/edgemesh with: run scripts/setup (it runs test/cluster/build-helm.sh, which builds helm from the Go module proxy). ${(err as Error).message}`,
    );
  }
  if (!existsSync(helm)) throw new Error(`build-helm.sh printed ${helm}, which does not exist`);
  kubectl = join(await lastLine(k8sScript, ['kubectl']), 'kubectl');
}, 30 * 60_000);

const byKey = (o: Obj) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
function parse(text: string): Obj[] {
  return YAML.parseAllDocuments(text)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null)
    .sort((a, b) => byKey(a).localeCompare(byKey(b)));
}

/** The one difference from kustomize on purpose: Helm keeps the Namespace at uninstall (its release record lives there). */
const KEEP = 'helm.sh/resource-policy';

async function helmTemplate(...set: string[]): Promise<Obj[]> {
  const args = ['template', 'edgemesh', chart, '--namespace', 'edgemesh-system'];
  for (const s of set) args.push('--set', s);
  const { stdout } = await execFileP(helm, args, { maxBuffer: 16 << 20 });
  return parse(stdout).map((o) => {
    if (o.kind !== 'Namespace') return o;
    const annotations = { ...(o.metadata.annotations as Record<string, string> | undefined) };
    if (annotations[KEEP] !== 'keep')
      throw new Error(`the chart's Namespace lost its ${KEEP}: keep annotation`);
    delete annotations[KEEP];
    const metadata = { ...o.metadata, annotations };
    if (Object.keys(annotations).length === 0) delete (metadata as { annotations?: unknown }).annotations;
    return { ...o, metadata };
  });
}

async function kustomize(path: string): Promise<Obj[]> {
  const { stdout } = await execFileP(kubectl, ['kustomize', path], { maxBuffer: 16 << 20 });
  return parse(stdout);
}

const find = (objects: Obj[], kind: string, name: string) => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind}/${name} in the render`);
  return o;
};
const pod = (objects: Obj[], kind: string, name: string) =>
  (find(objects, kind, name) as unknown as V1Deployment).spec;

describe('helm template charts/edgemesh', () => {
  it('helm lint passes', async () => {
    const { stdout } = await execFileP(helm, ['lint', chart]);
    expect(stdout).toContain('0 chart(s) failed');
  });

  it('Chart.yaml version and appVersion are package.json version', () => {
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
    const meta = YAML.parse(readFileSync(join(chart, 'Chart.yaml'), 'utf8')) as Record<string, string>;
    expect({ apiVersion: meta.apiVersion, version: meta.version, appVersion: meta.appVersion }).toEqual({
      apiVersion: 'v2',
      version,
      appVersion: version,
    });
  });

  it('default values: exactly the kustomize base', async () => {
    const [chartObjects, base] = await Promise.all([helmTemplate(), kustomize(manifests)]);
    expect(chartObjects.map(byKey)).toEqual(base.map(byKey));
    expect(chartObjects).toEqual(base);
  });

  it('kubeedge.enabled=true: exactly the KubeEdge overlay', async () => {
    const [chartObjects, overlay] = await Promise.all([
      helmTemplate('kubeedge.enabled=true'),
      kustomize(join(manifests, 'overlays/kubeedge')),
    ]);
    expect(chartObjects.map(byKey)).toEqual(overlay.map(byKey));
    expect(chartObjects).toEqual(overlay);
  });

  it('a changed value shows where expected, and nowhere else', async () => {
    const base = await helmTemplate();
    const changed = await helmTemplate(
      'image.repository=localhost/edgemesh',
      'image.tag=0.1.0-abc',
      'webhook.replicas=3',
      'tunnelServer.replicas=2',
      'tunnelServers=203.0.113.7:20006\\,203.0.113.8:20006',
      'gateway.resources.limits.memory=300Mi',
    );
    const images = changed
      .filter((o) => ['Deployment', 'DaemonSet'].includes(o.kind))
      .flatMap((o) => (o as unknown as V1Deployment).spec?.template.spec?.containers.map((c) => c.image));
    expect(images).toEqual(Array(4).fill('localhost/edgemesh:0.1.0-abc'));
    expect(pod(changed, 'Deployment', 'edgemesh-webhook')?.replicas).toBe(3);
    expect(pod(changed, 'Deployment', 'edgemesh-tunnel-server')?.replicas).toBe(2);
    const config = find(changed, 'ConfigMap', 'edgemesh-config') as unknown as {
      data: Record<string, string>;
    };
    expect(config.data['tunnel-servers']).toBe('203.0.113.7:20006,203.0.113.8:20006');
    expect(
      pod(changed, 'DaemonSet', 'edgemesh-gateway')?.template.spec?.containers[0].resources?.limits,
    ).toEqual({ memory: '300Mi' });
    // Everything else as with the defaults: only these objects differ.
    const differing = changed
      .filter((o, i) => JSON.stringify(o) !== JSON.stringify(base[i]))
      .map(byKey)
      .sort();
    expect(differing).toEqual([
      'ConfigMap/edgemesh-system/edgemesh-config',
      'DaemonSet/edgemesh-system/edgemesh-gateway',
      'Deployment/edgemesh-system/edgemesh-signer',
      'Deployment/edgemesh-system/edgemesh-tunnel-server',
      'Deployment/edgemesh-system/edgemesh-webhook',
    ]);
  });

  it('monitoring.podMonitor.enabled: a PodMonitor for each part with a metrics port', async () => {
    expect((await helmTemplate()).filter((o) => o.kind === 'PodMonitor')).toEqual([]);
    const objects = await helmTemplate('monitoring.podMonitor.enabled=true', 'kubeedge.enabled=true');
    const monitors = objects.filter((o) => o.kind === 'PodMonitor') as unknown as {
      metadata: { name: string };
      spec: { podMetricsEndpoints: { port?: string; targetPort?: number }[] };
    }[];
    expect(monitors.map((m) => [m.metadata.name, m.spec.podMetricsEndpoints[0]])).toEqual([
      ['edgemesh-gateway', expect.objectContaining({ targetPort: 15090, path: '/metrics' })],
      ['edgemesh-sidecar', expect.objectContaining({ port: 'mesh-metrics', path: '/metrics' })],
      ['edgemesh-tunnel-server', expect.objectContaining({ targetPort: 15090, path: '/metrics' })],
      ['edgemesh-webhook', expect.objectContaining({ port: 'https', scheme: 'https' })],
    ]);
    // The ports they name are the ones the parts listen on.
    const ts = pod(objects, 'Deployment', 'edgemesh-tunnel-server')?.template.spec?.containers[0];
    expect(ts?.args).toContain('--metrics-port=15090');
    const webhook = pod(objects, 'Deployment', 'edgemesh-webhook')?.template.spec?.containers[0];
    expect(webhook?.ports?.map((p) => p.name)).toContain('https');
  });
});
