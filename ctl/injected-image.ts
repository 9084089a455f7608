/**
 * Which image the webhook injects now, told from outside as the webhook decides it
 * (webhook/cli.ts): `--image` (or EDGEMESH_IMAGE) on its container, else `injection.image` in
 * its config file (the `webhook.yaml` key of the edgemesh-config ConfigMap), else the image of
 * its own container (webhook/own-image.ts). Sidecars on another image were injected before
 * the last upgrade (or by hand) and keep it until their pod is restarted.
 */
import { createRequire } from 'node:module';
import type { PodSummary } from './pods.ts';

export const CONFIG_MAP = 'edgemesh-config';
export const CONFIG_KEY = 'webhook.yaml';

export type InjectedImage = { image: string; from: string } | { image: undefined; why: string };

/** `--image X` / `--image=X` among args, or EDGEMESH_IMAGE; undefined when neither. */
function explicitImage(pod: PodSummary): string | undefined {
  const c = pod.containers.find((x) => x.name === 'webhook') ?? pod.containers[0];
  if (!c) return undefined;
  for (let i = 0; i < c.args.length; i++) {
    if (c.args[i].startsWith('--image=')) return c.args[i].slice('--image='.length);
    if (c.args[i] === '--image' && c.args[i + 1]) return c.args[i + 1];
  }
  return c.env.EDGEMESH_IMAGE || undefined;
}

/** `injection.image` of a webhook.yaml text; undefined when not set; throws on bad YAML. */
export function configuredImage(text: string): string | undefined {
  const YAML = createRequire(import.meta.url)('yaml') as typeof import('yaml');
  const doc = YAML.parse(text) as { injection?: { image?: unknown } } | null;
  const image = doc?.injection?.image;
  return typeof image === 'string' && image !== '' ? image : undefined;
}

/**
 * Pure but for YAML parsing. `config`: the ConfigMap key's text, `null` when the ConfigMap or
 * key does not exist, or an Error when it could not be read (then only an explicit image or
 * none can be told).
 */
export function injectedImage(
  webhookPods: readonly PodSummary[],
  config: string | null | Error,
): InjectedImage {
  if (webhookPods.length === 0) return { image: undefined, why: 'no webhook pods' };
  const explicit = new Set(webhookPods.map(explicitImage));
  if (explicit.size > 1)
    return { image: undefined, why: 'the webhook pods are given different --image values (a rollout?)' };
  const [flag] = explicit;
  if (flag) return { image: flag, from: "the webhook's --image" };
  if (config instanceof Error)
    return { image: undefined, why: `ConfigMap ${CONFIG_MAP} could not be read: ${config.message}` };
  if (config !== null) {
    let image: string | undefined;
    try {
      image = configuredImage(config);
    } catch (err) {
      return {
        image: undefined,
        why: `ConfigMap ${CONFIG_MAP} ${CONFIG_KEY} is not YAML: ${(err as Error).message}`,
      };
    }
    if (image) return { image, from: `injection.image in ConfigMap ${CONFIG_MAP}` };
  }
  const own = new Set(
    webhookPods.map((p) => (p.containers.find((c) => c.name === 'webhook') ?? p.containers[0])?.image),
  );
  if (own.size > 1) return { image: undefined, why: 'the webhook pods run different images (a rollout?)' };
  const [image] = own;
  return image
    ? { image, from: "the webhook's own image" }
    : { image: undefined, why: 'the webhook pod has no image' };
}
