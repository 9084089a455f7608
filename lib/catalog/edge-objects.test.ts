// The builder as a gateway on a KubeEdge edge node uses it: Services + core/v1 Endpoints,
// only this node's Pods, pods elsewhere known from the endpoints that name them.
import { describe, expect, it } from 'vitest';
import { isEndpointOnNode, isLocalPodEndpoint } from '../../gateway/local-endpoint.ts';
import { CatalogBuilder } from './from-objects.ts';

const service = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { namespace: 'demo', name: 'web' },
  spec: { clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80 }] },
};
const endpoints = (addresses: unknown[]) => ({
  apiVersion: 'v1',
  kind: 'Endpoints',
  metadata: { namespace: 'demo', name: 'web' },
  subsets: [{ addresses, ports: [{ name: 'http', port: 8080 }] }],
});
const local = { ip: '10.244.1.7', nodeName: 'n1', targetRef: { kind: 'Pod', name: 'web-0' } };
const remote = { ip: '10.244.2.9', nodeName: 'n2', targetRef: { kind: 'Pod', name: 'web-1' } };
const ownPod = {
  metadata: { namespace: 'demo', name: 'web-0' },
  spec: { nodeName: 'n1' },
  status: { phase: 'Running', podIP: '10.244.1.7' },
};

describe('catalog from Services + core/v1 Endpoints on node n1', () => {
  it('pods on other nodes come from endpoints; this node only from its Pods', () => {
    const b = new CatalogBuilder({ nodeName: 'n1' });
    b.handle('Service', 'add', service);
    b.handle('Endpoints', 'add', endpoints([local, remote]));
    let c = b.catalog;
    expect(c.services['demo/web'].endpoints.map((e) => [e.ip, e.nodeName, e.podName])).toEqual([
      ['10.244.1.7', 'n1', 'web-0'],
      ['10.244.2.9', 'n2', 'web-1'],
    ]);
    expect(c.pods).toEqual({
      '10.244.2.9': { ip: '10.244.2.9', namespace: 'demo', name: 'web-1', nodeName: 'n2' },
    });
    // The endpoint names n1, but without its Pod object the gateway must not dial it.
    expect(isLocalPodEndpoint(c, 'n1', '10.244.1.7', 8080)).toBe(false);
    expect(isEndpointOnNode(c, 'n2', '10.244.2.9', 8080)).toBe(true);
    b.handle('Pod', 'add', ownPod);
    c = b.catalog;
    expect(isLocalPodEndpoint(c, 'n1', '10.244.1.7', 8080)).toBe(true);
  });

  it('an endpoint cannot make this gateway dial a host port (no Pod object on n1 for it)', () => {
    const b = new CatalogBuilder({ nodeName: 'n1' });
    b.handle('Service', 'add', service);
    b.handle(
      'Endpoints',
      'add',
      endpoints([{ ip: '192.168.1.10', nodeName: 'n1', targetRef: { kind: 'Pod', name: 'x' } }]),
    );
    expect(b.catalog.pods).toEqual({});
    expect(isLocalPodEndpoint(b.catalog, 'n1', '192.168.1.10', 8080)).toBe(false);
  });

  it('replayed ADDED events change nothing (no revision, no update)', () => {
    const b = new CatalogBuilder({ nodeName: 'n1' });
    b.handle('Service', 'add', service);
    b.handle('Endpoints', 'add', endpoints([local, remote]));
    b.handle('Pod', 'add', ownPod);
    const before = b.catalog;
    expect(b.handle('Service', 'add', service)).toEqual([]);
    expect(b.handle('Endpoints', 'add', endpoints([local, remote]))).toEqual([]);
    expect(b.handle('Pod', 'add', ownPod)).toEqual([]);
    expect(b.catalog).toEqual(before);
  });

  it('a remote endpoint leaving removes its derived pod; a Pod object wins over the endpoint', () => {
    const b = new CatalogBuilder({ nodeName: 'n1' });
    b.handle('Service', 'add', service);
    b.handle('Endpoints', 'add', endpoints([remote]));
    const updates = b.handle('Endpoints', 'update', endpoints([]));
    expect(updates.map((u) => u.type)).toEqual(['service', 'pod']);
    expect(b.catalog.pods).toEqual({});
    b.handle('Endpoints', 'update', endpoints([remote]));
    b.handle('Pod', 'add', {
      metadata: { namespace: 'demo', name: 'web-1-real' },
      spec: { nodeName: 'n2' },
      status: { podIP: '10.244.2.9' },
    });
    expect(b.catalog.pods['10.244.2.9'].name).toBe('web-1-real');
    b.handle('Service', 'delete', service);
    expect(b.catalog.pods['10.244.2.9'].name).toBe('web-1-real');
  });

  it('without nodeName (sidecar --objects) nothing is derived', () => {
    const b = new CatalogBuilder();
    b.handle('Service', 'add', service);
    b.handle('Endpoints', 'add', endpoints([local, remote]));
    expect(b.catalog.pods).toEqual({});
  });

  it('EndpointSlices win over Endpoints for the same service', () => {
    const b = new CatalogBuilder();
    b.handle('Service', 'add', service);
    b.handle('Endpoints', 'add', endpoints([remote]));
    b.handle('EndpointSlice', 'add', {
      metadata: { namespace: 'demo', name: 'web-abc', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.244.5.5'] }],
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    });
    expect(b.catalog.services['demo/web'].endpoints.map((e) => e.ip)).toEqual(['10.244.5.5']);
  });
});
