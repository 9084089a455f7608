/**
 * `edgemesh sidecar`: flags only; the wiring lives in sidecar.ts.
 */
import { isIP } from 'node:net';
import { type CommandSpec, defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { GATEWAY_PORT } from '../lib/gateway-protocol.ts';
import { isDnsLabel, isDnsSubdomain, isUid } from '../lib/names.ts';
import { POD_CONTRACT } from '../lib/pod-contract.ts';
import type { ProxyEngine } from './proxy/proxy.ts';
import { parseHostPort, runSidecar } from './sidecar.ts';

const NODE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const port = (description: string, def: number) =>
  ({ type: 'integer', description, default: def, min: 1, max: 65535 }) as const;
const hostPortProblem = (v: string) => {
  try {
    parseHostPort(v, GATEWAY_PORT);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
};

const spec = {
  name: 'sidecar',
  summary:
    "Per-pod DNS server and transparent TCP/HTTP proxy (runs as uid 1337 next to the app): answers the pod's " +
    'DNS from the catalog and carries its redirected outbound TCP to service endpoints, directly or via the ' +
    "node's gateway.",
  details: [
    'Catalog: from the gateway feed (default), or standalone from --catalog-file or --objects.',
    'Examples:',
    '  edgemesh sidecar                                   # in a pod: HOST_IP and NODE_NAME from the downward API',
    '  edgemesh sidecar --catalog-file /etc/edgemesh/catalog.json --upstream 192.0.2.53',
    '  edgemesh sidecar --objects services.yaml --node-name node-a --gateway 10.0.0.5:15080',
  ].join('\n'),
  options: {
    'catalog-file': {
      type: 'string',
      description: 'standalone: load and follow this catalog JSON file instead of the gateway feed',
    },
    objects: {
      type: 'string',
      description:
        'standalone: Kubernetes Service/EndpointSlice objects (YAML or JSON) to build the catalog from',
    },
    'dns-port': port('DNS port (UDP on 127.0.0.1 and ::1, and TCP)', POD_CONTRACT.dnsPort),
    'proxy-port': port('transparent outbound TCP proxy port', POD_CONTRACT.proxyPort),
    'health-port': port('health port: GET /ready', POD_CONTRACT.healthPort),
    'metrics-host': {
      type: 'list',
      default: ['0.0.0.0'],
      description:
        "addresses for /ready and /metrics (default all: inside the pod's own network namespace that is " +
        'the pod IP, which the kubelet probes, and loopback)',
    },
    'metrics-port': {
      type: 'integer',
      description: 'port for /metrics (0 = off)',
      default: POD_CONTRACT.metricsPort,
      min: 0,
      max: 65535,
    },
    upstream: {
      type: 'list',
      description:
        'DNS upstreams IP[:PORT] for names outside the cluster (default: nameservers of /etc/resolv.conf)',
    },
    'resolv-conf': {
      type: 'string',
      description: 'resolv.conf to take upstreams and search domains from',
      default: '/etc/resolv.conf',
    },
    gateway: {
      type: 'string',
      description:
        "the node's gateway HOST[:PORT] (catalog lookups or feed, and cross-node streams; default: env HOST_IP:15080)",
      ...(process.env.HOST_IP ? { default: `${process.env.HOST_IP}:${GATEWAY_PORT}` } : {}),
      validate: hostPortProblem,
    },
    'node-name': {
      type: 'string',
      description: 'this node (default: env NODE_NAME); endpoints on other nodes go through the gateway',
      ...(process.env.NODE_NAME ? { default: process.env.NODE_NAME } : {}),
      validate: (v: string) => (NODE_NAME.test(v) && v.length <= 253 ? undefined : 'must be a node name'),
    },
    'pod-name': {
      type: 'string',
      description:
        "this pod's name (default: env POD_NAME); with --pod-namespace and --pod-uid, announced to the gateway",
      ...(process.env.POD_NAME ? { default: process.env.POD_NAME } : {}),
      validate: (v: string) => (isDnsSubdomain(v) ? undefined : 'must be a pod name (DNS subdomain)'),
    },
    'pod-namespace': {
      type: 'string',
      description: "this pod's namespace (default: env POD_NAMESPACE)",
      ...(process.env.POD_NAMESPACE ? { default: process.env.POD_NAMESPACE } : {}),
      validate: (v: string) => (isDnsLabel(v) ? undefined : 'must be a namespace name (DNS label)'),
    },
    'pod-uid': {
      type: 'string',
      description: "this pod's uid (default: env POD_UID)",
      ...(process.env.POD_UID ? { default: process.env.POD_UID } : {}),
      validate: (v: string) => (isUid(v) ? undefined : 'must be a Kubernetes uid'),
    },
    'cluster-domain': { type: 'string', description: 'cluster DNS domain', default: 'cluster.local' },
    catalog: {
      type: 'string',
      description:
        'from the gateway: on-demand (hold only what the pod uses, asking the gateway on a miss) or ' +
        'full (the whole catalog over the feed)',
      choices: ['on-demand', 'full'],
      default: 'on-demand',
    },
    'catalog-idle-seconds': {
      type: 'integer',
      description: 'on-demand: let a service go after this long without a DNS query or connection for it',
      default: 600,
      min: 1,
      max: 86_400,
    },
    'catalog-negative-seconds': {
      type: 'integer',
      description: 'on-demand: how long a name or address the gateway does not know is answered as missing',
      default: 5,
      min: 0,
      max: 3600,
    },
    'connect-timeout-ms': {
      type: 'integer',
      description: 'upstream connect timeout per attempt',
      default: 5000,
      min: 10,
      max: 120_000,
    },
    'idle-timeout-ms': {
      type: 'integer',
      description: 'close proxied connections idle this long (0 = never)',
      default: 3_600_000,
      min: 0,
      max: 86_400_000,
    },
    'drain-ms': {
      type: 'integer',
      description: 'on SIGTERM, how long open connections may finish',
      default: 20_000,
      min: 0,
      max: 600_000,
    },
    'proxy-listen': {
      type: 'list',
      description: 'proxy listen addresses',
      default: ['0.0.0.0', '::'],
      validate: (v: string[]) => v.find((a) => isIP(a) === 0) && 'must be IP addresses',
    },
    'proxy-engine': {
      type: 'string',
      description:
        'L4 data path: native (the compiled addon: accepts and splices plain TCP off the JS thread), node ' +
        "(Node's sockets), auto (native when the addon is built, else node with a warning)",
      choices: ['auto', 'native', 'node'],
      default: 'auto',
    },
    'capture-udp': {
      type: 'string',
      description:
        "proxy the pod's outbound UDP that the init's --capture-udp rules deliver (TPROXY) to --udp-port: " +
        'true or false; true needs NET_ADMIN in the sidecar (docs/udp.md)',
      choices: ['true', 'false'],
      default: 'false',
    },
    'udp-port': port(
      'transparent UDP port (with --capture-udp; the init must use the same)',
      POD_CONTRACT.udpPort,
    ),
    'udp-idle-timeout-seconds': {
      type: 'integer',
      description:
        'end a UDP flow (client address + destination) after this long without a datagram either way',
      default: 30,
      min: 1,
      max: 86_400,
    },
    'udp-max-flows': {
      type: 'integer',
      description: 'most UDP flows held at once (the least recently active one goes first)',
      default: 16_384,
      min: 1,
      max: 1_000_000,
    },
    config: { type: 'string', description: 'config file (JSON or YAML) with any of these options' },
  },
} satisfies CommandSpec;

export const sidecarCommand = defineCommand(spec, async (o) => {
  await runSidecar({
    catalogFile: o['catalog-file'],
    objectsFile: o.objects,
    dnsPort: o['dns-port'],
    proxyPort: o['proxy-port'],
    healthPort: o['health-port'],
    metricsPort: o['metrics-port'],
    metricsHosts: o['metrics-host'].map((h) => {
      if (!isIP(h)) throw configError(`--metrics-host: ${JSON.stringify(h)} is not an IP address`);
      return h;
    }),
    upstreams: o.upstream,
    resolvConf: o['resolv-conf'],
    gateway: o.gateway ? parseHostPort(o.gateway, GATEWAY_PORT) : undefined,
    nodeName: o['node-name'],
    pod:
      o['pod-name'] && o['pod-namespace'] && o['pod-uid']
        ? { name: o['pod-name'], namespace: o['pod-namespace'], uid: o['pod-uid'] }
        : undefined,
    clusterDomain: o['cluster-domain'],
    catalogMode: o.catalog as 'on-demand' | 'full',
    catalogIdleMs: o['catalog-idle-seconds'] * 1000,
    catalogNegativeMs: o['catalog-negative-seconds'] * 1000,
    connectTimeoutMs: o['connect-timeout-ms'],
    idleTimeoutMs: o['idle-timeout-ms'],
    drainMs: o['drain-ms'],
    proxyHosts: o['proxy-listen'],
    proxyEngine: o['proxy-engine'] === 'auto' ? undefined : (o['proxy-engine'] as ProxyEngine),
    udp:
      o['capture-udp'] === 'true'
        ? {
            port: o['udp-port'],
            idleMs: o['udp-idle-timeout-seconds'] * 1000,
            maxFlows: o['udp-max-flows'],
          }
        : undefined,
  });
});
