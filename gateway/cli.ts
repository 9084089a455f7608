import { isIP } from 'node:net';
import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { GATEWAY_PORT } from '../lib/gateway-protocol.ts';
import { createLogger } from '../lib/log.ts';
import { onShutdown } from '../lib/shutdown.ts';
import { startGateway } from './gateway.ts';
import { parseServers, startGatewayTunnel } from './tunnel/index.ts';
import { loadKubeConfig } from './watcher.ts';

const NODE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export const gatewayCommand = defineCommand(
  {
    name: 'gateway',
    summary:
      'Per-node gateway: watches Services, EndpointSlices, Pods and Nodes, keeps the catalog on disk, ' +
      'feeds it to the sidecars on this node and carries their streams to pods (here or on peer nodes).',
    details:
      'The catalog is persisted to STATE-DIR/catalog.json and served at once after a restart, before the API ' +
      'answers. Sidecars connect to LISTEN:PORT (protocol in lib/gateway-protocol.ts).',
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
        description: "API server URL without auth, e.g. KubeEdge's edge API http://127.0.0.1:10550",
        validate: (v: string) =>
          /^https?:\/\/[^\s/]+\/?$/.test(v) ? undefined : 'must be http(s)://HOST:PORT',
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
      'cluster-domain': { type: 'string', description: 'cluster DNS domain', default: 'cluster.local' },
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
      config: { type: 'string', description: 'config file (JSON or YAML) with any of these options' },
    },
  },
  async (o) => {
    if (!o['node-name']) throw configError('--node-name is required (or set NODE_NAME)');
    if (o.kubeconfig && o['api-server'])
      throw configError('--kubeconfig and --api-server exclude each other');
    parseServers(o['tunnel-servers']); // a bad entry fails here, naming the flag
    const log = createLogger('gateway');
    const gateway = await startGateway({
      nodeName: o['node-name'],
      stateDir: o['state-dir'],
      listenHost: o.listen,
      listenPort: o.port,
      clusterDomain: o['cluster-domain'],
      kubeConfig: loadKubeConfig({ kubeconfig: o.kubeconfig, apiServer: o['api-server'] }),
      metricsPort: o['metrics-port'] === 0 ? undefined : o['metrics-port'],
      log,
      tunnel:
        o['tunnel-servers'].length === 0
          ? undefined
          : async (dialer, { store, registry }) =>
              startGatewayTunnel({
                nodeName: o['node-name'] as string,
                stateDir: o['state-dir'],
                caFile: o['mesh-ca'],
                tokenFile: o['enroll-token-file'],
                servers: o['tunnel-servers'],
                lanAddresses: o.listen === '0.0.0.0' || o.listen === '::' ? [] : [o.listen],
                listenPort: o['tunnel-port'],
                dialTarget: (target) => dialer.dial(target),
                // Same-site peers stay reachable on their LAN addresses with the cloud gone.
                peerAddresses: (node) => store.current?.nodes[node]?.addresses ?? [],
                registry,
                log,
              }),
    });
    onShutdown(log, () => gateway.close());
  },
);
