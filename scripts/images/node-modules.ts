// Trims a production node_modules for the image: what npm installs but Node never loads at
// run time: 60 MB of edgemesh 0.1.0's (docs/image.md). Every rule is by file kind, never by
// package, except the two named below; the image check then imports every module.
import { execFileSync } from 'node:child_process';
import { lstatSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const DROP_FILE = [
  /\.d\.[cm]?ts$/, // type declarations (~30 MB, mostly @kubernetes/client-node)
  /\.[cm]?ts$/, // TypeScript sources: Node does not strip types under node_modules
  /\.map$/, // source maps
  /\.(md|markdown)$/i,
  /\.bare$/, // prebuilds for the Bare runtime (bare-fs & co. come with tar-fs)
  /\.(c|cc|cpp|h|hh|hpp|inc|S|def|gyp|gypi)$/, // native sources and headers: addons ship built
  /^CMakeLists\.txt$/,
  /^(\.eslintrc.*|\.nycrc.*|\.prettierrc.*|\.editorconfig|\.npmignore|\.travis\.yml|\.gitattributes)$/,
  /^(\.prettierignore|\.eslintignore|jest\.config\..*|rollup\.config\..*|tsconfig(\..*)?\.json)$/,
];
// Not doc/ or docs/: yaml keeps run-time code in dist/doc/.
const DROP_DIR = new Set([
  'test',
  'tests',
  '__tests__',
  'example',
  'examples',
  'benchmark',
  'benchmarks',
  '.github',
]);

/** Package-specific: build-time only, or prebuilt for a libc the image does not have. */
const DROP_PATH = [
  'node-api-headers', // headers for building sidecar/native; the addon is built by then
  '@koromix/koffi-linux-x64/musl_x64', // koffi's musl build next to the glibc one we load
];

export interface PruneResult {
  files: number;
  bytes: number;
}

export function pruneNodeModules(dir: string): PruneResult {
  const result: PruneResult = { files: 0, bytes: 0 };
  const drop = (p: string) => {
    result.bytes += du(p);
    rmSync(p, { recursive: true, force: true });
  };
  for (const p of DROP_PATH) drop(join(dir, p));
  const walk = (d: string): boolean => {
    let empty = true;
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) {
        if (DROP_DIR.has(name)) drop(p);
        else if (walk(p)) rmdirSync(p);
        else empty = false;
      } else if (DROP_FILE.some((re) => re.test(name))) {
        result.files++;
        result.bytes += st.size;
        rmSync(p);
      } else empty = false;
    }
    return empty;
  };
  walk(dir);
  return result;
}

function du(p: string): number {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.size;
  return readdirSync(p).reduce((n, name) => n + du(join(p, name)), 0);
}

/** Strips symbols from prebuilt addons (node-datachannel ships 1.8 MB of them); dynamic symbols stay. */
export function stripAddons(dir: string): string[] {
  const addons: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && name.endsWith('.node')) addons.push(p);
    }
  };
  walk(dir);
  if (addons.length > 0) execFileSync('strip', ['--strip-unneeded', ...addons]);
  return addons;
}
