/**
 * What a gateway may dial on its own node: only current endpoints of pods on this node. A
 * gateway runs with hostNetwork, so without this check any pod (or any peer gateway) could use
 * it to reach the kubelet, host ports or other hosts on the LAN.
 */
import type { Catalog, Endpoint } from '../lib/catalog/types.ts';

/** TCP streams and UDP flows (datagram streams, gateway/udp-flow.ts) follow the same rule. */
export type EndpointProtocol = 'TCP' | 'UDP';

/**
 * The keys of the services that have `ip` as a ClusterIP or an endpoint IP, from an index kept
 * up to date with the catalog (gateway/catalog-index.ts, the lookup hub's). With one, a check
 * reads only those services' entries. Without one, the first check of each catalog revision
 * walks every endpoint of the catalog (below): at 10,000 services × 10 endpoints that was
 * 30–75 ms on the first stream after every change anywhere in the cluster.
 */
export type ServicesAt = (ip: string) => readonly string[];

/** Whether one of `services` has an endpoint at ip:port/protocol that `placed` accepts. */
function listed(
  catalog: Catalog,
  services: readonly string[],
  ip: string,
  port: number,
  protocol: EndpointProtocol,
  placed: (e: Endpoint) => boolean,
): boolean {
  for (const key of services) {
    for (const e of catalog.services[key]?.endpoints ?? []) {
      if (e.ip !== ip || !placed(e)) continue;
      for (const p of e.ports) if (p.port === port && p.protocol === protocol) return true;
    }
  }
  return false;
}

/**
 * Per catalog object (each revision is a new object): "ip" → TCP ports and "ip/UDP" → UDP
 * ports of the endpoints at that IP. One index for both: a port of one protocol never
 * admits the other (a pod serving DNS on UDP 53 does not open TCP 53 to peers).
 */
const indexes = new WeakMap<Catalog, Map<string, Set<number>>>();
const keyOf = (ip: string, protocol: EndpointProtocol) => (protocol === 'TCP' ? ip : `${ip}/UDP`);

function endpointPorts(catalog: Catalog): Map<string, Set<number>> {
  let index = indexes.get(catalog);
  if (index) return index;
  index = new Map();
  for (const { endpoints } of Object.values(catalog.services)) {
    for (const e of endpoints) {
      const pod = catalog.pods[e.ip];
      // The endpoint and the pod must agree on the node, when the slice names one.
      if (!pod || (e.nodeName !== undefined && e.nodeName !== pod.nodeName)) continue;
      for (const p of e.ports) {
        if (p.protocol !== 'TCP' && p.protocol !== 'UDP') continue;
        const key = keyOf(e.ip, p.protocol);
        const ports = index.get(key) ?? new Set<number>();
        index.set(key, ports);
        ports.add(p.port);
      }
    }
  }
  indexes.set(catalog, index);
  return index;
}

/**
 * True only when ip:port is a port of `protocol` (TCP by default) of an endpoint (in some
 * service's EndpointSlices) whose IP belongs to a pod scheduled on `nodeName`. hostNetwork
 * pods are not in the catalog's pod table, so node addresses and host ports never qualify.
 * `ip` must be in canonical form.
 */
export function isLocalPodEndpoint(
  catalog: Catalog,
  nodeName: string,
  ip: string,
  port: number,
  protocol: EndpointProtocol = 'TCP',
  servicesAt?: ServicesAt,
): boolean {
  const pod = catalog.pods[ip];
  if (pod?.nodeName !== nodeName) return false;
  // The endpoint and the pod must agree on the node, when the slice names one.
  if (servicesAt)
    return listed(
      catalog,
      servicesAt(ip),
      ip,
      port,
      protocol,
      (e) => e.nodeName === undefined || e.nodeName === nodeName,
    );
  return endpointPorts(catalog).get(keyOf(ip, protocol))?.has(port) ?? false;
}

// Per catalog object: "node ip" → TCP ports, "node ip/UDP" → UDP ports of endpoints placed on that node.
const placements = new WeakMap<Catalog, Map<string, Set<number>>>();

/**
 * Lenient: ip:port is a TCP endpoint port that the catalog places on `nodeName` (by the
 * slice's nodeName, else by its pod). The gateway checks this before asking the tunnel for
 * a stream to a peer: the pod itself may be unknown here (KubeEdge's edge API lists only
 * this node's pods), and the far gateway enforces isLocalPodEndpoint anyway.
 */
export function isEndpointOnNode(
  catalog: Catalog,
  nodeName: string,
  ip: string,
  port: number,
  protocol: EndpointProtocol = 'TCP',
  servicesAt?: ServicesAt,
): boolean {
  if (servicesAt)
    return listed(
      catalog,
      servicesAt(ip),
      ip,
      port,
      protocol,
      (e) => (e.nodeName ?? catalog.pods[ip]?.nodeName) === nodeName,
    );
  let index = placements.get(catalog);
  if (!index) {
    index = new Map();
    for (const { endpoints } of Object.values(catalog.services)) {
      for (const e of endpoints) {
        const node = e.nodeName ?? catalog.pods[e.ip]?.nodeName;
        if (!node) continue;
        for (const p of e.ports) {
          if (p.protocol !== 'TCP' && p.protocol !== 'UDP') continue;
          const key = `${node} ${keyOf(e.ip, p.protocol)}`;
          const ports = index.get(key) ?? new Set<number>();
          index.set(key, ports);
          ports.add(p.port);
        }
      }
    }
    placements.set(catalog, index);
  }
  return index.get(`${nodeName} ${keyOf(ip, protocol)}`)?.has(port) ?? false;
}
