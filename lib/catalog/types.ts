/**
 * The catalog: everything a sidecar needs to resolve names and route connections, built by
 * the gateway from Services, EndpointSlices, Pods and Nodes (and by `edgemesh sidecar
 * --objects` from the same objects with the same code). It is plain JSON data so it can be
 * persisted, diffed and shipped over the feed unchanged. Documented in docs/catalog.md.
 *
 * Keys: services by `namespace/name`; pods by IP (IPv4 dotted or IPv6 canonical lower-case).
 */
export const CATALOG_FORMAT = 1;

export type LbPolicy = 'round-robin' | 'random' | 'least-connections' | 'consistent-hash';
export const LB_POLICIES: readonly LbPolicy[] = [
  'round-robin',
  'random',
  'least-connections',
  'consistent-hash',
];

/** Service annotations that tune routing (validated; a bad value falls back to the default and is reported). */
export const LB_POLICY_ANNOTATION = 'edgemesh.io/lb-policy';
export const HASH_HEADER_ANNOTATION = 'edgemesh.io/lb-hash-header';
/**
 * How long a UDP flow to this service may idle before the sidecar forgets it: a Go duration,
 * 1s–1h (e.g. "120s" for RTP or syslog senders that pause). Absent or invalid: the sidecar's
 * default, 30 s (kube-proxy's conntrack UDP timeout). docs/udp.md "Idle timeouts and knobs".
 */
export const UDP_IDLE_TIMEOUT_ANNOTATION = 'edgemesh.io/udp-idle-timeout';
/** The annotation's range: below 1 s a flow would end between an app's request and its retry; above 1 h a port scan holds flows for hours. */
export const UDP_IDLE_TIMEOUT_MIN_MS = 1_000;
export const UDP_IDLE_TIMEOUT_MAX_MS = 3_600_000;

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface ServicePort {
  /** Port name; '' when the Service has a single unnamed port. */
  name: string;
  port: number;
  protocol: Protocol;
  /** From spec.ports[].appProtocol, e.g. 'http', 'h2c', 'grpc'. */
  appProtocol?: string;
}

export interface Service {
  namespace: string;
  name: string;
  type: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
  /** Empty for headless and ExternalName services. */
  clusterIPs: string[];
  headless: boolean;
  externalName?: string;
  ports: ServicePort[];
  sessionAffinity: { type: 'None' } | { type: 'ClientIP'; timeoutSeconds: number };
  lbPolicy: LbPolicy;
  /** For consistent-hash on HTTP ports: the request header to hash on. */
  hashHeader?: string;
  /**
   * From edgemesh.io/udp-idle-timeout, whole milliseconds in [UDP_IDLE_TIMEOUT_MIN_MS,
   * UDP_IDLE_TIMEOUT_MAX_MS]; absent: the sidecar's default. Optional so catalogs and state
   * files written before it load unchanged.
   */
  udpIdleTimeoutMs?: number;
  publishNotReadyAddresses: boolean;
}

export interface EndpointPort {
  name: string;
  port: number;
  protocol: Protocol;
  appProtocol?: string;
}

/** One address of an EndpointSlice, with the ports of the slice it came from. */
export interface Endpoint {
  ip: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  hostname?: string;
  nodeName?: string;
  /** Pod name from targetRef when it is a Pod. */
  podName?: string;
  ports: EndpointPort[];
}

export interface ServiceEntry {
  service: Service;
  endpoints: Endpoint[];
}

export interface PodInfo {
  ip: string;
  namespace: string;
  name: string;
  nodeName: string;
}

export interface NodeInfo {
  name: string;
  /** InternalIP addresses, used to reach the node's gateway on its LAN. */
  addresses: string[];
}

/**
 * A namespace that exists. Kept so DNS can tell an existing namespace without services
 * (NOERROR, NODATA) from a missing one (NXDOMAIN), as CoreDNS does.
 */
export interface NamespaceInfo {
  name: string;
}

export interface Catalog {
  format: typeof CATALOG_FORMAT;
  /** Monotonic revision: every change the gateway makes increments it. */
  revision: number;
  clusterDomain: string;
  services: Record<string, ServiceEntry>;
  pods: Record<string, PodInfo>;
  nodes: Record<string, NodeInfo>;
  /**
   * Namespaces by name, when the builder knows them (a Namespace watch, or Namespace objects
   * in an objects file). Absent: unknown, and a namespace exists while it has a service
   * (namespaceExists).
   */
  namespaces?: Record<string, NamespaceInfo>;
}

/**
 * Incremental updates carried by the gateway feed after an initial snapshot. Each carries
 * the revision it produces; a receiver that sees a gap asks for a new snapshot.
 */
export type CatalogUpdate =
  | { type: 'snapshot'; catalog: Catalog }
  | { type: 'service'; revision: number; key: string; entry: ServiceEntry | null }
  | { type: 'pod'; revision: number; ip: string; pod: PodInfo | null }
  | { type: 'node'; revision: number; name: string; node: NodeInfo | null }
  | { type: 'namespace'; revision: number; name: string; namespace: NamespaceInfo | null };

export const serviceKey = (namespace: string, name: string): string => `${namespace}/${name}`;

/**
 * Whether namespace `name` exists: listed in `namespaces` when the catalog has them, or holding
 * a service (also when listed: a service is proof even while a Namespace watch lags).
 */
export function namespaceExists(catalog: Catalog, name: string, hasServices: boolean): boolean {
  return hasServices || catalog.namespaces?.[name] !== undefined;
}

export function emptyCatalog(clusterDomain = 'cluster.local'): Catalog {
  return { format: CATALOG_FORMAT, revision: 0, clusterDomain, services: {}, pods: {}, nodes: {} };
}
