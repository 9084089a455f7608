/**
 * `edgemesh install`'s output: the shipped manifests (ctl/kustomize.ts renders the base or the
 * KubeEdge overlay from manifests/), changed only where the flags say, plus the TLS objects
 * `edgemesh webhook-tls` would write (webhook/tls/objects.ts), as one YAML stream for
 * `kubectl apply -f -`. Pure: certificates and what the cluster holds come in as data.
 *
 *   --image         every edgemesh container (the webhook then injects the same image)
 *   --namespace     every reference to edgemesh-system: objects, RBAC subjects, the webhook's
 *                   Service and namespace exclusion, the signer's and tunnel-server's
 *                   SERVICEACCOUNT arguments; a reference this misses fails the render
 *   settings        tunnel-servers, kubernetes-service-host/-port in ConfigMap edgemesh-config
 *   TLS             webhook serving + CA Secrets and every webhook's caBundle; the mesh CA's
 *                   Secret and ConfigMap, or only the ConfigMap (a mesh CA the cluster has)
 */
import YAML from 'yaml';
import type { KeyPairPem, WebhookCertificates } from '../webhook/tls/certs.ts';
import { meshCaConfigMap, meshCaSecret, setCaBundles, webhookSecrets } from '../webhook/tls/objects.ts';
import { type K8sObject, legacySort, podContainers } from './kustomize.ts';
import { CONFIG_MAP, type Settings } from './settings.ts';

export const BASE_NAMESPACE = 'edgemesh-system';
export const IMAGE_NAME = 'ghcr.io/edgemesh/edgemesh';
export const WEBHOOK_SECRET = 'edgemesh-webhook-tls';
export const WEBHOOK_CA_SECRET = 'edgemesh-webhook-ca';
export const MESH_CA = 'edgemesh-mesh-ca';
export const WEBHOOK_SERVICE = 'edgemesh-webhook';

export interface RenderInput {
  image: string;
  namespace: string;
  settings: Settings;
  webhookCerts: WebhookCertificates;
  /** new: Secret and ConfigMap; existing: the ConfigMap of the cluster's CA only; none: neither. */
  meshCa: { kind: 'new'; ca: KeyPairPem } | { kind: 'existing'; certPem: string } | { kind: 'none' };
}

type Loose = Record<string, unknown>;
const isRecord = (v: unknown): v is Loose => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `ref` without tag and digest. */
function imageRepo(ref: string): string {
  const noDigest = ref.split('@')[0];
  const colon = noDigest.lastIndexOf(':');
  return colon > noDigest.lastIndexOf('/') ? noDigest.slice(0, colon) : noDigest;
}

/** Moves every reference to BASE_NAMESPACE to `ns`, in place. */
function moveNamespace(objects: K8sObject[], ns: string): void {
  if (ns === BASE_NAMESPACE) return;
  for (const o of objects) {
    if (o.kind === 'Namespace' && o.metadata.name === BASE_NAMESPACE) o.metadata.name = ns;
    if (o.metadata.namespace === BASE_NAMESPACE) o.metadata.namespace = ns;
    for (const s of Array.isArray(o.subjects) ? o.subjects.filter(isRecord) : [])
      if (s.namespace === BASE_NAMESPACE) s.namespace = ns;
    for (const w of Array.isArray(o.webhooks) ? o.webhooks.filter(isRecord) : []) {
      const service =
        isRecord(w.clientConfig) && isRecord(w.clientConfig.service) ? w.clientConfig.service : {};
      if (service.namespace === BASE_NAMESPACE) service.namespace = ns;
      const sel = isRecord(w.namespaceSelector) ? w.namespaceSelector : {};
      for (const e of Array.isArray(sel.matchExpressions) ? sel.matchExpressions.filter(isRecord) : [])
        if (Array.isArray(e.values)) e.values = e.values.map((v) => (v === BASE_NAMESPACE ? ns : v));
    }
    // NAMESPACE:SERVICEACCOUNT arguments (the signer's --requester, the tunnel-server's
    // --gateway-service-account).
    for (const c of podContainers(o))
      if (Array.isArray(c.args))
        c.args = c.args.map((a) => (typeof a === 'string' ? a.replace(`=${BASE_NAMESPACE}:`, `=${ns}:`) : a));
  }
  const left = objects.filter((o) => JSON.stringify(o).includes(BASE_NAMESPACE));
  if (left.length > 0)
    throw new Error(
      `--namespace ${ns}: ${left.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')} still name${left.length === 1 ? 's' : ''} ${BASE_NAMESPACE} where edgemesh install does not know to change it (ctl/install-render.ts moveNamespace)`,
    );
}

/** The manifests with the flags applied and the TLS objects added, in kustomize's order. */
export function renderInstall(manifests: readonly K8sObject[], input: RenderInput): K8sObject[] {
  const objects = structuredClone(manifests) as K8sObject[];
  for (const o of objects)
    for (const c of podContainers(o))
      if (typeof c.image === 'string' && imageRepo(c.image) === IMAGE_NAME) c.image = input.image;
  moveNamespace(objects, input.namespace);
  const ns = input.namespace;
  const config = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === CONFIG_MAP);
  if (!config) throw new Error(`the manifests hold no ConfigMap ${CONFIG_MAP}`);
  config.data = { ...(isRecord(config.data) ? config.data : {}), ...input.settings };
  const mwc = objects.filter((o) => o.kind === 'MutatingWebhookConfiguration');
  if (mwc.length !== 1)
    throw new Error(`the manifests hold ${mwc.length} MutatingWebhookConfigurations, not 1`);
  const hooks = (Array.isArray(mwc[0].webhooks) ? mwc[0].webhooks : []) as {
    clientConfig: { caBundle?: string };
  }[];
  setCaBundles(hooks, input.webhookCerts.ca.certPem);
  const secrets = webhookSecrets(
    ns,
    { secret: WEBHOOK_SECRET, caSecret: WEBHOOK_CA_SECRET },
    input.webhookCerts,
  );
  const extra: unknown[] = [secrets.ca, secrets.serving];
  if (input.meshCa.kind === 'new')
    extra.push(
      meshCaSecret(ns, MESH_CA, input.meshCa.ca),
      meshCaConfigMap(ns, MESH_CA, input.meshCa.ca.certPem),
    );
  if (input.meshCa.kind === 'existing') extra.push(meshCaConfigMap(ns, MESH_CA, input.meshCa.certPem));
  return legacySort([...objects, ...(extra as K8sObject[])]);
}

/** The YAML stream: the header as comments, then one document per object. */
export function installYaml(objects: readonly K8sObject[], header: readonly string[]): string {
  const head = header.map((l) => `# ${l}`.trimEnd()).join('\n');
  const docs = objects.map((o) => YAML.stringify(o, { lineWidth: 0 }));
  return `${head}\n---\n${docs.join('---\n')}`;
}
