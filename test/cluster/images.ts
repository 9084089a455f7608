import type { V1Container } from '@kubernetes/client-node';
import { expandVars } from './pod-env.ts';

/**
 * The test node has no container runtime: an image names which local program stands in for
 * it. Matching is on the image's last path segment without tag or digest, so
 * "docker.io/library/nginx:1.27" and "nginx" are the same kind.
 *
 * - edgemesh: our own CLI (`bin/edgemesh`) with the container's args, exactly as the
 *   webhook wrote them.
 * - http-server: a Node HTTP server answering every request with a page naming the pod,
 *   on each TCP containerPort (80 when none is declared).
 * - shell: the container's command/args run as written (busybox-like tools are the
 *   host's own: sh, curl, dig, ...); with none, a long sleep so tests can exec into it.
 */
export type ImageKind = 'edgemesh' | 'http-server' | 'shell';

const KINDS: Record<string, ImageKind> = {
  edgemesh: 'edgemesh',
  nginx: 'http-server',
  'nginx-unprivileged': 'http-server',
  httpd: 'http-server',
  'http-echo': 'http-server',
  echoserver: 'http-server',
  busybox: 'shell',
  alpine: 'shell',
  curl: 'shell',
  netshoot: 'shell',
  debian: 'shell',
  ubuntu: 'shell',
};

export class ImageError extends Error {}

export function imageKind(image: string): ImageKind | undefined {
  const withoutDigest = image.split('@')[0] ?? '';
  const last = withoutDigest.split('/').pop() ?? '';
  const name = last.split(':')[0] ?? '';
  return KINDS[name];
}

export interface LocalPrograms {
  edgemeshBin: string;
  node: string;
  httpServer: string;
}

/** The argv that runs `container` on this node; `env` expands `$(VAR)` in command/args. */
export function containerArgv(
  container: V1Container,
  pod: { namespace: string; name: string; node: string },
  env: Record<string, string>,
  programs: LocalPrograms,
): string[] {
  const image = container.image ?? '';
  const kind = imageKind(image);
  const command = (container.command ?? []).map((c) => expandVars(c, env));
  const args = (container.args ?? []).map((a) => expandVars(a, env));
  switch (kind) {
    case 'edgemesh': {
      // The image's entrypoint is edgemesh itself; a command naming it is the same thing.
      const entry = command[0];
      if (entry !== undefined && !/(^|\/)edgemesh$/.test(entry)) {
        throw new ImageError(
          `${container.name}: image ${image} runs edgemesh; command ${entry} is not available`,
        );
      }
      return [programs.edgemeshBin, ...command.slice(1), ...args];
    }
    case 'http-server': {
      const ports = (container.ports ?? [])
        .filter((p) => (p.protocol ?? 'TCP') === 'TCP')
        .map((p) => p.containerPort);
      return [
        programs.node,
        programs.httpServer,
        `--ports=${(ports.length > 0 ? ports : [80]).join(',')}`,
        `--pod=${pod.namespace}/${pod.name}`,
        `--node=${pod.node}`,
      ];
    }
    case 'shell': {
      const argv = [...command, ...args];
      return argv.length > 0 ? argv : ['sleep', 'infinity'];
    }
    default:
      throw new ImageError(`${container.name}: image ${image} is not in the test node's image table`);
  }
}
