import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { packImage, splitLayers, walkRootfs } from './oci-pack.ts';
import { BLOCK, header, paxRecord, TarWriter } from './tar.ts';

const tmp = mkdtempSync(join(tmpdir(), 'tar-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const LONG = `${'d'.repeat(60)}/${'e'.repeat(60)}/file.txt`;
const GOLDEN = join(import.meta.dirname, 'testdata/small.tar.golden');

function small(): Buffer {
  const chunks: Buffer[] = [];
  const tar = new TarWriter((c) => chunks.push(Buffer.from(c)));
  tar.add({ path: 'etc', type: 'dir', mode: 0o755 });
  tar.addFile({ path: 'etc/passwd', mode: 0o644 }, Buffer.from('root:x:0:0::/root:/sbin/nologin\n'));
  tar.add({ path: 'tmp', type: 'dir', mode: 0o1777 });
  tar.add({ path: 'var/lib/nginx', type: 'dir', mode: 0o700, uid: 101, gid: 101 });
  tar.add({ path: 'bin', type: 'symlink', mode: 0o777, linkname: 'usr/bin' });
  tar.addFile({ path: LONG, mode: 0o600 }, Buffer.alloc(1000, 0x61));
  tar.add({ path: 'long-link', type: 'symlink', mode: 0o777, linkname: `/${LONG}` });
  tar.addFile({ path: 'empty', mode: 0o644 }, Buffer.alloc(0));
  tar.finish();
  return Buffer.concat(chunks);
}

/** GNU tar's reading of an archive: the interoperability check. */
function gnuList(archive: Buffer): string {
  const file = join(tmp, `list-${Math.random()}.tar`);
  writeFileSync(file, archive);
  return execFileSync('tar', ['-tvf', file, '--numeric-owner', '--full-time'], {
    encoding: 'utf8',
    env: { TZ: 'UTC' },
  });
}

describe('tar writer', () => {
  test('pax record lengths count themselves, across digit boundaries', () => {
    expect(paxRecord('path', 'x')).toBe('9 path=x\n');
    for (const n of [1, 2, 88, 89, 90, 91, 989, 990, 991]) {
      const r = paxRecord('path', 'x'.repeat(n));
      expect(Buffer.byteLength(r)).toBe(Number(r.split(' ')[0]));
    }
  });

  test('header checksum: byte sum with the field read as spaces', () => {
    const h = header({ path: 'a', type: 'file', mode: 0o644, size: 3 });
    expect(h.length).toBe(BLOCK);
    const copy = Buffer.from(h);
    copy.fill(0x20, 148, 156);
    const sum = copy.reduce((a, b) => a + b, 0);
    expect(h.subarray(148, 156).toString('ascii')).toBe(`${sum.toString(8).padStart(6, '0')}\0 `);
  });

  test('GNU tar reads what it writes: modes, owners, links, long names (golden)', () => {
    const archive = small();
    expect(archive.length % BLOCK).toBe(0);
    const got = `sha256 ${createHash('sha256').update(archive).digest('hex')}\n${gnuList(archive)}`;
    if (process.env.REFRESH_GOLDEN) {
      mkdirSync(join(import.meta.dirname, 'testdata'), { recursive: true });
      writeFileSync(GOLDEN, got);
    }
    expect(got).toBe(readFileSync(GOLDEN, 'utf8'));
    const dir = join(tmp, 'x');
    mkdirSync(dir);
    writeFileSync(join(tmp, 'small.tar'), archive);
    execFileSync('tar', ['-xf', join(tmp, 'small.tar'), '-C', dir]);
    expect(readFileSync(join(dir, LONG), 'utf8')).toBe('a'.repeat(1000));
  });

  test('refuses data that does not match the header', () => {
    const tar = new TarWriter(() => {});
    tar.add({ path: 'f', type: 'file', mode: 0o644, size: 2 });
    expect(() => tar.data(Buffer.alloc(3))).toThrow(/more data/);
    expect(() => tar.add({ path: 'g', type: 'dir', mode: 0o755 })).toThrow(/missing/);
  });
});

describe('docker-archive packer', () => {
  function rootfs(): string {
    const r = mkdtempSync(join(tmp, 'rootfs-'));
    mkdirSync(join(r, 'usr/bin'), { recursive: true });
    writeFileSync(join(r, 'usr/bin/tool'), '#!/bin/sh\n');
    chmodSync(join(r, 'usr/bin/tool'), 0o755);
    symlinkSync('usr/bin', join(r, 'bin'));
    mkdirSync(join(r, 'app/lib'), { recursive: true });
    writeFileSync(join(r, 'app/lib/main.js'), 'console.log(1)\n');
    return r;
  }
  const isApp = (p: string) => p === 'app' || p.startsWith('app/');

  test('layers take their paths and the parents; walk order puts parents first', () => {
    const entries = walkRootfs(rootfs());
    expect(entries.map((e) => e.path)).toEqual([
      'app',
      'app/lib',
      'app/lib/main.js',
      'bin',
      'usr',
      'usr/bin',
      'usr/bin/tool',
    ]);
    const [base, app] = splitLayers(entries, [
      { name: 'base', match: (p) => !isApp(p) },
      { name: 'app', match: (p) => p === 'app/lib/main.js' },
    ]);
    expect(base!.map((e) => e.path)).toEqual(['bin', 'usr', 'usr/bin', 'usr/bin/tool']);
    expect(app!.map((e) => e.path)).toEqual(['app', 'app/lib', 'app/lib/main.js']);
  });

  test('same rootfs, same digests; the archive is what docker load expects', () => {
    const pack = (r: string, out: string) =>
      packImage({
        rootfs: r,
        layers: [
          { name: 'base', match: (p) => !isApp(p) },
          { name: 'app', match: isApp },
        ],
        config: { entrypoint: ['/usr/bin/tool'], env: ['PATH=/usr/bin'] },
        ref: (id) => `localhost/t:${id.slice(7, 19)}`,
        out,
        workDir: mkdtempSync(join(tmp, 'work-')),
        owner: (p) => (p === 'usr/bin/tool' ? { uid: 1337, gid: 1337 } : undefined),
      });
    const a = pack(rootfs(), join(tmp, 'a.tar'));
    const b = pack(rootfs(), join(tmp, 'b.tar'));
    expect(b.imageId).toBe(a.imageId);
    expect(readFileSync(join(tmp, 'b.tar')).equals(readFileSync(join(tmp, 'a.tar')))).toBe(true);
    expect(a.ref).toBe(`localhost/t:${a.imageId.slice(7, 19)}`);

    const x = mkdtempSync(join(tmp, 'x-'));
    execFileSync('tar', ['-xf', join(tmp, 'a.tar'), '-C', x]);
    const [manifest] = JSON.parse(readFileSync(join(x, 'manifest.json'), 'utf8'));
    expect(manifest.RepoTags).toEqual([a.ref]);
    const config = JSON.parse(readFileSync(join(x, manifest.Config), 'utf8'));
    expect(config.rootfs.diff_ids).toEqual(a.layers.map((l) => l.diffId));
    expect(config.config.Entrypoint).toEqual(['/usr/bin/tool']);
    const layer0 = readFileSync(join(x, manifest.Layers[0]));
    expect(`sha256:${createHash('sha256').update(layer0).digest('hex')}`).toBe(a.layers[0]!.diffId);
    expect(gnuList(layer0)).toMatch(/-rwxr-xr-x 1337\/1337 +10 1970-01-01 00:00:00 usr\/bin\/tool/);
  });
});
