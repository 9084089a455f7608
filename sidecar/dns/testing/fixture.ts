import type { Catalog, Endpoint, Service, ServiceEntry } from '../../../lib/catalog/types.ts';

/**
 * The catalog every DNS test answers from (unit goldens and the dig tests in a namespace):
 * one service of each kind the spec covers, with mixed-case-worthy names, dual stack,
 * ready/not-ready endpoints, and one headless service big enough to need TCP.
 */
const svc = (namespace: string, name: string, s: Partial<Service>): Service => ({
  namespace,
  name,
  type: 'ClusterIP',
  clusterIPs: [],
  headless: false,
  ports: [],
  sessionAffinity: { type: 'None' },
  lbPolicy: 'round-robin',
  publishNotReadyAddresses: false,
  ...s,
});
const ep = (ip: string, e: Partial<Endpoint> = {}): Endpoint => ({
  ip,
  ready: true,
  serving: true,
  terminating: false,
  ports: [],
  ...e,
});

const entries: ServiceEntry[] = [
  {
    service: svc('default', 'kubernetes', {
      clusterIPs: ['10.96.0.1'],
      ports: [{ name: 'https', port: 443, protocol: 'TCP' }],
    }),
    endpoints: [ep('192.168.10.2', { ports: [{ name: 'https', port: 6443, protocol: 'TCP' }] })],
  },
  {
    service: svc('default', 'web', {
      clusterIPs: ['10.96.0.10', 'fd00:10:96::a'],
      ports: [
        { name: 'http', port: 80, protocol: 'TCP', appProtocol: 'http' },
        { name: 'dns', port: 53, protocol: 'UDP' },
        { name: '', port: 8080, protocol: 'TCP' },
      ],
    }),
    endpoints: [ep('10.244.1.10', { ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] })],
  },
  {
    service: svc('default', 'db', { headless: true, ports: [{ name: 'pg', port: 5432, protocol: 'TCP' }] }),
    endpoints: [
      ep('10.244.1.5', {
        hostname: 'db-0',
        nodeName: 'node-a',
        podName: 'db-0',
        ports: [{ name: 'pg', port: 5432, protocol: 'TCP' }],
      }),
      ep('10.244.2.6', {
        hostname: 'db-1',
        nodeName: 'node-b',
        podName: 'db-1',
        ports: [{ name: 'pg', port: 5432, protocol: 'TCP' }],
      }),
      ep('10.244.2.7', { nodeName: 'node-b', ports: [{ name: 'pg', port: 5432, protocol: 'TCP' }] }),
      ep('10.244.3.8', {
        hostname: 'db-3',
        ready: false,
        serving: false,
        ports: [{ name: 'pg', port: 5432, protocol: 'TCP' }],
      }),
      ep('fd00:244::6', { hostname: 'db-1', ports: [{ name: 'pg', port: 5432, protocol: 'TCP' }] }),
    ],
  },
  {
    service: svc('default', 'idle', { headless: true }),
    endpoints: [ep('10.244.5.1', { ready: false, serving: false })],
  },
  {
    service: svc('default', 'warmup', { headless: true, publishNotReadyAddresses: true }),
    endpoints: [ep('10.244.5.2', { hostname: 'warmup-0', ready: false, serving: false })],
  },
  {
    service: svc('default', 'ext', { type: 'ExternalName', externalName: 'www.example.test' }),
    endpoints: [],
  },
  {
    service: svc('default', 'alias', {
      type: 'ExternalName',
      externalName: 'Web.Default.svc.cluster.local.',
    }),
    endpoints: [],
  },
  {
    service: svc('default', 'big', { headless: true }),
    endpoints: Array.from({ length: 40 }, (_, i) => ep(`10.244.9.${i + 1}`)),
  },
  {
    service: svc('team-b', 'api', {
      clusterIPs: ['10.96.1.20'],
      ports: [{ name: 'grpc', port: 8080, protocol: 'TCP', appProtocol: 'grpc' }],
    }),
    endpoints: [],
  },
  {
    service: svc('team-b', 'v6only', {
      clusterIPs: ['fd00:10:96::1:14'],
      ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    }),
    endpoints: [],
  },
];

export function fixtureCatalog(): Catalog {
  return {
    format: 1,
    revision: 42,
    clusterDomain: 'cluster.local',
    services: Object.fromEntries(
      entries.map((e) => [`${e.service.namespace}/${e.service.name}`, structuredClone(e)]),
    ),
    pods: {
      '10.244.1.5': { ip: '10.244.1.5', namespace: 'default', name: 'db-0', nodeName: 'node-a' },
      'fd00:244::6': { ip: 'fd00:244::6', namespace: 'default', name: 'db-1', nodeName: 'node-b' },
    },
    nodes: {},
  };
}
