/**
 * What `edgemesh install` keeps from a cluster it can read, so that running it again and
 * applying the output never breaks a running installation. Pure:
 *
 *   mesh CA      --mesh-ca=auto (default): a cluster that has one keeps it (only its ConfigMap
 *                is printed, from the Secret's certificate: the Secret is not in the output, so
 *                `kubectl apply` cannot replace it); a cluster without one gets a new one; a
 *                cluster that cannot be read is an error naming --mesh-ca, since a new mesh CA
 *                applied over an existing one cuts every node off until it re-enrols.
 *                --mesh-ca=new prints a new one (a warning when the cluster has one);
 *                --mesh-ca=skip prints none.
 *   webhook TLS  the certificates the cluster holds while valid (webhook-tls's own plan:
 *                renewed within 30 days of expiry, from the same CA), so the caBundle does not
 *                change under running webhook pods; new ones when the cluster has none or
 *                cannot be read.
 *   settings     a flag, else the value edgemesh-config holds now, else the shipped one: a
 *                re-run without --tunnel-servers does not reset it to the placeholder.
 */
import { configError } from '../lib/errors.ts';
import type { KeyPairPem, WebhookCertificates } from '../webhook/tls/certs.ts';
import {
  existingMeshCaCert,
  planWebhookCertificates,
  storedWebhookCertificates,
} from '../webhook/tls/objects.ts';
import type { RenderInput } from './install-render.ts';
import { SETTING_KEYS, type Settings } from './settings.ts';

export type MeshCaMode = 'auto' | 'new' | 'skip';

/** Each value: the Secret's or ConfigMap's `data` (Secret values base64), null when absent. */
export interface ClusterState {
  /** "API server URL (from SOURCE)", for messages. */
  server: string;
  webhookTls: Record<string, string> | null;
  webhookCa: Record<string, string> | null;
  meshCa: Record<string, string> | null;
  config: Record<string, string> | null;
}

export type ClusterView = { kind: 'read'; state: ClusterState } | { kind: 'unread'; why: string };

export interface PlanInput {
  namespace: string;
  meshCaMode: MeshCaMode;
  cluster: ClusterView;
  /** Settings given as flags (validated). */
  flags: Settings;
  now: Date;
  dnsNames: string[];
  /** Makes a new mesh CA (a parameter so tests need not wait for RSA key generation twice). */
  newMeshCa: () => KeyPairPem;
}

export interface Plan {
  webhookCerts: WebhookCertificates;
  meshCa: RenderInput['meshCa'];
  settings: Settings;
  /** What was decided and why: the output's header comments and stderr. */
  notes: string[];
  /** Said on stderr only (things to act on). */
  warnings: string[];
}

export function planInstall(input: PlanInput): Plan {
  const notes: string[] = [];
  const warnings: string[] = [];
  const ns = input.namespace;
  const state = input.cluster.kind === 'read' ? input.cluster.state : undefined;
  if (input.cluster.kind === 'unread')
    notes.push(`cluster not read (${input.cluster.why}): nothing kept from it`);
  else notes.push(`read the current installation from ${input.cluster.state.server}`);

  let meshCa: Plan['meshCa'];
  const what = `Secret ${ns}/edgemesh-mesh-ca`;
  const existing = state ? existingMeshCaCert(state.meshCa ?? undefined, what) : undefined;
  if (input.meshCaMode === 'skip') {
    meshCa = { kind: 'none' };
    notes.push('mesh CA: not printed (--mesh-ca=skip)');
  } else if (input.meshCaMode === 'new') {
    meshCa = { kind: 'new', ca: input.newMeshCa() };
    notes.push('mesh CA: new (--mesh-ca=new)');
    if (existing)
      warnings.push(
        `--mesh-ca=new: the cluster already has a mesh CA (${what}); applying this replaces it and every gateway and tunnel-server must enrol again (their certificates chain to the old one). Use --mesh-ca=auto to keep it.`,
      );
  } else if (input.cluster.kind === 'unread') {
    throw configError(
      `--mesh-ca=auto: cannot tell whether the cluster already has a mesh CA (${input.cluster.why}). Give --mesh-ca=new for a cluster without edgemesh, or --mesh-ca=skip when it has one (an existing mesh CA must not be replaced)`,
    );
  } else if (existing) {
    meshCa = { kind: 'existing', certPem: existing };
    notes.push(`mesh CA: kept (${what} exists; only its certificate's ConfigMap is printed)`);
  } else {
    meshCa = { kind: 'new', ca: input.newMeshCa() };
    notes.push(`mesh CA: new (${what} does not exist)`);
  }

  const plan = planWebhookCertificates({
    stored: state
      ? storedWebhookCertificates(state.webhookTls ?? undefined, state.webhookCa ?? undefined)
      : undefined,
    dnsNames: input.dnsNames,
    ipAddresses: [],
    now: input.now,
    rotate: false,
  });
  notes.push(
    plan.reason === undefined
      ? 'webhook certificates: kept from the cluster (valid for 30 days or more)'
      : plan.newCa
        ? `webhook certificates: new CA and serving certificate (${plan.reason})`
        : `webhook certificates: new serving certificate from the cluster's webhook CA (${plan.reason}); the caBundle is unchanged`,
  );
  if (plan.newCa && state?.webhookTls)
    warnings.push(
      'the webhook gets a new CA: until its pods load the new certificate (up to about a minute after kubectl apply), the API server rejects their answers and pods in injected namespaces cannot be created. edgemesh webhook-tls renews without changing the CA when run before expiry.',
    );

  const settings: Settings = {};
  for (const key of SETTING_KEYS) {
    const flag = input.flags[key];
    const current = state?.config?.[key];
    if (flag !== undefined) settings[key] = flag;
    else if (current !== undefined && current.trim() !== '') {
      settings[key] = current;
      notes.push(`${key}: kept from ConfigMap ${ns}/edgemesh-config (${current.trim()})`);
    }
  }
  return { webhookCerts: plan.certs, meshCa, settings, notes, warnings };
}
