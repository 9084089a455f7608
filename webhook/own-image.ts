import { existsSync } from 'node:fs';
import type { V1Pod } from '@kubernetes/client-node';
import { configError, EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';

/**
 * The image the webhook injects when neither `--image` nor `injection.image` is set: the
 * image of its own container, read once at start from its own Pod. The manifests give it the
 * Pod's name and namespace (downward API: EDGEMESH_POD_NAME, EDGEMESH_POD_NAMESPACE), a
 * service-account token, and a Role with `get` on pods in edgemesh-system.
 *
 * Why the Pod rather than a value in the manifests:
 * - whatever retags the webhook retags the injected containers too: kustomize `images:`, a
 *   Helm value, `kubectl set image deployment/edgemesh-webhook webhook=…`;
 * - the injected init and sidecar run the release whose code wrote their arguments; during a
 *   rollout, old replicas inject the old image and new replicas the new one.
 * The downward API cannot expose a container's image. A ConfigMap key that the base's
 * `configurations:` lets `images:` rewrite does follow an overlay's `images:` (kustomize 5.8),
 * but not `kubectl set image`, and a chart would have to template it twice.
 * The cost is one GET at start; a webhook that cannot read its image does not start, with an
 * error naming injection.image and the cause.
 */

/** The webhook's container in manifests/base/webhook.yaml. */
export const OWN_CONTAINER = 'webhook';

/** What to set instead, in every error. */
const INSTEAD = 'or set injection.image (ConfigMap edgemesh-config, key webhook.yaml) or --image';

/** Reads one Pod; errors carry the HTTP status when the API server answered. */
export type ReadPod = (namespace: string, name: string) => Promise<V1Pod>;

export class PodReadError extends Error {
  /** The API server's HTTP status; undefined when it could not be reached. */
  readonly status: number | undefined;
  constructor(message: string, status?: number) {
    super(message);
    this.status = status;
  }
}

/**
 * The image of the webhook's own container: the one named `webhook`, or the Pod's only
 * container (a differently named container in a hand-written manifest).
 */
export function ownContainerImage(pod: V1Pod, where: string): string {
  const containers = pod.spec?.containers ?? [];
  const own =
    containers.find((c) => c.name === OWN_CONTAINER) ?? (containers.length === 1 ? containers[0] : undefined);
  if (!own) {
    const names = containers.map((c) => c.name).join(', ') || 'none';
    throw configError(
      `injection.image is not set and ${where} has no container named ${JSON.stringify(OWN_CONTAINER)} ` +
        `to take the image from (containers: ${names}): rename the webhook's container to ${OWN_CONTAINER} ${INSTEAD}`,
    );
  }
  if (!own.image)
    throw configError(`injection.image is not set and ${where} container ${own.name} has no image`);
  return own.image;
}

export interface OwnImageOptions {
  /** EDGEMESH_POD_NAME / --pod-name. */
  podName: string | undefined;
  /** EDGEMESH_POD_NAMESPACE / --pod-namespace. */
  namespace: string | undefined;
  /** Default: the API server of the cluster this process runs in (inClusterPodReader). */
  readPod?: ReadPod;
  log: Logger;
  /** How long to retry an API server that is unreachable or answers 429/5xx. */
  retryForMs?: number;
  retryEveryMs?: number;
}

/**
 * The image of this webhook's own container. Retries an unreachable or overloaded API server
 * for a while (a restarted control plane); a refusal (403, 404) fails at once.
 */
export async function readOwnImage(opts: OwnImageOptions): Promise<{ image: string; from: string }> {
  const { podName, namespace, log, retryForMs = 30_000, retryEveryMs = 2_000 } = opts;
  if (!podName || !namespace) {
    const missing = [podName ? '' : '--pod-name', namespace ? '' : '--pod-namespace'].filter(Boolean);
    throw configError(
      `no image to inject: injection.image is not set, and ${missing.join(' and ')} (EDGEMESH_POD_NAME, ` +
        `EDGEMESH_POD_NAMESPACE from the downward API in manifests/base/webhook.yaml) ${missing.length > 1 ? 'are' : 'is'} ` +
        `not set to read the webhook's own image from its Pod: run it as in the manifests ${INSTEAD}`,
    );
  }
  const readPod = opts.readPod ?? (await inClusterPodReader());
  const where = `Pod ${namespace}/${podName}`;
  const deadline = Date.now() + retryForMs;
  for (let attempt = 1; ; attempt++) {
    try {
      const image = ownContainerImage(await readPod(namespace, podName), where);
      return { image, from: `${where} container ${OWN_CONTAINER}` };
    } catch (err) {
      if (!(err instanceof PodReadError)) throw err;
      const transient = err.status === undefined || err.status === 429 || err.status >= 500;
      if (!transient || Date.now() + retryEveryMs > deadline) {
        const hint =
          err.status === 403 || err.status === 401
            ? ' (the Role and RoleBinding edgemesh-webhook grant it to the ServiceAccount edgemesh-webhook)'
            : '';
        throw new EdgemeshError(
          transient ? ErrorCodes.UNAVAILABLE : ErrorCodes.CONFIG,
          `no image to inject: injection.image is not set, and reading the webhook's own image from ` +
            `${where} failed${transient ? ` after ${attempt} attempts` : ''}: ${err.message}${hint}; fix that ${INSTEAD}`,
        );
      }
      log.warn({ attempt, err: err.message }, `reading ${where} for the image to inject; retrying`);
      await new Promise((r) => setTimeout(r, retryEveryMs));
    }
  }
}

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * ReadPod against the API server of the cluster this process runs in, with its mounted
 * service-account token. client-node is loaded only here: a webhook given injection.image
 * never loads it.
 */
export async function inClusterPodReader(): Promise<ReadPod> {
  if (!process.env.KUBERNETES_SERVICE_HOST) {
    throw configError(
      "no image to inject: injection.image is not set, and KUBERNETES_SERVICE_HOST is not set to read the webhook's " +
        `own Pod (not running in a cluster?): run it in its Pod ${INSTEAD}`,
    );
  }
  if (!existsSync(SERVICE_ACCOUNT_TOKEN)) {
    throw configError(
      `no image to inject: injection.image is not set, and there is no service-account token at ${SERVICE_ACCOUNT_TOKEN} ` +
        `to read the webhook's own Pod (the Pod needs automountServiceAccountToken: true, as in manifests/base/webhook.yaml) ${INSTEAD}`,
    );
  }
  const { ApiException, CoreV1Api, KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  kc.loadFromCluster();
  const core = kc.makeApiClient(CoreV1Api);
  return async (namespace, name) => {
    try {
      return await core.readNamespacedPod({ name, namespace });
    } catch (err) {
      if (!(err instanceof ApiException)) throw new PodReadError((err as Error).message);
      let message = String(err.body);
      try {
        message = (typeof err.body === 'string' ? JSON.parse(err.body) : err.body).message ?? message;
      } catch {
        // body was not JSON: keep it as text
      }
      throw new PodReadError(`HTTP ${err.code}: ${message}`, err.code);
    }
  };
}
