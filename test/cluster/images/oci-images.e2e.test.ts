// The images scripts/image builds, imported into a throw-away containerd and run with runc:
// every binary starts in its image, nginx serves the client, and `edgemesh init` installs
// its rules with both iptables backends. Containers share one network namespace this test
// creates; nothing touches the host's network.
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type BuiltImages, buildImages, importImages } from '../oci-images.ts';
import { ThrowawayContainerd } from './containerd.ts';

const NETNS = `emimg-${process.pid}`;
let images: BuiltImages;
let containerd: ThrowawayContainerd;
let n = 0;

/** `ctr run --rm`: the command's output; NAME is unique per call. */
function runIn(image: string, argv: string[], flags: string[] = []): Promise<string> {
  return containerd.ctr(['run', '--rm', ...flags, image, `t${++n}`, ...argv]);
}
const inNetns = ['--with-ns', `network:/run/netns/${NETNS}`];

beforeAll(async () => {
  const t0 = performance.now();
  images = await buildImages();
  console.log(`scripts/image: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  containerd = await ThrowawayContainerd.start();
  execFileSync('ip', ['netns', 'add', NETNS]);
  execFileSync('ip', ['-n', NETNS, 'link', 'set', 'lo', 'up']);
});

afterAll(async () => {
  await containerd?.ctr(['task', 'kill', '-s', 'SIGKILL', 'web']).catch(() => {});
  await containerd?.ctr(['task', 'delete', '-f', 'web']).catch(() => {});
  await containerd?.ctr(['container', 'rm', 'web']).catch(() => {});
  await containerd?.stop();
  try {
    execFileSync('ip', ['netns', 'del', NETNS], { stdio: 'ignore' });
  } catch {
    // never created
  }
});

describe('images in containerd', () => {
  test('import: every image is listed under its reference', async () => {
    for (const tar of images.tars) {
      const t0 = performance.now();
      await importImages(containerd.socket, [tar]);
      console.log(`import ${tar.split('/').pop()}: ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    }
    const list = await containerd.ctr(['images', 'ls', '-q']);
    for (const ref of [images.edgemesh, images.pause, images.nginx, images.client])
      expect(list).toContain(ref);
  });

  test('edgemesh: node, the CLI and both iptables backends start', async () => {
    expect(
      await runIn(images.edgemesh, ['/usr/local/bin/node', '-e', 'console.log(process.version)']),
    ).toMatch(/^v24\./);
    expect(await runIn(images.edgemesh, ['/usr/local/bin/node', '/app/bin/main.js', '--help'])).toContain(
      'Usage: edgemesh',
    );
    expect(await runIn(images.edgemesh, ['iptables', '-V'])).toContain('nf_tables');
    expect(await runIn(images.edgemesh, ['iptables-legacy', '-V'])).toContain('legacy');
  });

  test('edgemesh init installs its rules with NET_ADMIN, nft and legacy', async () => {
    const caps = ['--cap-add', 'CAP_NET_ADMIN', '--cap-add', 'CAP_NET_RAW'];
    for (const backend of ['nft', 'legacy']) {
      // /proc/sys is read-only in a container: the reserved-ports sysctl belongs to the pod spec.
      const argv = [
        '/usr/local/bin/node',
        '/app/bin/main.js',
        'init',
        `--iptables-backend=${backend}`,
        '--reserved-ports=',
      ];
      await runIn(images.edgemesh, argv, [...caps, ...inNetns]);
      const save = await runIn(
        images.edgemesh,
        [`iptables-${backend}-save`, '-t', 'nat'],
        [...caps, ...inNetns],
      );
      expect(save).toContain('edgemesh');
    }
  });

  test('client: curl, dig, dnsmasq and busybox', async () => {
    expect(await runIn(images.client, ['curl', '--version'])).toMatch(/^curl /);
    expect(await runIn(images.client, ['dig', '-v'])).toContain('DiG');
    expect(await runIn(images.client, ['dnsmasq', '--version'])).toMatch(/^Dnsmasq version /);
    expect(await runIn(images.client, ['sh', '-c', 'echo ok; wget --help 2>&1 | head -1'])).toContain('ok');
  });

  test('pause and nginx -t', async () => {
    expect(await runIn(images.pause, ['/pause', '-v'])).toContain('pause');
    expect(await runIn(images.nginx, ['/usr/sbin/nginx', '-t'])).toContain('test is successful');
  });

  test('nginx serves the client (one network namespace)', async () => {
    await containerd.ctr(['run', '-d', ...inNetns, images.nginx, 'web']);
    let page = '';
    for (let i = 0; i < 50 && !page.includes('Welcome to nginx'); i++) {
      page = await runIn(images.client, ['curl', '-sS', 'http://127.0.0.1/'], inNetns).catch(() => '');
      if (!page) await new Promise((r) => setTimeout(r, 100));
    }
    expect(page).toContain('Welcome to nginx');
  });
});
