import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Catalog } from '../lib/catalog/types.ts';
import { isEndpointOnNode, isLocalPodEndpoint } from './local-endpoint.ts';

const golden = (name: string): Catalog =>
  JSON.parse(
    readFileSync(join(import.meta.dirname, '../lib/catalog/testdata', `${name}.golden.json`), 'utf8'),
  ).catalog;

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
    it(`${want ? 'allows' : 'refuses'} ${what}`, () =>
      expect(isLocalPodEndpoint(catalog, node, ip, port)).toBe(want));
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
