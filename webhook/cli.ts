import { readFileSync } from 'node:fs';
import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { createLogger } from '../lib/log.ts';
import { createRegistry } from '../lib/metrics.ts';
import { onShutdown } from '../lib/shutdown.ts';
import { DEFAULT_CONFIG, type InjectionConfig, resolveConfig } from './config.ts';
import { injectText } from './manual.ts';
import { startWebhookServer } from './server.ts';

const CONFIG_HELP = `The --config file (YAML or JSON; in a cluster the edgemesh-injector ConfigMap) may set
any option above by name, and an 'injection:' mapping with the injected containers' settings:
  injection:
    image: registry.example/edgemesh:0.1.0
    imagePullPolicy: IfNotPresent
    clusterDomain: cluster.local
    sidecarResources: { requests: { cpu: 10m, memory: 32Mi }, limits: { memory: 128Mi } }
Defaults: ${JSON.stringify(DEFAULT_CONFIG)}`;

function injectionConfig(
  sections: Readonly<Record<string, unknown>>,
  image: string | undefined,
  source: string,
): InjectionConfig {
  const raw = sections.injection ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw configError(`${source}: injection must be a mapping`);
  return resolveConfig(
    { ...(raw as Record<string, unknown>), ...(image ? { image } : {}) },
    `${source} injection`,
  );
}

export const webhookCommand = defineCommand(
  {
    name: 'webhook',
    summary:
      'Serve the mutating admission webhook (HTTPS) that injects edgemesh-init and edgemesh-proxy into pods.',
    details: CONFIG_HELP,
    sections: ['injection'],
    options: {
      port: { type: 'integer', default: 9443, min: 1, max: 65535, description: 'HTTPS port' },
      host: { type: 'string', default: '0.0.0.0', description: 'address to listen on' },
      'tls-cert': {
        type: 'string',
        default: '/etc/edgemesh/tls/tls.crt',
        description: 'serving certificate (PEM); reloaded when it changes',
      },
      'tls-key': { type: 'string', default: '/etc/edgemesh/tls/tls.key', description: 'serving key (PEM)' },
      config: { type: 'string', description: 'config file (YAML/JSON)' },
      image: { type: 'string', description: 'image for the injected containers (overrides injection.image)' },
    },
  },
  async (opts) => {
    const config = injectionConfig(opts.sections, opts.image, opts.config ?? 'defaults');
    const log = createLogger('webhook');
    const registry = createRegistry('webhook');
    for (const [flag, file] of [
      ['tls-cert', opts['tls-cert']],
      ['tls-key', opts['tls-key']],
    ] as const) {
      try {
        readFileSync(file);
      } catch (err) {
        throw configError(
          `--${flag}: cannot read ${file}: ${(err as Error).message} (run scripts/bootstrap-webhook-tls)`,
        );
      }
    }
    const server = await startWebhookServer({
      host: opts.host,
      port: opts.port,
      tlsCertFile: opts['tls-cert'],
      tlsKeyFile: opts['tls-key'],
      config,
      log,
      registry,
    });
    log.info({ image: config.image }, 'injection config loaded');
    onShutdown(log, () => server.close());
  },
);

export const injectCommand = defineCommand(
  {
    name: 'inject',
    summary:
      'Print manifests with edgemesh injected into Pods and workload templates (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob). Multi-document YAML or JSON in, YAML out.',
    details: `Example: edgemesh inject -f deploy.yaml | kubectl apply -f -\n\n${CONFIG_HELP}`,
    sections: ['injection'],
    options: {
      filename: { type: 'string', short: 'f', description: "manifest file, or '-' for standard input" },
      config: { type: 'string', description: 'config file (YAML/JSON) with an injection: mapping' },
      image: { type: 'string', description: 'image for the injected containers' },
      quiet: { type: 'boolean', default: false, description: 'do not print what was injected on stderr' },
    },
  },
  async (opts) => {
    if (!opts.filename) throw configError("--filename/-f is required (a file, or '-' for standard input)");
    const config = injectionConfig(opts.sections, opts.image, opts.config ?? 'defaults');
    let text: string;
    try {
      text = readFileSync(opts.filename === '-' ? 0 : opts.filename, 'utf8');
    } catch (err) {
      throw configError(`--filename: cannot read ${opts.filename}: ${(err as Error).message}`);
    }
    const { yaml, report } = injectText(text, config);
    process.stdout.write(yaml);
    if (!opts.quiet) for (const line of report) process.stderr.write(`edgemesh inject: ${line}\n`);
    return 0;
  },
);
