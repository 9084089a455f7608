// localhost/pause:3.10: the pod sandbox image (containerd's sandbox_image), one static binary.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { type ImageRecipe, PATH_ENV } from './recipe.ts';
import { inRootfs } from './rootfs.ts';

const SOURCE = 'scripts/images/pause/pause.c';

export const pause: ImageRecipe = {
  name: 'pause',

  inputs: (ctx) => ({
    files: [join(ctx.repo, SOURCE)],
    facts: [execFileSync('gcc', ['--version'], { encoding: 'utf8' }).split('\n')[0]!],
  }),

  build(ctx, rootfs) {
    execFileSync('gcc', [
      '-static',
      '-Os',
      '-s',
      '-Wall',
      '-Wextra',
      '-Werror',
      '-o',
      join(rootfs, 'pause'),
      join(ctx.repo, SOURCE),
    ]);
    return {
      layers: [{ name: 'pause', match: () => true }],
      config: { entrypoint: ['/pause'], env: [PATH_ENV], user: '65535:65535' },
      ref: () => 'localhost/pause:3.10',
    };
  },

  check: (rootfs) => [inRootfs(rootfs, ['/pause', '-v']).trim()],
};
