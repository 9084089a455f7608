import { isIP } from 'node:net';
import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { GATEWAY_PORT } from '../lib/gateway-protocol.ts';
import { type ApiClient, apiFromUrl } from '../lib/kube/client.ts';
import { apiFromKubeconfigFile, apiInCluster } from '../lib/kube/kubeconfig.ts';
import { createLogger } from '../lib/log.ts';
import { defaultMetricsHosts } from '../lib/metrics.ts';
import { onShutdown } from '../lib/shutdown.ts';
import { startGateway } from './gateway.ts';
import { readSettingsDir } from './settings.ts';
// Not ./tunnel/index.ts: it loads the tunnel's modules (node-forge, node-datachannel) at start.
import { parseServers } from './tunnel/servers.ts';
import { startGatewayTunnel } from './tunnel/start.ts';
import { EDGE_RELIST_SECONDS, type EndpointsSource } from './watcher.ts';

const NODE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export const gatewayCommand = defineCommand(
  {
    name: 'gateway',
    summary:
      "Per-node gateway: watches Services, their endpoints and this node's Pods, keeps the catalog on disk, " +
      'feeds it to the sidecars on this node and carries their streams to pods (here or on peer nodes).',
    details:
      'The catalog is persisted to STATE-DIR/catalog.json and served at once after a restart, before the API ' +
      'answers. Sidecars connect to LISTEN:PORT (protocol in lib/gateway-protocol.ts). On a KubeEdge edge ' +
      'node: --api-server http://127.0.0.1:10550 (edgecore metaServer; docs/kubeedge.md).',
    options: {
      'node-name': {
        type: 'string',
        description: 'this node (NODE_NAME from the environment when set, as a DaemonSet sets it)',
        default: process.env.NODE_NAME,
        validate: (v: string) => (NODE_NAME.test(v) && v.length <= 253 ? undefined : 'must be a node name'),
      },
      kubeconfig: { type: 'string', description: 'kubeconfig file (in-cluster config when absent)' },
      'api-server': {
        type: 'string',
        description:
          "API server URL instead of a kubeconfig, e.g. KubeEdge's edge API http://127.0.0.1:10550 (no auth), " +
          'or https://… with --api-token-file',
        validate: (v: string) =>
          /^https?:\/\/[^\s/]+\/?$/.test(v) ? undefined : 'must be http(s)://HOST:PORT',
      },
      'api-token-file': {
        type: 'string',
        description:
          'bearer token for an https --api-server, re-read at every request (a projected service-account token)',
      },
      'api-ca-file': { type: 'string', description: 'CA certificate (PEM) of an https --api-server' },
      'api-insecure-skip-tls-verify': {
        type: 'boolean',
        default: false,
        description: 'do not verify the https --api-server certificate (testing only)',
      },
      edge: {
        type: 'string',
        choices: ['auto', 'true', 'false'],
        default: 'auto',
        description:
          "the API is KubeEdge's edge API: no Node watch, cold lists recognised, relist after every watch " +
          '(auto: true with --api-server)',
      },
      'endpoints-source': {
        type: 'string',
        choices: ['auto', 'endpointslices', 'endpoints'],
        default: 'auto',
        description:
          'where endpoints come from (auto: core/v1 Endpoints in edge mode, EndpointSlices otherwise)',
      },
      'relist-seconds': {
        type: 'integer',
        default: EDGE_RELIST_SECONDS,
        min: 1,
        max: 3600,
        description: 'edge mode: seconds between relists (how soon a deletion the edge API missed is seen)',
      },
      'state-dir': {
        type: 'string',
        description: 'directory for the persisted catalog',
        default: '/var/lib/edgemesh',
      },
      listen: {
        type: 'string',
        description: 'address for the sidecar listener (HOST_IP from the environment when set)',
        default: process.env.HOST_IP || '0.0.0.0',
        validate: (v: string) => (isIP(v) ? undefined : 'must be an IP address'),
      },
      port: {
        type: 'integer',
        description: 'port for the sidecar listener',
        default: GATEWAY_PORT,
        min: 1,
        max: 65535,
      },
      'allow-node-local': {
        type: 'boolean',
        default: true,
        description:
          'besides the pods of this node, let the node itself (loopback and its own addresses) use the ' +
          'sidecar port (hostNetwork processes, debugging); sources the catalog does not know as pods on ' +
          'this node are refused',
      },
      'cluster-domain': { type: 'string', description: 'cluster DNS domain', default: 'cluster.local' },
      'metrics-host': {
        type: 'list',
        default: [],
        description:
          'addresses for /metrics and /ready (default: the --listen address, else HOST_IP, and 127.0.0.1 — ' +
          "never all interfaces: the gateway runs in the host's network, the kubelet probes the node's IP)",
      },
      'metrics-port': {
        type: 'integer',
        description: 'port for /metrics and /ready (0 = off)',
        default: 15090,
        min: 0,
        max: 65535,
      },
      'tunnel-servers': {
        type: 'list',
        default: [],
        description:
          'tunnel-server replicas HOST:PORT for the tunnel to peer gateways (none: same-node streams only)',
      },
      'mesh-ca': {
        type: 'string',
        description: 'mesh CA certificate (PEM) the tunnel verifies peers and tunnel-servers with',
        default: '/etc/edgemesh/mesh-ca/ca.crt',
      },
      'enroll-token-file': {
        type: 'string',
        description: "this node's enrolment proof (projected service-account token or bootstrap token)",
        default: '/var/run/secrets/edgemesh/token',
      },
      'tunnel-port': {
        type: 'integer',
        description: 'tunnel listener port (direct paths from peers)',
        default: 20006,
        min: 1,
        max: 65535,
      },
      'dgram-lane': {
        type: 'boolean',
        default: true,
        description:
          "carry UDP Services' datagrams between gateways on a plain UDP socket pair beside each tunnel session, " +
          'punched like the UDP path (docs/udp.md, The datagram lane); false (EDGEMESH_DGRAM_LANE=false): on the ' +
          "session's own path",
      },
      'settings-dir': {
        type: 'string',
        description:
          'the edgemesh-config ConfigMap mounted as a volume (a file per key): tunnel-servers (when ' +
          '--tunnel-servers is not given), kubernetes-service-host/-port (in-cluster API address on ' +
          'nodes without kube-proxy). Files, not env: a kubelet cut off from the API cannot restart ' +
          'a container whose env comes from a ConfigMap',
      },
      config: { type: 'string', description: 'config file (JSON or YAML) with any of these options' },
    },
  },
  async (o) => {
    if (!o['node-name']) throw configError('--node-name is required (or set NODE_NAME)');
    const settings = apiSettings(o);
    const fromDir = o['settings-dir'] ? readSettingsDir(o['settings-dir']) : {};
    const tunnelServers =
      o['tunnel-servers'].length > 0 ? o['tunnel-servers'] : (fromDir.tunnelServers ?? []);
    // A bad entry fails here, naming where it came from.
    parseServers(
      tunnelServers,
      o['tunnel-servers'].length > 0 ? '--tunnel-servers' : 'settings: tunnel-servers',
    );
    for (const h of o['metrics-host'])
      if (!isIP(h)) throw configError(`--metrics-host: ${JSON.stringify(h)} is not an IP address`);
    const log = createLogger('gateway');
    const gateway = await startGateway({
      nodeName: o['node-name'],
      stateDir: o['state-dir'],
      listenHost: o.listen,
      listenPort: o.port,
      clusterDomain: o['cluster-domain'],
      allowNodeLocal: o['allow-node-local'],
      api: await makeApi(o, {
        ...process.env,
        ...(fromDir.kubernetesServiceHost ? { KUBERNETES_SERVICE_HOST: fromDir.kubernetesServiceHost } : {}),
        ...(fromDir.kubernetesServicePort ? { KUBERNETES_SERVICE_PORT: fromDir.kubernetesServicePort } : {}),
      }),
      edge: settings.edge,
      endpointsSource: settings.endpointsSource,
      relistSeconds: o['relist-seconds'],
      metricsPort: o['metrics-port'] === 0 ? undefined : o['metrics-port'],
      metricsHosts:
        o['metrics-host'].length > 0
          ? o['metrics-host']
          : defaultMetricsHosts([o.listen, process.env.HOST_IP]),
      log,
      tunnel:
        tunnelServers.length === 0
          ? undefined
          : async (dialer, { store, registry, messages }) =>
              startGatewayTunnel({
                nodeName: o['node-name'] as string,
                stateDir: o['state-dir'],
                caFile: o['mesh-ca'],
                tokenFile: o['enroll-token-file'],
                servers: tunnelServers,
                lanAddresses: o.listen === '0.0.0.0' || o.listen === '::' ? [] : [o.listen],
                listenPort: o['tunnel-port'],
                techniques: { lane: o['dgram-lane'] },
                dialTarget: (target) => dialer.dial(target),
                messages,
                // Same-site peers stay reachable on their LAN addresses with the cloud gone.
                peerAddresses: (node) => store.current?.nodes[node]?.addresses ?? [],
                registry,
                log,
              }),
    });
    onShutdown(log, () => gateway.close());
  },
);

interface ApiFlags {
  kubeconfig?: string;
  'api-server'?: string;
  'api-token-file'?: string;
  'api-ca-file'?: string;
  'api-insecure-skip-tls-verify': boolean;
  edge: string;
  'endpoints-source': string;
}

/** The API flags → edge mode and endpoints source; errors name the flag. Pure. */
export function apiSettings(o: ApiFlags): { edge: boolean; endpointsSource: EndpointsSource } {
  const url = o['api-server'];
  if (o.kubeconfig && url) throw configError('--kubeconfig and --api-server exclude each other');
  const httpsOnly = ['api-token-file', 'api-ca-file'] as const;
  for (const flag of httpsOnly) {
    if (o[flag] && !url?.startsWith('https://'))
      throw configError(`--${flag} needs an https:// --api-server (a token is never sent in clear)`);
  }
  if (o['api-insecure-skip-tls-verify'] && !url?.startsWith('https://'))
    throw configError('--api-insecure-skip-tls-verify needs an https:// --api-server');
  if (o['api-insecure-skip-tls-verify'] && o['api-ca-file'])
    throw configError('--api-insecure-skip-tls-verify and --api-ca-file exclude each other');
  const edge = o.edge === 'auto' ? !!url : o.edge === 'true';
  const source = o['endpoints-source'];
  const endpointsSource: EndpointsSource =
    source === 'endpoints' || source === 'endpointslices' ? source : edge ? 'endpoints' : 'endpointslices';
  return { edge, endpointsSource };
}

async function makeApi(o: ApiFlags, env: NodeJS.ProcessEnv = process.env): Promise<ApiClient> {
  const url = o['api-server'];
  if (!url) {
    if (!o.kubeconfig && !env.KUBERNETES_SERVICE_HOST)
      throw configError(
        'no API to watch: give --kubeconfig or --api-server, or run in a pod (KUBERNETES_SERVICE_HOST is unset)',
      );
    try {
      return o.kubeconfig ? await apiFromKubeconfigFile(o.kubeconfig) : apiInCluster(env);
    } catch (err) {
      throw configError(`${o.kubeconfig ? '--kubeconfig' : 'in-cluster config'}: ${(err as Error).message}`);
    }
  }
  try {
    return apiFromUrl({
      url,
      tokenFile: o['api-token-file'],
      caFile: o['api-ca-file'],
      insecureSkipTLSVerify: o['api-insecure-skip-tls-verify'],
    });
  } catch (err) {
    throw configError(`--api-ca-file: cannot read ${o['api-ca-file']}: ${(err as Error).message}`);
  }
}
