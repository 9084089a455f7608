/**
 * Kubernetes objects cut down to the fields the catalog builder (from-objects.ts) reads, so
 * a gateway listing 10,000 EndpointSlices holds their endpoints, not their managedFields,
 * annotations and owner references while the list is assembled. Pure.
 *
 * Kept in step with from-objects.ts by object-fields.test.ts: every golden case builds the
 * same catalog from trimmed objects as from whole ones. Metadata keeps what the reflector's
 * cache needs as well (uid, resourceVersion). Pods are not trimmed: a gateway lists only its
 * own node's, and other code may read more of them.
 */
import { type ObjectKind, SERVICE_NAME_LABEL } from './from-objects.ts';
import { HASH_HEADER_ANNOTATION, LB_POLICY_ANNOTATION, UDP_IDLE_TIMEOUT_ANNOTATION } from './types.ts';

type Loose = Record<string, unknown>;
const isRecord = (v: unknown): v is Loose => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Copies the listed keys that are present (a missing key stays missing, as the builder expects). */
function pick(from: unknown, keys: readonly string[]): Loose | undefined {
  if (!isRecord(from)) return from === undefined ? undefined : {};
  const out: Loose = {};
  for (const k of keys) if (from[k] !== undefined) out[k] = from[k];
  return out;
}

/** The Service annotations the builder reads (from-objects.ts serviceFromObject). */
const SERVICE_ANNOTATIONS = [
  LB_POLICY_ANNOTATION,
  HASH_HEADER_ANNOTATION,
  UDP_IDLE_TIMEOUT_ANNOTATION,
] as const;

function trimMetadata(m: unknown): Loose | undefined {
  const out = pick(m, ['name', 'namespace', 'uid', 'resourceVersion']);
  if (!out || !isRecord(m)) return out;
  const labels = pick(m.labels, [SERVICE_NAME_LABEL]);
  if (labels && Object.keys(labels).length > 0) out.labels = labels;
  const annotations = pick(m.annotations, SERVICE_ANNOTATIONS);
  if (annotations && Object.keys(annotations).length > 0) out.annotations = annotations;
  return out;
}

const SERVICE_SPEC = [
  'type',
  'clusterIP',
  'clusterIPs',
  'ports',
  'sessionAffinity',
  'sessionAffinityConfig',
  'externalName',
  'publishNotReadyAddresses',
] as const;
const SLICE_ENDPOINT = ['addresses', 'conditions', 'hostname', 'nodeName', 'targetRef'] as const;

/** `obj` (a list item or watch object of `kind`) with only what the builder reads. */
export function trimObject(kind: ObjectKind, obj: unknown): unknown {
  if (!isRecord(obj) || kind === 'Pod') return obj;
  const out: Loose = pick(obj, ['apiVersion', 'kind']) ?? {};
  const metadata = trimMetadata(obj.metadata);
  if (metadata) out.metadata = metadata;
  const put = (key: string, value: unknown) => {
    if (value !== undefined) out[key] = value;
  };
  switch (kind) {
    case 'Service':
      put('spec', pick(obj.spec, SERVICE_SPEC));
      break;
    case 'EndpointSlice':
      put('addressType', obj.addressType);
      put('ports', obj.ports);
      put(
        'endpoints',
        Array.isArray(obj.endpoints)
          ? obj.endpoints.map((e) => (isRecord(e) ? pick(e, SLICE_ENDPOINT) : e))
          : obj.endpoints,
      );
      break;
    case 'Endpoints':
      put('subsets', obj.subsets);
      break;
    case 'Node':
      put('status', pick(obj.status, ['addresses']));
      break;
  }
  return out;
}
