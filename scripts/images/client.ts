// localhost/client:<image id>: the tests' client pod. busybox (sh, sleep, wget, nc, nslookup,
// ... as symlinks) plus the real curl and dig from the build machine, with their libraries,
// and dnsmasq (a real DNS server the UDP e2e runs as a UDP Service).
import { execFileSync, spawnSync } from 'node:child_process';
import { type ImageRecipe, PATH_ENV, shortId } from './recipe.ts';
import {
  accounts,
  copyHostPath,
  inRootfs,
  installBinary,
  mkdirs,
  sharedLibs,
  symlinks,
  writeFiles,
} from './rootfs.ts';

const BUSYBOX = '/usr/bin/busybox';
const TOOLS = ['/usr/bin/curl', '/usr/bin/dig', '/usr/sbin/dnsmasq'];

export const client: ImageRecipe = {
  name: 'client',

  inputs: () => ({ files: [BUSYBOX, ...TOOLS, ...TOOLS.flatMap((t) => sharedLibs(t))], facts: [] }),

  build(_ctx, rootfs) {
    // The real tools first: busybox then only fills names that are still free.
    for (const t of TOOLS) installBinary(rootfs, t);
    copyHostPath(rootfs, BUSYBOX);
    // Merged /usr like the build machine: /bin, /sbin and /lib are links into /usr.
    symlinks(rootfs, { bin: 'usr/bin', sbin: 'usr/sbin', lib: 'usr/lib', lib64: 'usr/lib64' });
    const applets = execFileSync(BUSYBOX, ['--list-full'], { encoding: 'utf8' }).split('\n').filter(Boolean);
    const links: Record<string, string> = {};
    for (const a of applets) {
      const path = a.startsWith('usr/') ? a : `usr/${a}`;
      if (path !== 'usr/bin/busybox') links[path] = '/usr/bin/busybox';
    }
    symlinks(rootfs, links);
    mkdirs(rootfs, { tmp: 0o1777, root: 0o700 });
    accounts(rootfs, [
      { name: 'root', uid: 0, home: '/root' },
      { name: 'nobody', uid: 65534 },
    ]);
    writeFiles(rootfs, { 'etc/nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files dns\n' });
    return {
      layers: [{ name: 'client', match: () => true }],
      config: { cmd: ['sleep', 'infinity'], env: [PATH_ENV] },
      ref: (id) => `localhost/client:${shortId(id)}`,
    };
  },

  check: (rootfs) => [
    inRootfs(rootfs, ['curl', '--version']).split('\n')[0]!,
    inRootfs(rootfs, ['dig', '-v']).trim(),
    // `sleep infinity` is the default command: busybox must take "infinity", not exit.
    sleepsForever(rootfs),
    inRootfs(rootfs, ['sh', '-c', 'wget --help 2>&1 | head -1; nc --help 2>&1 | head -1']).trim(),
  ],
};

/** `sleep infinity` is the default command: busybox must take "infinity", not exit at once. */
function sleepsForever(rootfs: string): string {
  const r = spawnSync('chroot', [rootfs, 'sleep', 'infinity'], { timeout: 500, stdio: 'ignore' });
  if (r.signal !== 'SIGTERM') throw new Error(`client: sleep infinity exited (${r.status})`);
  return 'sleep infinity still sleeping after 0.5 s';
}
