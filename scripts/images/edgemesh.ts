// localhost/edgemesh:<version>-<image id>: the one image for every part (webhook, init,
// sidecar, gateway, tunnel-server), as the Dockerfile describes it, in two layers:
//
//   runtime  /usr/local/bin/node (npm's `node` package, stripped) + its libs, iptables with the
//            nft and legacy backends (for `edgemesh init`) + their modules, /etc accounts
//   app      /app: the sources with types stripped (scripts/strip-types.ts) and the
//            production node_modules with the sidecar's native addon, trimmed
//
// An edgemesh upgrade changes only the app layer, so a node pulls only that.
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { RUNTIME_PARTS, stripTree } from '../strip-types.ts';
import { digestInputs } from './digest.ts';
import { pruneNodeModules, stripAddons } from './node-modules.ts';
import { type BuildContext, type ImageRecipe, PATH_ENV, shortId } from './recipe.ts';
import {
  accounts,
  copyHostPath,
  copyHostTree,
  inRootfs,
  installBinary,
  mkdirs,
  sharedLibs,
  symlinks,
  writeFiles,
} from './rootfs.ts';

const XTABLES_BINS = ['/usr/sbin/xtables-nft-multi', '/usr/sbin/xtables-legacy-multi'];
const XTABLES_MODULES = '/usr/lib/x86_64-linux-gnu/xtables';
// iproute2's `ip`: `edgemesh init --capture-udp` adds its policy rule and route with it.
const IP_BIN = '/bin/ip';
// The sidecar's native addons, built by `npm ci` in the staging copy: the L4 engine and the
// TPROXY UDP path (a pod annotated traffic.edgemesh.io/capture-udp cannot start without it).
const ADDONS = ['sidecar/native/build/l4.node', 'sidecar/native/build/udp.node'];

/** The image's node: the npm `node` package's binary, the same Node the repo pins. */
function nodeBinary(repo: string): string {
  return realpathSync(join(repo, 'node_modules/.bin/node'));
}

/** What `npm ci --omit=dev` reads: the manifests and the addon's sources (its install script). */
function npmInputs(repo: string): string[] {
  const native = join(repo, 'sidecar/native');
  const files = readdirSync(native)
    .filter((n) => statSync(join(native, n)).isFile())
    .map((n) => join(native, n));
  return [join(repo, 'package.json'), join(repo, 'package-lock.json'), ...files.sort()];
}

/** The sources strip-types turns into /app, by the same rules (no tests, testdata, testing). */
function sourceFiles(repo: string): string[] {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) {
        if (!['node_modules', 'testdata', 'testing', 'build'].includes(name)) walk(p);
      } else if (name.endsWith('.ts') && !name.endsWith('.test.ts')) files.push(p);
    }
  };
  for (const part of RUNTIME_PARTS) walk(join(repo, part));
  return files;
}

/**
 * What `edgemesh install` renders (ctl/kustomize.ts reads them at run time from /app/manifests):
 * the root kustomization, the base and the overlays. Not monitoring/ or the tests.
 */
function manifestFiles(repo: string): string[] {
  const root = join(repo, 'manifests');
  const files = [join(root, 'kustomization.yaml')];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.yaml')) files.push(p);
    }
  };
  walk(join(root, 'base'));
  walk(join(root, 'overlays'));
  return files;
}

function xtablesFiles(): string[] {
  const modules = readdirSync(XTABLES_MODULES)
    .sort()
    .map((n) => join(XTABLES_MODULES, n));
  const libs = new Set<string>();
  for (const f of [...XTABLES_BINS, ...modules]) for (const l of sharedLibs(f)) libs.add(l);
  return [...XTABLES_BINS, ...modules, ...[...libs].sort()];
}

/**
 * Production node_modules in a staging copy of the manifests, reused while they are
 * unchanged: `npm ci` is 8-12 s of a ~25 s cold build and source edits do not need it.
 */
function stageNodeModules(ctx: BuildContext): string {
  const stage = join(ctx.work, 'npm-stage');
  const node = nodeBinary(ctx.repo);
  const key = digestInputs([...npmInputs(ctx.repo), node]);
  const keyFile = join(stage, '.edgemesh-key');
  if (
    existsSync(keyFile) &&
    readFileSync(keyFile, 'utf8') === key &&
    ADDONS.every((a) => existsSync(join(stage, a)))
  ) {
    ctx.log('npm ci --omit=dev: unchanged, reusing the staged node_modules');
    return stage;
  }
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(join(stage, 'sidecar/native'), { recursive: true });
  for (const f of npmInputs(ctx.repo)) copyFileSync(f, join(stage, f.slice(ctx.repo.length + 1)));
  const t0 = performance.now();
  // npm's shebang finds `node` on PATH: the pinned one, so install scripts and the addon's
  // N-API version match the image's Node. stdout goes to stderr: the ref is stdout's last line.
  execFileSync('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund'], {
    cwd: stage,
    stdio: ['ignore', 2, 2],
    env: { ...process.env, PATH: `${dirname(node)}:${process.env.PATH}`, EDGEMESH_REQUIRE_NATIVE: '1' },
  });
  for (const a of ADDONS)
    if (!existsSync(join(stage, a))) throw new Error(`image: npm ci did not build ${a}`);
  writeFileSync(keyFile, key);
  ctx.log(`npm ci --omit=dev: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return stage;
}

function packageVersion(repo: string): string {
  return (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;
}

/**
 * The commit /app/build-info.json records (lib/build-info.ts reads it): EDGEMESH_COMMIT when
 * set (the Dockerfile's build argument: its context has no .git), else the checkout's HEAD,
 * `dirty` when the sources that go into /app differ from it. No git, no repository: unknown.
 */
export function sourceCommit(
  repo: string,
  env: NodeJS.ProcessEnv = process.env,
): { commit: string; dirty: boolean } {
  const given = env.EDGEMESH_COMMIT?.trim();
  if (given) {
    if (!/^[0-9a-f]{40}$/.test(given))
      throw new Error(`EDGEMESH_COMMIT: ${JSON.stringify(given)} is not a full 40-hex commit hash`);
    return { commit: given, dirty: false };
  }
  const git = (args: string[]) =>
    execFileSync('git', ['-C', repo, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  try {
    const commit = git(['rev-parse', 'HEAD']);
    const changed = git(['status', '--porcelain', '--untracked-files=normal', '--', ...RUNTIME_PARTS]);
    return { commit, dirty: changed !== '' };
  } catch {
    return { commit: 'unknown', dirty: false };
  }
}

function buildInfoJson(repo: string): string {
  return `${JSON.stringify({ version: packageVersion(repo), ...sourceCommit(repo) })}\n`;
}

const COMMANDS = [
  'version',
  'webhook',
  'inject',
  'webhook-tls',
  'init',
  'sidecar',
  'gateway',
  'tunnel-server',
  'signer',
  'install',
  'config',
];

/** The image's entrypoint; the gateway DaemonSet spells it out to add V8 flags (node-flags.ts). */
export const ENTRYPOINT = ['/usr/local/bin/node', '/app/bin/main.js'] as const;

export const edgemesh: ImageRecipe = {
  name: 'edgemesh',

  inputs: (ctx) => ({
    files: [
      ...npmInputs(ctx.repo),
      ...sourceFiles(ctx.repo),
      ...manifestFiles(ctx.repo),
      nodeBinary(ctx.repo),
      ...sharedLibs(nodeBinary(ctx.repo)),
      ...xtablesFiles(),
      IP_BIN,
      ...sharedLibs(IP_BIN),
    ],
    // The commit is a fact: /app/build-info.json must not name the commit of an older build.
    facts: [`version=${packageVersion(ctx.repo)}`, `build-info=${buildInfoJson(ctx.repo)}`],
  }),

  build(ctx, rootfs) {
    const stage = stageNodeModules(ctx);

    // runtime layer
    const node = nodeBinary(ctx.repo);
    installBinary(rootfs, node, '/usr/local/bin/node');
    // Debug info and the static symbol table: 126.6 → 108.5 MB. JavaScript stack traces do not
    // use them, and native backtraces keep node's exported (dynamic) symbols.
    execFileSync('strip', [join(rootfs, 'usr/local/bin/node')]);
    for (const b of XTABLES_BINS) installBinary(rootfs, b);
    installBinary(rootfs, IP_BIN, '/usr/sbin/ip');
    for (const m of copyHostTree(rootfs, XTABLES_MODULES))
      for (const l of sharedLibs(m)) copyHostPath(rootfs, l);
    const links: Record<string, string> = {};
    for (const family of ['iptables', 'ip6tables']) {
      for (const tool of ['', '-save', '-restore']) {
        // Plain names use nft, Debian's default; init picks a backend by the -nft/-legacy names.
        links[`usr/sbin/${family}${tool}`] = 'xtables-nft-multi';
        links[`usr/sbin/${family}-nft${tool}`] = 'xtables-nft-multi';
        links[`usr/sbin/${family}-legacy${tool}`] = 'xtables-legacy-multi';
      }
    }
    symlinks(rootfs, links);
    // /run: iptables-legacy's lock (/run/xtables.lock); /tmp for anything Node writes there.
    mkdirs(rootfs, { tmp: 0o1777, run: 0o755, root: 0o700 });
    accounts(rootfs, [
      { name: 'root', uid: 0, home: '/root' },
      { name: 'proxy', uid: 1337, gecos: 'edgemesh sidecar' }, // the sidecar; capture skips its uid
      { name: 'nonroot', uid: 65532 }, // webhook and tunnel-server (manifests/base/*.yaml)
    ]);
    writeFiles(rootfs, { 'etc/nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files dns\n' });

    // app layer
    const app = join(rootfs, 'app');
    stripTree(ctx.repo, app);
    writeFileSync(join(app, 'build-info.json'), buildInfoJson(ctx.repo));
    for (const f of manifestFiles(ctx.repo)) {
      const to = join(app, f.slice(ctx.repo.length + 1));
      mkdirSync(dirname(to), { recursive: true });
      copyFileSync(f, to);
    }
    cpSync(join(stage, 'node_modules'), join(app, 'node_modules'), {
      recursive: true,
      verbatimSymlinks: true,
    });
    const pruned = pruneNodeModules(join(app, 'node_modules'));
    stripAddons(join(app, 'node_modules'));
    ctx.log(
      `node_modules: dropped ${pruned.files} files, ${(pruned.bytes / 1e6).toFixed(1)} MB not needed at run time`,
    );
    // The addons built against the image's Node in the staging copy, not whatever the checkout has.
    for (const a of ADDONS) {
      mkdirSync(join(app, dirname(a)), { recursive: true });
      copyFileSync(join(stage, a), join(app, a));
    }

    const isApp = (p: string) => p === 'app' || p.startsWith('app/');
    return {
      layers: [
        { name: 'runtime (node, iptables)', match: (p) => !isApp(p) },
        { name: 'app (/app)', match: isApp },
      ],
      config: {
        entrypoint: [...ENTRYPOINT],
        env: [PATH_ENV, 'NODE_ENV=production'],
      },
      ref: (id) => `localhost/edgemesh:${packageVersion(ctx.repo)}-${shortId(id)}`,
    };
  },

  check(rootfs) {
    const main = ['/usr/local/bin/node', '/app/bin/main.js'];
    const out = [inRootfs(rootfs, ['node', '--version']).trim()];
    inRootfs(rootfs, [...main, '--help']);
    // The build info reads back (version and commit, not "unknown" unless git was absent).
    out.push(inRootfs(rootfs, [...main, '--version']).trim());
    for (const c of COMMANDS) inRootfs(rootfs, [...main, c, '--help']);
    // install renders /app/manifests: every object, with the TLS it adds.
    const install = inRootfs(rootfs, [...main, 'install', '--mesh-ca=new', '--kubeedge']);
    out.push(`install: ${install.split('\n---\n').length - 1} objects`);
    // Every module loads (a pruned file would fail here, not in a pod), and so do the addons;
    // main.js files are programs (they run on import), checked through --help above.
    const script = `
      import { readdirSync } from 'node:fs';
      import { createRequire } from 'node:module';
      const files = readdirSync('/app', { recursive: true })
        .filter((f) => f.endsWith('.js') && !f.startsWith('node_modules/') && f !== 'main.js' && !f.endsWith('/main.js'));
      for (const f of files) await import('/app/' + f);
      const require = createRequire('/app/package.json');
      require('koffi'); require('node-datachannel');
      for (const a of ${JSON.stringify(ADDONS)}) require('/app/' + a);
      console.log('modules: ' + files.length + ' + koffi, node-datachannel, l4.node, udp.node');`;
    out.push(inRootfs(rootfs, ['node', '--input-type=module', '-e', script]).trim());
    for (const t of ['iptables', 'iptables-legacy', 'ip6tables-nft', 'ip6tables-legacy', 'ip']) {
      out.push(inRootfs(rootfs, [t, '-V']).trim());
    }
    return out;
  },
};
