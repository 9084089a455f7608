import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { GATEWAY_NODE_FLAGS } from '../../gateway/tunnel/node-flags.ts';
import { waitFor } from '../harness/netns.ts';
import type { LabNode } from './lab.ts';
import type { TunnelLab } from './tunnel-fixture.ts';

/**
 * What the NAT lab's UDP tests share: a lab node running gateway/testing/udp-node.ts (the
 * gateway's tunnel, its LocalDialer as the far end, forwarders as the near end) and a real DNS
 * server in a pod. One place, so a change to the node's flags or its readiness wait is made
 * once.
 */
const NODE = new URL('../../node_modules/.bin/node', import.meta.url).pathname;
const PROGRAM = new URL('../../gateway/testing/udp-node.ts', import.meta.url).pathname;

/** A lab pod and its endpoint ports, as the node's catalog lists them (udp-node.ts --pods). */
export interface UdpLabPod {
  node: string;
  ip: string;
  ports: { port: number; protocol: 'UDP' | 'TCP' }[];
}

/** Each pod with one UDP endpoint port. */
export function udpPods(nodes: readonly LabNode[], port: number): UdpLabPod[] {
  return nodes.map((n) => ({ node: n.name, ip: n.pods[0].addr, ports: [{ port, protocol: 'UDP' }] }));
}

/**
 * Starts udp-node.ts on `node` and waits for READY: the node's --ready-timeout (15 s) plus
 * enrolment retries (up to 15 s apart), so 60 s; a node that exits or never gets there fails
 * with its log. Everything it prints is appended to `output` under the node's name.
 */
export async function startUdpNode(
  t: TunnelLab,
  node: LabNode,
  forward: string,
  pods: readonly UdpLabPod[],
  output: Map<string, string>,
  extra: readonly string[] = [],
): Promise<ChildProcess> {
  const peers = t.lab.sites.flatMap((s) => s.nodes.map((x) => `${x.name}=${x.addr}`)).join(',');
  const child = t.lab.spawn(node.ns, [
    NODE,
    ...GATEWAY_NODE_FLAGS,
    PROGRAM,
    '--node',
    node.name,
    '--state-dir',
    join(t.dir, node.name),
    '--ca',
    t.caFile,
    '--servers',
    t.serverList,
    '--token',
    t.tokens.get(node.name) ?? '',
    '--lan',
    node.addr,
    '--peer-addresses',
    peers,
    '--pods',
    JSON.stringify(pods),
    '--forward',
    forward,
    ...extra,
  ]);
  output.set(node.name, '');
  const append = (b: Buffer) => output.set(node.name, (output.get(node.name) ?? '') + b.toString());
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  await waitFor(
    () => (output.get(node.name) ?? '').includes('READY') || child.exitCode !== null,
    60_000,
    100,
    `${node.name} ready`,
  ).catch(() => undefined);
  if (!output.get(node.name)?.includes('READY'))
    throw new Error(
      `${node.name} not ready (exit ${child.exitCode}):\n${output.get(node.name)?.slice(-3000)}`,
    );
  return child;
}

/** dnsmasq in `pod` on `port`, knowing one name only (no upstream: anything else is refused). */
export function spawnDnsmasq(
  t: TunnelLab,
  pod: { ns: string; addr: string },
  port: number,
  name: string,
  answer: string,
): ChildProcess {
  return t.lab.spawn(pod.ns, [
    'dnsmasq',
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--pid-file=',
    '--no-resolv',
    '--no-hosts',
    '--bind-interfaces',
    '--user=root',
    `--listen-address=${pod.addr}`,
    `--port=${port}`,
    `--address=/${name}/${answer}`,
  ]);
}
