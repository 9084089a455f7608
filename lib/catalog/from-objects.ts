/**
 * Kubernetes objects → catalog. Pure: no I/O, no clock. The gateway feeds it informer events
 * and forwards the CatalogUpdates it returns; `edgemesh sidecar --objects` feeds it the
 * objects of a file and takes the resulting catalog. Same code, same catalog.
 *
 * Inputs are read defensively (a file may hold anything): a field of the wrong type is
 * treated as absent or the object is skipped with a problem reported, never a crash. Every
 * built item then passes the catalog validators, so the output is always a valid catalog.
 *
 * Rules (as kube-proxy and CoreDNS read the same objects):
 * - Services: ClusterIP 'None' → headless; spec.clusterIPs (dual stack) else spec.clusterIP;
 *   ExternalName keeps spec.externalName and no IPs; sessionAffinity ClientIP with
 *   timeoutSeconds (default 10800); annotations edgemesh.io/lb-policy (a bad value → the
 *   default, reported), edgemesh.io/lb-hash-header and edgemesh.io/udp-idle-timeout (a Go
 *   duration 1s–1h, whole ms; anything else → absent, the sidecar's default, reported naming
 *   the service, the annotation and the value: never a reason to drop the service).
 * - EndpointSlices (discovery.k8s.io/v1) belong to the service named by their
 *   `kubernetes.io/service-name` label; FQDN slices are skipped; conditions: ready unset →
 *   true, serving unset → ready, terminating unset → false; ports without a port number
 *   ("all ports") are skipped; duplicates across slices are merged (first slice by name wins).
 * - core/v1 Endpoints (what KubeEdge's edge API serves reliably, docs/kubeedge.md) belong to
 *   the service of the same name and count only while no EndpointSlice names that service
 *   (a gateway watches one or the other; a file may hold both). `addresses` are ready,
 *   `notReadyAddresses` neither ready nor serving (Endpoints cannot say terminating).
 * - Pods: only those with IPs, not hostNetwork, not finished (Succeeded/Failed pods may
 *   have their IP reused). One catalog entry per pod IP (dual stack gives two).
 * - With `nodeName` (the gateway's own node; it watches only that node's Pods): a pod on
 *   another node is also known from an endpoint that names it (targetRef Pod + nodeName), so
 *   sidecars keep pod-IP routing to it. Never for this node: what this gateway may dial
 *   (gateway/local-endpoint.ts) must come from Pod objects, which the scheduler binds — an
 *   Endpoints object anyone may write could otherwise point it at a host port.
 * - Nodes: InternalIP addresses.
 */
import { Interner, MultiIndex } from './compact.ts';
import { parseGoDuration } from './duration.ts';
import {
  CATALOG_FORMAT,
  type Catalog,
  type CatalogUpdate,
  type Endpoint,
  type EndpointPort,
  emptyCatalog,
  HASH_HEADER_ANNOTATION,
  LB_POLICIES,
  LB_POLICY_ANNOTATION,
  type LbPolicy,
  type NamespaceInfo,
  type NodeInfo,
  type PodInfo,
  type Protocol,
  type Service,
  type ServiceEntry,
  type ServicePort,
  serviceKey,
  UDP_IDLE_TIMEOUT_ANNOTATION,
  UDP_IDLE_TIMEOUT_MAX_MS,
  UDP_IDLE_TIMEOUT_MIN_MS,
} from './types.ts';
import { canonicalIP, validateNode, validatePod, validateServiceEntry } from './validate.ts';

export type ObjectKind = 'Service' | 'EndpointSlice' | 'Endpoints' | 'Pod' | 'Node' | 'Namespace';
export type EventType = 'add' | 'update' | 'delete';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
const DEFAULT_AFFINITY_TIMEOUT = 10800;

/** The kind of a Kubernetes object we use, or undefined for any other kind. */
export function objectKind(obj: unknown): ObjectKind | undefined {
  const o = asRecord(obj);
  const kind = o.kind;
  const apiVersion = o.apiVersion;
  if (
    apiVersion === 'v1' &&
    (kind === 'Service' || kind === 'Pod' || kind === 'Node' || kind === 'Endpoints' || kind === 'Namespace')
  )
    return kind;
  if (apiVersion === 'discovery.k8s.io/v1' && kind === 'EndpointSlice') return kind;
  return undefined;
}

// ---- defensive field access -------------------------------------------------------------

type Loose = Record<string, unknown>;
const asRecord = (v: unknown): Loose =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Loose) : {};
const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const asString = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const asBool = (v: unknown): boolean | undefined => (typeof v === 'boolean' ? v : undefined);
const asPort = (v: unknown): number | undefined =>
  typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535 ? v : undefined;

function meta(obj: unknown): { namespace: string; name: string; labels: Loose; annotations: Loose } {
  const m = asRecord(asRecord(obj).metadata);
  return {
    // Objects in files may omit the namespace, as with `kubectl apply`.
    namespace: asString(m.namespace) || 'default',
    name: asString(m.name) ?? '',
    labels: asRecord(m.labels),
    annotations: asRecord(m.annotations),
  };
}

function protocol(v: unknown): Protocol | undefined {
  if (v === undefined) return 'TCP';
  return v === 'TCP' || v === 'UDP' || v === 'SCTP' ? v : undefined;
}

function portOf(raw: unknown, where: string, problems: string[]): ServicePort | undefined {
  const p = asRecord(raw);
  const port = asPort(p.port);
  const proto = protocol(p.protocol);
  if (port === undefined || proto === undefined) {
    problems.push(`${where}: skipped a port with an invalid port number or protocol`);
    return undefined;
  }
  const out: ServicePort = { name: asString(p.name) ?? '', port, protocol: proto };
  const appProtocol = asString(p.appProtocol);
  if (appProtocol) out.appProtocol = appProtocol;
  return out;
}

// ---- per-object conversions ----------------------------------------------------------------

/** A Service object → catalog Service (undefined when unusable), with problems reported. */
export function serviceFromObject(obj: unknown, problems: string[] = []): Service | undefined {
  const { namespace, name, annotations } = meta(obj);
  const where = `Service ${namespace}/${name}`;
  if (!name) {
    problems.push('Service without metadata.name skipped');
    return undefined;
  }
  const spec = asRecord(asRecord(obj).spec);
  const typeText = asString(spec.type) ?? 'ClusterIP';
  if (!['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'].includes(typeText)) {
    problems.push(`${where}: unknown type ${JSON.stringify(typeText)}; skipped`);
    return undefined;
  }
  const type = typeText as Service['type'];
  const rawIPs = asArray(spec.clusterIPs).length > 0 ? asArray(spec.clusterIPs) : [spec.clusterIP];
  const ipTexts = rawIPs.map(asString).filter((s): s is string => !!s);
  const headless = type !== 'ExternalName' && ipTexts.includes('None');
  const clusterIPs: string[] = [];
  if (type !== 'ExternalName' && !headless) {
    for (const text of ipTexts) {
      const ip = canonicalIP(text);
      if (ip) clusterIPs.push(ip);
      else problems.push(`${where}: ignored invalid cluster IP ${JSON.stringify(text)}`);
    }
  }
  const ports = asArray(spec.ports)
    .map((p) => portOf(p, where, problems))
    .filter((p): p is ServicePort => !!p);

  let sessionAffinity: Service['sessionAffinity'] = { type: 'None' };
  if (spec.sessionAffinity === 'ClientIP') {
    const timeout = asRecord(asRecord(spec.sessionAffinityConfig).clientIP).timeoutSeconds;
    const ok = typeof timeout === 'number' && Number.isInteger(timeout) && timeout >= 1 && timeout <= 86400;
    if (timeout !== undefined && !ok) problems.push(`${where}: invalid sessionAffinity timeout; using 10800`);
    sessionAffinity = { type: 'ClientIP', timeoutSeconds: ok ? timeout : DEFAULT_AFFINITY_TIMEOUT };
  }

  let lbPolicy: LbPolicy = 'round-robin';
  const policyText = annotations[LB_POLICY_ANNOTATION];
  if (policyText !== undefined) {
    if (LB_POLICIES.includes(policyText as LbPolicy)) lbPolicy = policyText as LbPolicy;
    else
      problems.push(
        `${where}: annotation ${LB_POLICY_ANNOTATION}=${JSON.stringify(policyText)} is not one of ${LB_POLICIES.join(', ')}; using round-robin`,
      );
  }

  const service: Service = {
    namespace,
    name,
    type,
    clusterIPs,
    headless,
    ports,
    sessionAffinity,
    lbPolicy,
    publishNotReadyAddresses: asBool(spec.publishNotReadyAddresses) ?? false,
  };
  if (type === 'ExternalName') {
    const externalName = asString(spec.externalName);
    if (!externalName) {
      problems.push(`${where}: ExternalName service without spec.externalName; skipped`);
      return undefined;
    }
    service.externalName = externalName;
  }
  const header = annotations[HASH_HEADER_ANNOTATION];
  if (header !== undefined) {
    if (typeof header === 'string' && /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/.test(header)) {
      service.hashHeader = header;
    } else {
      problems.push(`${where}: annotation ${HASH_HEADER_ANNOTATION} is not an HTTP header name; ignored`);
    }
  }
  const idle = udpIdleTimeout(annotations[UDP_IDLE_TIMEOUT_ANNOTATION], where, problems);
  if (idle !== undefined) service.udpIdleTimeoutMs = idle;
  return service;
}

/** edgemesh.io/udp-idle-timeout's value → whole ms, or undefined (absent, or reported as invalid). */
function udpIdleTimeout(raw: unknown, where: string, problems: string[]): number | undefined {
  if (raw === undefined) return undefined;
  const ms = typeof raw === 'string' ? parseGoDuration(raw) : undefined;
  const rounded = ms === undefined ? undefined : Math.round(ms);
  if (rounded !== undefined && rounded >= UDP_IDLE_TIMEOUT_MIN_MS && rounded <= UDP_IDLE_TIMEOUT_MAX_MS)
    return rounded;
  const why = ms === undefined ? 'is not a Go duration such as "120s" or "2m"' : 'is outside 1s..1h';
  // Shown cut short: an annotation may be up to 256 KiB, a log line should not.
  const text = typeof raw === 'string' ? raw : String(JSON.stringify(raw));
  const shown = JSON.stringify(text.length > 64 ? `${text.slice(0, 64)}…` : text);
  problems.push(
    `${where}: annotation ${UDP_IDLE_TIMEOUT_ANNOTATION}=${shown} ${why}; using the sidecar's default UDP idle timeout`,
  );
  return undefined;
}

export interface SliceInfo {
  /** `namespace/name` of the service this slice belongs to. */
  service: string;
  endpoints: Endpoint[];
}

/** An EndpointSlice → its service key and endpoints (undefined when it has no usable service). */
export function sliceFromObject(obj: unknown, problems: string[] = []): SliceInfo | undefined {
  const { namespace, name, labels } = meta(obj);
  const where = `EndpointSlice ${namespace}/${name}`;
  const serviceName = asString(labels[SERVICE_NAME_LABEL]);
  if (!serviceName) return undefined; // not managed for a service: not ours to route
  const o = asRecord(obj);
  const addressType = o.addressType;
  if (addressType !== 'IPv4' && addressType !== 'IPv6') return undefined; // FQDN slices are deprecated
  const ports = asArray(o.ports)
    .filter((p) => asRecord(p).port !== undefined && asRecord(p).port !== null)
    .map((p) => portOf(p, where, problems))
    .filter((p): p is EndpointPort => !!p);
  const endpoints: Endpoint[] = [];
  for (const raw of asArray(o.endpoints)) {
    const e = asRecord(raw);
    const conditions = asRecord(e.conditions);
    const ready = asBool(conditions.ready) ?? true;
    const serving = asBool(conditions.serving) ?? ready;
    const terminating = asBool(conditions.terminating) ?? false;
    const targetRef = asRecord(e.targetRef);
    for (const addressText of asArray(e.addresses)) {
      const ip = typeof addressText === 'string' ? canonicalIP(addressText) : undefined;
      if (!ip || (addressType === 'IPv4') !== !ip.includes(':')) {
        problems.push(
          `${where}: skipped address ${JSON.stringify(addressText)} (not an ${addressType} address)`,
        );
        continue;
      }
      const endpoint: Endpoint = { ip, ready, serving, terminating, ports };
      const hostname = asString(e.hostname);
      const nodeName = asString(e.nodeName);
      if (hostname) endpoint.hostname = hostname;
      if (nodeName) endpoint.nodeName = nodeName;
      if (targetRef.kind === 'Pod' && asString(targetRef.name)) endpoint.podName = targetRef.name as string;
      endpoints.push(endpoint);
    }
  }
  return { service: serviceKey(namespace, serviceName), endpoints };
}

/** A core/v1 Endpoints object → its service key (same name) and endpoints, sorted by IP. */
export function endpointsFromObject(obj: unknown, problems: string[] = []): SliceInfo | undefined {
  const { namespace, name } = meta(obj);
  if (!name) return undefined;
  const where = `Endpoints ${namespace}/${name}`;
  const endpoints: Endpoint[] = [];
  for (const rawSubset of asArray(asRecord(obj).subsets)) {
    const subset = asRecord(rawSubset);
    const ports = asArray(subset.ports)
      .map((p) => portOf(p, where, problems))
      .filter((p): p is EndpointPort => !!p);
    const groups: [unknown, boolean][] = [
      [subset.addresses, true],
      [subset.notReadyAddresses, false],
    ];
    for (const [addresses, ready] of groups) {
      for (const raw of asArray(addresses)) {
        const a = asRecord(raw);
        const ip = typeof a.ip === 'string' ? canonicalIP(a.ip) : undefined;
        if (!ip) {
          problems.push(`${where}: skipped address ${JSON.stringify(a.ip)} (not an IP address)`);
          continue;
        }
        const endpoint: Endpoint = { ip, ready, serving: ready, terminating: false, ports };
        const hostname = asString(a.hostname);
        const nodeName = asString(a.nodeName);
        const targetRef = asRecord(a.targetRef);
        if (hostname) endpoint.hostname = hostname;
        if (nodeName) endpoint.nodeName = nodeName;
        if (targetRef.kind === 'Pod' && asString(targetRef.name)) endpoint.podName = targetRef.name as string;
        endpoints.push(endpoint);
      }
    }
  }
  return { service: serviceKey(namespace, name), endpoints };
}

/** A Pod → one PodInfo per pod IP (empty for hostNetwork, finished or IP-less pods). */
export function podsFromObject(obj: unknown): PodInfo[] {
  const { namespace, name } = meta(obj);
  const o = asRecord(obj);
  const spec = asRecord(o.spec);
  const status = asRecord(o.status);
  const nodeName = asString(spec.nodeName);
  if (!name || !nodeName || spec.hostNetwork === true) return [];
  if (status.phase === 'Succeeded' || status.phase === 'Failed') return [];
  const texts = asArray(status.podIPs).map((p) => asString(asRecord(p).ip));
  if (texts.length === 0) texts.push(asString(status.podIP));
  const ips = [
    ...new Set(texts.map((t) => (t ? canonicalIP(t) : undefined)).filter((ip): ip is string => !!ip)),
  ];
  return ips.map((ip) => ({ ip, namespace, name, nodeName }));
}

/** A Node → its name and InternalIP addresses. */
export function nodeFromObject(obj: unknown): NodeInfo | undefined {
  const name = asString(asRecord(asRecord(obj).metadata).name);
  if (!name) return undefined;
  const addresses: string[] = [];
  for (const a of asArray(asRecord(asRecord(obj).status).addresses)) {
    const r = asRecord(a);
    const ip = r.type === 'InternalIP' && typeof r.address === 'string' ? canonicalIP(r.address) : undefined;
    if (ip && !addresses.includes(ip)) addresses.push(ip);
  }
  return { name, addresses };
}

// ---- the incremental builder ----------------------------------------------------------------

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Keeps the objects seen so far and the catalog they make. `handle` takes one informer event
 * and returns the CatalogUpdates it causes (none when the catalog does not change), each with
 * revision = previous + 1, already applied to `catalog`.
 *
 * One copy of everything (it is most of a gateway's memory at scale): a built item is checked
 * by the catalog validators and then kept as built, not as the validator's copy, so a service
 * entry's endpoints are the very objects its slices hold, a derived pod the one its service
 * names; node names, namespaces and port lists are interned (compact.ts).
 */
export class CatalogBuilder {
  // The catalog as built so far, in maps so one event costs O(1) however big the cluster.
  readonly #clusterDomain: string;
  #revision: number;
  readonly #entries = new Map<string, ServiceEntry>();
  readonly #podEntries = new Map<string, PodInfo>();
  readonly #nodeEntries = new Map<string, NodeInfo>();
  #namespaces: Map<string, NamespaceInfo> | undefined;
  readonly #onProblem: (problem: string) => void;
  readonly #services = new Map<string, Service>();
  readonly #slices = new Map<string, SliceInfo>(); // by slice namespace/name
  readonly #slicesByService = new MultiIndex();
  readonly #coreEndpoints = new Map<string, Endpoint[]>(); // core/v1 Endpoints by service key
  readonly #podIps = new Map<string, PodInfo[]>(); // by pod namespace/name
  readonly #podsByIp = new MultiIndex();
  // Pods on other nodes as their services' endpoints name them (only with `nodeName`).
  readonly #nodeName: string | undefined;
  readonly #derivedByService = new Map<string, Map<string, PodInfo>>(); // service key → ip → pod
  readonly #derivedByIp = new MultiIndex(); // ip → service keys
  readonly #nodes = new Map<string, NodeInfo>();
  readonly #names = new Interner<string>();
  readonly #ports = new Interner<EndpointPort[]>();
  // The catalog served before this one is built (a restarted gateway's persisted catalog):
  // built items equal to its own are taken from it, so once the gateway adopts the built
  // catalog, the entries the store keeps from before and the builder's are one copy.
  #reuse: Catalog | undefined;

  constructor(
    opts: {
      clusterDomain?: string;
      revision?: number;
      onProblem?: (problem: string) => void;
      /** This gateway's node: pods elsewhere are also taken from endpoints (see the file comment). */
      nodeName?: string;
      /** A catalog whose items to reuse when equal, until endReuse() (see #reuse). */
      reuse?: Catalog;
    } = {},
  ) {
    this.#clusterDomain = emptyCatalog(opts.clusterDomain).clusterDomain;
    this.#revision = opts.revision ?? 0;
    this.#onProblem = opts.onProblem ?? (() => {});
    this.#nodeName = opts.nodeName;
    this.#reuse = opts.reuse;
  }

  /** Stops consulting the `reuse` catalog (it is no longer served). */
  endReuse(): void {
    this.#reuse = undefined;
  }

  get catalog(): Catalog {
    // A fresh copy (O(size)): taken rarely (adoption, whole-file builds, tests).
    return {
      format: CATALOG_FORMAT,
      revision: this.#revision,
      clusterDomain: this.#clusterDomain,
      services: Object.fromEntries(this.#entries),
      pods: Object.fromEntries(this.#podEntries),
      nodes: Object.fromEntries(this.#nodeEntries),
      // Only once Namespace objects were seen: absent means unknown ("exists if it has services").
      ...(this.#namespaces ? { namespaces: Object.fromEntries(this.#namespaces) } : {}),
    };
  }

  /** Renumbers: the next update will carry `revision + 1` (used when the gateway adopts the built catalog). */
  rebase(revision: number): void {
    this.#revision = revision;
  }

  handle(kind: ObjectKind, event: EventType, obj: unknown): CatalogUpdate[] {
    switch (kind) {
      case 'Service':
        return this.#onService(event, obj);
      case 'EndpointSlice':
        return this.#onSlice(event, obj);
      case 'Endpoints':
        return this.#onEndpoints(event, obj);
      case 'Pod':
        return this.#onPod(event, obj);
      case 'Node':
        return this.#onNode(event, obj);
      case 'Namespace':
        return this.#onNamespace(event, obj);
    }
  }

  /** Namespaces are all-or-nothing: the first Namespace object makes the catalog list them. */
  #onNamespace(event: EventType, obj: unknown): CatalogUpdate[] {
    const { name } = meta(obj);
    if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(name)) {
      this.#report([`namespace ${JSON.stringify(name)}: not a DNS label`]);
      return [];
    }
    this.#namespaces ??= new Map();
    const had = this.#namespaces.has(name);
    if (event === 'delete') this.#namespaces.delete(name);
    else this.#namespaces.set(name, { name });
    if (had === this.#namespaces.has(name)) return [];
    const revision = ++this.#revision;
    return [{ type: 'namespace', revision, name, namespace: this.#namespaces.get(name) ?? null }];
  }

  #report(problems: string[]): void {
    for (const p of problems) this.#onProblem(p);
  }

  #onService(event: EventType, obj: unknown): CatalogUpdate[] {
    const { namespace, name } = meta(obj);
    const key = serviceKey(namespace, name);
    const problems: string[] = [];
    const built = event === 'delete' ? undefined : serviceFromObject(obj, problems);
    this.#report(problems);
    const held = this.#reuse?.services[key]?.service;
    const service = held && built && same(held, built) ? held : built;
    if (service) this.#services.set(key, service);
    else this.#services.delete(key);
    return this.#refreshService(key);
  }

  #onSlice(event: EventType, obj: unknown): CatalogUpdate[] {
    const { namespace, name } = meta(obj);
    const sliceKey = `${namespace}/${name}`;
    const previous = this.#slices.get(sliceKey);
    const problems: string[] = [];
    const slice = event === 'delete' ? undefined : sliceFromObject(obj, problems);
    this.#report(problems);
    if (previous) this.#slicesByService.delete(previous.service, sliceKey);
    if (slice) {
      this.#slices.set(sliceKey, this.#compactSlice(slice));
      this.#slicesByService.add(slice.service, sliceKey);
    } else this.#slices.delete(sliceKey);
    const keys = new Set([previous?.service, slice?.service].filter((k): k is string => !!k));
    return [...keys].flatMap((k) => this.#refreshService(k));
  }

  #onEndpoints(event: EventType, obj: unknown): CatalogUpdate[] {
    const { namespace, name } = meta(obj);
    const key = serviceKey(namespace, name);
    const problems: string[] = [];
    const info = event === 'delete' ? undefined : endpointsFromObject(obj, problems);
    this.#report(problems);
    if (info) this.#coreEndpoints.set(key, info.endpoints);
    else this.#coreEndpoints.delete(key);
    return this.#refreshService(key);
  }

  #onPod(event: EventType, obj: unknown): CatalogUpdate[] {
    const { namespace, name } = meta(obj);
    const podKey = `${namespace}/${name}`;
    const previous = this.#podIps.get(podKey) ?? [];
    const next = event === 'delete' ? [] : podsFromObject(obj);
    for (const p of previous) this.#podsByIp.delete(p.ip, podKey);
    if (next.length > 0) this.#podIps.set(podKey, next);
    else this.#podIps.delete(podKey);
    for (const p of next) this.#podsByIp.add(p.ip, podKey);
    const ips = new Set([...previous, ...next].map((p) => p.ip));
    return [...ips].flatMap((ip) => this.#refreshPod(ip));
  }

  #onNode(event: EventType, obj: unknown): CatalogUpdate[] {
    const node = nodeFromObject(obj);
    if (!node) return [];
    if (event === 'delete') this.#nodes.delete(node.name);
    else this.#nodes.set(node.name, node);
    return this.#refreshNode(node.name);
  }

  #refreshService(key: string): CatalogUpdate[] {
    const service = this.#services.get(key);
    let entry: ServiceEntry | null = null;
    if (service) {
      const sliceKeys = this.#slicesByService.sorted(key);
      const seen = new Set<string>();
      const endpoints: Endpoint[] = [];
      const sources =
        sliceKeys.length > 0
          ? sliceKeys.map((sk) => this.#slices.get(sk)?.endpoints ?? [])
          : [this.#coreEndpoints.get(key) ?? []];
      for (const list of sources) {
        for (const e of list) {
          const id = `${e.ip} ${JSON.stringify(e.ports)}`;
          if (seen.has(id)) continue;
          seen.add(id);
          endpoints.push(e);
        }
      }
      endpoints.sort((a, b) => compare(a.ip, b.ip));
      entry = this.#checked(`service ${key}`, validateServiceEntry, { service, endpoints }, key);
    }
    if (same(this.#entries.get(key) ?? null, entry)) return [];
    if (entry) this.#entries.set(key, entry);
    else this.#entries.delete(key);
    const revision = ++this.#revision;
    return [{ type: 'service', revision, key, entry }, ...this.#derivePods(key, entry)];
  }

  /** Pods on other nodes named by the endpoints of service `key` (only with `nodeName`). */
  #derivePods(key: string, entry: ServiceEntry | null): CatalogUpdate[] {
    if (this.#nodeName === undefined) return [];
    const next = new Map<string, PodInfo>();
    const previousPods = this.#derivedByService.get(key);
    for (const e of entry?.endpoints ?? []) {
      if (!e.podName || !e.nodeName || e.nodeName === this.#nodeName) continue;
      const pod = {
        ip: e.ip,
        namespace: entry?.service.namespace ?? '',
        name: e.podName,
        nodeName: e.nodeName,
      };
      // The same pod as before: keep that object (the catalog may hold it).
      const held = previousPods?.get(e.ip) ?? this.#reuse?.pods[e.ip];
      next.set(e.ip, held && same(held, pod) ? held : pod);
    }
    const previous = previousPods ?? new Map<string, PodInfo>();
    if (next.size > 0) this.#derivedByService.set(key, next);
    else this.#derivedByService.delete(key);
    const changed = new Set<string>();
    for (const ip of previous.keys()) {
      if (next.has(ip)) continue;
      this.#derivedByIp.delete(ip, key);
      changed.add(ip);
    }
    for (const [ip, pod] of next) {
      this.#derivedByIp.add(ip, key);
      if (previous.get(ip) !== pod) changed.add(ip);
    }
    return [...changed].sort(compare).flatMap((ip) => this.#refreshPod(ip));
  }

  #refreshPod(ip: string): CatalogUpdate[] {
    // Several pods may claim an IP for a moment (one going, one coming): the first by name wins.
    // A Pod object wins over an endpoint's word for it.
    const owners = this.#podsByIp.sorted(ip);
    let info = owners.length > 0 ? this.#podIps.get(owners[0])?.find((p) => p.ip === ip) : undefined;
    let owner = owners[0];
    if (!info) {
      const services = this.#derivedByIp.sorted(ip);
      owner = services[0];
      info = owner ? this.#derivedByService.get(owner)?.get(ip) : undefined;
    }
    const found = info;
    const pod = found ? this.#checked(`pod ${owner}`, validatePod, found, owner) : null;
    if (same(this.#podEntries.get(ip) ?? null, pod)) return [];
    if (pod) this.#podEntries.set(ip, pod);
    else this.#podEntries.delete(ip);
    const revision = ++this.#revision;
    return [{ type: 'pod', revision, ip, pod }];
  }

  #refreshNode(name: string): CatalogUpdate[] {
    const info = this.#nodes.get(name);
    const node = info ? this.#checked(`node ${name}`, validateNode, info, name) : null;
    if (same(this.#nodeEntries.get(name) ?? null, node)) return [];
    if (node) this.#nodeEntries.set(name, node);
    else this.#nodeEntries.delete(name);
    const revision = ++this.#revision;
    return [{ type: 'node', revision, name, node }];
  }

  /**
   * Runs a validator over a built item and returns the item itself (not the validator's
   * copy: see the class comment); an item that fails is left out and reported.
   */
  #checked<T>(what: string, validate: (value: unknown, path: string) => T, item: T, path: string): T | null {
    try {
      validate(item, path);
      return item;
    } catch (err) {
      this.#onProblem(`${what} left out of the catalog: ${(err as Error).message}`);
      return null;
    }
  }

  /** A slice with its strings and port list interned (see the class comment). */
  #compactSlice(slice: SliceInfo): SliceInfo {
    const built = slice.endpoints[0]?.ports;
    const ports = built ? this.#ports.get(JSON.stringify(built), built) : [];
    const before = this.#reuse?.services[slice.service]?.endpoints;
    const held = before ? new Map(before.map((e) => [e.ip, e])) : undefined;
    slice.endpoints = slice.endpoints.map((e) => {
      // One slice's endpoints share its port list (sliceFromObject): one lookup for all.
      if (e.ports === built) e.ports = ports;
      if (e.nodeName) e.nodeName = this.#names.string(e.nodeName);
      const old = held?.get(e.ip);
      return old && same(old, e) ? old : e;
    });
    return slice;
  }
}

/**
 * All objects at once → catalog (revision 1). Objects of other kinds are ignored; `kindOf`
 * defaults to the object's own kind/apiVersion (list items from the API lack them).
 */
export function buildCatalog(
  objects: readonly unknown[],
  opts: { clusterDomain?: string; kindOf?: (obj: unknown) => ObjectKind | undefined } = {},
): { catalog: Catalog; problems: string[]; ignored: number } {
  const problems: string[] = [];
  const builder = new CatalogBuilder({
    clusterDomain: opts.clusterDomain,
    onProblem: (p) => problems.push(p),
  });
  const kindOf = opts.kindOf ?? objectKind;
  let ignored = 0;
  for (const obj of objects) {
    const kind = kindOf(obj);
    if (kind) builder.handle(kind, 'add', obj);
    else ignored++;
  }
  return { catalog: { ...builder.catalog, revision: 1 }, problems, ignored };
}

/**
 * The updates that turn `from` into `to` (content of `to`, revisions continuing from
 * `from.revision`). The gateway uses it to move sidecars from the catalog it persisted to
 * the one the API gave it after a restart, without a full snapshot.
 */
export function diffCatalogs(from: Catalog, to: Catalog): CatalogUpdate[] {
  const updates: CatalogUpdate[] = [];
  let revision = from.revision;
  const keys = (a: object, b: object) => [...new Set([...Object.keys(a), ...Object.keys(b)])].sort(compare);
  for (const key of keys(from.services, to.services)) {
    const entry = to.services[key] ?? null;
    if (!same(from.services[key] ?? null, entry))
      updates.push({ type: 'service', revision: ++revision, key, entry });
  }
  for (const ip of keys(from.pods, to.pods)) {
    const pod = to.pods[ip] ?? null;
    if (!same(from.pods[ip] ?? null, pod)) updates.push({ type: 'pod', revision: ++revision, ip, pod });
  }
  for (const name of keys(from.nodes, to.nodes)) {
    const node = to.nodes[name] ?? null;
    if (!same(from.nodes[name] ?? null, node))
      updates.push({ type: 'node', revision: ++revision, name, node });
  }
  // A catalog without namespaces knows none (an edge API without a Namespace watch): keep `from`'s.
  if (to.namespaces) {
    for (const name of keys(from.namespaces ?? {}, to.namespaces)) {
      const namespace = to.namespaces[name] ?? null;
      if (!same(from.namespaces?.[name] ?? null, namespace))
        updates.push({ type: 'namespace', revision: ++revision, name, namespace });
    }
  }
  return updates;
}
