import type { V1Pod } from '@kubernetes/client-node';
import jsonpatch from 'jsonpatch';
import YAML from 'yaml';
import { badRequest } from '../lib/errors.ts';
import type { InjectionConfig } from './config.ts';
import { InjectionError, injectionPatch, type PatchOp, skipReason } from './inject.ts';
import { uninjectPod } from './uninject.ts';

/**
 * `edgemesh inject`: the webhook's patch applied to manifests, for GitOps pipelines that
 * cannot run a webhook. Pods and the pod templates of workload kinds are injected; other
 * documents pass through unchanged, each said in the report. Same pure functions as the
 * webhook. `edgemesh uninject` walks the same templates with uninject.ts.
 */
type Manifest = Record<string, unknown>;

/** Where each workload kind keeps its pod template. */
const TEMPLATE_PATHS: Record<string, readonly string[]> = {
  Pod: [],
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  ReplicationController: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

export interface ManualResult {
  yaml: string;
  /** One line per pod template: what happened and why. */
  report: string[];
}

export function applyPatch<T>(doc: T, patch: PatchOp[]): T {
  return jsonpatch.apply_patch(doc, patch) as T;
}

/** Injects one manifest (or List); returns the new manifest and report lines. */
export function injectManifest(
  doc: Manifest,
  config: InjectionConfig,
  report: string[],
  where: string,
): Manifest {
  return transformManifest(doc, injectTemplate(config), report, where);
}

/** Removes what injection added from one manifest (or List): uninject.ts on each pod template. */
export function uninjectManifest(doc: Manifest, report: string[], where: string): Manifest {
  return transformManifest(doc, uninjectTemplate, report, where);
}

/**
 * What is done to one pod template: the new pod, or undefined to keep the document as it is,
 * and the report line. `namespace` is the manifest's (for the excluded-namespace rule).
 */
type TemplateTransform = (
  pod: V1Pod,
  namespace: string,
  label: string,
  where: string,
) => { pod?: V1Pod; line: string };

const injectTemplate =
  (config: InjectionConfig): TemplateTransform =>
  (pod, namespace, label, where) => {
    const skip = skipReason(pod, namespace, config);
    if (skip) return { line: `${label}: not injected: ${skip.message}` };
    try {
      return { pod: applyPatch(pod, injectionPatch(pod, config)), line: `${label}: injected` };
    } catch (err) {
      if (err instanceof InjectionError) throw badRequest(`${where} ${label}: ${err.message}`);
      throw err;
    }
  };

const uninjectTemplate: TemplateTransform = (pod, _namespace, label, where) => {
  let result: ReturnType<typeof uninjectPod>;
  try {
    result = uninjectPod(pod);
  } catch (err) {
    throw badRequest(`${where} ${label}: ${(err as Error).message}`);
  }
  if (result.outcome === 'not-injected') return { line: `${label}: not injected: unchanged` };
  const notes = result.notes.length > 0 ? ` (${result.notes.join('; ')})` : '';
  return { pod: result.pod, line: `${label}: uninjected${notes}` };
};

function transformManifest(
  doc: Manifest,
  transform: TemplateTransform,
  report: string[],
  where: string,
): Manifest {
  const kind = typeof doc.kind === 'string' ? doc.kind : '';
  const meta = (typeof doc.metadata === 'object' && doc.metadata !== null ? doc.metadata : {}) as {
    name?: string;
    namespace?: string;
  };
  const label = `${kind || '(no kind)'}/${meta.name ?? '?'}`;
  if (kind === 'List' || kind.endsWith('List')) {
    if (!Array.isArray(doc.items)) {
      report.push(`${where} ${label}: passed through unchanged (no items)`);
      return doc;
    }
    return {
      ...doc,
      items: doc.items.map((item, i) => {
        if (typeof item !== 'object' || item === null || Array.isArray(item))
          throw badRequest(`${where}.items[${i}]: not a Kubernetes object`);
        return transformManifest(item as Manifest, transform, report, `${where}.items[${i}]`);
      }),
    };
  }
  const path = TEMPLATE_PATHS[kind];
  if (!path) {
    // Said, not silent: a workload kind edgemesh does not know (a CRD such as an Argo Rollout)
    // has pods that this command did not touch.
    report.push(`${label}: passed through unchanged: not a kind with a pod template edgemesh knows`);
    return doc;
  }
  const clone = structuredClone(doc);
  let holder: Record<string, unknown> = clone;
  for (const key of path.slice(0, -1)) {
    const next = holder[key];
    if (typeof next !== 'object' || next === null)
      throw badRequest(`${where} ${label}: missing ${path.join('.')}`);
    holder = next as Record<string, unknown>;
  }
  const last = path.at(-1);
  const pod = (last === undefined ? clone : holder[last]) as V1Pod | undefined;
  if (!pod || typeof pod !== 'object' || !pod.spec || !Array.isArray(pod.spec.containers)) {
    throw badRequest(
      `${where} ${label}: no pod spec with containers at ${path.join('.') || 'the top level'}`,
    );
  }
  const { pod: changed, line } = transform(pod, meta.namespace ?? '', label, where);
  report.push(line);
  if (!changed) return doc;
  if (last === undefined) return changed as unknown as Manifest;
  holder[last] = changed;
  return clone;
}

/** Multi-document YAML (or JSON) in, multi-document YAML out. */
export function injectText(text: string, config: InjectionConfig, source?: string): ManualResult {
  return transformText(text, (doc, report, where) => injectManifest(doc, config, report, where), source);
}

/** Multi-document YAML (or JSON) in, the same without what injection added, YAML out. */
export function uninjectText(text: string, source?: string): ManualResult {
  return transformText(text, uninjectManifest, source);
}

function transformText(
  text: string,
  each: (doc: Manifest, report: string[], where: string) => Manifest,
  source: string | undefined,
): ManualResult {
  const docs = YAML.parseAllDocuments(text);
  const report: string[] = [];
  const out: string[] = [];
  const prefix = source === undefined ? '' : `${source}: `;
  docs.forEach((d, i) => {
    const where = `${prefix}document ${i + 1}`;
    if (d.errors.length > 0) throw badRequest(`${where}: ${d.errors[0].message}`);
    const value = d.toJS() as unknown;
    if (value === null || value === undefined) return;
    if (typeof value !== 'object' || Array.isArray(value))
      throw badRequest(`${where}: not a Kubernetes object`);
    const lines: string[] = [];
    const result = each(value as Manifest, lines, where);
    report.push(...lines.map((l) => prefix + l));
    // No anchors or aliases (&a1 / *a1) for objects shared in memory or in the input: some
    // GitOps tools and reviewers do not follow them.
    out.push(YAML.stringify(result, { lineWidth: 0, aliasDuplicateObjects: false }));
  });
  return { yaml: out.join('---\n'), report };
}
