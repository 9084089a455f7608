/**
 * The few fields of a Pod the operator commands read, validated from the API's JSON: a
 * malformed item is an error naming the list and the item, never a crash on `undefined`.
 */

export interface ContainerImage {
  name: string;
  image: string;
  args: string[];
  /** Environment variables with a literal value (not valueFrom). */
  env: Record<string, string>;
}

export interface PodSummary {
  namespace: string;
  name: string;
  /** Empty while unscheduled. */
  node: string;
  labels: Readonly<Record<string, string>>;
  annotations: Readonly<Record<string, string>>;
  /** The controller that made it (ReplicaSet, StatefulSet, DaemonSet, Job, …), if any. */
  owner: { kind: string; name: string } | undefined;
  hostNetwork: boolean;
  /** Being deleted (metadata.deletionTimestamp set): on its way out, nothing to act on. */
  terminating: boolean;
  containers: ContainerImage[];
  initContainers: ContainerImage[];
  /** The Ready condition is True. */
  ready: boolean;
  phase: string;
}

type Loose = Record<string, unknown>;
const isRecord = (v: unknown): v is Loose => typeof v === 'object' && v !== null && !Array.isArray(v);

function containers(list: unknown, where: string): ContainerImage[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw new Error(`${where}: not a list`);
  return list.map((c, i) => {
    if (!isRecord(c) || typeof c.name !== 'string')
      throw new Error(`${where}[${i}]: a container without a name`);
    const env: Record<string, string> = {};
    if (Array.isArray(c.env))
      for (const e of c.env)
        if (isRecord(e) && typeof e.name === 'string' && typeof e.value === 'string') env[e.name] = e.value;
    return {
      name: c.name,
      // An image can be absent only in malformed objects; '' says so instead of guessing.
      image: typeof c.image === 'string' ? c.image : '',
      args: Array.isArray(c.args) ? c.args.filter((a): a is string => typeof a === 'string') : [],
      env,
    };
  });
}

/** One Pod from a list answer; `where` names the list for errors. */
export function podSummary(item: unknown, where: string): PodSummary {
  if (!isRecord(item) || !isRecord(item.metadata)) throw new Error(`${where}: an item is not a Pod`);
  const meta = item.metadata;
  if (typeof meta.name !== 'string' || typeof meta.namespace !== 'string')
    throw new Error(`${where}: a Pod without metadata.name/namespace`);
  const at = `${where}: Pod ${meta.namespace}/${meta.name}`;
  const spec = isRecord(item.spec) ? item.spec : {};
  const status = isRecord(item.status) ? item.status : {};
  const labels: Record<string, string> = {};
  if (isRecord(meta.labels))
    for (const [k, v] of Object.entries(meta.labels)) if (typeof v === 'string') labels[k] = v;
  const conditions = Array.isArray(status.conditions) ? status.conditions : [];
  const annotations: Record<string, string> = {};
  if (isRecord(meta.annotations))
    for (const [k, v] of Object.entries(meta.annotations)) if (typeof v === 'string') annotations[k] = v;
  const refs = Array.isArray(meta.ownerReferences) ? meta.ownerReferences.filter(isRecord) : [];
  const ref = refs.find((r) => r.controller === true) ?? refs[0];
  return {
    namespace: meta.namespace,
    name: meta.name,
    node: typeof spec.nodeName === 'string' ? spec.nodeName : '',
    labels,
    annotations,
    owner:
      ref && typeof ref.kind === 'string' && typeof ref.name === 'string'
        ? { kind: ref.kind, name: ref.name }
        : undefined,
    hostNetwork: spec.hostNetwork === true,
    terminating: typeof meta.deletionTimestamp === 'string',
    containers: containers(spec.containers, `${at} spec.containers`),
    initContainers: containers(spec.initContainers, `${at} spec.initContainers`),
    ready: conditions.some((c) => isRecord(c) && c.type === 'Ready' && c.status === 'True'),
    phase: typeof status.phase === 'string' ? status.phase : 'Unknown',
  };
}

/** A PodList page: its items and the continue token. */
export function podListPage(
  body: unknown,
  where: string,
): { pods: PodSummary[]; continue: string | undefined } {
  if (!isRecord(body) || !Array.isArray(body.items)) throw new Error(`${where}: the answer is not a list`);
  const meta = isRecord(body.metadata) ? body.metadata : {};
  const next = typeof meta.continue === 'string' && meta.continue !== '' ? meta.continue : undefined;
  return { pods: body.items.map((item) => podSummary(item, where)), continue: next };
}
