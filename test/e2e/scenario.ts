import { waitFor } from '../harness/netns.ts';
import type { EdgeCluster, ExecResult } from './edge-cluster.ts';

/**
 * The demo workload and the steps both the e2e test and `scripts/demo` run on an edge
 * cluster: nginx (Debian's, our image) on site 2 behind a Service (port 12345 → 80) and a
 * headless Service, a client (curl, dig) on site 1, in namespace `demo`.
 */
export const NS = 'demo';
export const SERVICE_URL = `http://nginx-svc.${NS}.svc.cluster.local:12345/`;

export interface PodView {
  metadata: {
    name: string;
    uid: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string;
  };
  spec: {
    nodeName?: string;
    initContainers?: { name: string; restartPolicy?: string }[];
    containers: { name: string; image?: string }[];
  };
  status: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}

const zone = (site: number) => ({ 'topology.kubernetes.io/zone': `site-${site}` });

export function namespace(name: string, labels: Record<string, string> = {}) {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

/** The images the cluster's nodes hold (EdgeCluster.images). */
export interface WorkloadImages {
  nginx: string;
  client: string;
}

/**
 * The nginx config the demo mounts: the image's own, but idle keep-alive connections close
 * after 5 s (nginx's default is 65 s). Streams opened while a tunnel was on the relay stay
 * there, and the sidecar pools upstream connections: offTheRelay() waits for them to close.
 */
export function nginxConfig(namespaceName = NS) {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'nginx-conf', namespace: namespaceName },
    data: {
      'nginx.conf': [
        'daemon off;',
        'user nginx;',
        'worker_processes 1;',
        'pid /run/nginx.pid;',
        'error_log stderr notice;',
        'events { worker_connections 1024; }',
        'http {',
        '  include /etc/nginx/mime.types;',
        '  default_type text/plain;',
        '  access_log /dev/stdout;',
        '  keepalive_timeout 5s;',
        '  server { listen 80 default_server; root /usr/share/nginx/html; index index.html; }',
        '}',
        '',
      ].join('\n'),
    },
  };
}

/**
 * nginx serving one page that names its pod and node: an init container (the client image's
 * shell) writes it from the downward API into the folder nginx serves. Needs nginxConfig()
 * in its namespace.
 */
export function nginxDeployment(images: WorkloadImages, replicas = 1) {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'nginx', namespace: NS },
    spec: {
      replicas,
      selector: { matchLabels: { app: 'nginx' } },
      template: {
        metadata: { labels: { app: 'nginx' } },
        spec: {
          nodeSelector: zone(2),
          // Replicas spread over site 2's two nodes.
          topologySpreadConstraints: [
            {
              maxSkew: 1,
              topologyKey: 'kubernetes.io/hostname',
              whenUnsatisfiable: 'DoNotSchedule',
              labelSelector: { matchLabels: { app: 'nginx' } },
            },
          ],
          terminationGracePeriodSeconds: 5,
          initContainers: [
            {
              name: 'page',
              image: images.client,
              command: [
                'sh',
                '-c',
                'echo "served by pod $POD_NAMESPACE/$POD_NAME on node $NODE_NAME" > /html/index.html',
              ],
              env: [
                { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
              ],
              volumeMounts: [{ name: 'html', mountPath: '/html' }],
            },
          ],
          containers: [
            {
              name: 'nginx',
              image: images.nginx,
              ports: [{ name: 'http', containerPort: 80 }],
              readinessProbe: { httpGet: { path: '/', port: 80 }, periodSeconds: 1 },
              volumeMounts: [
                { name: 'html', mountPath: '/usr/share/nginx/html', readOnly: true },
                { name: 'conf', mountPath: '/etc/nginx/nginx.conf', subPath: 'nginx.conf', readOnly: true },
              ],
            },
          ],
          volumes: [
            { name: 'html', emptyDir: {} },
            { name: 'conf', configMap: { name: 'nginx-conf' } },
          ],
        },
      },
    },
  };
}

export function services() {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'nginx-svc', namespace: NS },
      spec: { selector: { app: 'nginx' }, ports: [{ name: 'http', port: 12345, targetPort: 80 }] },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'nginx-headless', namespace: NS },
      spec: {
        clusterIP: 'None',
        selector: { app: 'nginx' },
        ports: [{ name: 'http', port: 80, targetPort: 80 }],
      },
    },
  ];
}

/**
 * A curl + dig client on site 1 (`name` is also its app label; extra pod labels e.g. to opt
 * out). `node` pins it to one node instead (a hostname selector: no anti-affinity, which the
 * scheduler would also apply to the other app's later replicas).
 */
export function clientDeployment(
  images: WorkloadImages,
  name = 'client',
  podLabels: Record<string, string> = {},
  placement: { node?: string } = {},
) {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace: NS },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name, ...podLabels } },
        spec: {
          nodeSelector: placement.node ? { 'kubernetes.io/hostname': placement.node } : zone(1),
          terminationGracePeriodSeconds: 2,
          containers: [{ name: 'client', image: images.client, command: ['sleep', 'infinity'] }],
        },
      },
    },
  };
}

export async function apply(cluster: EdgeCluster, objects: object[]): Promise<string> {
  return cluster.kubectl(['apply', '-f', '-'], {
    input: objects.map((o) => JSON.stringify(o)).join('\n---\n'),
  });
}

export async function getJson<T = { items: PodView[] }>(cluster: EdgeCluster, args: string[]): Promise<T> {
  return JSON.parse(await cluster.kubectl([...args, '-o', 'json'])) as T;
}

/** Pods matching `selector` in `namespace` that are not being deleted. */
export async function livePods(cluster: EdgeCluster, selector: string, namespace = NS): Promise<PodView[]> {
  const { items } = await getJson(cluster, ['get', 'pods', '-n', namespace, '-l', selector]);
  return items.filter((p) => !p.metadata.deletionTimestamp);
}

export const isReady = (p: PodView) =>
  p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

/**
 * The nodes (sorted) of the pods labelled `app.kubernetes.io/name=<name>`, and the names of
 * those not Ready: where a workload of edgemesh-system runs.
 */
export function appNodes(pods: PodView[], name: string): { nodes: string[]; unready: string[] } {
  const mine = pods.filter((p) => p.metadata.labels?.['app.kubernetes.io/name'] === name);
  return {
    nodes: mine.map((p) => p.spec.nodeName ?? '(unscheduled)').sort(),
    unready: mine.filter((p) => !isReady(p)).map((p) => p.metadata.name),
  };
}

/** The webhook's two containers lead the init containers, in order (the pod's own follow). */
export const isInjected = (p: PodView) =>
  JSON.stringify((p.spec.initContainers ?? []).slice(0, 2).map((c) => c.name)) ===
  JSON.stringify(['edgemesh-init', 'edgemesh-proxy']);

/**
 * This machine's uptime in ms, from /proc/uptime (10 ms steps): the same clock inside every
 * pod (the kernel is shared), so a shell loop in a pod can stamp its lines with it (busybox
 * date has no sub-second format) and the test compare them with its own moments.
 */
export const UPTIME_MS_SH = '$(awk \'{printf "%d", $1 * 1000}\' /proc/uptime)';
export async function uptimeMs(): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  return Math.round(Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]) * 1000);
}

export async function rolloutStatus(
  cluster: EdgeCluster,
  deployment: string,
  timeoutS = 120,
): Promise<string> {
  return cluster.kubectl(
    ['-n', NS, 'rollout', 'status', `deployment/${deployment}`, `--timeout=${timeoutS}s`],
    {
      timeoutMs: (timeoutS + 10) * 1000,
    },
  );
}

/** The client pod's name (looked up through the API). */
export async function clientPod(cluster: EdgeCluster): Promise<string> {
  const [client] = await livePods(cluster, 'app=client');
  if (!client) throw new Error('no client pod');
  return client.metadata.name;
}

/** A pod named without asking the API, and its node (for when the API server is out of reach). */
export interface PodRef {
  pod: string;
  node: string;
}

/** The client pod and its node, looked up now (to be used while the cloud is away). */
export async function clientRef(cluster: EdgeCluster, app = 'client'): Promise<PodRef> {
  const [client] = await livePods(cluster, `app=${app}`);
  if (!client?.spec.nodeName) throw new Error('no scheduled client pod');
  return { pod: client.metadata.name, node: client.spec.nodeName };
}

/**
 * Runs argv in the client pod's `client` container: `kubectl exec`, or with `direct`
 * straight through its node's containerd (no API server needed).
 */
export async function inClient(
  cluster: EdgeCluster,
  argv: string[],
  timeoutMs = 30_000,
  direct?: PodRef,
): Promise<ExecResult> {
  if (direct) {
    return cluster.execDirect(
      direct.node,
      { namespace: NS, pod: direct.pod, container: 'client' },
      argv,
      timeoutMs,
    );
  }
  return cluster.exec(NS, await clientPod(cluster), 'client', argv, timeoutMs);
}

export async function curl(cluster: EdgeCluster, url = SERVICE_URL, maxTimeS = 5, pod?: PodRef) {
  return inClient(
    cluster,
    ['curl', '-sS', '--fail-with-body', '--max-time', String(maxTimeS), url],
    (maxTimeS + 5) * 1000,
    pod,
  );
}

/** `edgemesh_gateway_streams_total` by path label, from a gateway's metrics text. */
export function streamsByPath(metrics: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of metrics.matchAll(/^edgemesh_gateway_streams_total\{([^}]*)\}\s+(\d+(?:\.\d+)?)/gm)) {
    const path = /path="([^"]+)"/.exec(m[1] ?? '')?.[1];
    if (path) out[path] = (out[path] ?? 0) + Number(m[2]);
  }
  return out;
}

/** The paths whose stream counters grew between two snapshots. */
export function pathsUsed(before: Record<string, number>, after: Record<string, number>): string[] {
  return Object.keys(after).filter((k) => (after[k] ?? 0) > (before[k] ?? 0));
}

/** The pod named in the http-server's page ("served by pod demo/NAME on node NODE ..."). */
const CURL_END = 'EDGEMESH-CURL-END';

/**
 * `curl` in a pod, told apart from an exec that lost its output: curl's write-out line (status
 * and size, then a marker) proves its output reached us. `ctr tasks exec` on a loaded machine
 * has returned exit 0 with no output at all (once in ~300 calls); only that case is run again,
 * once, and counted in `lostOutput`. A response that came back wrong (status, empty body) shows
 * in the write-out and is never retried.
 */
export async function curlChecked(
  cluster: EdgeCluster,
  url: string,
  maxTimeS: number,
  pod: PodRef,
): Promise<ExecResult & { lostOutput: number }> {
  const argv = ['curl', '-sS', '--fail-with-body', '--max-time', String(maxTimeS)];
  argv.push('-w', `\n%{http_code} %{size_download} ${CURL_END}\n`, url);
  let lostOutput = 0;
  for (;;) {
    const r = await inClient(cluster, argv, (maxTimeS + 5) * 1000, pod);
    if (r.code !== 0 || r.stdout.includes(CURL_END) || lostOutput >= 1) return { ...r, lostOutput };
    lostOutput++;
  }
}

export function servedBy(page: string): { pod: string; node: string } | undefined {
  const m = /served by pod [^/\s]+\/(\S+) on node (\S+)/.exec(page);
  return m ? { pod: m[1] as string, node: m[2] as string } : undefined;
}

/**
 * Waits until new connections from the client to the nginx replicas are carried off the
 * relay (a tunnel starts on the relay, then finds a direct or hole-punched path): six
 * requests in a row whose streams the client node's gateway opened on `direct`/`punched`
 * paths only. Streams already open stay where they started, and the sidecar keeps upstream
 * connections alive, so each round first idles past the test server's keep-alive timeout
 * (5 s) to let pooled connections close. Resolves with the paths used and the time taken.
 */
export async function offTheRelay(
  cluster: EdgeCluster,
  clientNode: string,
  timeoutMs = 60_000,
): Promise<{ paths: string[]; ms: number }> {
  const started = Date.now();
  let paths: string[] = [];
  while (Date.now() - started < timeoutMs) {
    await new Promise((r) => setTimeout(r, 6_000));
    const before = streamsByPath(await cluster.gatewayMetrics(clientNode));
    let ok = true;
    for (let i = 0; i < 6 && ok; i++) ok = (await curl(cluster)).code === 0;
    const after = streamsByPath(await cluster.gatewayMetrics(clientNode));
    paths = pathsUsed(before, after);
    if (ok && paths.length > 0 && !paths.includes('relay')) return { paths, ms: Date.now() - started };
  }
  throw new Error(
    `tunnels from ${clientNode} still use ${paths.join(', ') || 'no path'} after ${timeoutMs} ms; ` +
      `its gateway's tunnel status: ${await tunnelDiagnosis(cluster, clientNode)}`,
  );
}

/**
 * What a gateway says of its tunnel when a path test fails: its /status (peers, their paths
 * and searches) and its log lines about paths, punches and links, so a failure in CI says why
 * (bounded; never throws).
 */
async function tunnelDiagnosis(cluster: EdgeCluster, node: string): Promise<string> {
  const parts: string[] = [];
  try {
    parts.push((await cluster.gatewayStatus(node)).slice(0, 4_000));
  } catch (err) {
    parts.push(`(no /status: ${(err as Error).message})`);
  }
  try {
    const pods = JSON.parse(
      await cluster.kubectl([
        '-n',
        'edgemesh-system',
        'get',
        'pods',
        '--field-selector',
        `spec.nodeName=${node}`,
        '-o',
        'json',
      ]),
    ) as { items: { metadata: { name: string } }[] };
    const gateway = pods.items.find((p) => p.metadata.name.startsWith('edgemesh-gateway'))?.metadata.name;
    if (gateway) {
      const log = await cluster.kubectl(['-n', 'edgemesh-system', 'logs', gateway, '--tail=400']);
      const lines = log.split('\n').filter((l) => /punch|relay|path|UDP|link|tunnel-server|upgrade/i.test(l));
      parts.push(
        `log (${gateway}, last ${Math.min(lines.length, 40)} of ${lines.length} path lines):\n${lines.slice(-40).join('\n')}`,
      );
    }
  } catch (err) {
    parts.push(`(no log: ${(err as Error).message})`);
  }
  return parts.join('\n');
}

/**
 * After an uninstall: no edgemesh namespace, cluster role, binding or webhook configuration
 * in the API, and no edgemesh-system container left on any node (bounded wait: kubelets
 * stop them after the API objects are gone).
 */
export async function expectNothingOfOursLeft(cluster: EdgeCluster): Promise<void> {
  const left = await cluster.kubectl([
    'get',
    'namespaces,clusterroles,clusterrolebindings,mutatingwebhookconfigurations',
    '-o',
    'name',
  ]);
  const ours = left.split('\n').filter((l) => /edgemesh/.test(l));
  if (ours.length > 0) throw new Error(`left behind in the API: ${ours.join(', ')}`);
  await waitFor(
    async () => {
      for (const node of cluster.allNodes) {
        const ids = await node.real.ctr([
          'containers',
          'ls',
          '-q',
          'labels."io.kubernetes.pod.namespace"==edgemesh-system',
        ]);
        if (ids.trim()) return false;
      }
      return true;
    },
    120_000,
    1_000,
    'every edgemesh container gone from every node',
  );
}
