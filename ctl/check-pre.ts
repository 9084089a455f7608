/**
 * `edgemesh check --pre`: can edgemesh be installed here? Pure judgements of what
 * check-read.ts read (a value, or the Error that reading it gave): the Kubernetes version
 * (native sidecars), the caller's permission to create every kind the manifests and
 * `edgemesh webhook-tls` create, and the namespace being free or already edgemesh's.
 */
import type { CheckResult } from './check-format.ts';
import type { PodSummary } from './pods.ts';

/** Native sidecars (init containers with restartPolicy: Always) are on by default from 1.29. */
export const MIN_KUBERNETES = [1, 29] as const;

/**
 * What installing takes, as SelfSubjectAccessReviews: every kind in manifests/ (base and
 * overlays; check.test.ts keeps this list equal to them) created, plus what
 * `edgemesh webhook-tls` does (Secrets and the mesh-CA ConfigMap created, the webhook
 * configuration's caBundle patched) and what `edgemesh config set` does in the install's
 * step 3 (edgemesh-config patched, the gateway DaemonSets read and restarted with a
 * pod-template patch: config-cli.ts "Needs"). Namespaced ones are asked in the edgemesh
 * namespace.
 */
export const INSTALL_ACCESS: readonly {
  verb: string;
  group: string;
  resource: string;
  namespaced: boolean;
}[] = [
  { verb: 'create', group: '', resource: 'namespaces', namespaced: false },
  { verb: 'create', group: '', resource: 'serviceaccounts', namespaced: true },
  { verb: 'create', group: '', resource: 'configmaps', namespaced: true },
  { verb: 'create', group: '', resource: 'secrets', namespaced: true },
  { verb: 'create', group: '', resource: 'services', namespaced: true },
  { verb: 'create', group: 'apps', resource: 'deployments', namespaced: true },
  { verb: 'create', group: 'apps', resource: 'daemonsets', namespaced: true },
  { verb: 'create', group: 'policy', resource: 'poddisruptionbudgets', namespaced: true },
  { verb: 'create', group: 'networking.k8s.io', resource: 'networkpolicies', namespaced: true },
  { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'roles', namespaced: true },
  { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'rolebindings', namespaced: true },
  { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'clusterroles', namespaced: false },
  { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'clusterrolebindings', namespaced: false },
  {
    verb: 'create',
    group: 'admissionregistration.k8s.io',
    resource: 'mutatingwebhookconfigurations',
    namespaced: false,
  },
  {
    verb: 'patch',
    group: 'admissionregistration.k8s.io',
    resource: 'mutatingwebhookconfigurations',
    namespaced: false,
  },
  { verb: 'patch', group: '', resource: 'configmaps', namespaced: true },
  { verb: 'get', group: 'apps', resource: 'daemonsets', namespaced: true },
  { verb: 'patch', group: 'apps', resource: 'daemonsets', namespaced: true },
];

export type Read<T> = T | Error;

export interface PreInput {
  server: string;
  namespace: string;
  /** gitVersion, e.g. v1.31.4. */
  version: Read<string>;
  /** One answer per INSTALL_ACCESS entry, same order. */
  access: Read<boolean>[];
  /** The namespace's labels, or null when it does not exist. */
  namespaceLabels: Read<Record<string, string> | null>;
  /** Pods and ConfigMap names in it (read only when it exists). */
  namespacePods?: Read<PodSummary[]>;
  namespaceConfigMaps?: Read<string[]>;
}

const GROUP = 'pre-installation';

/** `v1.31.4`, `v1.29.0-eks-1234` → [1, 31]; undefined when not a version. */
export function kubernetesMinor(gitVersion: string): [number, number] | undefined {
  const m = /^v?(\d+)\.(\d+)/.exec(gitVersion);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

const accessName = (a: (typeof INSTALL_ACCESS)[number], namespace: string) =>
  `${a.verb} ${a.group ? `${a.resource}.${a.group}` : a.resource}${a.namespaced ? ` in ${namespace}` : ''}`;

export function versionCheck(version: string): CheckResult {
  const v = kubernetesMinor(version);
  const [maj, min] = MIN_KUBERNETES;
  if (!v)
    return {
      group: GROUP,
      id: 'kubernetes-version',
      status: 'fail',
      message: `Kubernetes version ${JSON.stringify(version)} cannot be read as MAJOR.MINOR`,
      hint: `edgemesh needs Kubernetes ${maj}.${min} or newer (native sidecars); check kubectl version`,
    };
  const ok = v[0] > maj || (v[0] === maj && v[1] >= min);
  return ok
    ? {
        group: GROUP,
        id: 'kubernetes-version',
        status: 'pass',
        message: `Kubernetes ${version} is ${maj}.${min} or newer (native sidecars)`,
      }
    : {
        group: GROUP,
        id: 'kubernetes-version',
        status: 'fail',
        message: `Kubernetes ${version} is older than ${maj}.${min}`,
        details: ['the injected proxy is a native sidecar (an init container with restartPolicy: Always)'],
        hint: `upgrade the control plane and kubelets to ${maj}.${min} or newer`,
      };
}

export function accessCheck(access: readonly Read<boolean>[], namespace: string): CheckResult {
  const denied: string[] = [];
  const unknown: string[] = [];
  INSTALL_ACCESS.forEach((a, i) => {
    const r = access[i];
    if (r instanceof Error) unknown.push(`${accessName(a, namespace)}: ${r.message}`);
    else if (r !== true) denied.push(accessName(a, namespace));
  });
  if (denied.length === 0 && unknown.length === 0)
    return {
      group: GROUP,
      id: 'install-rbac',
      status: 'pass',
      message: `can create every kind edgemesh installs and set its config (${INSTALL_ACCESS.length} permissions asked)`,
    };
  return {
    group: GROUP,
    id: 'install-rbac',
    status: 'fail',
    message:
      denied.length > 0
        ? `not allowed to ${denied.length} of ${INSTALL_ACCESS.length} things installing and configuring needs`
        : `could not ask the API server about ${unknown.length} permissions`,
    details: [...denied.map((d) => `denied: ${d}`), ...unknown],
    hint: 'run the install as a cluster admin, or have one grant these (kubectl auth can-i VERB RESOURCE -n NAMESPACE tells)',
  };
}

/** The namespace is free (absent, or holding nothing but what Kubernetes puts in every one) or edgemesh's. */
export function namespaceCheck(input: PreInput): CheckResult {
  const base = { group: GROUP, id: 'namespace' };
  const ns = input.namespace;
  const labels = input.namespaceLabels;
  if (labels instanceof Error)
    return {
      ...base,
      status: 'fail',
      message: `could not read namespace ${ns}`,
      details: [labels.message],
      hint: 'needs get namespaces',
    };
  if (labels === null)
    return {
      ...base,
      status: 'pass',
      message: `namespace ${ns} does not exist yet (the manifests create it)`,
    };
  const pods = input.namespacePods ?? [];
  const configMaps = input.namespaceConfigMaps ?? [];
  if (pods instanceof Error || configMaps instanceof Error)
    return {
      ...base,
      status: 'fail',
      message: `namespace ${ns} exists and its contents could not be read`,
      details: [pods, configMaps].filter((x): x is Error => x instanceof Error).map((e) => e.message),
      hint: `needs list pods and configmaps in ${ns}`,
    };
  const ours = pods.filter((p) => p.labels['app.kubernetes.io/part-of'] === 'edgemesh');
  if (ours.length > 0 || configMaps.includes('edgemesh-config'))
    return {
      ...base,
      status: 'pass',
      message: `namespace ${ns} exists and holds edgemesh (${ours.length} pod${ours.length === 1 ? '' : 's'}): an upgrade, not a fresh install`,
    };
  const foreign = pods.map((p) => `${p.name}`);
  const foreignMaps = configMaps.filter((c) => c !== 'kube-root-ca.crt');
  if (foreign.length === 0 && foreignMaps.length === 0)
    return { ...base, status: 'pass', message: `namespace ${ns} exists and is empty` };
  return {
    ...base,
    status: 'fail',
    message: `namespace ${ns} exists and holds things that are not edgemesh's`,
    details: [
      ...(foreign.length
        ? [`pods: ${foreign.slice(0, 5).join(', ')}${foreign.length > 5 ? `, … (${foreign.length})` : ''}`]
        : []),
      ...(foreignMaps.length ? [`configmaps: ${foreignMaps.slice(0, 5).join(', ')}`] : []),
    ],
    hint: `edgemesh's manifests name ${ns} and label it (edgemesh.io/injection=disabled, Pod Security privileged): move those out, or delete the namespace if it is left over`,
  };
}

/** Whether the API server answered GET /version (every other check needs it). */
export function apiCheck(server: string, version: Read<string>, group = GROUP): CheckResult {
  return version instanceof Error
    ? {
        group,
        id: 'kubernetes-api',
        status: 'fail',
        message: `cannot use the API server ${server}`,
        details: [version.message],
        hint: 'check the kubeconfig (--kubeconfig, --context) and that the API server is up: kubectl get --raw /version',
      }
    : { group, id: 'kubernetes-api', status: 'pass', message: `the API server ${server} answers` };
}

/** Every pre-installation check, in order; later ones are skipped when the API does not answer. */
export function preChecks(input: PreInput): CheckResult[] {
  if (input.version instanceof Error) return [apiCheck(input.server, input.version)];
  return [
    apiCheck(input.server, input.version),
    versionCheck(input.version),
    accessCheck(input.access, input.namespace),
    namespaceCheck(input),
  ];
}
