/**
 * What this binary is: package.json's version and the git commit it was built from.
 *
 * The image build (scripts/images/edgemesh.ts) writes `/app/build-info.json` beside the
 * stripped sources, because the image's `/app/package.json` is only `{"type":"module"}` and
 * the image holds no `.git`. A checkout has no such file: the version comes from its
 * package.json and the commit is `unknown`, said so rather than guessed from a work tree
 * that may hold uncommitted changes.
 *
 *   build-info.json  { "version": "0.1.0", "commit": "<40 hex>" | "unknown", "dirty": false }
 */
import { readFileSync } from 'node:fs';

export const BUILD_INFO_FILE = 'build-info.json';

export interface BuildInfo {
  /** package.json's version, e.g. `0.1.0`. */
  version: string;
  /** The full commit hash, or `unknown` (a checkout, or an image built without git). */
  commit: string;
  /** The image was built from a work tree with changes not in `commit`. */
  dirty: boolean;
  /** Where this came from: the image's build-info.json, or a checkout's package.json. */
  source: 'image' | 'checkout';
  /** The Node.js running this process, e.g. `v24.21.0`. */
  nodeVersion: string;
}

const VERSION = /^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;
const COMMIT = /^[0-9a-f]{40}$/;

/** Validates a build-info.json document; throws naming the file and the field. Pure. */
export function parseBuildInfo(text: string, file: string): Omit<BuildInfo, 'source' | 'nodeVersion'> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: not JSON (${(err as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw new Error(`${file}: not an object`);
  const { version, commit, dirty } = doc as Record<string, unknown>;
  if (typeof version !== 'string' || !VERSION.test(version))
    throw new Error(`${file}: version ${JSON.stringify(version)} is not a semantic version`);
  if (typeof commit !== 'string' || (commit !== 'unknown' && !COMMIT.test(commit)))
    throw new Error(`${file}: commit ${JSON.stringify(commit)} is neither 40 hex digits nor "unknown"`);
  if (dirty !== undefined && typeof dirty !== 'boolean')
    throw new Error(`${file}: dirty must be true or false`);
  return { version, commit, dirty: dirty === true };
}

/**
 * The build info of the tree holding this module (`root`: the image's /app or a checkout).
 * Never throws: a process must start whatever this file says; a broken file reads as
 * version and commit `unknown` with the problem in `problem`.
 */
export function readBuildInfo(root: URL = new URL('../', import.meta.url)): BuildInfo & { problem?: string } {
  const nodeVersion = process.version;
  const file = new URL(BUILD_INFO_FILE, root);
  let text: string | undefined;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    text = undefined; // a checkout: no build-info.json
  }
  if (text !== undefined) {
    try {
      return { ...parseBuildInfo(text, file.pathname), source: 'image', nodeVersion };
    } catch (err) {
      return {
        version: 'unknown',
        commit: 'unknown',
        dirty: false,
        source: 'image',
        nodeVersion,
        problem: (err as Error).message,
      };
    }
  }
  try {
    const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { version?: unknown };
    if (typeof pkg.version === 'string' && VERSION.test(pkg.version))
      return { version: pkg.version, commit: 'unknown', dirty: false, source: 'checkout', nodeVersion };
    return {
      version: 'unknown',
      commit: 'unknown',
      dirty: false,
      source: 'checkout',
      nodeVersion,
      problem: `${new URL('package.json', root).pathname}: no valid version`,
    };
  } catch (err) {
    return {
      version: 'unknown',
      commit: 'unknown',
      dirty: false,
      source: 'checkout',
      nodeVersion,
      problem: `neither ${file.pathname} nor package.json readable: ${(err as Error).message}`,
    };
  }
}

let cached: ReturnType<typeof readBuildInfo> | undefined;

/** This process's build info, read once. */
export function buildInfo(): ReturnType<typeof readBuildInfo> {
  cached ??= readBuildInfo();
  return cached;
}

/** The commit as people read it: 12 hex digits, `-dirty` when built from a changed tree. */
export function shortCommit(info: Pick<BuildInfo, 'commit' | 'dirty'>): string {
  if (info.commit === 'unknown') return 'unknown';
  return `${info.commit.slice(0, 12)}${info.dirty ? '-dirty' : ''}`;
}
