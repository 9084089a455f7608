// Filling a rootfs directory from the build machine: binaries with exactly the shared
// libraries `ldd` lists, /etc files, directories with their modes. Host paths are copied
// with every symlink on the way recreated (merged-/usr `/lib -> usr/lib`, `libfoo.so.3 ->
// libfoo.so.3.0.1`), so the dynamic loader finds a library under the name the binary asks
// for and under its real path alike.
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { PATH_ENV } from './recipe.ts';

function lexists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Copies host `path` to the same path under `root`, recreating symlinks along the way. */
export function copyHostPath(root: string, path: string, depth = 0): void {
  if (depth > 40) throw new Error(`rootfs: symlink loop at ${path}`);
  const parts = path.split('/').filter(Boolean);
  let cur = '';
  for (let i = 0; i < parts.length; i++) {
    cur += `/${parts[i]}`;
    const st = lstatSync(cur);
    const dest = join(root, cur);
    if (st.isSymbolicLink()) {
      const target = readlinkSync(cur);
      if (!lexists(dest)) symlinkSync(target, dest);
      const rest = parts.slice(i + 1).join('/');
      copyHostPath(root, join(resolve(dirname(cur), target), rest), depth + 1);
      return;
    }
    if (st.isDirectory()) {
      if (!lexists(dest)) mkdirSync(dest, { mode: st.mode & 0o7777 });
      continue;
    }
    if (i !== parts.length - 1) throw new Error(`rootfs: ${cur} is not a directory`);
    copyFileSync(cur, dest);
    chmodSync(dest, st.mode & 0o7777);
  }
}

/**
 * ldd answers, by file identity (path, inode, size, mtime). ldd runs the dynamic loader,
 * ~35 ms a file on the test VM: the 122 iptables modules alone took 4 s per build before
 * this cache, which main.ts keeps on disk between runs.
 */
const lddCache = new Map<string, string[]>();
let lddCacheFile: string | undefined;

export function useLddCache(file: string): void {
  lddCacheFile = file;
  try {
    for (const [k, v] of Object.entries(JSON.parse(readFileSync(file, 'utf8')) as Record<string, string[]>)) {
      lddCache.set(k, v);
    }
  } catch {
    // no cache yet
  }
}

export function saveLddCache(): void {
  if (lddCacheFile) writeFileSync(lddCacheFile, JSON.stringify(Object.fromEntries([...lddCache].sort())));
}

/** Absolute library paths (as ldd names them) that `binary` loads; none for a static binary. */
export function sharedLibs(binary: string): string[] {
  const st = statSync(binary);
  const id = `${binary}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const cached = lddCache.get(id);
  if (cached) return cached;
  const libs = runLdd(binary);
  lddCache.set(id, libs);
  return libs;
}

function runLdd(binary: string): string[] {
  let out: string;
  try {
    out = execFileSync('ldd', [binary], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const text =
      String((err as { stdout?: string }).stdout ?? '') + String((err as { stderr?: string }).stderr);
    if (/not a dynamic executable|statically linked/.test(text)) return [];
    throw err;
  }
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    if (/not found/.test(line)) throw new Error(`rootfs: ${binary}: ${line.trim()}`);
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) libs.push(m[1]!);
  }
  return libs.sort();
}

/**
 * Installs a host binary and its libraries. With `dest`, the binary's real file goes to that
 * path instead (e.g. npm's node → /usr/local/bin/node); returns the host files it read.
 */
export function installBinary(root: string, binary: string, dest?: string): string[] {
  if (dest) {
    mkdirSync(dirname(join(root, dest)), { recursive: true });
    copyFileSync(binary, join(root, dest));
    chmodSync(join(root, dest), 0o755);
  } else copyHostPath(root, binary);
  const libs = sharedLibs(binary);
  for (const lib of libs) copyHostPath(root, lib);
  return [binary, ...libs];
}

/** Copies a host directory tree as it is (e.g. iptables' extension modules). */
export function copyHostTree(root: string, dir: string): string[] {
  copyHostPath(root, dir);
  const files: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else {
        files.push(p);
        copyHostPath(root, p);
      }
    }
  };
  walk(dir);
  return files;
}

export function mkdirs(root: string, dirs: Record<string, number>): void {
  for (const [path, mode] of Object.entries(dirs)) {
    mkdirSync(join(root, path), { recursive: true });
    chmodSync(join(root, path), mode); // mkdir's mode goes through the umask; 1777 must not
  }
}

export function writeFiles(root: string, files: Record<string, string>, mode = 0o644): void {
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), content);
    chmodSync(join(root, path), mode);
  }
}

export function symlinks(root: string, links: Record<string, string>): void {
  for (const [path, target] of Object.entries(links)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    if (!lexists(join(root, path))) symlinkSync(target, join(root, path));
  }
}

export interface Account {
  name: string;
  uid: number;
  home?: string;
  gecos?: string;
}

/** /etc/passwd and /etc/group, one group per user with the same id; no shells, no passwords. */
export function accounts(root: string, users: Account[]): void {
  const passwd = users.map(
    (u) => `${u.name}:x:${u.uid}:${u.uid}:${u.gecos ?? u.name}:${u.home ?? '/nonexistent'}:/sbin/nologin\n`,
  );
  const group = users.map((u) => `${u.name}:x:${u.uid}:\n`);
  writeFiles(root, { 'etc/passwd': passwd.join(''), 'etc/group': group.join('') });
}

/** Runs a command inside the rootfs (chroot; needs root); returns stdout + stderr, throws on failure. */
export function inRootfs(root: string, argv: string[], env: Record<string, string> = {}): string {
  const r = spawnSync('chroot', [root, ...argv], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: PATH_ENV.slice('PATH='.length), ...env },
    timeout: 60_000,
  });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.status !== 0) {
    throw new Error(
      `in rootfs: ${argv.join(' ')}: ${r.error?.message ?? `exit ${r.status ?? r.signal}`}\n${output}`,
    );
  }
  return output;
}
