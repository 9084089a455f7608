import type { V1Pod } from '@kubernetes/client-node';
import { badRequest } from '../lib/errors.ts';
import type { InjectionConfig } from './config.ts';
import { InjectionError, injectionPatch, type PatchOp, skipReason } from './inject.ts';

/**
 * AdmissionReview (admission.k8s.io/v1) in, AdmissionReview out. `review` is pure: it
 * validates the request shape (throwing EDGEMESH_ERR_BAD_REQUEST for anything that is not
 * a well-formed review), decides, and builds the response. The HTTP layer only moves bytes.
 */
export type Outcome = 'injected' | 'skipped' | 'ignored' | 'denied';

export interface Decision {
  outcome: Outcome;
  /** Stable, low-cardinality reason for metrics: a skip code, 'injected', 'not-pod', ... */
  code: string;
  reason: string;
  /** `namespace/name` (or generateName) for logs. */
  pod: string;
  uid: string;
  dryRun: boolean;
  patch?: PatchOp[];
}

export interface AdmissionReviewResponse {
  apiVersion: 'admission.k8s.io/v1';
  kind: 'AdmissionReview';
  response: {
    uid: string;
    allowed: boolean;
    patchType?: 'JSONPatch';
    patch?: string;
    status?: { code: number; message: string };
  };
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const isStringMap = (v: unknown) => isObject(v) && Object.values(v).every((x) => typeof x === 'string');
const isNamedList = (v: unknown) =>
  Array.isArray(v) && v.every((item) => isObject(item) && typeof item.name === 'string');
const absent = (v: unknown) => v === undefined || v === null;
/** A field of the request as text: String() throws on an object whose toString is not a function. */
const show = (v: unknown): string => (typeof v === 'string' ? v : String(JSON.stringify(v)));

/**
 * What is wrong with the fields of a Pod that skipReason and injectionPatch read, or
 * undefined. The API server sends well-formed Pods; anything else is refused here with its
 * path, rather than crash the injector (a 500) or produce a patch that does not apply (found
 * by fuzzing: array annotations, a missing metadata, sysctls that are not a list).
 */
function podShapeProblem(pod: Record<string, unknown>): string | undefined {
  const metadata = pod.metadata;
  if (!isObject(metadata)) return 'metadata must be an object';
  for (const key of ['labels', 'annotations'] as const)
    if (!absent(metadata[key]) && !isStringMap(metadata[key]))
      return `metadata.${key} must map strings to strings`;
  for (const key of ['name', 'generateName'] as const)
    if (!absent(metadata[key]) && typeof metadata[key] !== 'string')
      return `metadata.${key} must be a string`;
  const spec = pod.spec as Record<string, unknown>;
  if (!isNamedList(spec.containers)) return 'spec.containers must be a list of named containers';
  if (!absent(spec.initContainers) && !isNamedList(spec.initContainers))
    return 'spec.initContainers must be a list of named containers';
  if (!absent(spec.hostNetwork) && typeof spec.hostNetwork !== 'boolean')
    return 'spec.hostNetwork must be true or false';
  const securityContext = spec.securityContext;
  if (absent(securityContext)) return undefined;
  if (!isObject(securityContext)) return 'spec.securityContext must be an object';
  const sysctls = securityContext.sysctls;
  if (
    !absent(sysctls) &&
    !(
      isNamedList(sysctls) &&
      (sysctls as Record<string, unknown>[]).every((s) => absent(s.value) || typeof s.value === 'string')
    )
  )
    return 'spec.securityContext.sysctls must be a list of {name, value} strings';
  return undefined;
}

export function review(
  body: unknown,
  config: InjectionConfig,
): { response: AdmissionReviewResponse; decision: Decision } {
  if (!isObject(body)) throw badRequest('body must be a JSON object (an AdmissionReview)');
  if (body.kind !== 'AdmissionReview')
    throw badRequest(`kind must be AdmissionReview, got ${JSON.stringify(body.kind)}`);
  if (body.apiVersion !== 'admission.k8s.io/v1') {
    throw badRequest(`apiVersion must be admission.k8s.io/v1, got ${JSON.stringify(body.apiVersion)}`);
  }
  const request = body.request;
  if (!isObject(request)) throw badRequest('request is missing');
  if (typeof request.uid !== 'string' || request.uid.length === 0 || request.uid.length > 128) {
    throw badRequest('request.uid must be a non-empty string');
  }
  const uid = request.uid;
  const dryRun = request.dryRun === true;
  const kind = request.kind;
  if (!isObject(kind)) throw badRequest('request.kind is missing');
  const namespace = typeof request.namespace === 'string' ? request.namespace : '';

  const respond = (decision: Omit<Decision, 'uid' | 'dryRun'>, allowed = true) => {
    const response: AdmissionReviewResponse['response'] = { uid, allowed };
    if (decision.patch && decision.patch.length > 0) {
      response.patchType = 'JSONPatch';
      response.patch = Buffer.from(JSON.stringify(decision.patch)).toString('base64');
    }
    if (!allowed) response.status = { code: 400, message: decision.reason };
    return {
      response: {
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        response,
      } as AdmissionReviewResponse,
      decision: { ...decision, uid, dryRun },
    };
  };

  if (
    kind.group !== '' ||
    kind.version !== 'v1' ||
    kind.kind !== 'Pod' ||
    (request.subResource ?? '') !== ''
  ) {
    return respond({
      outcome: 'ignored',
      code: 'not-pod',
      reason: `not a Pod (${show(kind.group) || 'core'}/${show(kind.version)} ${show(kind.kind)})`,
      pod: '-',
    });
  }
  if (request.operation !== 'CREATE') {
    return respond({
      outcome: 'ignored',
      code: 'not-create',
      reason: `operation ${show(request.operation)} is not CREATE`,
      pod: '-',
    });
  }
  const pod = request.object;
  if (!isObject(pod) || !isObject(pod.spec) || !Array.isArray(pod.spec.containers)) {
    throw badRequest('request.object must be a Pod with spec.containers');
  }
  const malformed = podShapeProblem(pod);
  if (malformed) throw badRequest(`request.object: ${malformed}`);
  const typed = pod as V1Pod;
  const podName = `${namespace}/${typed.metadata?.name || `${typed.metadata?.generateName ?? ''}*`}`;
  const why = skipReason(typed, namespace, config);
  if (why) return respond({ outcome: 'skipped', code: why.code, reason: why.message, pod: podName });
  try {
    const patch = injectionPatch(typed, config);
    return respond({ outcome: 'injected', code: 'injected', reason: 'injected', pod: podName, patch });
  } catch (err) {
    if (err instanceof InjectionError)
      return respond(
        { outcome: 'denied', code: 'invalid-annotation', reason: `edgemesh: ${err.message}`, pod: podName },
        false,
      );
    throw err;
  }
}
