/**
 * The part of kustomize the shipped manifests use, so `edgemesh install` prints what
 * `kubectl kustomize manifests` (or an overlay) renders without kustomize at run time:
 * the YAML files stay the one source of truth, and ctl/install.test.ts checks this render
 * equal to the real `kubectl kustomize` for the base and the KubeEdge overlay.
 *
 * Supported in a kustomization.yaml: `resources` (files and directories with their own
 * kustomization.yaml), `patches` (JSON 6902 op lists with a kind/name target; add, replace,
 * remove), `images` (name → newName/newTag), and kustomize's legacy output order. Any other
 * field is refused, naming the file and the field: a feature added to the manifests must be
 * added here too, not silently dropped.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

export type K8sObject = Record<string, unknown> & {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string } & Record<string, unknown>;
};

type Op = { op: string; path: string; value?: unknown };
interface Kustomization {
  resources: string[];
  patches: { target: { kind?: string; name?: string }; ops: Op[] }[];
  images: { name: string; newName?: string; newTag?: string }[];
}

const KNOWN = new Set(['apiVersion', 'kind', 'resources', 'patches', 'images']);
const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Reads a file's text; the default reads the disk (tests may pass a map). */
export type ReadText = (path: string) => string;
const readDisk: ReadText = (path) => readFileSync(path, 'utf8');

function parseKustomization(text: string, file: string): Kustomization {
  const doc = YAML.parse(text) as unknown;
  if (!isRecord(doc)) throw new Error(`${file}: not a mapping`);
  for (const key of Object.keys(doc))
    if (!KNOWN.has(key))
      throw new Error(
        `${file}: field ${key} is not supported by edgemesh install's renderer (ctl/kustomize.ts)`,
      );
  const list = (v: unknown, field: string) => {
    if (v === undefined) return [];
    if (!Array.isArray(v)) throw new Error(`${file}: ${field} is not a list`);
    return v;
  };
  return {
    resources: list(doc.resources, 'resources').map((r, i) => {
      if (typeof r !== 'string') throw new Error(`${file}: resources[${i}] is not a path`);
      return r;
    }),
    patches: list(doc.patches, 'patches').map((p, i) => {
      const f = `${file}: patches[${i}]`;
      if (!isRecord(p) || !isRecord(p.target) || typeof p.patch !== 'string')
        throw new Error(`${f}: needs target and an inline patch (path patches are not supported)`);
      const ops = YAML.parse(p.patch) as unknown;
      if (!Array.isArray(ops)) throw new Error(`${f}: only JSON 6902 op lists are supported`);
      return {
        target: p.target as { kind?: string; name?: string },
        ops: ops.map((o, j) => {
          if (!isRecord(o) || typeof o.op !== 'string' || typeof o.path !== 'string')
            throw new Error(`${f}: op ${j} needs op and path`);
          return o as Op;
        }),
      };
    }),
    images: list(doc.images, 'images').map((m, i) => {
      if (!isRecord(m) || typeof m.name !== 'string') throw new Error(`${file}: images[${i}] needs a name`);
      return m as Kustomization['images'][number];
    }),
  };
}

/** JSON pointer segments (RFC 6901). */
const segments = (path: string) =>
  path
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));

/** Applies one add/replace/remove op in place; errors name the object and the path. */
export function applyOp(obj: K8sObject, op: Op, where: string): void {
  const parts = segments(op.path);
  const last = parts.pop();
  if (last === undefined) throw new Error(`${where}: op ${op.op} ${op.path}: the root cannot be patched`);
  let node: unknown = obj;
  for (const p of parts) {
    node = Array.isArray(node) ? node[Number(p)] : isRecord(node) ? node[p] : undefined;
    if (node === undefined) throw new Error(`${where}: op ${op.op} ${op.path}: ${p} does not exist`);
  }
  const value = structuredClone(op.value);
  if (Array.isArray(node)) {
    const i = last === '-' ? node.length : Number(last);
    if (!Number.isInteger(i) || i < 0 || i > node.length)
      throw new Error(`${where}: op ${op.op} ${op.path}: no index ${last}`);
    if (op.op === 'add') node.splice(i, 0, value);
    else if (op.op === 'replace' && i < node.length) node[i] = value;
    else if (op.op === 'remove' && i < node.length) node.splice(i, 1);
    else throw new Error(`${where}: op ${op.op} ${op.path}: not supported here`);
    return;
  }
  if (!isRecord(node)) throw new Error(`${where}: op ${op.op} ${op.path}: parent is not an object`);
  if (op.op === 'add') node[last] = value;
  else if ((op.op === 'replace' || op.op === 'remove') && last in node) {
    if (op.op === 'replace') node[last] = value;
    else delete node[last];
  } else
    throw new Error(`${where}: op ${op.op} ${op.path}: ${last} does not exist or the op is not supported`);
}

/** `repo/name:tag@digest` → name part (what kustomize's `images[].name` matches). */
function imageName(image: string): { name: string; tag: string | undefined } {
  const at = image.indexOf('@');
  const ref = at >= 0 ? image.slice(0, at) : image;
  const colon = ref.lastIndexOf(':');
  return colon > ref.lastIndexOf('/')
    ? { name: ref.slice(0, colon), tag: ref.slice(colon + 1) }
    : { name: ref, tag: undefined };
}

/** The containers of a workload's pod template, or of a Pod. */
export function podContainers(o: K8sObject): Record<string, unknown>[] {
  const spec = isRecord(o.spec) ? o.spec : undefined;
  const template = isRecord(spec?.template) ? spec.template : undefined;
  const pod = o.kind === 'Pod' ? spec : isRecord(template?.spec) ? template.spec : undefined;
  if (!pod) return [];
  return [pod.initContainers, pod.containers].flatMap((l) => (Array.isArray(l) ? l.filter(isRecord) : []));
}

/** Sets every container image named `name` (any tag) to `image`. */
export function retag(
  objects: K8sObject[],
  name: string,
  newName: string | undefined,
  newTag: string | undefined,
): void {
  for (const o of objects)
    for (const c of podContainers(o)) {
      if (typeof c.image !== 'string') continue;
      const ref = imageName(c.image);
      if (ref.name !== name) continue;
      const tag = newTag ?? ref.tag;
      c.image = `${newName ?? ref.name}${tag ? `:${tag}` : ''}`;
    }
}

/** kustomize's legacy order (api/resid/gvk.go): these kinds first, webhooks last, others between. */
const ORDER_FIRST = [
  'Namespace',
  'ResourceQuota',
  'StorageClass',
  'CustomResourceDefinition',
  'ServiceAccount',
  'PodSecurityPolicy',
  'Role',
  'ClusterRole',
  'RoleBinding',
  'ClusterRoleBinding',
  'ConfigMap',
  'Secret',
  'Endpoints',
  'Service',
  'LimitRange',
  'PriorityClass',
  'PersistentVolume',
  'PersistentVolumeClaim',
  'Deployment',
  'StatefulSet',
  'CronJob',
  'PodDisruptionBudget',
];
const ORDER_LAST = ['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration'];

function rank(kind: string): number {
  const first = ORDER_FIRST.indexOf(kind);
  if (first >= 0) return first;
  const last = ORDER_LAST.indexOf(kind);
  return last >= 0 ? ORDER_FIRST.length + 1 + last : ORDER_FIRST.length;
}

const gvk = (o: K8sObject) => {
  const slash = o.apiVersion.indexOf('/');
  const group = slash >= 0 ? o.apiVersion.slice(0, slash) : '~G';
  return `${group}_${o.apiVersion.slice(slash + 1)}_${o.kind}`;
};

/** Sorts in place in kustomize's legacy order; returns the array. */
export function legacySort(objects: K8sObject[]): K8sObject[] {
  return objects.sort(
    (a, b) =>
      rank(a.kind) - rank(b.kind) ||
      (gvk(a) < gvk(b) ? -1 : gvk(a) > gvk(b) ? 1 : 0) ||
      (a.metadata.namespace ?? '').localeCompare(b.metadata.namespace ?? '') ||
      a.metadata.name.localeCompare(b.metadata.name),
  );
}

function load(dir: string, read: ReadText): K8sObject[] {
  const file = join(dir, 'kustomization.yaml');
  const k = parseKustomization(read(file), file);
  const objects: K8sObject[] = [];
  for (const r of k.resources) {
    const path = join(dir, r);
    if (r.endsWith('.yaml') || r.endsWith('.yml')) {
      for (const d of YAML.parseAllDocuments(read(path))) {
        if (d.errors.length > 0) throw new Error(`${path}: ${d.errors[0].message}`);
        const o = d.toJS() as unknown;
        if (o === null || o === undefined) continue;
        if (
          !isRecord(o) ||
          typeof o.kind !== 'string' ||
          !isRecord(o.metadata) ||
          typeof o.metadata.name !== 'string'
        )
          throw new Error(`${path}: a document without kind and metadata.name`);
        objects.push(o as K8sObject);
      }
    } else objects.push(...load(path, read));
  }
  for (const [i, p] of k.patches.entries()) {
    const hits = objects.filter(
      (o) =>
        (p.target.kind === undefined || o.kind === p.target.kind) &&
        (p.target.name === undefined || o.metadata.name === p.target.name),
    );
    if (hits.length === 0) throw new Error(`${file}: patches[${i}] matches no object`);
    for (const o of hits)
      for (const op of p.ops) applyOp(o, op, `${file}: patches[${i}] on ${o.kind}/${o.metadata.name}`);
  }
  for (const m of k.images) retag(objects, m.name, m.newName, m.newTag);
  return objects;
}

/** The objects `kubectl kustomize DIR` prints, in its order. */
export function kustomize(dir: string, read: ReadText = readDisk): K8sObject[] {
  return legacySort(load(dir, read));
}

/** The shipped manifests: beside ctl/ in a checkout, and in the image (/app/manifests). */
export const MANIFESTS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'manifests');
