import type { V1Container, V1EnvVar, V1Pod } from '@kubernetes/client-node';

/** What the node knows about a pod when it starts a container (the downward API's sources). */
export interface PodFacts {
  podIP: string;
  hostIP: string;
  /** ConfigMap and Secret data by "namespace/name" (Secret values already decoded). */
  configMaps?: Record<string, Record<string, string>>;
  secrets?: Record<string, Record<string, string>>;
}

export class EnvError extends Error {}

/**
 * A container's environment as the kubelet builds it: `env` in order, each value able to
 * refer to earlier ones as `$(NAME)` (`$$` escapes), `valueFrom` resolved from the pod
 * (fieldRef), ConfigMaps and Secrets. Unresolvable references are errors (the kubelet
 * would hold the container in CreateContainerConfigError), except `optional` key refs.
 */
export function containerEnv(pod: V1Pod, container: V1Container, facts: PodFacts): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of container.env ?? []) {
    const value = envValue(pod, container, v, facts, env);
    if (value !== undefined) env[v.name] = value;
  }
  return env;
}

/** Expands `$(NAME)` in a command/args entry from `env`; unknown names stay as written. */
export function expandVars(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name: string | undefined) => {
    if (match === '$$') return '$';
    return name !== undefined && name in env ? (env[name] as string) : match;
  });
}

function envValue(
  pod: V1Pod,
  container: V1Container,
  v: V1EnvVar,
  facts: PodFacts,
  earlier: Record<string, string>,
): string | undefined {
  if (v.valueFrom === undefined) return expandVars(v.value ?? '', earlier);
  const from = v.valueFrom;
  if (from.fieldRef) return fieldValue(pod, from.fieldRef.fieldPath, facts);
  const ns = pod.metadata?.namespace ?? 'default';
  const keyRef = from.configMapKeyRef ?? from.secretKeyRef;
  if (keyRef) {
    const source = from.configMapKeyRef ? facts.configMaps : facts.secrets;
    const kind = from.configMapKeyRef ? 'configmap' : 'secret';
    const value = source?.[`${ns}/${keyRef.name}`]?.[keyRef.key];
    if (value === undefined && !keyRef.optional) {
      throw new EnvError(
        `${container.name}: env ${v.name}: ${kind} ${ns}/${keyRef.name} has no key ${keyRef.key}`,
      );
    }
    return value;
  }
  throw new EnvError(
    `${container.name}: env ${v.name}: this test node supports fieldRef, configMapKeyRef and secretKeyRef only`,
  );
}

/** One downward-API field of the pod (also used for downwardAPI volumes). */
export function fieldValue(pod: V1Pod, path: string, facts: Pick<PodFacts, 'podIP' | 'hostIP'>): string {
  const meta = pod.metadata ?? {};
  const label = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
  if (label) return (label[1] === 'labels' ? meta.labels : meta.annotations)?.[label[2] as string] ?? '';
  switch (path) {
    case 'metadata.name':
      return meta.name ?? '';
    case 'metadata.namespace':
      return meta.namespace ?? '';
    case 'metadata.uid':
      return meta.uid ?? '';
    case 'spec.nodeName':
      return pod.spec?.nodeName ?? '';
    case 'spec.serviceAccountName':
      return pod.spec?.serviceAccountName ?? 'default';
    case 'status.podIP':
    case 'status.podIPs':
      return facts.podIP;
    case 'status.hostIP':
    case 'status.hostIPs':
      return facts.hostIP;
    default:
      throw new EnvError(`fieldRef ${path} is not supported by the downward API`);
  }
}

/** The uid/gid a container runs as (its securityContext over the pod's); undefined: root. */
export function containerUser(pod: V1Pod, c: V1Container): { uid: number; gid: number } | undefined {
  const uid = c.securityContext?.runAsUser ?? pod.spec?.securityContext?.runAsUser;
  if (uid === undefined || uid === 0) return undefined;
  const gid = c.securityContext?.runAsGroup ?? pod.spec?.securityContext?.runAsGroup ?? 0;
  return { uid, gid };
}
