/**
 * Strict validation of catalog JSON from outside the process (a catalog file, a feed line, the
 * gateway's own state file). Every check names the path of the offending value, e.g.
 * `services["demo/web"].service.ports[0].port: must be 1..65535`.
 *
 * The validators build fresh objects from the checked fields only: unknown fields are errors,
 * nothing of the input's prototype or extra properties survives, and IPv6 addresses come out
 * in canonical lower-case form (the form the catalog is keyed by).
 *
 * The `check*` forms run the same checks in the same order (so the same input fails with the
 * same error) but keep the input's objects, writing only non-canonical IPs back: for JSON the
 * caller has just parsed and owns (a LOOKUP answer, which an on-demand sidecar then holds
 * as it is). A copy there was ~8 KB of garbage per first DNS query with a 1 MB young
 * generation (docs/scale.md, round 5).
 */
import { EdgemeshError, ErrorCodes } from '../errors.ts';
import { canonicalIP } from '../ip.ts';
import {
  CATALOG_FORMAT,
  type Catalog,
  type CatalogUpdate,
  type Endpoint,
  type EndpointPort,
  LB_POLICIES,
  type LbPolicy,
  type NamespaceInfo,
  type NodeInfo,
  type PodInfo,
  type Protocol,
  type Service,
  type ServiceEntry,
  type ServicePort,
  serviceKey,
  UDP_IDLE_TIMEOUT_MAX_MS,
  UDP_IDLE_TIMEOUT_MIN_MS,
} from './types.ts';

/** Upper bounds that keep a hostile or broken input from exhausting memory or CPU. */
export const LIMITS = {
  services: 50_000,
  pods: 500_000,
  nodes: 20_000,
  endpointsPerService: 10_000,
  portsPerService: 250,
  portsPerEndpoint: 250,
  ipsPerService: 2,
  addressesPerNode: 16,
  namespaces: 50_000,
} as const;

export class CatalogValidationError extends EdgemeshError {
  readonly path: string;
  constructor(path: string, problem: string) {
    super(ErrorCodes.CATALOG, `${path || '(root)'}: ${problem}`);
    this.name = 'CatalogValidationError';
    this.path = path;
  }
}

const fail = (path: Path, problem: string): never => {
  throw new CatalogValidationError(pathText(path), problem);
};

// RFC 1123 label (namespaces, service names) and subdomain (node names, pod names).
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
// Service names are RFC 1035 labels (start with a letter); be lenient and accept RFC 1123.
// A port name is an IANA_SVC_NAME (≤15 chars, lower-case alphanumerics and '-').
const PORT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
// appProtocol: an IANA service name or a domain-prefixed name like 'kubernetes.io/h2c'.
const APP_PROTOCOL =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
// An HTTP header field name (RFC 9110 token).
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// A DNS name as written in ExternalName / the cluster domain: labels, optional trailing dot.
const DNS_NAME =
  /^([A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9])?)(\.[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9])?)*\.?$/;

const SERVICE_TYPES = ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] as const;
const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];

/**
 * Where a value sits in the input: a string (the caller's), or a step below one, made into
 * text only when a check fails. A valid 2 KB service entry has ~150 fields; their path
 * strings, built eagerly, were more than half of what validating it allocated (an on-demand
 * sidecar validates one per first DNS query, with a 1 MB young generation). The checks of
 * single values take their parent's path and their field (a name or an index) apart, and
 * make the step only to fail.
 */
export type Path = string | PathStep;

class PathStep {
  readonly parent: Path;
  /** A field name (`.name`, or `["na-me"]` when not an identifier), an index, or a record key. */
  readonly key: string | number;
  readonly bracket: boolean;
  /**
   * An item of the array at `key` (`.ports[3]`), or -1. An array's checks move one step along
   * its items instead of making one per item: a path is read only while its check fails, at
   * once (the error's text), so no step outlives the loop that set it.
   */
  at: number;
  constructor(parent: Path, key: string | number, bracket: boolean, at = -1) {
    this.parent = parent;
    this.key = key;
    this.bracket = bracket;
    this.at = at;
  }
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `path.key` (`path["key"]` when the key is not an identifier), or `path[i]`. */
const step = (path: Path, field: string | number): Path =>
  new PathStep(path, field, typeof field === 'number');
const sub = (path: Path, key: string): Path => step(path, key);
/** `path["key"]`: a keyed record's entry (its text made only if a check fails). */
export const entryPath = (path: Path, key: string): Path => new PathStep(path, key, true);

function pathText(path: Path): string {
  if (typeof path === 'string') return path;
  const parent = pathText(path.parent);
  const key = path.key;
  const item = path.at >= 0 ? `[${path.at}]` : '';
  if (typeof key === 'number') return `${parent}[${key}]${item}`;
  if (!path.bracket && IDENTIFIER.test(key)) return `${parent}${parent ? '.' : ''}${key}${item}`;
  return `${parent}[${JSON.stringify(key)}]${item}`;
}

function record(value: unknown, path: Path): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'must be an object');
  return value as Record<string, unknown>;
}

const NONE: readonly string[] = [];
/**
 * The field lists of the shapes a LOOKUP answer has, made once: an array literal in a call is
 * a new array on every call (two per endpoint, two per port: ~1.5 KB per answer of 10).
 */
const PORT_FIELDS = ['name', 'port', 'protocol'] as const;
const PORT_OPTIONAL = ['appProtocol'] as const;
const SERVICE_FIELDS = [
  'namespace',
  'name',
  'type',
  'clusterIPs',
  'headless',
  'ports',
  'sessionAffinity',
  'lbPolicy',
  'publishNotReadyAddresses',
] as const;
const SERVICE_OPTIONAL = ['externalName', 'hashHeader', 'udpIdleTimeoutMs'] as const;
const AFFINITY_TYPES = ['None', 'ClientIP'] as const;
const AFFINITY_NONE = ['type'] as const;
const AFFINITY_CLIENT_IP = ['type', 'timeoutSeconds'] as const;
const ENDPOINT_FIELDS = ['ip', 'ready', 'serving', 'terminating', 'ports'] as const;
const ENDPOINT_OPTIONAL = ['hostname', 'nodeName', 'podName'] as const;
const ENTRY_FIELDS = ['service', 'endpoints'] as const;
const POD_FIELDS = ['ip', 'namespace', 'name', 'nodeName'] as const;
const NAME_FIELD = ['name'] as const;

/** An object with exactly the allowed keys (the optional ones may be absent). */
function fields(value: unknown, path: Path, required: readonly string[], optional: readonly string[] = NONE) {
  const obj = record(value, path);
  // for-in, not Object.keys: no array per object. Own keys come first in the same order;
  // inherited ones are skipped as Object.keys skips them.
  for (const key in obj) {
    if (!Object.hasOwn(obj, key)) continue; // as Object.keys: own keys only
    if (!required.includes(key) && !optional.includes(key)) fail(sub(path, key), 'unknown field');
  }
  for (const key of required) if (!(key in obj)) fail(sub(path, key), 'is required');
  return obj;
}

function array(value: unknown, path: Path, max: number): unknown[] {
  if (!Array.isArray(value)) fail(path, 'must be an array');
  const arr = value as unknown[];
  if (arr.length > max) fail(path, `must have at most ${max} items, has ${arr.length}`);
  return arr;
}

function string(
  value: unknown,
  path: Path,
  field: string | number,
  pattern: RegExp,
  max: number,
  what: string,
): string {
  if (typeof value !== 'string') fail(step(path, field), 'must be a string');
  const s = value as string;
  if (s.length === 0 || s.length > max || !pattern.test(s))
    fail(step(path, field), `must be ${what} (at most ${max} chars)`);
  return s;
}

function boolean(value: unknown, path: Path, field: string | number): boolean {
  if (typeof value !== 'boolean') fail(step(path, field), 'must be true or false');
  return value as boolean;
}

function integer(value: unknown, path: Path, field: string | number, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(step(path, field), `must be ${min}..${max}`);
  }
  return value as number;
}

function oneOf<T extends string>(
  value: unknown,
  path: Path,
  field: string | number,
  choices: readonly T[],
): T {
  if (typeof value !== 'string' || !choices.includes(value as T))
    fail(step(path, field), `must be one of ${choices.join(', ')}`);
  return value as T;
}

/** Canonical text of an IP address (lib/ip.ts), or undefined. */
export { canonicalIP };

/**
 * A dotted quad exactly as node:net's isIPv4 accepts it (its own pattern), tested without
 * exec's match array and capture strings: an IPv4 address is its own canonical form, so only
 * the others go through canonicalIP (~100 bytes of garbage per address otherwise; a LOOKUP
 * answer has one per endpoint).
 */
const V4_OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])';
const IPV4 = new RegExp(`^(?:${V4_OCTET}\\.){3}${V4_OCTET}$`);
const canonicalAddress = (text: string): string | undefined => (IPV4.test(text) ? text : canonicalIP(text));

function ip(value: unknown, path: Path, field: string | number): string {
  if (typeof value !== 'string' || value.length > 45) fail(step(path, field), 'must be an IP address');
  const canonical = canonicalAddress(value as string);
  if (canonical === undefined) fail(step(path, field), `must be an IP address, got ${JSON.stringify(value)}`);
  return canonical as string;
}

/**
 * An array of IP addresses: a fresh array of their canonical forms, or (copy false) the
 * input array with any non-canonical one written back.
 */
function ips(value: unknown, parent: Path, field: string, max: number, copy: boolean): string[] {
  if (!Array.isArray(value) || value.length > max) array(value, sub(parent, field), max); // throws
  const arr = value as unknown[];
  const out = copy ? new Array<string>(arr.length) : (arr as string[]);
  for (let i = 0; i < arr.length; i++) {
    const v = arr[i];
    // ip()'s checks; ip() itself (with the path) only to fail with its message.
    const canonical = typeof v === 'string' && v.length <= 45 ? canonicalAddress(v) : undefined;
    if (canonical === undefined) ip(v, sub(parent, field), i);
    if (copy || canonical !== v) out[i] = canonical as string;
  }
  return out;
}

/**
 * The array at `parent.field`, each item validated by `item`: into a fresh array, or (copy
 * false) back into the input's. One path step for all items (see PathStep.at).
 */
function items<T>(
  value: unknown,
  parent: Path,
  field: string,
  max: number,
  copy: boolean,
  item: (v: unknown, path: Path, copy: boolean) => T,
): T[] {
  if (!Array.isArray(value) || value.length > max) array(value, sub(parent, field), max); // throws
  const arr = value as unknown[];
  const out = copy ? new Array<T>(arr.length) : (arr as T[]);
  const at = new PathStep(parent, field, false, 0);
  for (let i = 0; i < arr.length; i++) {
    at.at = i;
    out[i] = item(arr[i], at, copy);
  }
  return out;
}

const port = (value: unknown, path: Path, field: string | number) => integer(value, path, field, 1, 65535);
const namespaceName = (value: unknown, path: Path, field: string | number) =>
  string(value, path, field, DNS_LABEL, 63, 'a DNS label');
const objectName = (value: unknown, path: Path, field: string | number) =>
  string(value, path, field, DNS_SUBDOMAIN, 253, 'a DNS subdomain');
const portName = (value: unknown, path: Path, field: string | number) =>
  value === '' ? '' : string(value, path, field, PORT_NAME, 63, "a port name or ''");
const appProtocol = (value: unknown, path: Path, field: string | number) =>
  string(value, path, field, APP_PROTOCOL, 256, 'an application protocol name');

function servicePort(value: unknown, path: Path, copy: boolean): ServicePort {
  const o = fields(value, path, PORT_FIELDS, PORT_OPTIONAL);
  const name = portName(o.name, path, 'name');
  const portNumber = port(o.port, path, 'port');
  const protocol = oneOf(o.protocol, path, 'protocol', PROTOCOLS);
  const app = o.appProtocol === undefined ? undefined : appProtocol(o.appProtocol, path, 'appProtocol');
  if (!copy) return o as unknown as ServicePort;
  const out: ServicePort = { name, port: portNumber, protocol };
  if (app !== undefined) out.appProtocol = app;
  return out;
}

export function validateService(value: unknown, path: Path = 'service'): Service {
  return service(value, path, true);
}

function service(value: unknown, path: Path, copy: boolean): Service {
  const o = fields(value, path, SERVICE_FIELDS, SERVICE_OPTIONAL);
  const type = oneOf(o.type, path, 'type', SERVICE_TYPES);
  const clusterIPs = ips(o.clusterIPs, path, 'clusterIPs', LIMITS.ipsPerService, copy);
  const headless = boolean(o.headless, path, 'headless');
  if (headless && clusterIPs.length > 0)
    fail(sub(path, 'clusterIPs'), 'must be empty for a headless service');
  const ports = items(o.ports, path, 'ports', LIMITS.portsPerService, copy, servicePort);
  const affinityPath = sub(path, 'sessionAffinity');
  const affinityType = oneOf(
    record(o.sessionAffinity, affinityPath).type,
    affinityPath,
    'type',
    AFFINITY_TYPES,
  );
  let sessionAffinity: Service['sessionAffinity'];
  if (affinityType === 'None') {
    fields(o.sessionAffinity, affinityPath, AFFINITY_NONE);
    sessionAffinity = copy ? { type: 'None' } : (o.sessionAffinity as Service['sessionAffinity']);
  } else {
    const affinity = fields(o.sessionAffinity, affinityPath, AFFINITY_CLIENT_IP);
    const timeoutSeconds = integer(affinity.timeoutSeconds, affinityPath, 'timeoutSeconds', 1, 86400);
    sessionAffinity = copy ? { type: 'ClientIP', timeoutSeconds } : (affinity as Service['sessionAffinity']);
  }
  const namespace = namespaceName(o.namespace, path, 'namespace');
  const name = namespaceName(o.name, path, 'name');
  const lbPolicy = oneOf<LbPolicy>(o.lbPolicy, path, 'lbPolicy', LB_POLICIES);
  const publishNotReadyAddresses = boolean(o.publishNotReadyAddresses, path, 'publishNotReadyAddresses');
  const out: Service = copy
    ? {
        namespace,
        name,
        type,
        clusterIPs,
        headless,
        ports,
        sessionAffinity,
        lbPolicy,
        publishNotReadyAddresses,
      }
    : (o as unknown as Service);
  if (type === 'ExternalName') {
    if (o.externalName === undefined)
      fail(sub(path, 'externalName'), 'is required for an ExternalName service');
    if (clusterIPs.length > 0) fail(sub(path, 'clusterIPs'), 'must be empty for an ExternalName service');
  }
  if (o.externalName !== undefined) {
    if (type !== 'ExternalName')
      fail(sub(path, 'externalName'), 'is only allowed on an ExternalName service');
    const externalName = string(o.externalName, path, 'externalName', DNS_NAME, 253, 'a DNS name');
    if (copy) out.externalName = externalName;
  }
  if (o.hashHeader !== undefined) {
    const hashHeader = string(o.hashHeader, path, 'hashHeader', HEADER_NAME, 128, 'an HTTP header name');
    if (copy) out.hashHeader = hashHeader;
  }
  if (o.udpIdleTimeoutMs !== undefined) {
    const ms = integer(
      o.udpIdleTimeoutMs,
      path,
      'udpIdleTimeoutMs',
      UDP_IDLE_TIMEOUT_MIN_MS,
      UDP_IDLE_TIMEOUT_MAX_MS,
    );
    if (copy) out.udpIdleTimeoutMs = ms;
  }
  return out;
}

const endpointPort: (value: unknown, path: Path, copy: boolean) => EndpointPort = servicePort;

export function validateEndpoint(value: unknown, path: Path = 'endpoint'): Endpoint {
  return endpoint(value, path, true);
}

function endpoint(value: unknown, path: Path, copy: boolean): Endpoint {
  const o = fields(value, path, ENDPOINT_FIELDS, ENDPOINT_OPTIONAL);
  const address = ip(o.ip, path, 'ip');
  const ready = boolean(o.ready, path, 'ready');
  const serving = boolean(o.serving, path, 'serving');
  const terminating = boolean(o.terminating, path, 'terminating');
  const ports = items(o.ports, path, 'ports', LIMITS.portsPerEndpoint, copy, endpointPort);
  const hostname =
    o.hostname === undefined ? undefined : string(o.hostname, path, 'hostname', DNS_LABEL, 63, 'a DNS label');
  const nodeName = o.nodeName === undefined ? undefined : objectName(o.nodeName, path, 'nodeName');
  const podName = o.podName === undefined ? undefined : objectName(o.podName, path, 'podName');
  if (!copy) {
    if (address !== o.ip) o.ip = address;
    return o as unknown as Endpoint;
  }
  const out: Endpoint = { ip: address, ready, serving, terminating, ports };
  if (hostname !== undefined) out.hostname = hostname;
  if (nodeName !== undefined) out.nodeName = nodeName;
  if (podName !== undefined) out.podName = podName;
  return out;
}

export function validateServiceEntry(value: unknown, path: Path = 'entry'): ServiceEntry {
  return serviceEntry(value, path, true);
}

/**
 * validateServiceEntry's checks on parsed JSON the caller owns, keeping its objects (see the
 * top of this file): returns `value` itself, non-canonical IPs rewritten in it.
 */
export function checkServiceEntry(value: unknown, path: Path = 'entry'): ServiceEntry {
  return serviceEntry(value, path, false);
}

function serviceEntry(value: unknown, path: Path, copy: boolean): ServiceEntry {
  const o = fields(value, path, ENTRY_FIELDS);
  const checked = service(o.service, sub(path, 'service'), copy);
  const endpoints = items(o.endpoints, path, 'endpoints', LIMITS.endpointsPerService, copy, endpoint);
  return copy ? { service: checked, endpoints } : (o as unknown as ServiceEntry);
}

export function validatePod(value: unknown, path: Path = 'pod'): PodInfo {
  return pod(value, path, true);
}

/** validatePod's checks, keeping the parsed object (as checkServiceEntry). */
export function checkPod(value: unknown, path: Path = 'pod'): PodInfo {
  return pod(value, path, false);
}

function pod(value: unknown, path: Path, copy: boolean): PodInfo {
  const o = fields(value, path, POD_FIELDS);
  const address = ip(o.ip, path, 'ip');
  const namespace = namespaceName(o.namespace, path, 'namespace');
  const name = objectName(o.name, path, 'name');
  const nodeName = objectName(o.nodeName, path, 'nodeName');
  if (copy) return { ip: address, namespace, name, nodeName };
  if (address !== o.ip) o.ip = address;
  return o as unknown as PodInfo;
}

export function validateNode(value: unknown, path: Path = 'node'): NodeInfo {
  const o = fields(value, path, ['name', 'addresses']);
  return {
    name: objectName(o.name, path, 'name'),
    addresses: ips(o.addresses, path, 'addresses', LIMITS.addressesPerNode, true),
  };
}

export function validateNamespace(value: unknown, path: Path = 'namespace'): NamespaceInfo {
  const o = fields(value, path, NAME_FIELD);
  return { name: namespaceName(o.name, path, 'name') };
}

/** validateNamespace's checks, keeping the parsed object (as checkServiceEntry). */
export function checkNamespace(value: unknown, path: Path = 'namespace'): NamespaceInfo {
  const o = fields(value, path, NAME_FIELD);
  namespaceName(o.name, path, 'name');
  return o as unknown as NamespaceInfo;
}

function keyedRecord<T>(
  value: unknown,
  path: Path,
  max: number,
  validateItem: (item: unknown, path: Path) => T,
  keyOf: (item: T) => string,
  keyProblem: string,
): Record<string, T> {
  const obj = record(value, path);
  const keys = Object.keys(obj);
  if (keys.length > max) fail(path, `must have at most ${max} entries, has ${keys.length}`);
  const out: Record<string, T> = {};
  for (const key of keys) {
    const itemPath = entryPath(path, key);
    const item = validateItem(obj[key], itemPath);
    const expected = keyOf(item);
    // Keys must name their entry exactly (this also rules out keys such as "__proto__").
    if (expected !== key) fail(itemPath, `${keyProblem} (expected key ${JSON.stringify(expected)})`);
    out[key] = item;
  }
  return out;
}

const revision = (value: unknown, path: Path, field: string | number) =>
  integer(value, path, field, 0, Number.MAX_SAFE_INTEGER);

export function validateCatalog(value: unknown, path: Path = ''): Catalog {
  const o = fields(
    value,
    path,
    ['format', 'revision', 'clusterDomain', 'services', 'pods', 'nodes'],
    ['namespaces'],
  );
  if (o.format !== CATALOG_FORMAT)
    fail(sub(path, 'format'), `must be ${CATALOG_FORMAT} (catalog format version)`);
  return {
    format: CATALOG_FORMAT,
    revision: revision(o.revision, path, 'revision'),
    clusterDomain: string(o.clusterDomain, path, 'clusterDomain', DNS_NAME, 253, 'a DNS name').replace(
      /\.$/,
      '',
    ),
    services: keyedRecord(
      o.services,
      sub(path, 'services'),
      LIMITS.services,
      validateServiceEntry,
      (e) => serviceKey(e.service.namespace, e.service.name),
      'key must be "<namespace>/<name>" of its service',
    ),
    pods: keyedRecord(
      o.pods,
      sub(path, 'pods'),
      LIMITS.pods,
      validatePod,
      (p) => p.ip,
      'key must be the pod IP',
    ),
    nodes: keyedRecord(
      o.nodes,
      sub(path, 'nodes'),
      LIMITS.nodes,
      validateNode,
      (n) => n.name,
      'key must be the node name',
    ),
    ...(o.namespaces === undefined
      ? {}
      : {
          namespaces: keyedRecord(
            o.namespaces,
            sub(path, 'namespaces'),
            LIMITS.namespaces,
            validateNamespace,
            (n) => n.name,
            'key must be the namespace name',
          ),
        }),
  };
}

/** Validates one catalog update (a feed line after JSON parsing). */
export function validateUpdate(value: unknown, path: Path = ''): CatalogUpdate {
  const type = oneOf(record(value, path).type, path, 'type', [
    'snapshot',
    'service',
    'pod',
    'node',
    'namespace',
  ] as const);
  switch (type) {
    case 'snapshot': {
      const o = fields(value, path, ['type', 'catalog']);
      return { type, catalog: validateCatalog(o.catalog, sub(path, 'catalog')) };
    }
    case 'service': {
      const o = fields(value, path, ['type', 'revision', 'key', 'entry']);
      const key = string(o.key, path, 'key', /^[a-z0-9-]+\/[a-z0-9-]+$/, 127, '"<namespace>/<name>"');
      const entry = o.entry === null ? null : validateServiceEntry(o.entry, sub(path, 'entry'));
      if (entry && serviceKey(entry.service.namespace, entry.service.name) !== key) {
        fail(sub(path, 'key'), 'must be "<namespace>/<name>" of the entry\'s service');
      }
      return { type, revision: revision(o.revision, path, 'revision'), key, entry };
    }
    case 'pod': {
      const o = fields(value, path, ['type', 'revision', 'ip', 'pod']);
      const podIp = ip(o.ip, path, 'ip');
      const pod = o.pod === null ? null : validatePod(o.pod, sub(path, 'pod'));
      if (pod && pod.ip !== podIp) fail(sub(path, 'ip'), "must equal the pod's ip");
      return { type, revision: revision(o.revision, path, 'revision'), ip: podIp, pod };
    }
    case 'node': {
      const o = fields(value, path, ['type', 'revision', 'name', 'node']);
      const name = objectName(o.name, path, 'name');
      const node = o.node === null ? null : validateNode(o.node, sub(path, 'node'));
      if (node && node.name !== name) fail(sub(path, 'name'), "must equal the node's name");
      return { type, revision: revision(o.revision, path, 'revision'), name, node };
    }
    case 'namespace': {
      const o = fields(value, path, ['type', 'revision', 'name', 'namespace']);
      const name = namespaceName(o.name, path, 'name');
      const namespace = o.namespace === null ? null : validateNamespace(o.namespace, sub(path, 'namespace'));
      if (namespace && namespace.name !== name) fail(sub(path, 'name'), "must equal the namespace's name");
      return { type, revision: revision(o.revision, path, 'revision'), name, namespace };
    }
  }
}

/**
 * Parses and validates catalog JSON text (a catalog file, or with the gateway's `decode` a
 * state file); errors name `source` and the path inside it.
 */
export function parseCatalogJSON(
  text: string,
  source: string,
  decode: (doc: unknown) => Catalog = validateCatalog,
): Catalog {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new EdgemeshError(ErrorCodes.CATALOG, `${source}: not valid JSON: ${(err as Error).message}`);
  }
  try {
    return decode(doc);
  } catch (err) {
    if (err instanceof CatalogValidationError) {
      throw new EdgemeshError(ErrorCodes.CATALOG, `${source}: ${err.message}`, { cause: err });
    }
    throw err;
  }
}
