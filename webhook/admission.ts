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
      reason: `not a Pod (${String(kind.group) || 'core'}/${String(kind.version)} ${String(kind.kind)})`,
      pod: '-',
    });
  }
  if (request.operation !== 'CREATE') {
    return respond({
      outcome: 'ignored',
      code: 'not-create',
      reason: `operation ${String(request.operation)} is not CREATE`,
      pod: '-',
    });
  }
  const pod = request.object;
  if (!isObject(pod) || !isObject(pod.spec) || !Array.isArray(pod.spec.containers)) {
    throw badRequest('request.object must be a Pod with spec.containers');
  }
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
