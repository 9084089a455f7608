import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { DEFAULT_CONFIG } from '../../webhook/config.ts';
import { proxyContainer } from '../../webhook/inject.ts';
import { lastLine } from '../testing/build-tool.ts';

// The chart's monitoring objects (monitoring.podMonitor.enabled, monitoring.rules.enabled)
// are exactly `kubectl kustomize manifests/monitoring`: compared as parsed objects, with the
// real helm and kubectl (test/cluster's build scripts; a missing helm fails, naming
// scripts/setup, as manifests/helm.test.ts does).
const dir = import.meta.dirname;
const root = join(dir, '../..');
const chart = join(root, 'charts/edgemesh');
const execFileP = promisify(execFile);
type Obj = Record<string, unknown> & {
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
};

let helm = '';
let kubectl = '';
beforeAll(async () => {
  try {
    helm = await lastLine(join(root, 'test/cluster/build-helm.sh'), []);
  } catch (err) {
    throw new Error(
      `no helm binary to render charts/edgemesh with: run scripts/setup (it runs test/cluster/build-helm.sh). ${(err as Error).message}`,
    );
  }
  kubectl = join(await lastLine(join(root, 'test/cluster/build-k8s.sh'), ['kubectl']), 'kubectl');
}, 30 * 60_000);

const MONITORING_KINDS = ['PodMonitor', 'PrometheusRule'];
const byKey = (o: Obj) => `${o.kind}/${o.metadata.name}`;
const parse = (text: string) =>
  YAML.parseAllDocuments(text)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null)
    .sort((a, b) => byKey(a).localeCompare(byKey(b)));

async function helmTemplate(...set: string[]): Promise<Obj[]> {
  const args = ['template', 'edgemesh', chart, '--namespace', 'edgemesh-system'];
  for (const s of set) args.push('--set', s);
  const { stdout } = await execFileP(helm, args, { maxBuffer: 16 << 20 });
  return parse(stdout).filter((o) => MONITORING_KINDS.includes(o.kind));
}

describe('monitoring in the chart and in manifests/monitoring', () => {
  it('off by default', async () => {
    expect(await helmTemplate()).toEqual([]);
  });

  it('PodMonitors + rules enabled: exactly kubectl kustomize manifests/monitoring', async () => {
    const [chartObjects, kustomized] = await Promise.all([
      helmTemplate('monitoring.podMonitor.enabled=true', 'monitoring.rules.enabled=true'),
      execFileP(kubectl, ['kustomize', dir], { maxBuffer: 16 << 20 }).then((r) => parse(r.stdout)),
    ]);
    expect(chartObjects.map(byKey)).toEqual([
      'PodMonitor/edgemesh-gateway',
      'PodMonitor/edgemesh-sidecar',
      'PodMonitor/edgemesh-tunnel-server',
      'PodMonitor/edgemesh-webhook',
      'PrometheusRule/edgemesh',
    ]);
    expect(chartObjects).toEqual(kustomized);
  });

  it('rules alone, with the labels a Prometheus selects rules by', async () => {
    const objects = await helmTemplate(
      'monitoring.rules.enabled=true',
      'monitoring.rules.labels.release=kps',
    );
    expect(objects.map((o) => [byKey(o), o.metadata.labels])).toEqual([
      ['PrometheusRule/edgemesh', { 'app.kubernetes.io/part-of': 'edgemesh', release: 'kps' }],
    ]);
  });

  it("the sidecars' PodMonitor names the metrics port the webhook injects", async () => {
    const monitor = (await helmTemplate('monitoring.podMonitor.enabled=true')).find(
      (o) => o.metadata.name === 'edgemesh-sidecar',
    ) as unknown as { spec: { podMetricsEndpoints: { port: string }[] } };
    const port = proxyContainer(DEFAULT_CONFIG).ports?.find(
      (p) => p.name === monitor.spec.podMetricsEndpoints[0].port,
    );
    expect(port?.containerPort).toBe(DEFAULT_CONFIG.metricsPort);
  });
});
