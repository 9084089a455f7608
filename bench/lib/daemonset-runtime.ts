/** How the gateway DaemonSet runs node, read from a checkout's manifests (bench/scale*.ts). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';

/**
 * The node flags of the gateway container's command (between node and the entrypoint) and its
 * plain env values (not those from fields) in `root`'s manifests/base/gateway.yaml: a variant
 * is measured as that checkout would ship, e.g. with or without MALLOC_ARENA_MAX.
 */
export function gatewayRuntime(root: string): { flags: string[]; env: Record<string, string> } {
  const docs = YAML.parseAllDocuments(readFileSync(join(root, 'manifests/base/gateway.yaml'), 'utf8')).map(
    (d) => d.toJS(),
  );
  const ds = docs.find((d) => d?.kind === 'DaemonSet');
  const c = ds.spec.template.spec.containers.find((x: { name: string }) => x.name === 'gateway');
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) if (typeof e.value === 'string') env[e.name] = e.value;
  return { flags: (c.command as string[]).slice(1, -1), env };
}

/** "flags ENV=value …" for a results table. */
export const describeRuntime = (r: { flags: string[]; env: Record<string, string> }): string =>
  [...r.flags, ...Object.entries(r.env).map(([k, v]) => `${k}=${v}`)].join(' ');
