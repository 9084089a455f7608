/**
 * The gateway's state file (`<state-dir>/catalog.json`), format 3: the catalog of
 * docs/catalog.md (format 1) with its two large records as rows. At 10,000 services × 10
 * endpoints format 1 is 30 MB, most of it the same keys 200,000 times over (every endpoint and
 * every derived pod an object with its own port list); format 2 is ~10 MB and parses ~4× faster,
 * which is most of a restart's time to serve the catalog again (docs/scale.md); format 3 is
 * format 2 with a pod that an endpoint row names written as that row's number (~7 MB).
 *
 *   {"format":3,"revision":12,"clusterDomain":"cluster.local",
 *    "services":[[{service},[ENDPOINT,...]],...],     service: as in format 1
 *    "pods":[["10.244.1.17",0,"web-5d9c7b8f6d-abcde",1],17,...],   POD: a row or ENDPOINT_REF
 *    "nodes":{...},"namespaces":{...},                 as in format 1 (namespaces optional)
 *    "names":["demo","edge-a",...],                    namespaces and node names, each once
 *    "portLists":[[{"name":"http","port":8080,"protocol":"TCP"}],...]}   distinct endpoint port lists
 *
 *   ENDPOINT = [ip, flags, portList, node, podName(, hostname)]
 *     flags     ready 1 | serving 2 | terminating 4
 *     portList  index into portLists
 *     node      index into names, -1: no nodeName
 *     podName   "" : none (a pod name is never empty)
 *
 *   POD = [ip, names[i], name, names[j]]   namespace and node as indexes into names
 *   ENDPOINT_REF = k   (format 3) the pod the k-th ENDPOINT of the file names (counting every
 *     service's rows in order, from 0): {ip, that service's namespace, podName, node}. The
 *     builder derives the pods of other nodes from endpoints, so at 10,000 services nearly all
 *     100,000 pods are one: a number instead of a 4-field row (3 MB less to parse, 100,000
 *     arrays less), their fields checked once, as the endpoint's (the same rules as a pod's),
 *     and their strings shared with it.
 *
 * Services and pods keep their format-1 keys implicitly: `<namespace>/<name>` and the IP
 * come from the entry itself, so a key cannot disagree with its entry; a key twice is an
 * error. Decoding validates everything with lib/catalog/validate.ts's rules (each row is
 * checked as the format-1 object it stands for; each port list and name once) and gives the
 * same Catalog, key order included, as loading its format-1 form: the builder's reuse of a
 * persisted catalog's items compares them as JSON. Shared port lists and names stay shared
 * (nothing mutates a catalog). A format-1 file still loads (decodeStateFile): the next write
 * replaces it with format 3; so does a format-2 file. A gateway older than a format refuses it
 * ("format: must be 1", or a format-2 reader's "pods[0]: must be an array"), logs it and starts
 * without its persisted catalog.
 */

import {
  type Catalog,
  type Endpoint,
  type PodInfo,
  type ServiceEntry,
  serviceKey,
} from '../lib/catalog/types.ts';
import {
  CatalogValidationError,
  LIMITS,
  validateCatalog,
  validateEndpoint,
  validateNamespace,
  validateNode,
  validatePod,
  validateService,
} from '../lib/catalog/validate.ts';

export const STATE_FORMAT = 3;
/** Format 2 (no ENDPOINT_REF) still loads: the file a gateway of before format 3 wrote. */
const FORMAT_2 = 2;

const READY = 1;
const SERVING = 2;
const TERMINATING = 4;
/** Distinct port lists: at most one per slice. */
const MAX_PORT_LISTS = LIMITS.pods;
const MAX_NAMES = LIMITS.namespaces + LIMITS.nodes;

/**
 * Pieces of a write: each is made in one go on the event loop, and a format-2 character costs
 * about three of format 1's (rows of small values): 1 MB pieces took 130–750 ms at 10,000
 * services and showed in the change → FEED latency (docs/scale.md); 64 KB take ~10 ms.
 */
const CHUNK_CHARS = 64 * 1024;

/**
 * The catalog as format-2 JSON in pieces of about `chunkChars` (a 10,000-service catalog is
 * never one string). Rows first, then the tables they index, filled while the rows are written.
 * What is written is taken now, not as the pieces are asked for: the gateway's store changes
 * its pods record in place (lib/catalog/store.ts), and a write spans many event-loop turns.
 */
export function stateFileChunks(catalog: Catalog, chunkChars = CHUNK_CHARS): Generator<string> {
  const taken: Taken = {
    head: `{"format":${STATE_FORMAT},"revision":${JSON.stringify(catalog.revision)},"clusterDomain":${JSON.stringify(catalog.clusterDomain)}`,
    services: Object.values(catalog.services),
    pods: Object.values(catalog.pods),
    tail: `"nodes":${JSON.stringify(catalog.nodes)}${catalog.namespaces ? `,"namespaces":${JSON.stringify(catalog.namespaces)}` : ''}`,
  };
  return chunks(taken, chunkChars);
}

interface Taken {
  head: string;
  services: ServiceEntry[];
  pods: PodInfo[];
  tail: string;
}

function* chunks(catalog: Taken, chunkChars: number): Generator<string> {
  const names = new Map<string, number>();
  const nameIndex = (name: string) => {
    let i = names.get(name);
    if (i === undefined) {
      i = names.size;
      names.set(name, i);
    }
    return i;
  };
  // By identity first (the builder shares one array per distinct list), then by content.
  const portListById = new Map<unknown, number>();
  const portListByJson = new Map<string, number>();
  const portLists: string[] = [];
  const portListIndex = (ports: Endpoint['ports']) => {
    let i = portListById.get(ports);
    if (i !== undefined) return i;
    const json = JSON.stringify(ports);
    i = portListByJson.get(json);
    if (i === undefined) {
      i = portLists.push(json) - 1;
      portListByJson.set(json, i);
    }
    portListById.set(ports, i);
    return i;
  };
  // Every endpoint row in order (its number is its index), and the first row naming each pod IP.
  const rows: Endpoint[] = [];
  const rowNamespaces: string[] = [];
  const firstRowAt = new Map<string, number>();
  // By hand rather than JSON.stringify of an array per row: this runs for 100,000 rows per
  // write, on the event loop (strings still go through JSON.stringify for their escaping).
  const endpointRow = (e: Endpoint, namespace: string) => {
    if (e.podName !== undefined && e.nodeName !== undefined && !firstRowAt.has(e.ip))
      firstRowAt.set(e.ip, rows.length);
    rows.push(e);
    rowNamespaces.push(namespace);
    const flags = (e.ready ? READY : 0) | (e.serving ? SERVING : 0) | (e.terminating ? TERMINATING : 0);
    const node = e.nodeName === undefined ? -1 : nameIndex(e.nodeName);
    const hostname = e.hostname === undefined ? '' : `,${JSON.stringify(e.hostname)}`;
    return `[${JSON.stringify(e.ip)},${flags},${portListIndex(e.ports)},${node},${JSON.stringify(e.podName ?? '')}${hostname}]`;
  };

  let out = `${catalog.head},"services":[`;
  let first = true;
  for (const entry of catalog.services) {
    const namespace = entry.service.namespace;
    out += `${first ? '' : ','}[${JSON.stringify(entry.service)},[${entry.endpoints.map((e) => endpointRow(e, namespace)).join(',')}]]`;
    first = false;
    if (out.length >= chunkChars) {
      yield out;
      out = '';
    }
  }
  out += '],"pods":[';
  first = true;
  for (const p of catalog.pods) {
    const k = firstRowAt.get(p.ip);
    const row = k === undefined ? undefined : rows[k];
    out +=
      row !== undefined &&
      row.podName === p.name &&
      row.nodeName === p.nodeName &&
      rowNamespaces[k as number] === p.namespace
        ? `${first ? '' : ','}${k}`
        : `${first ? '' : ','}[${JSON.stringify(p.ip)},${nameIndex(p.namespace)},${JSON.stringify(p.name)},${nameIndex(p.nodeName)}]`;
    first = false;
    if (out.length >= chunkChars) {
      yield out;
      out = '';
    }
  }
  out += `],${catalog.tail},"names":${JSON.stringify([...names.keys()])},"portLists":[${portLists.join(',')}]}`;
  yield out;
}

const fail = (path: string, problem: string): never => {
  throw new CatalogValidationError(path, problem);
};

function array(value: unknown, path: string, max: number): unknown[] {
  if (!Array.isArray(value)) fail(path, 'must be an array');
  const a = value as unknown[];
  if (a.length > max) fail(path, `must have at most ${max} items, has ${a.length}`);
  return a;
}

function index(value: unknown, path: string, length: number, what: string): number {
  if (!Number.isInteger(value) || (value as number) < 0 || (value as number) >= length)
    fail(path, `must index ${what} (0..${length - 1})`);
  return value as number;
}

const TOP_KEYS = new Set([
  'format',
  'revision',
  'clusterDomain',
  'services',
  'pods',
  'nodes',
  'namespaces',
  'names',
  'portLists',
]);
// Any valid endpoint: a port list is checked as the ports of one (their rules are the same).
const PROBE_ENDPOINT = { ip: '192.0.2.1', ready: true, serving: true, terminating: false };

/**
 * Rows are checked under the placeholder path ROW, and only an error gets the real one
 * (atPath): making a path string per row and field was a third of the decode's garbage.
 */
const ROW = 'row';
const ROW_NODE = `${ROW}.node`;
const ROW_PORT_LIST = `${ROW}.portList`;
const ROW_NAMESPACE = `${ROW}.namespace`;
const ROW_FLAGS = `${ROW}.flags`;

function atPath(err: unknown, path: string): unknown {
  if (!(err instanceof CatalogValidationError) || !err.path.startsWith(ROW)) return err;
  const problem = err.message.slice(err.path.length + 2);
  return new CatalogValidationError(path + err.path.slice(ROW.length), problem);
}

type TableAt<T> = (value: unknown, path: string) => T;

/** One ENDPOINT row, checked as the format-1 object it stands for, with its shared port list. */
function decodeEndpoint(
  value: unknown,
  nodeAt: TableAt<string>,
  portListAt: TableAt<Endpoint['ports']>,
): Endpoint {
  const r = array(value, ROW, 6);
  if (r.length < 5) fail(ROW, 'must be [ip, flags, portList, node, podName(, hostname)]');
  const flags = r[1];
  if (!Number.isInteger(flags) || (flags as number) < 0 || (flags as number) > 7)
    fail(ROW_FLAGS, 'must be 0..7 (ready 1 | serving 2 | terminating 4)');
  const f = flags as number;
  // In format 1's key order: the builder compares a persisted catalog's items as JSON.
  const candidate: Record<string, unknown> = {
    ip: r[0],
    ready: (f & READY) !== 0,
    serving: (f & SERVING) !== 0,
    terminating: (f & TERMINATING) !== 0,
    ports: NO_PORTS,
  };
  if (r.length === 6) candidate.hostname = r[5];
  if (r[3] !== -1) candidate.nodeName = nodeAt(r[3], ROW_NODE);
  if (r[4] !== '') candidate.podName = r[4];
  const endpoint = validateEndpoint(candidate, ROW);
  endpoint.ports = portListAt(r[2], ROW_PORT_LIST);
  return endpoint;
}
const NO_PORTS: never[] = [];

/**
 * A parsed state file (JSON.parse of it) as a Catalog, validated; format 1, 2 or 3. Throws a
 * CatalogValidationError naming the path of the first problem.
 */
export function decodeStateFile(doc: unknown): Catalog {
  const o = doc as Record<string, unknown>;
  if (
    typeof doc !== 'object' ||
    doc === null ||
    Array.isArray(doc) ||
    (o.format !== STATE_FORMAT && o.format !== FORMAT_2)
  )
    return validateCatalog(doc);
  const refs = o.format === STATE_FORMAT;
  for (const key of Object.keys(o)) if (!TOP_KEYS.has(key)) fail(key, 'unknown field');
  // Revision, cluster domain, nodes and namespaces are format 1's: checked as a catalog without services and pods.
  const catalog = validateCatalog({
    format: 1,
    revision: o.revision,
    clusterDomain: o.clusterDomain,
    services: {},
    pods: {},
    nodes: o.nodes,
    ...(o.namespaces === undefined ? {} : { namespaces: o.namespaces }),
  });

  const names = array(o.names, 'names', MAX_NAMES);
  const namesAs = (check: (name: unknown, path: string) => string): TableAt<string> => {
    const checked: (string | undefined)[] = [];
    return (value: unknown, path: string): string => {
      const i = index(value, path, names.length, 'names');
      checked[i] ??= check(names[i], `names[${i}]`);
      return checked[i];
    };
  };
  const namespaceAt = namesAs((name, path) => validateNamespace({ name }, path).name);
  const nodeAt = namesAs((name, path) => validateNode({ name, addresses: [] }, path).name);
  const rawPortLists = array(o.portLists, 'portLists', MAX_PORT_LISTS);
  const portLists: Endpoint['ports'][] = [];
  const portListAt: TableAt<Endpoint['ports']> = (value, path) => {
    const i = index(value, path, rawPortLists.length, 'portLists');
    portLists[i] ??= validateEndpoint({ ...PROBE_ENDPOINT, ports: rawPortLists[i] }, `portLists[${i}]`).ports;
    return portLists[i];
  };

  const services: Record<string, ServiceEntry> = {};
  // Every endpoint in file order, and its service's namespace: what an ENDPOINT_REF names.
  const rows: Endpoint[] = [];
  const rowNamespaces: string[] = [];
  const rawServices = array(o.services, 'services', LIMITS.services);
  for (let s = 0; s < rawServices.length; s++) {
    const path = `services[${s}]`;
    const row = array(rawServices[s], path, 2);
    if (row.length !== 2) fail(path, 'must be [service, endpoints]');
    const service = validateService(row[0], `${path}.service`);
    const key = serviceKey(service.namespace, service.name);
    if (Object.hasOwn(services, key)) fail(path, `service ${JSON.stringify(key)} twice`);
    const rawEndpoints = array(row[1], `${path}.endpoints`, LIMITS.endpointsPerService);
    const endpoints: Endpoint[] = new Array(rawEndpoints.length);
    for (let e = 0; e < rawEndpoints.length; e++) {
      try {
        endpoints[e] = decodeEndpoint(rawEndpoints[e], nodeAt, portListAt);
      } catch (err) {
        throw atPath(err, `${path}.endpoints[${e}]`);
      }
      rows.push(endpoints[e]);
      rowNamespaces.push(service.namespace);
    }
    services[key] = { service, endpoints };
  }

  const pods: Record<string, PodInfo> = {};
  const rawPods = array(o.pods, 'pods', LIMITS.pods);
  for (let p = 0; p < rawPods.length; p++) {
    let pod: PodInfo;
    const raw = rawPods[p];
    if (refs && typeof raw === 'number') {
      const row = Number.isInteger(raw) ? rows[raw] : undefined;
      if (row === undefined)
        fail(`pods[${p}]`, `must be a pod row or the number of an endpoint row (${rows.length} rows)`);
      const { ip, podName, nodeName } = row as Endpoint;
      if (podName === undefined || nodeName === undefined)
        fail(`pods[${p}]`, `must name an endpoint row with a pod name and a node (row ${raw} has none)`);
      // Checked as the endpoint's fields, by the rules a pod's have (ip, object names); in
      // validatePod's key order.
      pod = { ip, namespace: rowNamespaces[raw], name: podName as string, nodeName: nodeName as string };
    } else {
      try {
        const r = array(raw, ROW, 4);
        if (r.length !== 4) fail(ROW, 'must be [ip, namespace, name, node]');
        pod = validatePod(
          {
            ip: r[0],
            namespace: namespaceAt(r[1], ROW_NAMESPACE),
            name: r[2],
            nodeName: nodeAt(r[3], ROW_NODE),
          },
          ROW,
        );
      } catch (err) {
        throw atPath(err, `pods[${p}]`);
      }
    }
    if (Object.hasOwn(pods, pod.ip)) fail(`pods[${p}]`, `pod ${pod.ip} twice`);
    pods[pod.ip] = pod;
  }
  catalog.services = services;
  catalog.pods = pods;
  return catalog;
}
