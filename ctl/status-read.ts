/**
 * What `edgemesh status` reads: every gateway Pod in the edgemesh namespace, then each
 * gateway's /status through the API server's pods/proxy subresource
 * (`/api/v1/namespaces/NS/pods/POD:PORT/proxy/status`): no port of ours is opened to anyone,
 * the API server dials the gateway's metrics listener on the node's address as it would for
 * `kubectl get --raw`. A gateway that cannot be read gets a line saying why and what to do
 * instead; the API server cannot dial nodes behind a NAT (KubeEdge edge nodes), so those are
 * the usual ones.
 */

import { type GatewayStatus, MAX_DOCUMENT_BYTES, parseGatewayStatus } from '../lib/gateway-status.ts';
import { type ApiClient, ApiError } from '../lib/kube/client.ts';
import type { ClusterReader } from './cluster.ts';
import type { PodSummary } from './pods.ts';

export const GATEWAY_PARTS = ['edgemesh-gateway', 'edgemesh-gateway-edge'];
const DEFAULT_METRICS_PORT = 15090;
/** Gateways asked at once: a 1,000-node cluster in ~125 rounds, the API server not flooded. */
const CONCURRENCY = 8;

export interface NodeStatus {
  node: string;
  pod: string;
  /** The gateway's answer, or why there is none and what to do. */
  result: { status: GatewayStatus } | { error: string; hint: string };
}

/** The gateway container's --metrics-port (its default when not given); 0: off. */
export function metricsPort(pod: PodSummary): number {
  const c = pod.containers.find((x) => x.name === 'gateway') ?? pod.containers[0];
  const args = c?.args ?? [];
  for (let i = 0; i < args.length; i++) {
    const v = args[i].startsWith('--metrics-port=')
      ? args[i].slice('--metrics-port='.length)
      : args[i] === '--metrics-port'
        ? args[i + 1]
        : undefined;
    if (v !== undefined) return /^\d{1,5}$/.test(v) && Number(v) <= 65535 ? Number(v) : -1;
  }
  const env = c?.env.EDGEMESH_METRICS_PORT;
  if (env !== undefined) return /^\d{1,5}$/.test(env) && Number(env) <= 65535 ? Number(env) : -1;
  return DEFAULT_METRICS_PORT;
}

export const isGateway = (p: PodSummary) => GATEWAY_PARTS.includes(p.labels['app.kubernetes.io/name'] ?? '');

/** The pods/proxy path of a gateway's route. */
export const proxyPath = (namespace: string, pod: string, port: number, route: string) =>
  `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}:${port}/proxy${route}`;

/** Why a pods/proxy request failed, in words, with what to do instead. Pure. */
export function proxyFailure(
  err: unknown,
  at: { namespace: string; pod: string; node: string; port: number; route: string },
  timeoutMs: number,
): { error: string; hint: string } {
  const onNode = `on node ${at.node}: curl -s http://127.0.0.1:${at.port}${at.route}`;
  if (err instanceof ApiError) {
    const text = err.message.replace(/^[A-Z]+ \S+: /, '');
    if (err.status === 403)
      return {
        error: `forbidden: ${text}`,
        hint: `needs get pods/proxy in ${at.namespace} (kubectl auth can-i get pods/proxy -n ${at.namespace})`,
      };
    if (err.status === 404 && /NotFound/.test(text))
      return { error: `pod ${at.pod} is gone (${text})`, hint: 'run again: the DaemonSet replaced it' };
    if (err.status === 404)
      return {
        error: `the gateway answers 404 for ${at.route}: it runs an edgemesh older than this client`,
        hint: "upgrade the gateways: apply this release's manifests (the DaemonSet rolls them one node at a time)",
      };
    if (
      err.status === 502 ||
      err.status === 503 ||
      /error trying to reach|dial tcp|no route|timeout/i.test(text)
    )
      return {
        error: `the API server cannot reach the gateway's port ${at.port} on its node (${text})`,
        hint: `nodes behind a NAT and KubeEdge edge nodes are not reachable from the API server; ${onNode}`,
      };
    if (text.endsWith(': aborted') || text === 'aborted')
      return { error: `no answer within ${timeoutMs / 1000} s`, hint: onNode };
    return { error: text, hint: onNode };
  }
  return { error: (err as Error)?.message ?? String(err), hint: onNode };
}

/** One gateway's /status, validated; never throws (the failure is the result). */
async function readOne(
  api: ApiClient,
  namespace: string,
  pod: PodSummary,
  timeoutMs: number,
): Promise<NodeStatus> {
  const base = { node: pod.node || '(unscheduled)', pod: pod.name };
  const port = metricsPort(pod);
  if (port <= 0)
    return {
      ...base,
      result: {
        error:
          port === 0
            ? 'the gateway runs with --metrics-port=0 (no /status)'
            : 'its --metrics-port is not a port',
        hint: 'run the gateway with a --metrics-port (15090 in the shipped manifests)',
      },
    };
  if (!pod.node || pod.phase !== 'Running')
    return {
      ...base,
      result: {
        error: `pod ${pod.name} is ${pod.phase}${pod.node ? '' : ', not scheduled'}`,
        hint: `kubectl -n ${namespace} describe pod ${pod.name}`,
      },
    };
  const route = '/status';
  try {
    const { text } = await api.send('GET', proxyPath(namespace, pod.name, port, route), {
      signal: AbortSignal.timeout(timeoutMs),
      maxBytes: MAX_DOCUMENT_BYTES,
    });
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`the answer is not JSON (${text.slice(0, 60)}…)`);
    }
    const status = parseGatewayStatus(json, `gateway ${pod.name} /status`);
    if (status.node !== pod.node)
      throw new Error(
        `gateway ${pod.name} /status: it says node ${status.node}, its pod runs on ${pod.node}`,
      );
    return { ...base, result: { status } };
  } catch (err) {
    return {
      ...base,
      result: proxyFailure(err, { namespace, pod: pod.name, node: pod.node, port, route }, timeoutMs),
    };
  }
}

/** The /status of these gateway pods (or why not), CONCURRENCY at a time, in their order. */
export async function readStatusesOf(
  api: ApiClient,
  namespace: string,
  gateways: readonly PodSummary[],
  timeoutMs: number,
): Promise<NodeStatus[]> {
  const results: NodeStatus[] = [];
  for (let i = 0; i < gateways.length; i += CONCURRENCY)
    results.push(
      ...(await Promise.all(
        gateways.slice(i, i + CONCURRENCY).map((p) => readOne(api, namespace, p, timeoutMs)),
      )),
    );
  return results;
}

/** Every gateway's status (or why not), by node name; `nodes` limits to those nodes. */
export async function readGatewayStatuses(
  api: ApiClient,
  reader: ClusterReader,
  namespace: string,
  nodes: readonly string[],
  timeoutMs: number,
): Promise<NodeStatus[]> {
  const gateways = (await reader.partPods(namespace)).filter(isGateway);
  const wanted = nodes.length === 0 ? gateways : gateways.filter((p) => nodes.includes(p.node));
  const results = await readStatusesOf(api, namespace, wanted, timeoutMs);
  for (const n of nodes)
    if (!gateways.some((p) => p.node === n))
      results.push({
        node: n,
        pod: '-',
        result: {
          error: `no gateway pod on node ${n} in ${namespace}`,
          hint: 'kubectl get node NAME; the gateway DaemonSet runs on every node (check its tolerations and nodeSelector)',
        },
      });
  return results.sort((a, b) => a.node.localeCompare(b.node) || a.pod.localeCompare(b.pod));
}
