import { mkdir, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import type { V1Container, V1KeyToPath, V1Pod, V1Volume } from '@kubernetes/client-node';
import { fieldValue } from './pod-env.ts';

/**
 * Pod volumes on the test node. Content volumes (configMap, secret, downwardAPI, projected,
 * including the service-account token the ServiceAccount admission plugin adds to every
 * pod) are written as files into a per-pod directory; emptyDir is an empty per-pod
 * directory; hostPath is the host's path. Containers then see them at their mountPath
 * through bind mounts in a private mount namespace (see ManagedProcess).
 */
export type VolumeContent =
  | { kind: 'files'; files: Record<string, string> }
  | { kind: 'emptyDir' }
  | { kind: 'hostPath'; path: string; create: 'dir' | 'file' | 'none' };

/** Where a volume's data comes from (the API, in the agent). `undefined`: not found. */
export interface VolumeSources {
  configMap(name: string): Promise<Record<string, string> | undefined>;
  secret(name: string): Promise<Record<string, string> | undefined>;
  token(audience: string | undefined, expirationSeconds: number): Promise<string>;
}

export class VolumeError extends Error {}

export interface Mount {
  source: string;
  target: string;
  readOnly: boolean;
}

/** What a volume holds; relative file paths → content. Throws VolumeError naming the volume. */
export async function volumeContent(
  pod: V1Pod,
  volume: V1Volume,
  sources: VolumeSources,
  facts: { podIP: string; hostIP: string },
): Promise<VolumeContent> {
  const fail = (why: string) => new VolumeError(`volume ${volume.name}: ${why}`);
  if (volume.emptyDir) return { kind: 'emptyDir' };
  if (volume.hostPath) {
    const type = volume.hostPath.type ?? '';
    if (!isAbsolute(volume.hostPath.path)) throw fail(`hostPath ${volume.hostPath.path} is not absolute`);
    const create = type === 'DirectoryOrCreate' ? 'dir' : type === 'FileOrCreate' ? 'file' : 'none';
    return { kind: 'hostPath', path: volume.hostPath.path, create };
  }
  const files: Record<string, string> = {};
  const add = (path: string, content: string) => {
    const clean = normalize(path);
    if (isAbsolute(clean) || clean.startsWith('..') || clean === '.')
      throw fail(`file path ${path} leaves the volume`);
    files[clean] = content;
  };
  const keyed = async (
    kind: 'configMap' | 'secret',
    name: string,
    items: V1KeyToPath[] | undefined,
    optional: boolean | undefined,
  ) => {
    const data = await sources[kind](name);
    if (data === undefined) {
      if (optional) return;
      throw fail(`${kind} ${pod.metadata?.namespace}/${name} not found`);
    }
    if (!items) {
      for (const [k, v] of Object.entries(data)) add(k, v);
      return;
    }
    for (const item of items) {
      const v = data[item.key];
      if (v === undefined) {
        if (optional) continue;
        throw fail(`${kind} ${pod.metadata?.namespace}/${name} has no key ${item.key}`);
      }
      add(item.path, v);
    }
  };
  const downward = (
    items: { path: string; fieldRef?: { fieldPath: string }; resourceFieldRef?: unknown }[],
  ) => {
    for (const item of items) {
      if (!item.fieldRef) throw fail(`downwardAPI ${item.path}: only fieldRef is supported`);
      try {
        add(item.path, fieldValue(pod, item.fieldRef.fieldPath, facts));
      } catch (err) {
        throw fail(`downwardAPI ${item.path}: ${(err as Error).message}`);
      }
    }
  };

  if (volume.configMap) {
    await keyed('configMap', volume.configMap.name ?? '', volume.configMap.items, volume.configMap.optional);
  } else if (volume.secret) {
    await keyed('secret', volume.secret.secretName ?? '', volume.secret.items, volume.secret.optional);
  } else if (volume.downwardAPI) {
    downward(volume.downwardAPI.items ?? []);
  } else if (volume.projected) {
    for (const source of volume.projected.sources ?? []) {
      if (source.configMap) {
        await keyed(
          'configMap',
          source.configMap.name ?? '',
          source.configMap.items,
          source.configMap.optional,
        );
      } else if (source.secret) {
        await keyed('secret', source.secret.name ?? '', source.secret.items, source.secret.optional);
      } else if (source.downwardAPI) {
        downward(source.downwardAPI.items ?? []);
      } else if (source.serviceAccountToken) {
        const t = source.serviceAccountToken;
        add(t.path, await sources.token(t.audience, t.expirationSeconds ?? 3600));
      } else {
        throw fail(`projected source ${Object.keys(source).join(',')} is not supported`);
      }
    }
  } else {
    const kind = Object.keys(volume).find((k) => k !== 'name') ?? 'none';
    throw fail(`volume type ${kind} is not supported by the test node`);
  }
  return { kind: 'files', files };
}

/** Writes a volume's content under `dir` (except hostPath) and returns its host path. */
export async function materialize(dir: string, content: VolumeContent): Promise<string> {
  if (content.kind === 'hostPath') {
    if (content.create === 'dir') await mkdir(content.path, { recursive: true });
    if (content.create === 'file') {
      await mkdir(dirname(content.path), { recursive: true });
      await writeFile(content.path, '', { flag: 'a' });
    }
    return content.path;
  }
  await mkdir(dir, { recursive: true, mode: 0o755 });
  if (content.kind === 'files') {
    for (const [path, text] of Object.entries(content.files)) {
      await mkdir(dirname(join(dir, path)), { recursive: true });
      await writeFile(join(dir, path), text, { mode: 0o644 });
    }
  }
  return dir;
}

/** The bind mounts a container gets from its volumeMounts (subPath resolved inside the volume). */
export function containerMounts(c: V1Container, volumes: Map<string, string>): Mount[] {
  return (c.volumeMounts ?? []).map((m) => {
    const source = volumes.get(m.name);
    if (source === undefined)
      throw new VolumeError(`${c.name}: volumeMount ${m.name} names no volume of the pod`);
    if (!isAbsolute(m.mountPath))
      throw new VolumeError(`${c.name}: mountPath ${m.mountPath} is not absolute`);
    const sub = m.subPath ? normalize(m.subPath) : '';
    if (sub.startsWith('..') || isAbsolute(sub))
      throw new VolumeError(`${c.name}: subPath ${m.subPath} leaves the volume`);
    return { source: sub ? join(source, sub) : source, target: m.mountPath, readOnly: m.readOnly === true };
  });
}

/**
 * Makes sure a bind-mount target exists on the host (a directory, or an empty file when the
 * source is a file); returns what it had to create, outermost first, so the caller can
 * remove exactly that later.
 */
export async function ensureMountpoint(target: string, isDir: boolean): Promise<string[]> {
  const created: string[] = [];
  const missing: string[] = [];
  let p = isDir ? target : dirname(target);
  while (!(await exists(p))) {
    missing.unshift(p);
    p = dirname(p);
  }
  for (const dir of missing) {
    await mkdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    created.push(dir);
  }
  if (!isDir && !(await exists(target))) {
    await writeFile(target, '', { flag: 'a' });
    created.push(target);
  }
  return created;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
