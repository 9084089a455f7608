import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { defineCommand } from '../../lib/cli.ts';
import { configError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import { createLogger } from '../../lib/log.ts';
import { parseCidr } from '../../lib/traffic.ts';
import { bootstrapTls } from './bootstrap.ts';

export const webhookTlsCommand = defineCommand(
  {
    name: 'webhook-tls',
    summary:
      "Create or rotate the webhook's CA and serving certificate in a Secret and set the MutatingWebhookConfiguration's caBundle, against the current kube context. Idempotent; rotates within 30 days of expiry.",
    details:
      'Example: edgemesh webhook-tls            # after kubectl apply -k manifests\n         edgemesh webhook-tls --rotate   # force a new certificate and CA',
    options: {
      kubeconfig: {
        type: 'string',
        description: 'kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)',
      },
      context: { type: 'string', description: 'kubeconfig context to use (default: current)' },
      namespace: { type: 'string', default: 'edgemesh-system', description: "the webhook's namespace" },
      service: { type: 'string', default: 'edgemesh-webhook', description: "the webhook's Service name" },
      secret: {
        type: 'string',
        default: 'edgemesh-webhook-tls',
        description: 'Secret that holds the certificates',
      },
      'ca-secret': {
        type: 'string',
        default: 'edgemesh-webhook-ca',
        description: "Secret that holds the webhook CA's key (not mounted by the webhook pods)",
      },
      'webhook-config': {
        type: 'string',
        default: 'edgemesh-sidecar-injector',
        description: 'MutatingWebhookConfiguration name',
      },
      'cluster-domain': { type: 'string', default: 'cluster.local', description: 'cluster DNS domain' },
      'ip-san': {
        type: 'list',
        default: [],
        description: 'extra IP addresses for the certificate',
        validate: (v: string[]) => checkIps(v),
      },
      'dns-san': { type: 'list', default: [], description: 'extra DNS names for the certificate' },
      rotate: {
        type: 'boolean',
        default: false,
        description: "replace the webhook's CA and certificate now",
      },
      'mesh-ca-secret': {
        type: 'string',
        default: 'edgemesh-mesh-ca',
        description: "Secret holding the tunnel's mesh CA, created once if missing ('' to skip)",
      },
    },
  },
  async (opts) => {
    const log = createLogger('webhook-tls');
    const source = kubeconfigSource(opts.kubeconfig);
    const kc = new KubeConfig();
    try {
      if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
      else kc.loadFromDefault();
    } catch (err) {
      throw configError(`cannot load the kubeconfig from ${source}: ${(err as Error).message}`);
    }
    if (opts.context) {
      if (!kc.getContexts().some((c) => c.name === opts.context))
        throw configError(
          `--context: ${JSON.stringify(opts.context)} is not in the kubeconfig from ${source} (contexts: ${kc
            .getContexts()
            .map((c) => c.name)
            .join(', ')})`,
        );
      kc.setCurrentContext(opts.context);
    }
    if (!kc.getCurrentCluster())
      throw configError(
        `the kubeconfig from ${source} names no cluster for context ${kc.getCurrentContext() || '(none)'}`,
      );
    const where = `API server ${kc.getCurrentCluster()?.server ?? '(none)'} from ${source}, context ${kc.getCurrentContext() || '(none)'}`;
    const result = await bootstrapTls(
      kc,
      {
        namespace: opts.namespace,
        service: opts.service,
        secretName: opts.secret,
        caSecretName: opts['ca-secret'],
        webhookConfigName: opts['webhook-config'],
        clusterDomain: opts['cluster-domain'],
        ipAddresses: opts['ip-san'],
        extraDnsNames: opts['dns-san'],
        rotate: opts.rotate,
        now: new Date(),
        meshCaSecret: opts['mesh-ca-secret'],
      },
      log,
    ).catch((err: unknown) => {
      // Name the server and where it came from: "fetch failed" alone says neither.
      if (err instanceof EdgemeshError && err.code === ErrorCodes.UNAVAILABLE)
        throw new EdgemeshError(err.code, `${err.message} [${where}]`);
      throw err;
    });
    process.stdout.write(
      `secret ${result.secret}, caBundle ${result.caBundle} (${result.reason}); mesh CA ${result.meshCa}\n`,
    );
    return result.caBundle === 'no-webhook-config' ? 3 : 0;
  },
);

/** Where the kubeconfig comes from, as loadFromDefault looks; a clear error when nowhere. */
function kubeconfigSource(flag: string | undefined): string {
  if (flag) return `--kubeconfig ${flag}`;
  if (process.env.KUBECONFIG) return `KUBECONFIG=${process.env.KUBECONFIG}`;
  const home = join(homedir(), '.kube', 'config');
  if (existsSync(home)) return home;
  if (process.env.KUBERNETES_SERVICE_HOST) return 'the in-cluster service account';
  throw configError(
    `no kubeconfig: --kubeconfig not given, KUBECONFIG unset, ${home} missing and not in a pod (KUBERNETES_SERVICE_HOST unset)`,
  );
}

function checkIps(values: string[]): string | undefined {
  for (const v of values) {
    try {
      if (v.includes('/')) return `${v}: give an address, not a range`;
      parseCidr(v);
    } catch (err) {
      return (err as Error).message;
    }
  }
  return undefined;
}
