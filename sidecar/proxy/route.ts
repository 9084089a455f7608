/**
 * Where a redirected connection goes, decided from its original destination and the catalog.
 * Pure: a RouteTable is compiled once per catalog revision (lookups are then one Map.get per
 * connection), and `resolve` returns plain data the proxy acts on.
 *
 *   ClusterIP:port of a Service  → 'service': the ready endpoints, mapped to the target port
 *   a pod IP the catalog knows   → 'pod': that pod, same port
 *   anything else                → 'passthrough': the original destination, unchanged
 */
import { isIPv6 } from 'node:net';
import type { Catalog, Endpoint, Service, ServicePort } from '../../lib/catalog/types.ts';
import { canonicalIP } from '../../lib/catalog/validate.ts';

/** A concrete place to dial: an endpoint (or pod, or passthrough address) and the node it lives on. */
export interface Target {
  /** `ip:port` (IPv6 as `[ip]:port`): the balancer's endpoint id. */
  id: string;
  ip: string;
  port: number;
  /** Node of the pod, when the catalog knows it: decides direct dial vs gateway hop. */
  nodeName?: string;
}

export type L7Protocol = 'http' | 'h2c';

export type Route =
  | {
      kind: 'service';
      /** `namespace/name:port` — the balancer key and the label in logs and metrics. */
      key: string;
      service: Service;
      port: ServicePort;
      /** Set when the port speaks HTTP: requests are balanced one by one. */
      l7?: L7Protocol;
      targets: Target[];
    }
  | { kind: 'pod'; target: Target; podName: string }
  | { kind: 'passthrough'; target: Target };

export const targetId = (ip: string, port: number): string =>
  isIPv6(ip) ? `[${ip}]:${port}` : `${ip}:${port}`;

type ServiceRoute = Extract<Route, { kind: 'service' }>;

/** Compiled lookups for one catalog revision. */
export class RouteTable {
  readonly revision: number;
  /** Every service-port key and endpoint id in this revision (to prune per-key state). */
  readonly serviceKeys = new Set<string>();
  readonly targetIds = new Set<string>();
  readonly #services = new Map<string, ServiceRoute>();
  readonly #pods: Catalog['pods'];

  constructor(catalog: Catalog) {
    this.revision = catalog.revision;
    this.#pods = catalog.pods;
    for (const { service, endpoints } of Object.values(catalog.services)) {
      if (service.headless || service.type === 'ExternalName') continue;
      for (const port of service.ports) {
        if (port.protocol !== 'TCP') continue;
        // One object per service port, returned as is on every lookup (nothing allocated per connection).
        const route: ServiceRoute = {
          kind: 'service',
          key: `${service.namespace}/${service.name}:${port.port}`,
          service,
          port,
          l7: l7Protocol(port),
          targets: serviceTargets(port, endpoints, service.publishNotReadyAddresses),
        };
        this.serviceKeys.add(route.key);
        for (const t of route.targets) this.targetIds.add(t.id);
        for (const ip of service.clusterIPs) this.#services.set(lookupKey(normalizeIp(ip), port.port), route);
      }
    }
  }

  resolve(ip: string, port: number): Route {
    const addr = normalizeIp(ip);
    const svc = this.#services.get(lookupKey(addr, port));
    if (svc) return svc;
    const pod = this.#pods[addr];
    const target: Target = { id: targetId(addr, port), ip: addr, port };
    if (pod) return { kind: 'pod', target: { ...target, nodeName: pod.nodeName }, podName: pod.name };
    return { kind: 'passthrough', target };
  }
}

const lookupKey = (ip: string, port: number) => `${ip}|${port}`;

/**
 * The catalog's form of an address: IPv4-mapped IPv6 (::ffff:a.b.c.d) is the IPv4 address;
 * IPv6 is canonical (RFC 5952, as the catalog stores it). IPv4 costs nothing.
 */
export function normalizeIp(ip: string): string {
  if (!ip.includes(':')) return ip;
  const lower = ip.toLowerCase();
  if (lower.startsWith('::ffff:') && lower.includes('.')) return lower.slice(7);
  return canonicalIP(lower) ?? lower;
}

/**
 * Ready endpoints with the service port mapped to each endpoint's port of the same name (a
 * single unnamed service port takes the endpoint's only port). Kubernetes semantics: when no
 * endpoint is ready, serving-but-terminating ones are used so draining pods still take
 * traffic rather than none at all.
 */
export function serviceTargets(port: ServicePort, endpoints: Endpoint[], publishNotReady = false): Target[] {
  const usable = (e: Endpoint) => publishNotReady || e.ready;
  let chosen = endpoints.filter(usable);
  if (chosen.length === 0) chosen = endpoints.filter((e) => e.serving && e.terminating);
  const out: Target[] = [];
  const seen = new Set<string>();
  for (const e of chosen) {
    const ep =
      e.ports.find((p) => p.name === port.name && p.protocol === port.protocol) ??
      (port.name === '' && e.ports.length === 1 ? e.ports[0] : undefined);
    if (!ep) continue;
    const ip = normalizeIp(e.ip);
    const id = targetId(ip, ep.port);
    if (seen.has(id)) continue; // the same address can appear in two slices while they change
    seen.add(id);
    out.push({ id, ip, port: ep.port, ...(e.nodeName ? { nodeName: e.nodeName } : {}) });
  }
  return out;
}

/**
 * HTTP-aware ports: appProtocol http/h2c/grpc (also the kubernetes.io/ forms), or a port name
 * `http`, `http-*`, `http2*`, `grpc`, `grpc-*` (Istio's naming convention).
 */
export function l7Protocol(port: ServicePort): L7Protocol | undefined {
  const app = port.appProtocol?.toLowerCase().replace(/^kubernetes\.io\//, '');
  if (app === 'http' || app === 'http1' || app === 'http/1.1') return 'http';
  if (app === 'h2c' || app === 'grpc' || app === 'http2') return 'h2c';
  if (app) return undefined; // an explicit non-HTTP protocol wins over the name
  const name = port.name.toLowerCase();
  if (/^(grpc|http2)(-|$)/.test(name)) return 'h2c';
  if (/^http(-|$)/.test(name)) return 'http';
  return undefined;
}
