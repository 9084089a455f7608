import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { formatNetcheck } from '../../ctl/netcheck.ts';
import { formatStatus } from '../../ctl/status-format.ts';
import { parseGatewayStatus } from '../../lib/gateway-status.ts';
import { dashboardQueries } from '../../manifests/monitoring/testing/dashboard.ts';
import { prometheusBinary } from '../../manifests/monitoring/testing/prometheus-tools.ts';
import { EDGEMESH_BIN, waitFor } from '../harness/netns.ts';
import { EdgeCluster, GATEWAY_METRICS_PORT } from './edge-cluster.ts';
import {
  apply,
  clientDeployment,
  curl,
  expectNothingOfOursLeft,
  inClient,
  isReady,
  livePods,
  NS,
  namespace,
  nginxConfig,
  nginxDeployment,
  rolloutStatus,
  servedBy,
  services,
} from './scenario.ts';

// `edgemesh check` and `edgemesh status` (issue 17 items 2 and 3) on the real edge cluster as
// the README deploys it, installed with Helm (README "With Helm": charts/edgemesh with the
// image and tunnel-servers as values): install → check → label → (check names what needs a
// rollout) → rollout → check → status → helm uninstall. The API server reaches the cloud node's gateway through
// pods/proxy; the edge nodes sit behind NATs, so `status` must say it cannot reach them (as
// on KubeEdge), and the same /status read on the node itself shows their peers and paths.
let cluster: EdgeCluster;
const MONITORING = new URL('../../manifests/monitoring', import.meta.url).pathname;
const MANIFESTS = new URL('../../manifests', import.meta.url).pathname;

// Asynchronous on purpose: the local kubeconfig reaches the API server through a forwarder
// in this test process (test/cluster/control-plane.ts), which a spawnSync would block.
function edgemesh(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      EDGEMESH_BIN,
      args,
      {
        encoding: 'utf8',
        timeout: 180_000,
        maxBuffer: 16 * 1024 * 1024,
        env: { ...process.env, KUBECONFIG: cluster.controlPlane.localKubeconfig },
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ status: code, stdout, stderr });
      },
    );
  });
}

interface CheckJson {
  ok: boolean;
  checks: { id: string; status: string; message: string; details?: string[] }[];
}
const check = async () => {
  const r = await edgemesh(['check', '-o', 'json']);
  return { ...r, json: JSON.parse(r.stdout) as CheckJson };
};
const failed = (j: CheckJson) => j.checks.filter((c) => c.status === 'fail');
const images = () => {
  if (!cluster.images) throw new Error('cluster has no images');
  return cluster.images;
};

beforeAll(async () => {
  cluster = await EdgeCluster.start({
    prefix: 'emx',
    install: 'helm',
    progress: (line) => process.stderr.write(`${line}\n`),
  });
});

afterAll(async () => {
  await cluster?.stop();
});

describe('edgemesh check and status on the edge cluster', () => {
  it('check passes right after the install (webhook answers a dry-run pod, mesh CA, gateways, tunnel-servers)', async () => {
    // Gateways come up Ready in EdgeCluster.start(); the tunnel-server too.
    const r = await check();
    expect(failed(r.json), r.stdout).toEqual([]);
    expect(r.status).toBe(0);
    const text = await edgemesh(['check']);
    expect(text.stdout).toContain(
      '✔ the webhook injects: a dry-run pod in default came back with edgemesh-proxy',
    );
    expect(text.stdout).toContain('Status check results are ✔');
  });

  it('check names the workloads a labelled namespace still runs uninjected, and passes after the rollout', async () => {
    await apply(cluster, [
      namespace(NS),
      nginxConfig(),
      nginxDeployment(images(), 1),
      ...services(),
      clientDeployment(images()),
    ]);
    await rolloutStatus(cluster, 'nginx');
    await rolloutStatus(cluster, 'client');
    await cluster.kubectl(['label', 'namespace', NS, 'edgemesh.io/injection=enabled']);
    const before = await check();
    expect(before.status).toBe(1);
    const pending = before.json.checks.find((c) => c.id === 'pending-injection');
    expect(pending?.status).toBe('fail');
    expect(pending?.details).toEqual([
      `${NS}/deployment/client (1 pod): kubectl -n ${NS} rollout restart deployment/client`,
      `${NS}/deployment/nginx (1 pod): kubectl -n ${NS} rollout restart deployment/nginx`,
    ]);
    await cluster.kubectl(['-n', NS, 'rollout', 'restart', 'deployment/nginx', 'deployment/client']);
    await rolloutStatus(cluster, 'nginx');
    await rolloutStatus(cluster, 'client');
    // Old pods terminating still count as uninjected until they are gone.
    await waitFor(
      async () => {
        const pods = [...(await livePods(cluster, 'app=nginx')), ...(await livePods(cluster, 'app=client'))];
        return pods.length === 2 && pods.every(isReady);
      },
      90_000,
      500,
      'one ready pod each',
    );
    const after = await waitFor(
      async () => {
        const r = await check();
        return r.status === 0 ? r : undefined;
      },
      60_000,
      2000,
      'check passing after the rollout',
    ).catch(() => check());
    expect(failed(after.json), after.stdout).toEqual([]);
    expect(after.json.checks.find((c) => c.id === 'gateways-ready')?.message).toMatch(
      /a Ready gateway on each of the \d+ nodes? running injected pods/,
    );
  });

  it('check fails on the placeholder tunnel-servers setting, naming the fix', async () => {
    const cm = JSON.parse(
      await cluster.kubectl(['-n', 'edgemesh-system', 'get', 'configmap', 'edgemesh-config', '-o', 'json']),
    );
    const real = cm.data['tunnel-servers'];
    const patch = (v: string) =>
      cluster.kubectl([
        '-n',
        'edgemesh-system',
        'patch',
        'configmap',
        'edgemesh-config',
        '--type=merge',
        '-p',
        JSON.stringify({ data: { 'tunnel-servers': v } }),
      ]);
    await patch('tunnel.edgemesh.example:20006');
    try {
      const r = await check();
      expect(r.status).toBe(1);
      expect(failed(r.json).map((c) => c.id)).toEqual(['tunnel-servers-setting']);
    } finally {
      await patch(real);
    }
  });

  it('status: the cloud gateway through pods/proxy, edge gateways named as unreachable from the API server', async () => {
    // Cross-site traffic so the client's gateway has a peer.
    await waitFor(async () => (await curl(cluster)).code === 0, 60_000, 1000, 'client reaches nginx');
    const r = await edgemesh(['status', '-o', 'json', '--timeout', '20']);
    const out = JSON.parse(r.stdout) as {
      nodes: { node: string; pod: string; result: { status?: unknown; error?: string; hint?: string } }[];
    };
    const cloud = cluster.cloudNode?.name;
    expect(out.nodes.map((n) => n.node).sort()).toEqual(cluster.allNodes.map((n) => n.name).sort());
    for (const n of out.nodes) {
      if (n.node === cloud) {
        expect(n.result.error, JSON.stringify(n.result)).toBeUndefined();
        expect(parseGatewayStatus(n.result.status, 'cloud').tunnel.state).toBe('running');
      } else {
        // Behind a NAT: the API server cannot dial the node (as with KubeEdge edge nodes).
        expect(n.result.error, n.node).toBeDefined();
        expect(n.result.hint).toContain(
          `on node ${n.node}: curl -s http://127.0.0.1:${GATEWAY_METRICS_PORT}/status`,
        );
      }
    }
    expect(r.status).toBe(1); // not every gateway could be read
    const text = await edgemesh(['status', cloud ?? '']);
    expect(text.stdout).toMatch(new RegExp(`^${cloud}  \\(gateway edgemesh-gateway-\\S+, ready\\)`));
    expect(text.stdout).toContain('1 gateway answered.');
  });

  it('netcheck: the cloud node through pods/proxy; an edge node named as unreachable, exit 1', async () => {
    const cloud = cluster.cloudNode?.name ?? '';
    const ok = await edgemesh(['netcheck', cloud]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(new RegExp(`^NAT report for ${cloud}, `));
    expect(ok.stdout).toMatch(/^ {2}\* public address: /m);
    const edge = cluster.nodes[0]?.name ?? '';
    const far = await edgemesh(['netcheck', edge, '--timeout', '20']);
    expect(far.status).toBe(1);
    expect(far.stderr).toContain(`on node ${edge}: curl -s http://127.0.0.1:${GATEWAY_METRICS_PORT}/status`);
  });

  it("status's document on an edge node (what the hint says to run) shows the peer, its path and bytes", async () => {
    const [client] = await livePods(cluster, 'app=client');
    const [server] = await livePods(cluster, 'app=nginx');
    const node = client?.spec.nodeName;
    const peer = server?.spec.nodeName;
    if (!node || !peer) throw new Error('client or nginx not scheduled');
    const fetched = await cluster.lab.exec(cluster.node(node).netns, [
      'curl',
      '-sf',
      '--max-time',
      '3',
      `http://127.0.0.1:${GATEWAY_METRICS_PORT}/status`,
    ]);
    const doc = parseGatewayStatus(JSON.parse(fetched.stdout), `gateway on ${node}`);
    expect(doc.node).toBe(node);
    const entry = doc.peers.find((p) => p.node === peer);
    expect(entry?.path, JSON.stringify(doc)).toBeDefined();
    expect(entry?.bytesIn).toBeGreaterThan(0);
    expect(entry?.bytesOut).toBeGreaterThan(0);
    const text = formatStatus([{ node, pod: 'on-node', result: { status: doc } }], 'edgemesh-system');
    expect(text).toMatch(new RegExp(`^  ${peer}\\s+(direct|punched TCP|punched UDP|relay via \\S+)\\s`, 'm'));
    // Sites 1 and 2 are behind different NATs: reaching nginx took a punch attempt or the relay.
    expect(formatNetcheck(doc)).toMatch(/^ {2}\* public address: 203\.0\.113\./m);
  });
  it("the client's sidecar reports its requests and bytes by destination service", async () => {
    const before = await waitFor(
      async () => (await curl(cluster)).code === 0,
      60_000,
      1000,
      'client reaches nginx',
    );
    expect(before).toBe(true);
    const metrics = (
      await inClient(cluster, ['curl', '-sf', '--max-time', '3', 'http://127.0.0.1:15020/metrics'])
    ).stdout;
    const svc = `dst_namespace="${NS}",dst_service="nginx-svc",dst_port="12345"`;
    const value = (re: RegExp) => Number(re.exec(metrics)?.[1] ?? Number.NaN);
    expect(
      value(new RegExp(`^edgemesh_proxy_service_requests_total\\{${svc},class="2xx"[^}]*\\} (\\d+)`, 'm')),
    ).toBeGreaterThan(0);
    expect(
      value(
        new RegExp(`^edgemesh_proxy_service_request_duration_seconds_count\\{${svc}[^}]*\\} (\\d+)`, 'm'),
      ),
    ).toBeGreaterThan(0);
    expect(
      value(new RegExp(`^edgemesh_proxy_service_connections_total\\{${svc}[^}]*\\} (\\d+)`, 'm')),
    ).toBeGreaterThan(0);
  });

  it('version: the client, every part the cluster runs on our image, the sidecars by image, no skew', async () => {
    const r = await edgemesh(['version']);
    expect(r.status, r.stderr).toBe(0);
    const ref = images().edgemesh.replace(/[.]/g, '\\.');
    expect(r.stdout).toMatch(/^Client: {2}edgemesh \d+\.\d+\.\d+/m);
    for (const part of ['webhook', 'gateway', 'tunnel-server'])
      expect(r.stdout, part).toMatch(new RegExp(`^ {2}${part} .*\\b(\\d+)/\\1 +${ref}`, 'm'));
    expect(r.stdout).toMatch(/^Sidecars \(\d+ injected pods?, all namespaces\):/m);
    expect(r.stdout).toMatch(new RegExp(`^ {2}injecting now: ${ref} `, 'm'));
    expect(r.stdout).toMatch(/^Skew: none/m);
  });

  it('inject: a manifest injected by hand runs in an unlabelled namespace and reaches the mesh; uninject gives it back', async () => {
    const work = await mkdtemp(join(tmpdir(), 'edgemesh-e2e-inject-'));
    try {
      const deployment = clientDeployment(images(), 'handmade');
      deployment.metadata.namespace = 'handmade';
      const plain = join(work, 'plain.yaml');
      await writeFile(plain, YAML.stringify(deployment));
      // The shipped ConfigMap as the README shows it, and the image the cluster runs.
      const injected = await edgemesh([
        'inject',
        plain,
        '--config',
        join(MANIFESTS, 'base/config.yaml'),
        '--image',
        images().edgemesh,
      ]);
      expect(injected.status, injected.stderr).toBe(0);
      await writeFile(join(work, 'injected.yaml'), injected.stdout);
      const back = await edgemesh(['uninject', join(work, 'injected.yaml')]);
      expect(back.status, back.stderr).toBe(0);
      expect(YAML.parse(back.stdout)).toEqual(YAML.parse(YAML.stringify(deployment)));
      await apply(cluster, [namespace('handmade')]);
      await cluster.kubectl(['apply', '-f', '-'], { input: injected.stdout });
      await cluster.kubectl(
        ['-n', 'handmade', 'rollout', 'status', 'deployment/handmade', '--timeout=180s'],
        {
          timeoutMs: 190_000,
        },
      );
      const [pod] = await livePods(cluster, 'app=handmade', 'handmade');
      if (!pod) throw new Error('no handmade pod');
      const names = (pod as { spec: { initContainers?: { name: string }[] } }).spec.initContainers?.map(
        (c) => c.name,
      );
      expect(names).toEqual(expect.arrayContaining(['edgemesh-init', 'edgemesh-proxy']));
      const r = await waitFor(
        async () => {
          const res = await cluster.execDirect(
            pod.spec.nodeName as string,
            { namespace: 'handmade', pod: pod.metadata.name, container: 'client' },
            ['curl', '-sS', '--max-time', '5', `http://nginx-svc.${NS}.svc.cluster.local:12345/`],
            30_000,
          );
          return res.code === 0 && res;
        },
        60_000,
        1_000,
        'the hand-injected client reaches nginx-svc by name',
      );
      expect(servedBy(r.stdout)?.pod).toMatch(/^nginx-/);
    } finally {
      await cluster
        .kubectl(['delete', 'namespace', 'handmade', '--ignore-not-found', '--wait=false'])
        .catch(() => '');
      await rm(work, { recursive: true, force: true });
    }
  });

  it("the Grafana dashboard's queries against a real Prometheus scraping the cluster's gateways and a sidecar", async () => {
    const [client] = await livePods(cluster, 'app=client');
    const node = client?.spec.nodeName;
    const podIp = (client as { status?: { podIP?: string } } | undefined)?.status?.podIP;
    if (!node || !podIp) throw new Error('client not scheduled');
    // Prometheus on the client's node (an edge node behind its NAT): it reaches its own gateway,
    // the client pod's sidecar and the cloud node's gateway at the cloud's public address.
    const work = await mkdtemp(join(tmpdir(), 'edgemesh-e2e-prometheus-'));
    const config = {
      global: { scrape_interval: '1s', evaluation_interval: '1s', scrape_timeout: '1s' },
      rule_files: [join(MONITORING, 'edgemesh.rules.yaml')],
      scrape_configs: [
        {
          job_name: 'edgemesh-gateway',
          static_configs: [
            { targets: [`127.0.0.1:${GATEWAY_METRICS_PORT}`], labels: { node } },
            { targets: [`${cluster.cloud.addr}:${GATEWAY_METRICS_PORT}`], labels: { node: 'cloud' } },
          ],
        },
        { job_name: 'edgemesh-sidecar', static_configs: [{ targets: [`${podIp}:15020`], labels: { node } }] },
      ],
    };
    await writeFile(join(work, 'prometheus.yml'), YAML.stringify(config));
    const netns = cluster.node(node).netns;
    const prometheus = cluster.lab.spawn(netns, [
      prometheusBinary('prometheus'),
      `--config.file=${join(work, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(work, 'tsdb')}`,
      '--web.listen-address=127.0.0.1:19090',
      '--log.level=warn',
    ]);
    let log = '';
    prometheus.stderr?.on('data', (c: Buffer) => {
      log = (log + c.toString()).slice(-4000);
    });
    const api = async (path: string, params: Record<string, string>) => {
      const args = ['curl', '-sS', '--max-time', '5', '-G', `http://127.0.0.1:19090${path}`];
      for (const [k, v] of Object.entries(params)) args.push('--data-urlencode', `${k}=${v}`);
      return JSON.parse((await cluster.lab.exec(netns, args)).stdout) as {
        status: string;
        error?: string;
        data: { result?: unknown[] };
      };
    };
    try {
      await waitFor(
        async () =>
          (await api('/api/v1/query', { query: 'sum(up)' }).catch(() => undefined))?.status === 'success',
        60_000,
        500,
        `prometheus ready (${log})`,
      );
      // Traffic through the client's sidecar while Prometheus scrapes, so rates have samples.
      for (let i = 0; i < 5; i++) {
        expect((await curl(cluster)).code).toBe(0);
        await new Promise((r) => setTimeout(r, 1_000));
      }
      const up = await waitFor(
        async () => {
          const r = await api('/api/v1/query', { query: 'up == 1' });
          return (r.data.result ?? []).length === 3 && r;
        },
        60_000,
        1_000,
        `all three targets up (${log})`,
      );
      expect(up.data.result).toHaveLength(3);
      const empty: string[] = [];
      for (const q of dashboardQueries(join(MONITORING, 'grafana-dashboard.json'))) {
        const r = await api('/api/v1/query', { query: q.expr });
        expect(r.status, `${q.panel}/${q.refId}: ${q.expr}: ${r.error}`).toBe('success');
        if ((r.data.result ?? []).length === 0) empty.push(`${q.panel}: ${q.expr}`);
      }
      // What this cluster has must show: the sidecar's per-service panels, the gateways' peers
      // and tunnel-server links (the webhook and tunnel-server run on the cloud node's pod
      // network, which an edge node does not reach: their panels are checked in
      // manifests/monitoring/prometheus.netns.test.ts against real processes).
      for (const panel of [
        'Requests by destination service',
        'Request latency p99 by destination service',
        'Bytes by destination service',
        'Peer paths per gateway',
        'Tunnel-server links up per gateway',
        'Catalog',
      ]) {
        expect(
          empty.filter((e) => e.startsWith(`${panel}:`)),
          `panels without data: ${empty.join('\n')}`,
        ).toEqual([]);
      }
      const rules = await api('/api/v1/rules', {});
      expect(rules.status).toBe('success');
    } finally {
      prometheus.kill('SIGTERM');
      await new Promise((r) => prometheus.once('exit', r).once('error', r));
      await rm(work, { recursive: true, force: true });
    }
  });

  it('helm uninstall leaves nothing of ours behind', async () => {
    await cluster.kubectl(['delete', 'namespace', NS, '--wait=true', '--timeout=120s'], {
      timeoutMs: 130_000,
    });
    await cluster.helm(
      ['uninstall', 'edgemesh', '-n', 'edgemesh-system', '--wait', '--timeout', '120s'],
      150_000,
    );
    // The chart's Namespace is kept by Helm (its release record lived there): README's last step.
    expect(await cluster.kubectl(['get', 'namespace', 'edgemesh-system', '-o', 'name'])).toContain(
      'edgemesh-system',
    );
    await cluster.kubectl(['delete', 'namespace', 'edgemesh-system', '--wait=true', '--timeout=120s'], {
      timeoutMs: 130_000,
    });
    await expectNothingOfOursLeft(cluster);
  });
});
