/**
 * The gateway's settings from the edgemesh-config ConfigMap, mounted as a volume
 * (`--settings-dir`, one file per key), not taken as environment variables.
 *
 * Why files: a kubelet restarts a container whose env comes from a ConfigMap only while it can
 * sync that ConfigMap from the API server. With the cloud out of reach (for about a minute or
 * more: once its watch has failed) the restart fails with `CreateContainerConfigError: failed
 * to sync configmap cache`, and a gateway that crashed or was killed during a cut stayed down.
 * A ConfigMap volume is already on the node: the container restarts with what it holds.
 *
 * Keys (all optional): `tunnel-servers` (comma- or space-separated HOST:PORT),
 * `kubernetes-service-host` and `kubernetes-service-port` (the API server's address for
 * in-cluster config on nodes without kube-proxy, where the `kubernetes` ClusterIP the kubelet
 * hands every pod is not reachable).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configError } from '../lib/errors.ts';

export interface GatewaySettings {
  tunnelServers?: string[];
  kubernetesServiceHost?: string;
  kubernetesServicePort?: string;
}

/** Largest settings file read: these are one-line values. */
const MAX_BYTES = 64 * 1024;

/** Pure: settings from key → text (absent keys absent); throws naming the key. */
export function parseSettings(files: Record<string, string | undefined>): GatewaySettings {
  const out: GatewaySettings = {};
  const servers = files['tunnel-servers']?.trim();
  if (servers) out.tunnelServers = servers.split(/[\s,]+/).filter(Boolean);
  const host = files['kubernetes-service-host']?.trim();
  if (host) {
    if (!/^[A-Za-z0-9.:-]{1,253}$/.test(host))
      throw configError(
        `settings: kubernetes-service-host ${JSON.stringify(host.slice(0, 80))} is not a host`,
      );
    out.kubernetesServiceHost = host;
  }
  const port = files['kubernetes-service-port']?.trim();
  if (port) {
    if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535)
      throw configError(
        `settings: kubernetes-service-port ${JSON.stringify(port.slice(0, 80))} is not 1..65535`,
      );
    out.kubernetesServicePort = port;
  }
  return out;
}

/** Reads the keys from `dir` (a missing file is an absent key; an unreadable one an error naming it). */
export function readSettingsDir(dir: string): GatewaySettings {
  const files: Record<string, string | undefined> = {};
  for (const key of ['tunnel-servers', 'kubernetes-service-host', 'kubernetes-service-port']) {
    const path = join(dir, key);
    try {
      const text = readFileSync(path, 'utf8');
      if (text.length > MAX_BYTES) throw new Error(`larger than ${MAX_BYTES} bytes`);
      files[key] = text;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw configError(`--settings-dir: cannot read ${path}: ${(err as Error).message}`);
    }
  }
  return parseSettings(files);
}
