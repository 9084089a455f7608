/**
 * The objects of the scale benchmark (bench/scale.ts), as the API takes them. Pure.
 *
 * Services have no selector, so the endpointslice controller leaves them alone and the
 * benchmark writes their EndpointSlices itself (labelled `kubernetes.io/service-name`, with
 * its own `managed-by`), as a controller would: 100,000 Pods would take the API server here
 * longer than the whole benchmark may run. Endpoints name their Pods (targetRef) and nodes
 * round-robin, so the gateway derives pod entries for other nodes as in a real cluster; the
 * Pods of the gateway's own node (the only Pods it watches) are created for real.
 */

export interface ScaleShape {
  services: number;
  endpointsPerService: number;
  nodes: number;
  namespaces: number;
}

export const MANAGED_BY = 'bench.edgemesh.io';

export const namespaceOf = (shape: ScaleShape, s: number): string => `scale-${s % shape.namespaces}`;
export const nodeName = (n: number): string => `node-${n}`;
const serviceName = (s: number): string => `svc-${s}`;
const podName = (s: number, e: number): string => `svc-${s}-${e}`;

/** The IP of endpoint `e` of service `s`: 10.64.0.0 upwards, one per endpoint. */
export function endpointIp(shape: ScaleShape, s: number, e: number): string {
  const i = s * shape.endpointsPerService + e;
  return `10.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
}

export const endpointNode = (shape: ScaleShape, s: number, e: number): string =>
  nodeName((s * shape.endpointsPerService + e) % shape.nodes);

export function namespaceObject(name: string): object {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name } };
}

export function nodeObject(n: number): object {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: nodeName(n), labels: { 'bench.edgemesh.io/scale': 'true' } },
    status: { addresses: [{ type: 'InternalIP', address: `172.16.${n >> 8}.${n & 255}` }] },
  };
}

export function serviceObject(shape: ScaleShape, s: number): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: namespaceOf(shape, s), name: serviceName(s) },
    spec: { ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
  };
}

/** The endpoints of service `s`'s slice; `flip` marks endpoint 0 not ready (a change to watch for). */
export function sliceEndpoints(shape: ScaleShape, s: number, flip = false): object[] {
  const out: object[] = [];
  for (let e = 0; e < shape.endpointsPerService; e++) {
    out.push({
      addresses: [endpointIp(shape, s, e)],
      conditions: { ready: !(flip && e === 0), serving: !(flip && e === 0), terminating: false },
      nodeName: endpointNode(shape, s, e),
      targetRef: { kind: 'Pod', namespace: namespaceOf(shape, s), name: podName(s, e) },
    });
  }
  return out;
}

export const sliceName = (s: number): string => `${serviceName(s)}-bench`;

export function sliceObject(shape: ScaleShape, s: number): object {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      namespace: namespaceOf(shape, s),
      name: sliceName(s),
      labels: {
        'kubernetes.io/service-name': serviceName(s),
        'endpointslice.kubernetes.io/managed-by': MANAGED_BY,
      },
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: sliceEndpoints(shape, s),
  };
}

/** The Pods behind the endpoints on `node` (what that node's gateway watches). */
export function podsOnNode(shape: ScaleShape, node: string): { object: object; ip: string }[] {
  const out: { object: object; ip: string }[] = [];
  for (let s = 0; s < shape.services; s++) {
    for (let e = 0; e < shape.endpointsPerService; e++) {
      if (endpointNode(shape, s, e) !== node) continue;
      out.push({
        ip: endpointIp(shape, s, e),
        object: {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { namespace: namespaceOf(shape, s), name: podName(s, e) },
          spec: {
            nodeName: node,
            automountServiceAccountToken: false,
            // No kubelet ever reports these nodes Ready: without this the taint manager evicts
            // the Pods 300 s in (100 pod updates in the middle of a measurement).
            tolerations: [{ operator: 'Exists', effect: 'NoExecute' }],
            containers: [{ name: 'app', image: 'bench.invalid/app:1' }],
          },
        },
      });
    }
  }
  return out;
}
