import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { V1Container, V1Probe } from '@kubernetes/client-node';

const execFileP = promisify(execFile);

export interface ProbeTarget {
  container: V1Container;
  podIP: string;
  /** httpGet and tcpSocket probes come from here, as the kubelet's come from the host. */
  nodeNetns: string;
  /** exec probes run here, as the container's user. */
  podNetns: string;
  user: { uid: number; gid: number } | undefined;
}

/** A probe that cannot be run as written (unknown kind, unknown named port). */
export class UnsupportedProbe extends Error {}

/**
 * One probe attempt: httpGet (2xx/3xx passes) and tcpSocket (connect passes) against the pod
 * IP from the node's namespace, exec (exit 0 passes) inside the pod. Named ports resolve
 * through the container's ports. grpc probes are not supported (UnsupportedProbe).
 */
export async function runProbe(probe: V1Probe, t: ProbeTarget): Promise<boolean> {
  const timeout = String(probe.timeoutSeconds ?? 1);
  const port = (p: number | string | object): number => {
    const n =
      typeof p === 'string' && !/^\d+$/.test(p)
        ? t.container.ports?.find((cp) => cp.name === p)?.containerPort
        : Number(p);
    if (n === undefined || !Number.isInteger(n) || n < 1 || n > 65535) {
      throw new UnsupportedProbe(
        `${t.container.name}: probe port ${JSON.stringify(p)} names no container port`,
      );
    }
    return n;
  };
  const run = (ns: string, argv: string[]) =>
    execFileP('ip', ['netns', 'exec', ns, ...argv], { timeout: 10_000 }).then(
      (r) => ({ ok: true, stdout: r.stdout }),
      () => ({ ok: false, stdout: '' }),
    );
  if (probe.httpGet) {
    const scheme = (probe.httpGet.scheme ?? 'HTTP').toLowerCase();
    const host = probe.httpGet.host ?? t.podIP;
    const url = `${scheme}://${host}:${port(probe.httpGet.port)}${probe.httpGet.path ?? '/'}`;
    const r = await run(t.nodeNetns, [
      'curl',
      '-sk',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '--max-time',
      timeout,
      url,
    ]);
    const status = Number(r.stdout);
    return status >= 200 && status < 400;
  }
  if (probe.tcpSocket) {
    const host = probe.tcpSocket.host ?? t.podIP;
    const target = `TCP:${host}:${port(probe.tcpSocket.port)},connect-timeout=${timeout}`;
    return (await run(t.nodeNetns, ['socat', '-u', '/dev/null', target])).ok;
  }
  if (probe.exec?.command) {
    const asUser = t.user
      ? ['setpriv', `--reuid=${t.user.uid}`, `--regid=${t.user.gid}`, '--clear-groups', '--']
      : [];
    return (await run(t.podNetns, [...asUser, ...probe.exec.command])).ok;
  }
  throw new UnsupportedProbe(`${t.container.name}: only httpGet, tcpSocket and exec probes are supported`);
}

export function periodMs(probe: V1Probe): number {
  return (probe.periodSeconds ?? 10) * 1000;
}
