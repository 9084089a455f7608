import type { V1ContainerStatus, V1Pod, V1PodCondition, V1PodStatus } from '@kubernetes/client-node';

/**
 * What the node agent knows about one container. `role` follows the kubelet: regular init
 * containers run to completion in order; sidecars (initContainers with restartPolicy
 * Always) start in order and keep running; app containers start together after them.
 */
export interface ContainerRecord {
  name: string;
  image: string;
  role: 'init' | 'sidecar' | 'app';
  state:
    | { kind: 'waiting'; reason: string; message?: string }
    | { kind: 'running'; startedAt: string }
    | { kind: 'terminated'; exitCode: number; reason: string; startedAt?: string; finishedAt: string };
  /** The previous run, after a restart. */
  lastTerminated?: { exitCode: number; reason: string; finishedAt: string };
  restartCount: number;
  /** Startup probe passed (or none). */
  started: boolean;
  /** Readiness probe passing (or none, and running). */
  ready: boolean;
}

export interface PodRecord {
  uid: string;
  podIP: string;
  hostIP: string;
  startTime: string;
  /** The pod's network namespace and containers' processes can be set up. */
  sandboxReady: boolean;
  containers: ContainerRecord[];
  /** A failure the pod cannot recover from (e.g. a regular init container failed). */
  failed?: { reason: string; message: string };
}

/**
 * The pod status the kubelet would report for `record` (pure). Conditions follow the
 * kubelet's rules: Initialized when every regular init container exited 0 and every
 * sidecar has started; ContainersReady when every app container (and sidecar) is ready;
 * Ready likewise (no readiness gates here). PodScheduled is the scheduler's and is left out.
 */
export function podStatus(pod: V1Pod, record: PodRecord, now: string): V1PodStatus {
  const initRecords = record.containers.filter((c) => c.role !== 'app');
  const appRecords = record.containers.filter((c) => c.role === 'app');
  const initialized = initRecords.every((c) =>
    c.role === 'init' ? c.state.kind === 'terminated' && c.state.exitCode === 0 : c.started,
  );
  const running = appRecords.filter((c) => c.state.kind === 'running');
  const terminated = appRecords.filter((c) => c.state.kind === 'terminated');
  const allReady = record.containers.filter((c) => c.role !== 'init').every((c) => c.ready);
  const restartPolicy = pod.spec?.restartPolicy ?? 'Always';

  let phase: string;
  if (record.failed) phase = 'Failed';
  else if (!initialized) phase = 'Pending';
  else if (terminated.length === appRecords.length && appRecords.length > 0 && restartPolicy !== 'Always') {
    phase = terminated.every((c) => c.state.kind === 'terminated' && c.state.exitCode === 0)
      ? 'Succeeded'
      : 'Failed';
  } else if (running.length > 0 || terminated.length > 0 || appRecords.some((c) => c.lastTerminated)) {
    // A container in back-off after having run still counts: the kubelet reports Running.
    phase = 'Running';
  } else phase = 'Pending';

  const condition = (type: string, ok: boolean, reason?: string): V1PodCondition => ({
    type,
    status: ok ? 'True' : 'False',
    ...(ok || !reason ? {} : { reason }),
    lastTransitionTime: transitionTime(pod, type, ok, now),
  });
  const notReady = appRecords.filter((c) => !c.ready).map((c) => c.name);
  const containersReady = allReady && appRecords.length > 0 && phase === 'Running';
  const status: V1PodStatus = {
    phase,
    hostIP: record.hostIP,
    hostIPs: [{ ip: record.hostIP }],
    startTime: record.startTime as unknown as Date,
    conditions: [
      condition('PodReadyToStartContainers', record.sandboxReady),
      condition('Initialized', initialized, 'ContainersNotInitialized'),
      condition('ContainersReady', containersReady, 'ContainersNotReady'),
      condition('Ready', containersReady, 'ContainersNotReady'),
    ],
    initContainerStatuses: initRecords.map((c) => containerStatus(pod, c)),
    containerStatuses: appRecords.map((c) => containerStatus(pod, c)),
  };
  if (record.podIP) {
    status.podIP = record.podIP;
    status.podIPs = [{ ip: record.podIP }];
  }
  if (record.failed) {
    status.reason = record.failed.reason;
    status.message = record.failed.message;
  } else if (!containersReady && notReady.length > 0 && phase === 'Running') {
    status.message = `containers with unready status: [${notReady.join(' ')}]`;
  }
  return status;
}

function containerStatus(pod: V1Pod, c: ContainerRecord): V1ContainerStatus {
  const state =
    c.state.kind === 'waiting'
      ? { waiting: { reason: c.state.reason, ...(c.state.message ? { message: c.state.message } : {}) } }
      : c.state.kind === 'running'
        ? { running: { startedAt: c.state.startedAt } }
        : {
            terminated: {
              exitCode: c.state.exitCode,
              reason: c.state.reason,
              ...(c.state.startedAt ? { startedAt: c.state.startedAt } : {}),
              finishedAt: c.state.finishedAt,
            },
          };
  return {
    name: c.name,
    image: c.image,
    imageID: `edgemesh-test://${c.image}`,
    ...(c.state.kind === 'waiting' && c.restartCount === 0
      ? {}
      : { containerID: `edgemesh-test://${pod.metadata?.uid ?? ''}/${c.name}/${c.restartCount}` }),
    ready: c.ready,
    started: c.started && c.state.kind === 'running',
    restartCount: c.restartCount,
    state: state as unknown as V1ContainerStatus['state'],
    ...(c.lastTerminated
      ? { lastState: { terminated: c.lastTerminated } as unknown as V1ContainerStatus['lastState'] }
      : {}),
  };
}

/** Keeps a condition's transition time while its status is unchanged, as the kubelet does. */
function transitionTime(pod: V1Pod, type: string, ok: boolean, now: string): Date {
  const previous = pod.status?.conditions?.find((c) => c.type === type);
  const same = previous && previous.status === (ok ? 'True' : 'False');
  const t = same && previous.lastTransitionTime ? previous.lastTransitionTime : now;
  return (t instanceof Date ? t.toISOString().replace(/\.\d+Z$/, 'Z') : t) as unknown as Date;
}
