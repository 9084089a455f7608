/**
 * The gateway's state file (`<state-dir>/catalog.json`), format 4: the catalog of
 * docs/catalog.md (format 1) with its two large records as rows, one JSON value per line, the
 * tables the rows index first. At 10,000 services × 10 endpoints format 1 is 30 MB, most of it
 * the same keys 200,000 times over; format 2 wrote endpoints and pods as rows (~10 MB), format 3
 * a pod that an endpoint row names as that row's number (~7 MB). Format 4 has format 3's rows
 * but is read a line at a time: a restart parsed format 3 as one 7 MB document, whose whole
 * tree of ~250,000 arrays and strings lived until the last row was decoded (JSON.parse and the
 * collections of that tree were ~0.6 s of the ~1.4 s before a restarted gateway answered its
 * first LOOKUP, docs/scale.md round 5); now each line's raw rows die young, and the tables
 * come first so that every line can be decoded as it is read.
 *
 *   line 1      {"format":4,"revision":12,"clusterDomain":"cluster.local",
 *                "services":2,"pods":3,               how many service lines and pods follow
 *                "names":["edge-a","demo",...],       namespaces and node names, each once
 *                "portLists":[[{"name":"http","port":8080,"protocol":"TCP"}],...],
 *                "nodes":{...},"namespaces":{...}}    as in format 1 (namespaces optional)
 *   then        [{service},[ENDPOINT,...]]            one line per service; service as in format 1
 *   then        [POD,...]                             the pods, up to PODS_PER_LINE a line
 *
 *   ENDPOINT = [ip, flags, portList, node, podName(, hostname)]
 *     flags     ready 1 | serving 2 | terminating 4
 *     portList  index into portLists
 *     node      index into names, -1: no nodeName
 *     podName   "" : none (a pod name is never empty)
 *   POD = [ip, names[i], name, names[j]]   namespace and node as indexes into names
 *       | k   the pod the k-th ENDPOINT of the file names (counting every service's rows in
 *             order, from 0): {ip, that service's namespace, podName, node}. The builder derives
 *             the pods of other nodes from endpoints, so at 10,000 services nearly all 100,000
 *             pods are one: a number instead of a 4-field row, checked once, as the endpoint's
 *             (the same rules as a pod's), sharing its strings.
 *
 * Every line ends with "\n" (JSON.stringify escapes any newline inside a string), and the file
 * is recognised as format 4 by its first bytes, `{"format":4,`, as the writer writes them. A
 * file whose lines are fewer than line 1 announces is refused as truncated; one with more, as
 * having trailing data.
 *
 * Formats 2 and 3 are one JSON document: `{"format":3,"revision":..,"clusterDomain":..,
 * "services":[[{service},[ENDPOINT,...]],...],"pods":[POD,...],"nodes":..,"namespaces":..,
 * "names":[..],"portLists":[..]}` (format 2: no ENDPOINT_REF).
 *
 * Services and pods keep their format-1 keys implicitly: `<namespace>/<name>` and the IP
 * come from the entry itself, so a key cannot disagree with its entry; a key twice is an
 * error. Decoding validates everything with lib/catalog/validate.ts's rules (each row is
 * checked as the format-1 object it stands for; each port list and name once) and gives the
 * same Catalog, key order included, as loading its format-1 form: the builder's reuse of a
 * persisted catalog's items compares them as JSON. Shared port lists and names stay shared
 * (nothing mutates a catalog). Files of formats 1, 2 and 3 still load (parseStateFileText):
 * the next write replaces them with format 4. A gateway older than a format refuses it (format
 * 4 is not one JSON document: "not valid JSON"; format 3 to a format-2 reader: "pods[0]: must
 * be an array"), logs it and starts without its persisted catalog.
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
  parseCatalogJSON,
  validateCatalog,
  validateEndpoint,
  validateNamespace,
  validateNode,
  validatePod,
  validateService,
} from '../lib/catalog/validate.ts';
import { EdgemeshError, ErrorCodes } from '../lib/errors.ts';

export const STATE_FORMAT = 4;
/** Formats 2 and 3 (one JSON document) still load: what gateways of before format 4 wrote. */
const FORMAT_2 = 2;
const FORMAT_3 = 3;
/** How format 4's first line begins, exactly as stateFileChunks writes it. */
const FORMAT_4_START = `{"format":${STATE_FORMAT},`;
/** Pods per line: 100 lines at 100,000 pods; each line is parsed and dropped on its own. */
export const PODS_PER_LINE = 1000;

const READY = 1;
const SERVING = 2;
const TERMINATING = 4;
/** Distinct port lists: at most one per slice. */
const MAX_PORT_LISTS = LIMITS.pods;
const MAX_NAMES = LIMITS.namespaces + LIMITS.nodes;

/**
 * Pieces of a write: each is made in one go on the event loop, and a character of rows costs
 * about three of format 1's (rows of small values): 1 MB pieces took 130–750 ms at 10,000
 * services and showed in the change → FEED latency (docs/scale.md); 64 KB take ~10 ms.
 */
const CHUNK_CHARS = 64 * 1024;
/** Rows (and pods) per slice of the pass that makes the tables before the first line. */
const PASS_SLICE = 10_000;

/**
 * The catalog as format-4 text in pieces of about `chunkChars` (a 10,000-service catalog is
 * never one string), and empty pieces where only the tables were made (a place to let the
 * event loop run). What is written is taken now, not as the pieces are asked for: the
 * gateway's store changes its pods record in place (lib/catalog/store.ts), and a write spans
 * many event-loop turns.
 */
export function stateFileChunks(catalog: Catalog, chunkChars = CHUNK_CHARS): Generator<string> {
  const taken: Taken = {
    revision: catalog.revision,
    clusterDomain: catalog.clusterDomain,
    services: Object.values(catalog.services),
    pods: Object.values(catalog.pods),
    tail: `"nodes":${JSON.stringify(catalog.nodes)}${catalog.namespaces ? `,"namespaces":${JSON.stringify(catalog.namespaces)}` : ''}`,
  };
  return chunks(taken, chunkChars);
}

interface Taken {
  revision: number;
  clusterDomain: string;
  services: ServiceEntry[];
  pods: PodInfo[];
  /** The nodes and namespaces records as JSON members. */
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

  // The tables go first, so one pass over every row before the first line: the names and port
  // lists the rows use, and each pod as the number of the first endpoint row that names it
  // (counting rows in file order) or, when none does exactly, as a row of its own. The pass
  // yields an empty piece every PASS_SLICE rows, so that a write's event-loop turns stay short.
  const rows: Endpoint[] = [];
  const rowNamespaces: string[] = [];
  const firstRowAt = new Map<string, number>();
  for (const entry of catalog.services) {
    for (const e of entry.endpoints) {
      if (e.podName !== undefined && e.nodeName !== undefined && !firstRowAt.has(e.ip))
        firstRowAt.set(e.ip, rows.length);
      rows.push(e);
      rowNamespaces.push(entry.service.namespace);
      if (e.nodeName !== undefined) nameIndex(e.nodeName);
      portListIndex(e.ports);
      if (rows.length % PASS_SLICE === 0) yield '';
    }
  }
  const podRefs: (number | undefined)[] = new Array(catalog.pods.length);
  for (let p = 0; p < catalog.pods.length; p++) {
    const pod = catalog.pods[p];
    const k = firstRowAt.get(pod.ip);
    const row = k === undefined ? undefined : rows[k];
    if (
      row !== undefined &&
      row.podName === pod.name &&
      row.nodeName === pod.nodeName &&
      rowNamespaces[k as number] === pod.namespace
    )
      podRefs[p] = k;
    else {
      nameIndex(pod.namespace);
      nameIndex(pod.nodeName);
    }
    if (p % PASS_SLICE === PASS_SLICE - 1) yield '';
  }

  let out =
    `{"format":${STATE_FORMAT},"revision":${JSON.stringify(catalog.revision)},"clusterDomain":${JSON.stringify(catalog.clusterDomain)}` +
    `,"services":${catalog.services.length},"pods":${catalog.pods.length}` +
    `,"names":${JSON.stringify([...names.keys()])},"portLists":[${portLists.join(',')}],${catalog.tail}}\n`;
  // By hand rather than JSON.stringify of an array per row: this runs for 100,000 rows per
  // write, on the event loop (strings still go through JSON.stringify for their escaping).
  const endpointRow = (e: Endpoint) => {
    const flags = (e.ready ? READY : 0) | (e.serving ? SERVING : 0) | (e.terminating ? TERMINATING : 0);
    const node = e.nodeName === undefined ? -1 : nameIndex(e.nodeName);
    const hostname = e.hostname === undefined ? '' : `,${JSON.stringify(e.hostname)}`;
    return `[${JSON.stringify(e.ip)},${flags},${portListIndex(e.ports)},${node},${JSON.stringify(e.podName ?? '')}${hostname}]`;
  };
  for (const entry of catalog.services) {
    out += `[${JSON.stringify(entry.service)},[${entry.endpoints.map(endpointRow).join(',')}]]\n`;
    if (out.length >= chunkChars) {
      yield out;
      out = '';
    }
  }
  for (let p = 0; p < catalog.pods.length; p++) {
    const pod = catalog.pods[p];
    const k = podRefs[p];
    const item =
      k !== undefined
        ? String(k)
        : `[${JSON.stringify(pod.ip)},${nameIndex(pod.namespace)},${JSON.stringify(pod.name)},${nameIndex(pod.nodeName)}]`;
    const first = p % PODS_PER_LINE === 0;
    const last = p % PODS_PER_LINE === PODS_PER_LINE - 1 || p === catalog.pods.length - 1;
    out += `${first ? '[' : ','}${item}${last ? ']\n' : ''}`;
    if (out.length >= chunkChars) {
      yield out;
      out = '';
    }
  }
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

function count(value: unknown, path: string, max: number): number {
  if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > max)
    fail(path, `must be a count 0..${max}`);
  return value as number;
}

/** The members of format 4's first line and of a format 2–3 document (where services and pods are rows, not counts). */
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
 * The members of formats 2–4 other than the rows (revision, cluster domain, nodes, namespaces,
 * the tables), checked; and a decoder that takes the rows one at a time, in file order, and
 * keeps what they decode to.
 */
function rowDecoder(o: Record<string, unknown>, refs: boolean) {
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
  let serviceCount = 0;
  const pods: Record<string, PodInfo> = {};
  let podCount = 0;

  return {
    /** A `[service, [ENDPOINT, ...]]` row. */
    service(value: unknown): void {
      const path = `services[${serviceCount++}]`;
      const row = array(value, path, 2);
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
    },
    /** A POD: a row, or (format 3 on) the number of an endpoint row. */
    pod(raw: unknown): void {
      const p = podCount++;
      let pod: PodInfo;
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
    },
    done(): Catalog {
      catalog.services = services;
      catalog.pods = pods;
      return catalog;
    },
  };
}

/**
 * A parsed state file of format 1, 2 or 3 (JSON.parse of it) as a Catalog, validated. Throws a
 * CatalogValidationError naming the path of the first problem. Format 4 is not one JSON
 * document: parseStateFileText reads it.
 */
export function decodeStateFile(doc: unknown): Catalog {
  const o = doc as Record<string, unknown>;
  if (
    typeof doc !== 'object' ||
    doc === null ||
    Array.isArray(doc) ||
    (o.format !== FORMAT_3 && o.format !== FORMAT_2)
  )
    return validateCatalog(doc);
  for (const key of Object.keys(o)) if (!TOP_KEYS.has(key)) fail(key, 'unknown field');
  const decoder = rowDecoder(o, o.format === FORMAT_3);
  const rawServices = array(o.services, 'services', LIMITS.services);
  for (const row of rawServices) decoder.service(row);
  const rawPods = array(o.pods, 'pods', LIMITS.pods);
  for (const pod of rawPods) decoder.pod(pod);
  return decoder.done();
}

/**
 * A state file's text as a Catalog: format 4 a line at a time, formats 1–3 as one document
 * (decodeStateFile). Errors name `source` and the path of the problem (and, for a line that is
 * not JSON, its line number).
 */
export function parseStateFileText(text: string, source: string): Catalog {
  if (!text.startsWith(FORMAT_4_START)) return parseCatalogJSON(text, source, decodeStateFile);
  try {
    return decodeLines(text, source);
  } catch (err) {
    if (err instanceof CatalogValidationError)
      throw new EdgemeshError(ErrorCodes.CATALOG, `${source}: ${err.message}`, { cause: err });
    throw err;
  }
}

function decodeLines(text: string, source: string): Catalog {
  let at = 0;
  let lineNumber = 0;
  /** The next line, parsed; undefined at the end of the text. */
  const next = (): unknown => {
    if (at >= text.length) return undefined;
    let end = text.indexOf('\n', at);
    if (end < 0) end = text.length;
    const line = text.slice(at, end);
    at = end + 1;
    lineNumber++;
    try {
      return JSON.parse(line);
    } catch (err) {
      throw new EdgemeshError(
        ErrorCodes.CATALOG,
        `${source}: not valid JSON: line ${lineNumber}: ${(err as Error).message}`,
      );
    }
  };
  const head = next();
  if (typeof head !== 'object' || head === null || Array.isArray(head)) fail('', 'must be an object');
  const o = head as Record<string, unknown>;
  for (const key of Object.keys(o)) if (!TOP_KEYS.has(key)) fail(key, 'unknown field');
  const serviceLines = count(o.services, 'services', LIMITS.services);
  const podCount = count(o.pods, 'pods', LIMITS.pods);
  const decoder = rowDecoder(o, true);
  const truncated = (what: string) =>
    fail(what, `the file ends at line ${lineNumber} (truncated): line 1 announces more`);
  for (let s = 0; s < serviceLines; s++) {
    const row = next();
    if (row === undefined) truncated(`services[${s}]`);
    decoder.service(row);
  }
  for (let p = 0; p < podCount; ) {
    const line = next();
    if (line === undefined) truncated(`pods[${p}]`);
    const items = array(line, `line ${lineNumber}`, Math.min(PODS_PER_LINE, podCount - p));
    if (items.length === 0) fail(`line ${lineNumber}`, 'must hold at least one pod');
    for (const pod of items) decoder.pod(pod);
    p += items.length;
  }
  if (next() !== undefined || at < text.length)
    fail(
      `line ${lineNumber}`,
      `trailing data after the last pod (line 1 announces ${serviceLines} services and ${podCount} pods)`,
    );
  return decoder.done();
}
