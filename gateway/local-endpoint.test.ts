import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Catalog, CatalogUpdate, Endpoint, ServiceEntry } from '../lib/catalog/types.ts';
import { CatalogIndex } from './catalog-index.ts';
import {
  type EndpointProtocol,
  isEndpointOnNode,
  isLocalPodEndpoint,
  type ServicesAt,
} from './local-endpoint.ts';

const golden = (name: string): Catalog =>
  JSON.parse(
    readFileSync(join(import.meta.dirname, '../lib/catalog/testdata', `${name}.golden.json`), 'utf8'),
  ).catalog;

/** The services at an address from the lookup hub's index of `catalog` (what the gateway passes). */
function servicesAtOf(catalog: Catalog): ServicesAt {
  const index = new CatalogIndex();
  index.apply(catalog, { type: 'snapshot', catalog });
  return (ip) => index.servicesAt(ip, Number.MAX_SAFE_INTEGER);
}

describe('isLocalPodEndpoint', () => {
  const web = golden('clusterip-web'); // pods 10.244.1.17 + 10.244.1.5 on edge-a, 10.244.2.9 on edge-b; ports 8080, 9090
  const dual = golden('dual-stack'); // api-0 on edge-a, 10.244.1.30 and fd00:10:244:1::1e, port 8080
  const edge = golden('edge-cases'); // cache on edge-e; hostNetwork pod 192.168.50.5 not in pods
  const table: Array<[string, Catalog, string, string, number, boolean]> = [
    ['ready endpoint, endpoint port', web, 'edge-a', '10.244.1.17', 8080, true],
    ['second port of the slice', web, 'edge-a', '10.244.1.17', 9090, true],
    ['terminating but still listed endpoint', web, 'edge-a', '10.244.1.5', 8080, true],
    ['service port instead of endpoint port', web, 'edge-a', '10.244.1.17', 80, false],
    ['a port the pod has but the slice does not list', web, 'edge-a', '10.244.1.17', 22, false],
    ['pod on another node', web, 'edge-a', '10.244.2.9', 8080, false],
    ['right pod, asked as another node', web, 'edge-b', '10.244.1.17', 8080, false],
    ['the node address (kubelet)', web, 'edge-a', '192.168.10.11', 10250, false],
    ['the cluster IP', web, 'edge-a', '10.96.12.34', 80, false],
    ['IPv6 endpoint', dual, 'edge-a', 'fd00:10:244:1::1e', 8080, true],
    ['IPv6 in non-canonical form', dual, 'edge-a', 'FD00:10:244:1:0:0:0:1E', 8080, false],
    ['an endpoint whose pod is not in the catalog', edge, 'edge-e', '10.244.7.3', 6379, false],
    ['an endpoint with its pod', edge, 'edge-e', '10.244.7.2', 6379, true],
    ['hostNetwork pod address', edge, 'edge-e', '192.168.50.5', 6379, false],
  ];
  for (const [what, catalog, node, ip, port, want] of table) {
    it(`${want ? 'allows' : 'refuses'} ${what}`, () => {
      expect(isLocalPodEndpoint(catalog, node, ip, port)).toBe(want);
      // The same answer from the services at the address (the gateway's way).
      expect(isLocalPodEndpoint(catalog, node, ip, port, 'TCP', servicesAtOf(catalog))).toBe(want);
    });
  }

  it('refuses a UDP-only endpoint port and one whose slice names another node', () => {
    const c = structuredClone(web);
    const e = c.services['demo/web'].endpoints.find((x) => x.ip === '10.244.1.17')!;
    e.ports = [{ name: 'dns', port: 53, protocol: 'UDP' }];
    expect(isLocalPodEndpoint(c, 'edge-a', '10.244.1.17', 53)).toBe(false);
    const d = structuredClone(web);
    d.services['demo/web'].endpoints.find((x) => x.ip === '10.244.1.17')!.nodeName = 'edge-b';
    expect(isLocalPodEndpoint(d, 'edge-a', '10.244.1.17', 8080)).toBe(false);
  });

  it('UDP: only UDP ports of local pod endpoints, never a TCP port as UDP or the other way round', () => {
    const c = structuredClone(web);
    const e = c.services['demo/web'].endpoints.find((x) => x.ip === '10.244.1.17')!;
    e.ports = [...e.ports, { name: 'coap', port: 5683, protocol: 'UDP' }];
    expect(isLocalPodEndpoint(c, 'edge-a', '10.244.1.17', 5683, 'UDP')).toBe(true);
    expect(isLocalPodEndpoint(c, 'edge-a', '10.244.1.17', 5683, 'TCP')).toBe(false);
    expect(isLocalPodEndpoint(c, 'edge-a', '10.244.1.17', 8080, 'UDP')).toBe(false);
    expect(isLocalPodEndpoint(c, 'edge-b', '10.244.1.17', 5683, 'UDP')).toBe(false);
    expect(isLocalPodEndpoint(c, 'edge-a', '192.168.10.11', 5683, 'UDP')).toBe(false);
    expect(isEndpointOnNode(c, 'edge-a', '10.244.1.17', 5683, 'UDP')).toBe(true);
    expect(isEndpointOnNode(c, 'edge-a', '10.244.1.17', 5683)).toBe(false);
    expect(isEndpointOnNode(c, 'edge-b', '10.244.1.17', 5683, 'UDP')).toBe(false);
  });

  it('isEndpointOnNode places endpoints by their slice even without the pod (remote pre-check)', () => {
    expect(isEndpointOnNode(edge, 'edge-e', '10.244.7.3', 6379)).toBe(true);
    expect(isLocalPodEndpoint(edge, 'edge-e', '10.244.7.3', 6379)).toBe(false);
    expect(isEndpointOnNode(edge, 'edge-f', '10.244.7.3', 6379)).toBe(false);
    expect(isEndpointOnNode(edge, 'edge-e', '10.244.7.3', 80)).toBe(false);
    expect(isEndpointOnNode(web, 'edge-b', '10.244.2.9', 8080)).toBe(true);
    expect(isEndpointOnNode(web, 'edge-b', '192.168.20.12', 10250)).toBe(false);
  });
});

describe('checks through the index agree with the walk of the catalog (random catalogs)', () => {
  // A fixed-seed generator: the same catalogs every run.
  let seed = 12345;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
    return seed % n;
  };
  const IPS = Array.from({ length: 12 }, (_, i) => `10.244.${i % 3}.${i}`);
  const NODES = ['n1', 'n2', 'n3'];
  const PORTS = [53, 80, 8080];
  const PROTOCOLS: EndpointProtocol[] = ['TCP', 'UDP'];
  const entry = (name: string): ServiceEntry => ({
    service: {
      namespace: 'd',
      name,
      type: 'ClusterIP',
      clusterIPs: [`10.96.0.${rand(250)}`],
      headless: false,
      ports: [{ name: 'p', port: 80, protocol: 'TCP' }],
      sessionAffinity: { type: 'None' },
      lbPolicy: 'round-robin',
      publishNotReadyAddresses: false,
    },
    endpoints: Array.from({ length: rand(4) }, (): Endpoint => {
      const e: Endpoint = {
        ip: IPS[rand(IPS.length)],
        ready: true,
        serving: true,
        terminating: false,
        ports: Array.from({ length: 1 + rand(2) }, () => ({
          name: 'p',
          port: PORTS[rand(PORTS.length)],
          protocol: PROTOCOLS[rand(2)],
        })),
      };
      if (rand(3) > 0) e.nodeName = NODES[rand(NODES.length)];
      return e;
    }),
  });
  const agree = (catalog: Catalog, at: ServicesAt) => {
    let allowed = 0;
    for (const node of NODES)
      for (const ip of IPS)
        for (const port of PORTS)
          for (const protocol of PROTOCOLS) {
            const walk = isLocalPodEndpoint(catalog, node, ip, port, protocol);
            expect(
              isLocalPodEndpoint(catalog, node, ip, port, protocol, at),
              `${node} ${ip}:${port}/${protocol}`,
            ).toBe(walk);
            expect(isEndpointOnNode(catalog, node, ip, port, protocol, at)).toBe(
              isEndpointOnNode(catalog, node, ip, port, protocol),
            );
            if (walk) allowed++;
          }
    return allowed;
  };

  it('on 50 catalogs and after 20 service updates each (the index kept up to date, not rebuilt)', () => {
    let allowed = 0;
    for (let round = 0; round < 50; round++) {
      let catalog: Catalog = {
        revision: 1,
        services: {},
        pods: {},
        nodes: {},
        namespaces: {},
      } as unknown as Catalog;
      for (let i = 0; i < 6; i++) catalog.services[`d/s${i}`] = entry(`s${i}`);
      for (const ip of IPS)
        if (rand(4) > 0)
          catalog.pods[ip] = { ip, namespace: 'd', name: `p-${ip}`, nodeName: NODES[rand(NODES.length)] };
      const index = new CatalogIndex();
      index.apply(catalog, { type: 'snapshot', catalog });
      const at: ServicesAt = (ip) => index.servicesAt(ip, Number.MAX_SAFE_INTEGER);
      allowed += agree(catalog, at);
      for (let u = 0; u < 20; u++) {
        const key = `d/s${rand(8)}`;
        const next = rand(5) === 0 ? null : entry(key.slice(2));
        const services = { ...catalog.services };
        if (next) services[key] = next;
        else delete services[key];
        catalog = { ...catalog, revision: catalog.revision + 1, services };
        const update = { type: 'service', revision: catalog.revision, key, entry: next } as CatalogUpdate;
        index.apply(catalog, update);
        allowed += agree(catalog, at);
      }
    }
    expect(allowed).toBeGreaterThan(100); // the catalogs allow something: the agreement is not all "no"
  });
});
