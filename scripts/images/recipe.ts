// What each image module (edgemesh.ts, pause.ts, nginx.ts, client.ts) provides to main.ts.
import type { ImageConfig, LayerSpec } from './oci-pack.ts';

export interface BuildContext {
  /** The checkout (absolute). */
  repo: string;
  /** Scratch space owned by this image; kept between runs (e.g. the npm ci staging copy). */
  work: string;
  log: (msg: string) => void;
}

export interface ImagePlan {
  layers: LayerSpec[];
  config: ImageConfig;
  ref: (imageId: string) => string;
  owner?: (path: string) => { uid: number; gid: number } | undefined;
}

export interface ImageRecipe {
  name: string;
  /**
   * Everything the image is made from: host or repo files (hashed by content) and facts
   * (versions, flags). Same inputs → the cached tar is reused without rebuilding.
   */
  inputs(ctx: BuildContext): { files: string[]; facts: string[] };
  /** Fills the empty `rootfs` directory and says how to pack it. */
  build(ctx: BuildContext, rootfs: string): ImagePlan;
  /** Smoke tests run in the rootfs with chroot (only as root): every binary starts. */
  check(rootfs: string): string[];
}

export const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** A tag may hold [A-Za-z0-9_.-] only (Debian versions have '+' and '~'). */
export function tagSafe(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]/g, '-');
}

export function shortId(imageId: string): string {
  return imageId.replace(/^sha256:/, '').slice(0, 12);
}
