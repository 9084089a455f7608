import {
  type CoordinationV1Api,
  type CoreV1Api,
  PatchStrategy,
  setHeaderOptions,
  type V1NodeStatus,
} from '@kubernetes/client-node';
import { createLogger } from '../../lib/log.ts';
import { apiErrorText, isApiStatus, microTime, rfc3339 } from './api-util.ts';

const log = createLogger('test-node-agent');

/** A node the agent plays the kubelet for: its network namespace is the node's host network. */
export interface TestNode {
  name: string;
  /** The node's network namespace ("host network" of its pods). */
  netns: string;
  /** InternalIP, reachable from the control plane and other nodes. */
  address: string;
  /** Pod addresses come from here (the first address goes to the node's bridge). */
  podCidr: string;
  labels?: Record<string, string>;
}

// Leases are renewed well inside their duration (the kubelet uses 40 s and renews every 10 s)
// so the node lifecycle controller never sees a node go quiet while the agent lives.
export const LEASE_SECONDS = 40;
export const LEASE_RENEW_MS = 10_000;
export const NODE_STATUS_MS = 30_000;

/** Creates (or relabels) the Node, posts its status and takes its Lease. */
export async function registerNode(
  core: CoreV1Api,
  coordination: CoordinationV1Api,
  node: TestNode,
  kubeletVersion: string,
): Promise<void> {
  const labels = {
    'kubernetes.io/hostname': node.name,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': 'amd64',
    ...node.labels,
  };
  try {
    await core.createNode({
      body: {
        metadata: { name: node.name, labels },
        spec: { podCIDR: node.podCidr, podCIDRs: [node.podCidr] },
      },
    });
  } catch (err) {
    if (!isApiStatus(err, 409)) throw err;
    await core.patchNode(
      { name: node.name, body: { metadata: { labels } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }
  await patchNodeStatus(core, node, kubeletVersion);
  try {
    await coordination.createNamespacedLease({
      namespace: 'kube-node-lease',
      body: {
        metadata: { name: node.name },
        spec: { holderIdentity: node.name, leaseDurationSeconds: LEASE_SECONDS },
      },
    });
  } catch (err) {
    if (!isApiStatus(err, 409)) throw err;
  }
  await renewLease(coordination, node);
  log.info({ node: node.name, address: node.address, podCidr: node.podCidr }, 'node registered');
}

/** The status a healthy kubelet posts for `node` (pure). */
export function nodeStatus(node: TestNode, kubeletVersion: string, now: string): V1NodeStatus {
  const condition = (type: string, status: string, reason: string) => ({
    type,
    status,
    reason,
    message: `edgemesh test node agent: ${reason}`,
    lastHeartbeatTime: now as unknown as Date,
  });
  const capacity = { cpu: '8', memory: '16Gi', pods: '110', 'ephemeral-storage': '100Gi' };
  return {
    conditions: [
      condition('Ready', 'True', 'KubeletReady'),
      condition('MemoryPressure', 'False', 'KubeletHasSufficientMemory'),
      condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure'),
      condition('PIDPressure', 'False', 'KubeletHasSufficientPID'),
    ],
    addresses: [
      { type: 'InternalIP', address: node.address },
      { type: 'Hostname', address: node.name },
    ],
    capacity,
    allocatable: capacity,
    daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
    nodeInfo: {
      machineID: node.name,
      systemUUID: node.name,
      bootID: node.name,
      kernelVersion: '',
      osImage: 'edgemesh test node',
      containerRuntimeVersion: 'edgemesh-test://0',
      kubeletVersion,
      kubeProxyVersion: '',
      operatingSystem: 'linux',
      architecture: 'amd64',
    },
  };
}

/** Heartbeat through the Node's status (conditions' lastHeartbeatTime); failures are logged. */
export async function patchNodeStatus(
  core: CoreV1Api,
  node: TestNode,
  kubeletVersion: string,
): Promise<void> {
  const body = { status: nodeStatus(node, kubeletVersion, rfc3339(new Date())) };
  await core
    .patchNodeStatus(
      { name: node.name, body },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    )
    .catch((err) => log.warn({ node: node.name, err: apiErrorText(err) }, 'node status patch failed'));
}

/** Heartbeat through the Lease in kube-node-lease; failures are logged. */
export async function renewLease(coordination: CoordinationV1Api, node: TestNode): Promise<void> {
  const body = {
    spec: {
      holderIdentity: node.name,
      leaseDurationSeconds: LEASE_SECONDS,
      renewTime: microTime(new Date()),
    },
  };
  await coordination
    .patchNamespacedLease(
      { name: node.name, namespace: 'kube-node-lease', body },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    )
    .catch((err) => log.warn({ node: node.name, err: apiErrorText(err) }, 'lease renewal failed'));
}
