import {
  AdmissionregistrationV1Api,
  ApiException,
  CoreV1Api,
  type KubeConfig,
} from '@kubernetes/client-node';
import { EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { serviceDnsNames } from './certs.ts';
import {
  existingMeshCaCert,
  meshCaConfigMap,
  meshCaSecret,
  newMeshCa,
  planWebhookCertificates,
  setCaBundles,
  storedWebhookCertificates,
  webhookSecrets,
} from './objects.ts';

/**
 * The webhook's TLS bootstrap against the current kube context: make (or keep) a CA and a
 * serving certificate, store them in a Secret the webhook mounts, and put the CA into the
 * MutatingWebhookConfiguration's caBundle. Idempotent: with valid certificates and the
 * right caBundle in place it writes nothing. The CA is kept across serving-cert rotations
 * so the caBundle only changes when the CA itself is replaced.
 */
export interface BootstrapOptions {
  namespace: string;
  service: string;
  secretName: string;
  webhookConfigName: string;
  clusterDomain: string;
  /** Extra IP SANs, e.g. when the API server reaches the webhook by URL at an address. */
  ipAddresses: string[];
  /** Extra DNS SANs. */
  extraDnsNames: string[];
  rotate: boolean;
  now: Date;
  /**
   * Secret for the webhook CA's key (ca.crt, ca.key). Kept apart from `secretName`, which the
   * webhook pods mount (tls.crt, tls.key, ca.crt): a webhook pod that is taken cannot mint
   * serving certificates the API server trusts (issue 16 item 10). Only this command reads it.
   */
  caSecretName: string;
  /** Secret for the tunnel's mesh CA (created once if missing, never rotated here); '' skips it. */
  meshCaSecret: string;
}

export interface BootstrapResult {
  secret: 'created' | 'updated' | 'unchanged';
  meshCa: 'created' | 'unchanged' | 'skipped';
  caBundle: 'updated' | 'unchanged' | 'no-webhook-config';
  reason: string;
}

async function readOrUndefined<T>(read: () => Promise<T>): Promise<T | undefined> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof ApiException && err.code === 404) return undefined;
    throw err;
  }
}

/** client-node's errors dump headers and bodies; say what failed and the API's own message. */
async function step<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (!(err instanceof ApiException)) {
      // A request that got no answer ("fetch failed"): say why (the CLI adds which server).
      throw new EdgemeshError(ErrorCodes.UNAVAILABLE, `${what}: ${connectionCause(err)}`);
    }
    throw new EdgemeshError(ErrorCodes.UNAVAILABLE, `${what}: ${apiErrorText(err.code, err.body)}`);
  }
}

/** An API server's refusal: the status, what it means for this command, and the API's words. */
export function apiErrorText(code: number, body: unknown): string {
  let message = String(body);
  try {
    message = (typeof body === 'string' ? JSON.parse(body) : body).message ?? message;
  } catch {
    // body was not JSON: keep it as text
  }
  if (code === 401)
    return `HTTP 401: the API server refused the credentials (expired token or certificate?): ${message}`;
  if (code === 403)
    return `HTTP 403: forbidden: ${message} (webhook-tls needs get/create/update on Secrets and ConfigMaps in the namespace and get/update on the MutatingWebhookConfiguration)`;
  const hint =
    code === 404 && /namespaces/.test(message)
      ? ' (apply the manifests first: kubectl apply -k manifests)'
      : '';
  return `HTTP ${code}: ${message}${hint}`;
}

/** Why a request got no answer: fetch's "fetch failed" hides the socket or TLS error in `cause`. */
export function connectionCause(err: unknown): string {
  const inner = (err as { cause?: unknown })?.cause ?? err;
  const e = inner as NodeJS.ErrnoException;
  const code = e?.code;
  const text = e?.message ?? String(inner);
  switch (code) {
    case 'ECONNREFUSED':
      return 'cannot connect: connection refused (ECONNREFUSED)';
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return `cannot connect: timed out (${code})`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot connect: host name not resolved (${code})`;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `cannot connect: no route (${code})`;
  }
  if (code && /CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|ERR_SSL|HOSTNAME/.test(code))
    return `TLS: ${text} (${code})`;
  return code ? `${text} (${code})` : text;
}

export async function bootstrapTls(
  kc: KubeConfig,
  opts: BootstrapOptions,
  log: Logger,
): Promise<BootstrapResult> {
  const core = kc.makeApiClient(CoreV1Api);
  const admission = kc.makeApiClient(AdmissionregistrationV1Api);
  const dnsNames = [
    ...serviceDnsNames(opts.service, opts.namespace, opts.clusterDomain),
    ...opts.extraDnsNames,
  ];

  const secretName = `Secret ${opts.namespace}/${opts.secretName}`;
  const existing = await step(`reading ${secretName}`, () =>
    readOrUndefined(() => core.readNamespacedSecret({ name: opts.secretName, namespace: opts.namespace })),
  );
  const caSecretName = `Secret ${opts.namespace}/${opts.caSecretName}`;
  const caSecret = await step(`reading ${caSecretName}`, () =>
    readOrUndefined(() => core.readNamespacedSecret({ name: opts.caSecretName, namespace: opts.namespace })),
  );
  const stored = storedWebhookCertificates(existing?.data, caSecret?.data);
  // A CA key written by an older version into the serving Secret moves to its own Secret.
  const keyInServing = Boolean(existing?.data?.['ca.key']);
  const plan = planWebhookCertificates({
    stored,
    dnsNames,
    ipAddresses: opts.ipAddresses,
    now: opts.now,
    rotate: opts.rotate,
    extraReason: keyInServing ? `the CA key moves from ${secretName} to ${caSecretName}` : undefined,
  });
  const { certs, reason } = plan;
  let secretResult: BootstrapResult['secret'] = 'unchanged';
  if (reason) {
    const { serving: body, ca: caBody } = webhookSecrets(
      opts.namespace,
      { secret: opts.secretName, caSecret: opts.caSecretName },
      certs,
    );
    if (existing?.metadata?.resourceVersion && body.metadata)
      body.metadata.resourceVersion = existing.metadata.resourceVersion;
    // The CA first: a serving certificate is never stored without the key that signed it.
    if (caSecret?.data?.['ca.key'] !== caBody.data?.['ca.key'])
      await step(caSecret ? `updating ${caSecretName}` : `creating ${caSecretName}`, () =>
        caSecret
          ? core.replaceNamespacedSecret({ name: opts.caSecretName, namespace: opts.namespace, body: caBody })
          : core.createNamespacedSecret({ namespace: opts.namespace, body: caBody }),
      );
    if (existing) {
      await step(`updating ${secretName}`, () =>
        core.replaceNamespacedSecret({ name: opts.secretName, namespace: opts.namespace, body }),
      );
      secretResult = 'updated';
    } else {
      await step(`creating ${secretName}`, () =>
        core.createNamespacedSecret({ namespace: opts.namespace, body }),
      );
      secretResult = 'created';
    }
    log.info(
      { secret: `${opts.namespace}/${opts.secretName}`, reason, newCa: plan.newCa },
      'webhook certificates written',
    );
  } else {
    log.info({ secret: `${opts.namespace}/${opts.secretName}` }, 'webhook certificates are valid; kept');
  }

  const meshCa = opts.meshCaSecret
    ? await ensureMeshCa(core, opts.namespace, opts.meshCaSecret, log)
    : 'skipped';

  const config = await step(`reading MutatingWebhookConfiguration ${opts.webhookConfigName}`, () =>
    readOrUndefined(() => admission.readMutatingWebhookConfiguration({ name: opts.webhookConfigName })),
  );
  if (!config) {
    log.warn(
      { name: opts.webhookConfigName },
      'MutatingWebhookConfiguration not found; apply the manifests, then run this again',
    );
    return { secret: secretResult, meshCa, caBundle: 'no-webhook-config', reason: reason ?? 'valid' };
  }
  const webhooks = config.webhooks ?? [];
  if (!setCaBundles(webhooks, certs.ca.certPem)) {
    return { secret: secretResult, meshCa, caBundle: 'unchanged', reason: reason ?? 'valid' };
  }
  // replace carries resourceVersion: a concurrent edit makes this fail loudly instead of being lost.
  await step(`updating MutatingWebhookConfiguration ${opts.webhookConfigName}`, () =>
    admission.replaceMutatingWebhookConfiguration({ name: opts.webhookConfigName, body: config }),
  );
  log.info({ name: opts.webhookConfigName, webhooks: webhooks.length }, 'caBundle updated');
  return { secret: secretResult, meshCa, caBundle: 'updated', reason: reason ?? 'valid' };
}

/**
 * The tunnel's mesh CA: its key signs node and tunnel-server certificates (only the edgemesh
 * signer mounts the Secret), and its certificate is the only trust anchor between gateways.
 * The certificate alone is published in a ConfigMap of the same name, which gateways and
 * tunnel-servers mount: a node whose pod mounted the Secret would let its kubelet read the
 * key (the Node authorizer allows a kubelet its pods' Secrets). Made once; an existing CA is
 * never replaced here, since every node certificate chains to it; the ConfigMap is (re)written
 * when missing or different.
 */
async function ensureMeshCa(
  core: CoreV1Api,
  namespace: string,
  name: string,
  log: Logger,
): Promise<'created' | 'unchanged'> {
  const what = `Secret ${namespace}/${name}`;
  const existing = await step(`reading ${what}`, () =>
    readOrUndefined(() => core.readNamespacedSecret({ name, namespace })),
  );
  let result: 'created' | 'unchanged' = 'unchanged';
  let certPem = existingMeshCaCert(existing?.data, what);
  if (certPem === undefined) {
    const ca = newMeshCa();
    certPem = ca.certPem;
    const body = meshCaSecret(namespace, name, ca);
    if (existing)
      await step(`updating ${what}`, () => core.replaceNamespacedSecret({ name, namespace, body }));
    else await step(`creating ${what}`, () => core.createNamespacedSecret({ namespace, body }));
    log.info({ secret: what }, 'mesh CA created');
    result = 'created';
  }
  const cmWhat = `ConfigMap ${namespace}/${name}`;
  const cm = await step(`reading ${cmWhat}`, () =>
    readOrUndefined(() => core.readNamespacedConfigMap({ name, namespace })),
  );
  if (cm?.data?.['ca.crt'] !== certPem) {
    const body = meshCaConfigMap(namespace, name, certPem);
    if (cm)
      await step(`updating ${cmWhat}`, () => core.replaceNamespacedConfigMap({ name, namespace, body }));
    else await step(`creating ${cmWhat}`, () => core.createNamespacedConfigMap({ namespace, body }));
    log.info({ configMap: cmWhat }, 'mesh CA certificate published');
  }
  return result;
}
