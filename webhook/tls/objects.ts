/**
 * The objects the TLS bootstrap makes, as data: which certificates to keep or make, and the
 * Secrets and ConfigMap that hold them. One definition for the two ways they reach a cluster:
 * `edgemesh webhook-tls` writes them through the API (bootstrap.ts), `edgemesh install` prints
 * them for `kubectl apply` (ctl/install-*.ts). Pure apart from key generation's randomness.
 *
 *   Secret    <secret>      tls.crt, tls.key, ca.crt   the webhook pods mount it (serving)
 *   Secret    <ca-secret>   ca.crt, ca.key             the webhook CA; no pod mounts it
 *   Secret    <mesh-ca>     ca.crt, ca.key             the tunnel's mesh CA; only the signer mounts it
 *   ConfigMap <mesh-ca>     ca.crt                     its certificate, for gateways and tunnel-servers
 *   MutatingWebhookConfiguration: every webhook's clientConfig.caBundle = the webhook CA
 */
import type { V1ConfigMap, V1Secret } from '@kubernetes/client-node';
import { checkedCaKey, createCa as createSharedCa } from '../../lib/certs.ts';
import {
  createCa,
  createServingCert,
  type KeyPairPem,
  rotationReason,
  type WebhookCertificates,
} from './certs.ts';

export const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64').toString();

const WEBHOOK_LABELS = { 'app.kubernetes.io/part-of': 'edgemesh', 'app.kubernetes.io/component': 'webhook' };
const MESH_LABELS = { 'app.kubernetes.io/part-of': 'edgemesh', 'app.kubernetes.io/component': 'tunnel' };
export const MESH_CA_COMMON_NAME = 'edgemesh mesh CA';

/**
 * The certificates held by the serving Secret's and the CA Secret's `data` (base64, as the API
 * returns them). The CA comes from its own Secret; one written by an older version still sits
 * in the serving Secret and is taken from there.
 */
export function storedWebhookCertificates(
  serving: Record<string, string> | undefined,
  caSecret: Record<string, string> | undefined,
): Partial<WebhookCertificates> | undefined {
  if (!serving) return undefined;
  const pair = (d: Record<string, string> | undefined, cert: string, key: string) =>
    d?.[cert] && d[key] ? { certPem: unb64(d[cert]), keyPem: unb64(d[key]) } : undefined;
  return {
    ca: pair(caSecret, 'ca.crt', 'ca.key') ?? pair(serving, 'ca.crt', 'ca.key'),
    serving: pair(serving, 'tls.crt', 'tls.key'),
  };
}

export interface WebhookCertPlan {
  certs: WebhookCertificates;
  /** Why new certificates were made; undefined: the stored ones are kept as they are. */
  reason: string | undefined;
  /** A new CA was made (the caBundle changes). */
  newCa: boolean;
}

/**
 * Keep the stored certificates while they are valid for the names (and 30 days or more);
 * else a new serving certificate from the stored CA while the CA itself is good, so the
 * caBundle (and with it every API server's trust) stays the same; a new CA only when the CA
 * is missing, broken, expiring, or `rotate` asks for it. `extraReason` forces a rewrite that
 * keeps the CA (a CA key moving out of the serving Secret).
 */
export function planWebhookCertificates(opts: {
  stored: Partial<WebhookCertificates> | undefined;
  dnsNames: string[];
  ipAddresses: string[];
  now: Date;
  rotate: boolean;
  extraReason?: string;
}): WebhookCertPlan {
  const { stored } = opts;
  const reason = opts.rotate
    ? 'rotation forced (--rotate)'
    : (rotationReason(stored, opts.dnsNames, opts.now) ?? opts.extraReason);
  if (!reason && stored?.ca && stored.serving)
    return { certs: { ca: stored.ca, serving: stored.serving }, reason: undefined, newCa: false };
  const why = reason ?? 'no certificates stored yet';
  const caStillGood = Boolean(stored?.ca) && !opts.rotate && !/CA expires|not signed|unreadable/.test(why);
  const ca = caStillGood && stored?.ca ? stored.ca : createCa(opts.now);
  return {
    certs: { ca, serving: createServingCert(ca, opts.dnsNames, opts.now, opts.ipAddresses) },
    reason: why,
    newCa: !caStillGood,
  };
}

/** The serving Secret (mounted by the webhook pods) and the CA Secret (mounted by none). */
export function webhookSecrets(
  namespace: string,
  names: { secret: string; caSecret: string },
  certs: WebhookCertificates,
): { serving: V1Secret; ca: V1Secret } {
  return {
    serving: {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'kubernetes.io/tls',
      metadata: { name: names.secret, namespace, labels: { ...WEBHOOK_LABELS } },
      data: {
        'tls.crt': b64(certs.serving.certPem),
        'tls.key': b64(certs.serving.keyPem),
        'ca.crt': b64(certs.ca.certPem),
      },
    },
    ca: {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: names.caSecret, namespace, labels: { ...WEBHOOK_LABELS } },
      data: { 'ca.crt': b64(certs.ca.certPem), 'ca.key': b64(certs.ca.keyPem) },
    },
  };
}

/** A new mesh CA (its key signs every node's tunnel certificate). */
export function newMeshCa(): KeyPairPem {
  return createSharedCa(MESH_CA_COMMON_NAME);
}

/**
 * The certificate of the mesh CA a Secret's `data` (base64) already holds, its key checked
 * (here, at install, not first when the signer cannot start; the error names `what`);
 * undefined when the Secret holds none. An existing mesh CA is never replaced: every node
 * certificate chains to it.
 */
export function existingMeshCaCert(
  data: Record<string, string> | undefined,
  what: string,
): string | undefined {
  if (!data?.['ca.crt'] || !data['ca.key']) return undefined;
  checkedCaKey(unb64(data['ca.key']), `${what} ca.key`);
  return unb64(data['ca.crt']);
}

/** The mesh CA's Secret (certificate and key: the signer mounts it). */
export function meshCaSecret(namespace: string, name: string, ca: KeyPairPem): V1Secret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace, labels: { ...MESH_LABELS } },
    data: { 'ca.crt': b64(ca.certPem), 'ca.key': b64(ca.keyPem) },
  };
}

/**
 * The mesh CA's certificate alone, in a ConfigMap of the same name, for gateways and
 * tunnel-servers: a node whose pod mounted the Secret would let its kubelet read the key.
 */
export function meshCaConfigMap(namespace: string, name: string, certPem: string): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name, namespace, labels: { ...MESH_LABELS } },
    data: { 'ca.crt': certPem },
  };
}

/** Sets every webhook's caBundle to `caPem`; returns whether anything changed. */
export function setCaBundles(webhooks: { clientConfig: { caBundle?: string } }[], caPem: string): boolean {
  const bundle = b64(caPem);
  let changed = false;
  for (const w of webhooks) {
    if (w.clientConfig.caBundle === bundle) continue;
    w.clientConfig.caBundle = bundle;
    changed = true;
  }
  return changed;
}
