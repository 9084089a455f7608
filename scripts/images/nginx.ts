// localhost/nginx:<Debian nginx version>: Debian's nginx (nginx-light's binary) with a minimal
// configuration (nginx/nginx.conf): port 80, /usr/share/nginx/html, logs to stdout/stderr.
import { execFileSync } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ImageRecipe, PATH_ENV, tagSafe } from './recipe.ts';
import { accounts, inRootfs, installBinary, mkdirs, sharedLibs, writeFiles } from './rootfs.ts';

const NGINX = '/usr/sbin/nginx';
const MIME_TYPES = '/etc/nginx/mime.types';
const OWN = ['scripts/images/nginx/nginx.conf', 'scripts/images/nginx/index.html'];
const NGINX_UID = 101; // as in the official image, so volume permissions carry over

/** The Debian package version of the installed nginx binary, else nginx's own version. */
function nginxVersion(): string {
  try {
    const pkg = execFileSync('dpkg', ['-S', NGINX], { encoding: 'utf8' }).split(':')[0]!;
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
    return execFileSync('dpkg-query', ['-W', '-f', '${Version}', pkg], { encoding: 'utf8' }).trim();
  } catch {
    const v = execFileSync(NGINX, ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return /nginx\/(\S+)/.exec(v)?.[1] ?? 'unknown';
  }
}

export const nginx: ImageRecipe = {
  name: 'nginx',

  inputs: (ctx) => ({
    files: [NGINX, ...sharedLibs(NGINX), MIME_TYPES, ...OWN.map((f) => join(ctx.repo, f))],
    facts: [`version=${nginxVersion()}`],
  }),

  build(ctx, rootfs) {
    installBinary(rootfs, NGINX);
    mkdirs(rootfs, {
      'etc/nginx': 0o755,
      'usr/share/nginx/html': 0o755,
      // Compiled-in temp paths (`nginx -V`: --http-*-temp-path=/var/lib/nginx/*), the workers'.
      'var/lib/nginx': 0o755,
      'var/lib/nginx/body': 0o700,
      'var/lib/nginx/proxy': 0o700,
      'var/lib/nginx/fastcgi': 0o700,
      'var/lib/nginx/uwsgi': 0o700,
      'var/lib/nginx/scgi': 0o700,
      'var/log/nginx': 0o755,
      run: 0o755,
      tmp: 0o1777,
    });
    copyFileSync(MIME_TYPES, join(rootfs, 'etc/nginx/mime.types'));
    copyFileSync(join(ctx.repo, OWN[0]!), join(rootfs, 'etc/nginx/nginx.conf'));
    copyFileSync(join(ctx.repo, OWN[1]!), join(rootfs, 'usr/share/nginx/html/index.html'));
    accounts(rootfs, [
      { name: 'root', uid: 0, home: '/root' },
      { name: 'nginx', uid: NGINX_UID },
    ]);
    writeFiles(rootfs, { 'etc/nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files dns\n' });
    return {
      layers: [{ name: 'nginx', match: () => true }],
      config: { entrypoint: [NGINX], env: [PATH_ENV] },
      ref: () => `localhost/nginx:${tagSafe(nginxVersion())}`,
      owner: (p) => (p.startsWith('var/lib/nginx/') ? { uid: NGINX_UID, gid: NGINX_UID } : undefined),
    };
  },

  // `nginx -t` needs /dev/stdout, which only the container runtime provides: -V checks the libs.
  check: (rootfs) => [inRootfs(rootfs, [NGINX, '-v']).trim()],
};
