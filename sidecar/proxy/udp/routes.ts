/**
 * Where a captured datagram goes, from its original destination and the catalog. Pure: a
 * table is compiled once per catalog revision; lookups are one Map.get by the destination
 * text the addon reports ("ip:port", "[v6]:port", the catalog's canonical form).
 *
 *   ClusterIP:port of a Service's UDP port  → the service: its endpoints (route.ts
 *       serviceTargets, the TCP proxy's rule), split into those this sidecar reaches directly
 *       (same node, or no node known) and the rest (cross-node: through the node's gateway
 *       when the sidecar has one, docs/udp.md "Across nodes")
 *   anything else                           → undefined: the proxy passes it through to the
 *       destination itself, as if it had not been captured
 *
 * A service's idle timeout (edgemesh.io/udp-idle-timeout, validated by the catalog) rides on
 * the entry as `idleMs`, for the flow table's Route (flows.ts): a flow takes it when it is
 * created and keeps it; a changed annotation applies to the flows created after the change.
 */
import type { Catalog, Service, ServicePort } from '../../../lib/catalog/types.ts';
import { normalizeIp, serviceTargets, type Target, targetId } from '../route.ts';

export interface UdpService {
  /** `namespace/name:port`: the balancer key, and the label in logs. */
  readonly key: string;
  readonly service: Service;
  readonly port: ServicePort;
  /** Every usable endpoint (ready, or serving-terminating when none is). */
  readonly targets: readonly Target[];
  /** The endpoints reached directly: the balancer's choices. */
  readonly local: readonly Target[];
  /** The balancer's choices: `local`, or with a gateway every target (TCP's rule). */
  readonly choices: readonly Target[];
  /** Ids of `choices`: flows whose endpoint left it are re-picked (flows.ts). */
  readonly ready: ReadonlySet<string>;
  /** `choices` by id: the picked endpoint's node decides direct vs gateway. */
  readonly byId: ReadonlyMap<string, Target>;
  /** The service's UDP idle timeout in ms (its annotation); undefined: the flow table's default. */
  readonly idleMs: number | undefined;
}

export class UdpRouteTable {
  readonly revision: number;
  readonly #byDst = new Map<string, UdpService>();

  /**
   * `nodeName`: this sidecar's node; undefined: every endpoint counts as direct.
   * `viaGateway`: endpoints on other nodes are reachable (the sidecar has a gateway).
   */
  constructor(catalog: Catalog, nodeName: string | undefined, viaGateway = false) {
    this.revision = catalog.revision;
    for (const { service, endpoints } of Object.values(catalog.services)) {
      if (service.headless || service.type === 'ExternalName') continue;
      for (const port of service.ports) {
        if (port.protocol !== 'UDP') continue;
        const targets = serviceTargets(port, endpoints, service.publishNotReadyAddresses);
        const local = targets.filter((t) => nodeName === undefined || !t.nodeName || t.nodeName === nodeName);
        const choices = viaGateway && nodeName !== undefined ? targets : local;
        const entry: UdpService = {
          key: `${service.namespace}/${service.name}:${port.port}`,
          service,
          port,
          targets,
          local,
          choices,
          ready: new Set(choices.map((t) => t.id)),
          byId: new Map(choices.map((t) => [t.id, t])),
          idleMs: service.udpIdleTimeoutMs,
        };
        for (const ip of service.clusterIPs) this.#byDst.set(targetId(normalizeIp(ip), port.port), entry);
      }
    }
  }

  /** The service behind an original destination as the addon formats it, or undefined. */
  resolve(dst: string): UdpService | undefined {
    return this.#byDst.get(dst);
  }

  get size(): number {
    return this.#byDst.size;
  }
}

/** The target is behind the gateway: on a known node other than this sidecar's. */
export function isRemote(target: Target | undefined, nodeName: string | undefined): boolean {
  return nodeName !== undefined && target?.nodeName !== undefined && target.nodeName !== nodeName;
}

/** "ip:port" / "[v6]:port" → the IP (no brackets). */
export function hostOf(addr: string): string {
  return addr.startsWith('[') ? addr.slice(1, addr.indexOf(']')) : addr.slice(0, addr.lastIndexOf(':'));
}
