import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { TRAFFIC_OPTIONS } from '../lib/traffic.ts';
import { INJECTION_VERSION, type InjectionConfig } from './config.ts';

/**
 * Pure injection: what a pod gets, as RFC 6902 JSON Patch operations against the pod as
 * submitted. The webhook returns these ops; `edgemesh inject` applies them to workload
 * templates; golden files pin both. Nothing here does I/O.
 */
export const INIT_NAME = 'edgemesh-init';
export const PROXY_NAME = 'edgemesh-proxy';
export const STATUS_ANNOTATION = 'sidecar.edgemesh.io/status';
export const INJECT_LABEL = 'sidecar.edgemesh.io/inject';
const RESERVED_PORTS_SYSCTL = 'net.ipv4.ip_local_reserved_ports';
const RESERVED_PORTS = '15000-15100';

export type PatchOp = { op: 'add' | 'replace'; path: string; value: unknown };

/** A pod that must not be admitted as is (e.g. a malformed traffic annotation). */
export class InjectionError extends Error {
  override name = 'InjectionError';
}

/** RFC 6901: `~` → `~0`, `/` → `~1` inside one path segment. */
export const escapePointer = (segment: string): string => segment.replace(/~/g, '~0').replace(/\//g, '~1');

export type SkipCode = 'excluded-namespace' | 'host-network' | 'opted-out' | 'already-injected';

/** Why this pod is not injected (a stable code for metrics and a message for logs), or undefined. */
export function skipReason(
  pod: V1Pod,
  namespace: string,
  config: InjectionConfig,
): { code: SkipCode; message: string } | undefined {
  if (config.excludedNamespaces.includes(namespace))
    return { code: 'excluded-namespace', message: `namespace ${namespace} is never injected` };
  if (pod.spec?.hostNetwork) return { code: 'host-network', message: 'pod uses hostNetwork' };
  if (pod.metadata?.labels?.[INJECT_LABEL] === 'false')
    return { code: 'opted-out', message: `pod has label ${INJECT_LABEL}=false` };
  if (pod.metadata?.annotations?.[STATUS_ANNOTATION] !== undefined) {
    return { code: 'already-injected', message: `${STATUS_ANNOTATION} is present` };
  }
  const names = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].map((c) => c.name);
  const clash = names.find((n) => n === INIT_NAME || n === PROXY_NAME);
  if (clash) return { code: 'already-injected', message: `pod already has a container named ${clash}` };
  return undefined;
}

/** Turns the pod's traffic annotations into init flags, validating each (throws InjectionError). */
export function trafficFlags(pod: V1Pod): string[] {
  const annotations = pod.metadata?.annotations ?? {};
  const flags: string[] = [];
  for (const option of TRAFFIC_OPTIONS) {
    const value = annotations[option.annotation];
    if (value === undefined) continue;
    try {
      option.parse(value);
    } catch (err) {
      throw new InjectionError(`annotation ${option.annotation}: ${(err as Error).message}`);
    }
    flags.push(`--${option.flag}=${value.trim()}`);
  }
  return flags;
}

/**
 * `traffic.edgemesh.io/capture-udp: "true"` on the pod: the init also captures outbound UDP (TPROXY,
 * docs/udp.md) and the sidecar proxies it. Off by default and per pod: the sidecar then runs
 * as root with NET_ADMIN and NET_BIND_SERVICE (below). Values "true"/"false"; anything else refuses the pod.
 */
export const CAPTURE_UDP_ANNOTATION = 'traffic.edgemesh.io/capture-udp';

export function capturesUdp(pod: V1Pod): boolean {
  const value = pod.metadata?.annotations?.[CAPTURE_UDP_ANNOTATION];
  if (value === undefined) return false;
  const text = value.trim().toLowerCase();
  if (text === 'true') return true;
  if (text === 'false') return false;
  throw new InjectionError(
    `annotation ${CAPTURE_UDP_ANNOTATION}: ${JSON.stringify(value)} is not true or false`,
  );
}

/**
 * The UDP flags, the same for the init (where its TPROXY rules deliver) and the sidecar (where
 * it listens): `--udp-port` only when the config sets one, so both keep their common default.
 */
function udpFlags(config: InjectionConfig): string[] {
  return ['--capture-udp=true', ...(config.udpPort === undefined ? [] : [`--udp-port=${config.udpPort}`])];
}

export function initContainer(pod: V1Pod, config: InjectionConfig): V1Container {
  return {
    name: INIT_NAME,
    image: config.image,
    imagePullPolicy: config.imagePullPolicy,
    args: [
      'init',
      `--proxy-uid=${config.proxyUid}`,
      `--proxy-gid=${config.proxyGid}`,
      `--proxy-port=${config.proxyPort}`,
      `--dns-port=${config.dnsPort}`,
      ...trafficFlags(pod),
      ...(capturesUdp(pod) ? udpFlags(config) : []),
    ],
    resources: structuredClone(config.initResources),
    // Root with only the two capabilities iptables needs; explicit so a pod-level
    // runAsNonRoot/runAsUser does not stop the rules from being written.
    securityContext: {
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    },
  };
}

const fieldEnv = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } });

/** The only capabilities a UDP-capturing sidecar keeps (why: proxyContainer below). */
export const UDP_SIDECAR_CAPABILITIES = ['NET_ADMIN', 'NET_BIND_SERVICE'] as const;

/**
 * The sidecar. With UDP capture (`udp`) it binds transparent sockets (IP_TRANSPARENT), which
 * needs CAP_NET_ADMIN when each socket is made: a non-root container cannot hold an added
 * capability (Kubernetes sets no ambient capabilities, and exec as a non-root uid clears
 * them), so it runs as uid 0 with every capability dropped but NET_ADMIN — and gid 1337,
 * which the capture rules exempt (`--gid-owner`), so its own traffic is not captured again.
 * Istio's TPROXY interception mode runs its proxy the same way (uid 0, gid 1337, NET_ADMIN).
 * NET_BIND_SERVICE as well: replies leave from a socket bound to ClusterIP:port, and a
 * Service port below 1024 (DNS on 53, syslog on 514) is a privileged bind without it
 * (EACCES; found on the real cluster with a dnsmasq Service).
 */
export function proxyContainer(config: InjectionConfig, udp = false): V1Container {
  const probe = { httpGet: { path: '/ready', port: config.healthPort } };
  return {
    name: PROXY_NAME,
    image: config.image,
    imagePullPolicy: config.imagePullPolicy,
    args: [
      'sidecar',
      `--proxy-port=${config.proxyPort}`,
      `--dns-port=${config.dnsPort}`,
      `--health-port=${config.healthPort}`,
      `--metrics-port=${config.metricsPort}`,
      `--cluster-domain=${config.clusterDomain}`,
      ...(udp ? udpFlags(config) : []),
    ],
    // Native sidecar: starts before the app containers and outlives them.
    restartPolicy: 'Always',
    env: [
      fieldEnv('POD_NAME', 'metadata.name'),
      fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
      // The pod's name, namespace and uid are how its sidecar announces a new IP to the node's
      // gateway when the pod restarts while the API is away (gateway/pod-moves.ts).
      fieldEnv('POD_UID', 'metadata.uid'),
      fieldEnv('POD_IP', 'status.podIP'),
      fieldEnv('NODE_NAME', 'spec.nodeName'),
      fieldEnv('HOST_IP', 'status.hostIP'),
      { name: 'EDGEMESH_GATEWAY', value: `$(HOST_IP):${config.gatewayPort}` },
      { name: 'EDGEMESH_LOG_LEVEL', value: config.logLevel },
      ...(config.sidecarNodeOptions ? [{ name: 'NODE_OPTIONS', value: config.sidecarNodeOptions }] : []),
      // One glibc malloc arena: each thread that mallocs otherwise gets its own (64 MB reserved,
      // partly touched); the sidecar allocates on its event loop. ~0.4 MB private per pod.
      { name: 'MALLOC_ARENA_MAX', value: '1' },
    ],
    ports: [{ name: 'mesh-metrics', containerPort: config.metricsPort, protocol: 'TCP' }],
    // The startup probe holds the app containers back until DNS and the proxy listen.
    startupProbe: { ...probe, periodSeconds: 1, failureThreshold: 120 },
    readinessProbe: { ...probe, periodSeconds: 5, failureThreshold: 3 },
    resources: structuredClone(config.sidecarResources),
    securityContext: udp
      ? {
          runAsUser: 0,
          runAsGroup: config.proxyGid,
          runAsNonRoot: false,
          privileged: false,
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          capabilities: { add: [...UDP_SIDECAR_CAPABILITIES], drop: ['ALL'] },
        }
      : {
          runAsUser: config.proxyUid,
          runAsGroup: config.proxyGid,
          runAsNonRoot: true,
          privileged: false,
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          capabilities: { drop: ['ALL'] },
        },
  };
}

/**
 * The status annotation's value: what was injected, and what injection created or changed
 * besides its own containers, so that `edgemesh uninject` (uninject.ts) removes exactly that
 * and leaves the pod as it was, whatever the pod had before.
 */
export interface InjectionRecord {
  version: string;
  initContainers: string[];
  containers: string[];
  /** Objects injection created (JSON pointers into the pod); each goes again if left empty. */
  created?: string[];
  /** The reserved-ports sysctl: an entry appended, or its value before (null: it had none). */
  reservedPorts?: { appended: true } | { before: string | null };
}

/** The objects injection may create, deepest last: the only pointers `created` may hold. */
export const CREATABLE = [
  '/metadata',
  '/metadata/annotations',
  '/spec/initContainers',
  '/spec/securityContext',
  '/spec/securityContext/sysctls',
] as const;

export const RESERVED_PORTS_SYSCTL_NAME = RESERVED_PORTS_SYSCTL;

export function statusAnnotation(
  changes: Omit<InjectionRecord, 'version' | 'initContainers' | 'containers'> = {},
): string {
  const record: InjectionRecord = {
    version: INJECTION_VERSION,
    initContainers: [INIT_NAME, PROXY_NAME],
    containers: [],
  };
  if (changes.created && changes.created.length > 0) record.created = changes.created;
  if (changes.reservedPorts) record.reservedPorts = changes.reservedPorts;
  return JSON.stringify(record);
}

/**
 * The patch that injects `pod`. Callers check skipReason first; throws InjectionError for
 * a pod that cannot be injected as configured.
 */
export function injectionPatch(pod: V1Pod, config: InjectionConfig): PatchOp[] {
  const ops: PatchOp[] = [];
  const created: string[] = [];
  const init = initContainer(pod, config);
  const proxy = proxyContainer(config, capturesUdp(pod));

  // edgemesh-init first, edgemesh-proxy right after it, then the pod's own init containers
  // untouched: their traffic is captured too.
  if (pod.spec?.initContainers && pod.spec.initContainers.length > 0) {
    ops.push({ op: 'add', path: '/spec/initContainers/0', value: init });
    ops.push({ op: 'add', path: '/spec/initContainers/1', value: proxy });
  } else {
    if (!pod.spec?.initContainers) created.push('/spec/initContainers');
    ops.push({
      op: pod.spec?.initContainers ? 'replace' : 'add',
      path: '/spec/initContainers',
      value: [init, proxy],
    });
  }

  const ports = reservedPortsOps(pod);
  ops.push(...ports.ops);
  if (ports.created) created.push(...ports.created);

  // The annotation first in the patch, written last: it records what the rest changed.
  const value = () => statusAnnotation({ created, reservedPorts: ports.record });
  if (!pod.metadata) {
    created.unshift('/metadata', '/metadata/annotations');
    ops.unshift({ op: 'add', path: '/metadata', value: { annotations: { [STATUS_ANNOTATION]: value() } } });
  } else if (!pod.metadata.annotations) {
    created.unshift('/metadata/annotations');
    ops.unshift({ op: 'add', path: '/metadata/annotations', value: { [STATUS_ANNOTATION]: value() } });
  } else {
    ops.unshift({
      op: 'add',
      path: `/metadata/annotations/${escapePointer(STATUS_ANNOTATION)}`,
      value: value(),
    });
  }
  return ops;
}

interface ReservedPortsChange {
  ops: PatchOp[];
  /** The objects created for the sysctl, if any. */
  created?: (typeof CREATABLE)[number][];
  record?: InjectionRecord['reservedPorts'];
}

/**
 * Reserve the sidecar's port range through the pod's sysctls (a "safe" sysctl since
 * Kubernetes 1.27), so an app's ephemeral port can never take 15001/15053. An existing
 * value is kept and extended.
 */
function reservedPortsOps(pod: V1Pod): ReservedPortsChange {
  const securityContext = pod.spec?.securityContext;
  const entry = { name: RESERVED_PORTS_SYSCTL, value: RESERVED_PORTS };
  if (!securityContext) {
    return {
      ops: [{ op: 'add', path: '/spec/securityContext', value: { sysctls: [entry] } }],
      // Both, so that uninject removes the emptied sysctls, then the emptied securityContext.
      created: ['/spec/securityContext', '/spec/securityContext/sysctls'],
      record: { appended: true },
    };
  }
  const sysctls = securityContext.sysctls;
  if (!sysctls) {
    return {
      ops: [{ op: 'add', path: '/spec/securityContext/sysctls', value: [entry] }],
      created: ['/spec/securityContext/sysctls'],
      record: { appended: true },
    };
  }
  const index = sysctls.findIndex((s) => s.name === RESERVED_PORTS_SYSCTL);
  if (index === -1) {
    return {
      ops: [{ op: 'add', path: '/spec/securityContext/sysctls/-', value: entry }],
      record: { appended: true },
    };
  }
  const existing = sysctls[index].value ?? '';
  if (
    existing
      .split(',')
      .map((s) => s.trim())
      .includes(RESERVED_PORTS)
  )
    return { ops: [] };
  const value = existing.trim() === '' ? RESERVED_PORTS : `${existing},${RESERVED_PORTS}`;
  // 'add' sets a member whether or not it is there; 'replace' fails on a sysctl without a value.
  return {
    ops: [
      {
        op: sysctls[index].value === undefined ? 'add' : 'replace',
        path: `/spec/securityContext/sysctls/${index}/value`,
        value,
      },
    ],
    record: { before: sysctls[index].value ?? null },
  };
}
