import type { V1Pod } from '@kubernetes/client-node';
import jsonpatch from 'jsonpatch';
import YAML from 'yaml';
import { badRequest } from '../lib/errors.ts';
import type { InjectionConfig } from './config.ts';
import { InjectionError, injectionPatch, type PatchOp, skipReason } from './inject.ts';

/**
 * `edgemesh inject`: the webhook's patch applied to manifests, for GitOps pipelines that
 * cannot run a webhook. Pods and the pod templates of workload kinds are injected; other
 * documents pass through unchanged. Same pure functions as the webhook.
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
  const kind = typeof doc.kind === 'string' ? doc.kind : '';
  if (kind === 'List' || kind.endsWith('List')) {
    if (!Array.isArray(doc.items)) return doc;
    return {
      ...doc,
      items: doc.items.map((item, i) =>
        injectManifest(item as Manifest, config, report, `${where}.items[${i}]`),
      ),
    };
  }
  const path = TEMPLATE_PATHS[kind];
  if (!path) return doc;
  const meta = (doc.metadata ?? {}) as { name?: string; namespace?: string };
  const label = `${kind}/${meta.name ?? '?'}`;
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
  const skip = skipReason(pod, meta.namespace ?? '', config);
  if (skip) {
    report.push(`${label}: not injected: ${skip.message}`);
    return doc;
  }
  pod.metadata ??= {};
  let patched: V1Pod;
  try {
    patched = applyPatch(pod, injectionPatch(pod, config));
  } catch (err) {
    if (err instanceof InjectionError) throw badRequest(`${where} ${label}: ${err.message}`);
    throw err;
  }
  report.push(`${label}: injected`);
  if (last === undefined) return patched as unknown as Manifest;
  holder[last] = patched;
  return clone;
}

/** Multi-document YAML (or JSON) in, multi-document YAML out. */
export function injectText(text: string, config: InjectionConfig): ManualResult {
  const docs = YAML.parseAllDocuments(text);
  const report: string[] = [];
  const out: string[] = [];
  docs.forEach((d, i) => {
    if (d.errors.length > 0) throw badRequest(`document ${i + 1}: ${d.errors[0].message}`);
    const value = d.toJS() as unknown;
    if (value === null || value === undefined) return;
    if (typeof value !== 'object' || Array.isArray(value))
      throw badRequest(`document ${i + 1}: not a Kubernetes object`);
    out.push(
      YAML.stringify(injectManifest(value as Manifest, config, report, `document ${i + 1}`), {
        lineWidth: 0,
      }),
    );
  });
  return { yaml: out.join('---\n'), report };
}
