import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { configError } from '../lib/errors.ts';

/**
 * The manifests `edgemesh inject` and `uninject` read, as a user gives them: files, directories
 * (every *.yaml, *.yml and *.json below, in name order, as `kubectl apply -R -f` takes them),
 * and `-` for standard input. Errors name the path and the cause.
 */
export interface ManifestSource {
  /** The path as given (or found in a directory); `-` is standard input. */
  name: string;
  text: string;
}

const MANIFEST = /\.(ya?ml|json)$/;

export function readManifestSources(paths: readonly string[], readStdin = () => readFileSync(0, 'utf8')) {
  if (paths.length === 0)
    throw configError(
      "no manifests: give files or directories (-f or as arguments), or '-' for standard input",
    );
  if (paths.filter((p) => p === '-').length > 1)
    throw configError("'-' (standard input) given more than once");
  const out: ManifestSource[] = [];
  for (const path of paths) {
    if (path === '-') {
      out.push({ name: '-', text: read('standard input', readStdin) });
      continue;
    }
    let isDir: boolean;
    try {
      isDir = statSync(path).isDirectory();
    } catch (err) {
      throw configError(`cannot read ${path}: ${(err as Error).message}`);
    }
    if (!isDir) {
      out.push({ name: path, text: read(path, () => readFileSync(path, 'utf8')) });
      continue;
    }
    const files = listManifests(path);
    if (files.length === 0) throw configError(`${path}: no *.yaml, *.yml or *.json files in this directory`);
    for (const file of files) out.push({ name: file, text: read(file, () => readFileSync(file, 'utf8')) });
  }
  return out;
}

function read(name: string, reader: () => string): string {
  try {
    return reader();
  } catch (err) {
    throw configError(`cannot read ${name}: ${(err as Error).message}`);
  }
}

/** Manifest files under `dir`, depth first in name order; hidden entries (.git) are skipped. */
function listManifests(dir: string): string[] {
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    throw configError(`cannot read ${dir}: ${(err as Error).message}`);
  }
  const out: string[] = [];
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (e.name.startsWith('.')) continue;
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...listManifests(path));
    else if (e.isFile() && MANIFEST.test(e.name)) out.push(path);
  }
  return out;
}
