/** The catalog bench/on-demand.ts and bench/lib/first-query.ts serve from the gateway. */
import { type Catalog, emptyCatalog, type ServiceEntry } from '../../lib/catalog/types.ts';

/** The bench pod's address (the sidecar's own pod is in the catalog, as on a node). */
export const BENCH_POD_IP = '10.64.0.5';

export const benchName = (i: number) => `svc-${i}.bench.svc.cluster.local`;

/** `services` ClusterIP services × 10 endpoints each, on 200 nodes; the bench pod on edge-n. */
export function benchCatalog(services: number): Catalog {
  const c: Catalog = { ...emptyCatalog(), revision: 1 };
  for (let i = 0; i < services; i++) {
    const entry: ServiceEntry = {
      service: {
        namespace: 'bench',
        name: `svc-${i}`,
        type: 'ClusterIP',
        clusterIPs: [`10.96.${i >> 8}.${i & 255}`],
        headless: false,
        ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
        sessionAffinity: { type: 'None' },
        lbPolicy: 'round-robin',
        publishNotReadyAddresses: false,
      },
      endpoints: Array.from({ length: 10 }, (_, j) => {
        const k = i * 10 + j;
        return {
          ip: `10.${128 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`,
          ready: true,
          serving: true,
          terminating: false,
          ports: [{ name: 'http', port: 8080, protocol: 'TCP' as const }],
          nodeName: `node-${k % 200}`,
          podName: `svc-${i}-${j}`,
        };
      }),
    };
    c.services[`bench/svc-${i}`] = entry;
  }
  c.pods[BENCH_POD_IP] = { ip: BENCH_POD_IP, namespace: 'bench', name: 'client', nodeName: 'edge-n' };
  return c;
}
