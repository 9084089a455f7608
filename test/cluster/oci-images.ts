// The container images for a real node (containerd + runc), built from this checkout by
// scripts/image (docs/image.md) and imported over containerd's socket: no registry.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const REPO = new URL('../..', import.meta.url).pathname;
const IMAGES = ['edgemesh', 'pause', 'nginx', 'client'] as const;

export interface BuiltImages {
  /** localhost/edgemesh:<version>-<image id>: every edgemesh part. */
  edgemesh: string;
  /** localhost/pause:3.10: the sandbox image (containerd's sandbox_image). */
  pause: string;
  /** localhost/nginx:<Debian version>: a web server on port 80. */
  nginx: string;
  /** localhost/client:<image id>: busybox, curl and dig; runs `sleep infinity`. */
  client: string;
  /** The docker-archive tars, in the order above. */
  tars: string[];
}

let built: Promise<BuiltImages> | undefined;

/**
 * Builds the images (once per process; scripts/image itself skips unchanged images, so
 * a second test run costs about a second) into the checkout's .build/images/.
 */
export function buildImages(): Promise<BuiltImages> {
  built ??= (async () => {
    const out = join(REPO, '.build/images');
    await run(join(REPO, 'scripts/image'), ['--out', out], { maxBuffer: 16 << 20 }).catch((err) => {
      throw new Error(`scripts/image failed: ${(err as { stderr?: string }).stderr ?? err}`);
    });
    const ref = (name: string) => readFileSync(join(out, `${name}.ref`), 'utf8').trim();
    return {
      edgemesh: ref('edgemesh'),
      pause: ref('pause'),
      nginx: ref('nginx'),
      client: ref('client'),
      tars: IMAGES.map((n) => join(out, `${n}.tar`)),
    };
  })();
  built.catch(() => {
    built = undefined; // let a later call try again
  });
  return built;
}

/**
 * Imports docker-archive tars into containerd's k8s.io namespace (the CRI's, so the kubelet
 * sees them) and unpacks them for the overlayfs snapshotter. ctr reaches containerd over its
 * unix socket, so it works from any network namespace; `netns` (a name under /run/netns or a
 * path) only runs ctr there, for callers that keep every process of a node inside it.
 */
export async function importImages(
  containerdSocket: string,
  tars: string[],
  opts: { netns?: string } = {},
): Promise<void> {
  const ns = opts.netns && (opts.netns.includes('/') ? opts.netns : `/run/netns/${opts.netns}`);
  for (const tar of tars) {
    const ctr = ['ctr', '-a', containerdSocket, '-n', 'k8s.io', 'images', 'import', tar];
    const argv = ns ? ['nsenter', `--net=${ns}`, '--', ...ctr] : ctr;
    // A healthy import takes seconds (edgemesh ~3 s); a stuck containerd fails the caller instead of hanging it.
    await run(argv[0]!, argv.slice(1), { maxBuffer: 16 << 20, timeout: 180_000 }).catch((err) => {
      throw new Error(`${ctr.join(' ')}: ${(err as { stderr?: string }).stderr ?? err}`);
    });
  }
}
