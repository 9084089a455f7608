/**
 * `edgemesh install`: flags only here; what is kept from the cluster in install-plan.ts, the
 * objects in install-render.ts, the manifests' render in kustomize.ts.
 */
import { join } from 'node:path';
import { buildInfo, shortCommit } from '../lib/build-info.ts';
import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { serviceDnsNames } from '../webhook/tls/certs.ts';
import { newMeshCa } from '../webhook/tls/objects.ts';
import { CheckReader } from './check-read.ts';
import { clusterOptions, namespaceOption } from './flags.ts';
import { type ClusterView, type MeshCaMode, planInstall } from './install-plan.ts';
import {
  IMAGE_NAME,
  installYaml,
  MESH_CA,
  renderInstall,
  WEBHOOK_CA_SECRET,
  WEBHOOK_SECRET,
  WEBHOOK_SERVICE,
} from './install-render.ts';
import { chooseKubeconfig, connect } from './kube.ts';
import { kustomize, MANIFESTS_DIR } from './kustomize.ts';
import { CONFIG_MAP, type Settings, validateSetting } from './settings.ts';

/** An image reference: [registry[:port]/]path[:tag][@sha256:digest], as the kubelet takes it. */
const IMAGE_REF =
  /^(?:[a-zA-Z0-9.-]+(?::\d{1,5})?\/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$/;

/** The release image of this build's version; none when the version is unknown. */
export function defaultImage(version: string): string | undefined {
  return version === 'unknown' ? undefined : `${IMAGE_NAME}:${version}`;
}

const { kubeconfig, context, timeout } = clusterOptions('API answer');

export const installCommand = defineCommand(
  {
    name: 'install',
    summary:
      'Print the manifests to install (or upgrade) edgemesh, with fresh TLS, for `edgemesh install | kubectl apply -f -`.',
    details: [
      'The objects of manifests/ (the kustomize base, or with --kubeedge the KubeEdge overlay) with this',
      "build's image, plus what edgemesh webhook-tls makes: the webhook's serving and CA Secrets, the",
      "caBundle of every webhook, the mesh CA's Secret and ConfigMap. Nothing is written to the cluster.",
      '',
      'Running it again is safe: when a kubeconfig is usable (as kubectl decides) it reads the current',
      'installation and keeps (1) the mesh CA: a cluster that has one gets only its ConfigMap, never a',
      'new Secret; (2) the webhook certificates while valid, renewing within 30 days of expiry from the',
      'same CA, so the caBundle does not change under running webhook pods; (3) tunnel-servers and',
      'kubernetes-service-host/-port in edgemesh-config unless given as flags. webhook.yaml in',
      'edgemesh-config is reset to the shipped one (keep edits to it in a kustomize overlay).',
      '',
      '--mesh-ca=auto (default) needs the cluster read: without one, give --mesh-ca=new (a cluster',
      'without edgemesh, e.g. rendering for GitOps) or --mesh-ca=skip (the cluster has a mesh CA).',
      'The output holds private keys: keep it out of version control unless encrypted.',
      '',
      'Needs, to read the installation: get secrets and configmaps in the edgemesh namespace.',
      '',
      'Examples: edgemesh install | kubectl apply -f -',
      '          edgemesh install --tunnel-servers 198.51.100.7:20006 --kubeedge | kubectl apply -f -',
      '          edgemesh install --mesh-ca=new --image registry.example/edgemesh:0.1.0 > edgemesh.yaml',
    ].join('\n'),
    options: {
      image: {
        type: 'string',
        description: `image of every part and of the injected containers (default: ${IMAGE_NAME}:<this build's version>)`,
        validate: (v: string) =>
          v.length <= 512 && IMAGE_REF.test(v) ? undefined : 'is not an image reference (REGISTRY/PATH:TAG)',
      },
      namespace: namespaceOption("edgemesh's namespace", 'edgemesh-system'),
      'tunnel-servers': {
        type: 'string',
        description:
          "the tunnel-server's public HOST:PORT, comma separated (default: the cluster's current value, else the shipped placeholder; edgemesh config set changes it later)",
      },
      'api-server-host': {
        type: 'string',
        description:
          "the API server's address for gateways on nodes without kube-proxy (edgemesh-config kubernetes-service-host)",
      },
      'api-server-port': {
        type: 'string',
        description: "the API server's port with --api-server-host (edgemesh-config kubernetes-service-port)",
      },
      kubeedge: {
        type: 'boolean',
        default: false,
        description:
          'the KubeEdge overlay: a second gateway DaemonSet in edge mode on edge nodes (docs/kubeedge.md)',
      },
      'mesh-ca': {
        type: 'string',
        choices: ['auto', 'new', 'skip'] as const,
        default: 'auto',
        description:
          "auto: keep the cluster's mesh CA, else make one (needs the cluster read); new: always make one; skip: print none",
      },
      kubeconfig,
      context,
      timeout,
    },
  },
  async (o) => {
    const info = buildInfo();
    const image = o.image ?? defaultImage(info.version);
    if (!image)
      throw configError(
        `--image: this build's version is unknown (${info.problem ?? 'no build info'}): give the image to install`,
      );
    const flags: Settings = {};
    const warnings: string[] = [];
    for (const [flag, key] of [
      ['tunnel-servers', 'tunnel-servers'],
      ['api-server-host', 'kubernetes-service-host'],
      ['api-server-port', 'kubernetes-service-port'],
    ] as const) {
      const v = o[flag];
      if (v === undefined) continue;
      const checked = validateSetting(key, v, `--${flag}`);
      flags[key] = checked.value;
      warnings.push(...checked.warnings);
    }
    if (Boolean(flags['kubernetes-service-host']) !== Boolean(flags['kubernetes-service-port']))
      throw configError('--api-server-host and --api-server-port go together (the gateway needs both)');
    const ns = o.namespace;
    const cluster = await readCluster(o.kubeconfig, o.context, ns, o.timeout * 1000);
    const plan = planInstall({
      namespace: ns,
      meshCaMode: o['mesh-ca'] as MeshCaMode,
      cluster,
      flags,
      now: new Date(),
      dnsNames: serviceDnsNames(WEBHOOK_SERVICE, ns),
      newMeshCa,
    });
    const manifests = kustomize(o.kubeedge ? join(MANIFESTS_DIR, 'overlays', 'kubeedge') : MANIFESTS_DIR);
    const objects = renderInstall(manifests, {
      image,
      namespace: ns,
      settings: plan.settings,
      webhookCerts: plan.webhookCerts,
      meshCa: plan.meshCa,
    });
    const keys = [WEBHOOK_CA_SECRET, WEBHOOK_SECRET, ...(plan.meshCa.kind === 'new' ? [MESH_CA] : [])];
    const header = [
      `edgemesh install: edgemesh ${info.version} (commit ${shortCommit(info)}), image ${image}, namespace ${ns}${o.kubeedge ? ', KubeEdge overlay' : ''}`,
      'apply: kubectl apply -f FILE (or pipe); then: edgemesh check',
      `holds private keys (Secrets ${keys.join(', ')}): keep it out of version control unless encrypted`,
      ...plan.notes,
    ];
    const tunnelServers = objects.find((x) => x.kind === 'ConfigMap' && x.metadata.name === CONFIG_MAP)
      ?.data as Record<string, string> | undefined;
    if (plan.settings['tunnel-servers'] === undefined)
      warnings.push(
        `tunnel-servers is the shipped placeholder (${tunnelServers?.['tunnel-servers'] ?? 'unset'}): once the tunnel-server Service has a public address, run edgemesh config set tunnel-servers HOST:20006 (kubectl -n ${ns} get service edgemesh-tunnel-server)`,
      );
    process.stdout.write(installYaml(objects, header));
    for (const n of plan.notes) process.stderr.write(`edgemesh install: ${n}\n`);
    for (const w of [...plan.warnings, ...warnings])
      process.stderr.write(`edgemesh install: warning: ${w}\n`);
    return 0;
  },
);

/** The current installation's TLS and settings, or why they could not be read. */
async function readCluster(
  kubeconfigFlag: string | undefined,
  contextFlag: string | undefined,
  ns: string,
  timeoutMs: number,
): Promise<ClusterView> {
  const choice = chooseKubeconfig(kubeconfigFlag, process.env);
  if (choice.kind === 'none') return { kind: 'unread', why: choice.why };
  let api: Awaited<ReturnType<typeof connect>>['api'];
  let source: string;
  try {
    ({ api, source } = await connect(choice, contextFlag));
  } catch (err) {
    return { kind: 'unread', why: (err as Error).message };
  }
  try {
    const read = new CheckReader(api, timeoutMs);
    const [webhookTls, webhookCa, meshCa, config] = await Promise.all([
      read.data('secrets', ns, WEBHOOK_SECRET),
      read.data('secrets', ns, WEBHOOK_CA_SECRET),
      read.data('secrets', ns, MESH_CA),
      read.data('configmaps', ns, CONFIG_MAP),
    ]);
    const failed = [webhookTls, webhookCa, meshCa, config].find((r) => r instanceof Error);
    if (failed instanceof Error)
      return { kind: 'unread', why: `API server ${api.server} (from ${source}): ${failed.message}` };
    const configText = config === null || config instanceof Error ? null : (config as Record<string, string>);
    return {
      kind: 'read',
      state: {
        server: `API server ${api.server} (from ${source})`,
        webhookTls: webhookTls as Record<string, string> | null,
        webhookCa: webhookCa as Record<string, string> | null,
        meshCa: meshCa as Record<string, string> | null,
        config: configText,
      },
    };
  } finally {
    api.close();
  }
}
