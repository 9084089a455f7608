// `scripts/image [--out DIR] [--only NAME,...] [--force] [--gzip] [--measure]`
// `scripts/image --rootfs-only DIR`   (the edgemesh rootfs as a directory: the Dockerfile's path)
//
// Builds docker-archive tars (<out>/<name>.tar, default .build/images/) for edgemesh, pause,
// nginx and client, without Docker or a registry; `ctr -n k8s.io images import` loads them.
// Next to each tar: <name>.ref (the image reference), <name>.json (digests, sizes, timing) and
// <name>.key (hash of every input: an unchanged image is not rebuilt). Progress goes to stderr;
// stdout gets one reference per image, edgemesh's last.
import {
  createReadStream,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { client } from './client.ts';
import { digestInputs } from './digest.ts';
import { edgemesh } from './edgemesh.ts';
import { nginx } from './nginx.ts';
import { type PackedImage, packImage } from './oci-pack.ts';
import { pause } from './pause.ts';
import type { BuildContext, ImageRecipe } from './recipe.ts';
import { saveLddCache, useLddCache } from './rootfs.ts';

const RECIPES: ImageRecipe[] = [pause, nginx, client, edgemesh];

interface Options {
  out: string;
  only: string[];
  force: boolean;
  gzip: boolean;
  measure: boolean;
  rootfsOnly?: string;
}

function parseArgs(repo: string, argv: string[]): Options {
  const o: Options = {
    out: join(repo, '.build/images'),
    only: [],
    force: false,
    gzip: false,
    measure: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (!v) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--out') o.out = resolve(value());
    else if (a === '--only') o.only = value().split(',');
    else if (a === '--force') o.force = true;
    else if (a === '--gzip') o.gzip = true;
    else if (a === '--measure') o.measure = true;
    else if (a === '--rootfs-only') o.rootfsOnly = resolve(value());
    else throw new Error(`unknown argument ${a} (see the top of scripts/images/main.ts)`);
  }
  const unknown = o.only.filter((n) => !RECIPES.some((r) => r.name === n));
  if (unknown.length > 0) throw new Error(`--only: no image ${unknown.join(', ')}`);
  return o;
}

const log = (msg: string) => process.stderr.write(`image: ${msg}\n`);
const seconds = (t0: number) => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** The builder's own files: changing how images are made rebuilds them all. */
function builderFiles(repo: string): string[] {
  const dir = join(repo, 'scripts/images');
  const own: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (!n.endsWith('.test.ts')) own.push(p);
    }
  };
  walk(dir);
  return [join(repo, 'scripts/image'), join(repo, 'scripts/strip-types.ts'), ...own];
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
}

async function gzipSize(file: string): Promise<number> {
  let n = 0;
  const gz = createGzip({ level: 9 });
  gz.on('data', (c: Buffer) => {
    n += c.length;
  });
  await pipeline(createReadStream(file), gz);
  return n;
}

function checks(recipe: ImageRecipe, rootfs: string): void {
  if (process.getuid?.() !== 0) {
    log(`${recipe.name}: not root, skipping the chroot checks`);
    return;
  }
  for (const line of recipe.check(rootfs)) log(`${recipe.name}: check: ${line.split('\n')[0]}`);
}

async function buildOne(recipe: ImageRecipe, o: Options, repo: string): Promise<string> {
  const t0 = performance.now();
  const work = join(o.out, '.work', recipe.name);
  mkdirSync(work, { recursive: true });
  const ctx: BuildContext = { repo, work, log: (m) => log(`${recipe.name}: ${m}`) };
  const inputs = recipe.inputs(ctx);
  const key = digestInputs([...inputs.files, ...builderFiles(repo)], [...inputs.facts, `gzip=${o.gzip}`]);
  const tar = join(o.out, `${recipe.name}.tar`);
  const refFile = join(o.out, `${recipe.name}.ref`);
  if (!o.force && readOr(join(o.out, `${recipe.name}.key`), '') === key && readOr(refFile, '') !== '') {
    try {
      statSync(tar);
      const ref = readOr(refFile, '').trim();
      log(`${recipe.name}: unchanged, ${ref} (${seconds(t0)})`);
      return ref;
    } catch {
      // the tar is gone: build it again
    }
  }
  const rootfs = join(work, 'rootfs');
  rmSync(rootfs, { recursive: true, force: true });
  mkdirSync(rootfs);
  const plan = recipe.build(ctx, rootfs);
  checks(recipe, rootfs);
  const packed: PackedImage = packImage({ rootfs, ...plan, out: `${tar}.tmp`, workDir: work, gzip: o.gzip });
  renameSync(`${tar}.tmp`, tar);
  const info = {
    ref: packed.ref,
    imageId: packed.imageId,
    tar,
    tarBytes: statSync(tar).size,
    layers: await Promise.all(
      packed.layers.map(async (l) => ({
        name: l.name,
        diffId: l.diffId,
        bytes: l.size,
        storedBytes: l.storedSize,
        ...(o.measure ? { gzip9Bytes: await gzipSize(l.file) } : {}),
      })),
    ),
    buildSeconds: Number(((performance.now() - t0) / 1000).toFixed(1)),
  };
  for (const l of packed.layers) rmSync(l.file, { force: true });
  rmSync(rootfs, { recursive: true, force: true });
  writeFileSync(join(o.out, `${recipe.name}.json`), `${JSON.stringify(info, null, 2)}\n`);
  writeFileSync(refFile, `${packed.ref}\n`);
  writeFileSync(join(o.out, `${recipe.name}.key`), key);
  const sizes = info.layers
    .map(
      (l) => `${l.name} ${mb(l.bytes)}${'gzip9Bytes' in l ? ` (gzip -9 ${mb(l.gzip9Bytes as number)})` : ''}`,
    )
    .join(', ');
  log(`${recipe.name}: ${packed.ref} in ${seconds(t0)}: ${sizes}`);
  return packed.ref;
}

async function main(argv: string[]): Promise<void> {
  const repo = resolve(import.meta.dirname, '../..');
  const o = parseArgs(repo, argv);
  if (o.rootfsOnly) {
    // The Dockerfile's build stage: the edgemesh rootfs as a directory, `COPY`ed into scratch.
    const t0 = performance.now();
    rmSync(o.rootfsOnly, { recursive: true, force: true });
    mkdirSync(o.rootfsOnly, { recursive: true });
    const work = join(o.out, '.work', edgemesh.name);
    mkdirSync(work, { recursive: true });
    edgemesh.build({ repo, work, log: (m) => log(`edgemesh: ${m}`) }, o.rootfsOnly);
    checks(edgemesh, o.rootfsOnly);
    log(`edgemesh: rootfs in ${o.rootfsOnly} (${seconds(t0)})`);
    return;
  }
  mkdirSync(join(o.out, '.work'), { recursive: true });
  useLddCache(join(o.out, '.work/ldd-cache.json'));
  const refs: string[] = [];
  try {
    for (const r of RECIPES)
      if (o.only.length === 0 || o.only.includes(r.name)) refs.push(await buildOne(r, o, repo));
  } finally {
    saveLddCache();
  }
  process.stdout.write(`${refs.join('\n')}\n`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  log(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exitCode = 1;
});
