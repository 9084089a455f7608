import { readFileSync } from 'node:fs';
import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { createLogger } from '../lib/log.ts';
import { createRegistry } from '../lib/metrics.ts';
import { onShutdown } from '../lib/shutdown.ts';
import { DEFAULT_CONFIG, injectionSection, RELEASE_IMAGE, withImage } from './config.ts';
import { injectText } from './manual.ts';
import { readOwnImage } from './own-image.ts';
import { startWebhookServer } from './server.ts';

const { image: _image, ...DEFAULT_SETTINGS } = DEFAULT_CONFIG;
const CONFIG_HELP = `The --config file (YAML or JSON; in a cluster the ConfigMap edgemesh-config, key webhook.yaml)
may set any option above by name, and an 'injection:' mapping with the injected containers' settings:
  injection:
    image: registry.example/edgemesh:0.1.0
    imagePullPolicy: IfNotPresent
    clusterDomain: cluster.local
    sidecarResources: { requests: { cpu: 10m, memory: 32Mi }, limits: { memory: 128Mi } }
The injected image: --image, else injection.image, else for the webhook the image of its own
container (read from its Pod, EDGEMESH_POD_NAME/EDGEMESH_POD_NAMESPACE), for inject ${RELEASE_IMAGE}.
Defaults: ${JSON.stringify(DEFAULT_SETTINGS)}`;

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
      image: {
        type: 'string',
        description:
          "image for the injected containers (overrides injection.image; default: the webhook's own image)",
      },
      'pod-name': {
        type: 'string',
        description:
          "this webhook's Pod (downward API), read at start for its own image when no image is set",
      },
      'pod-namespace': { type: 'string', description: "this webhook's Pod's namespace (downward API)" },
    },
  },
  async (opts) => {
    const { settings, image } = injectionSection(
      opts.sections.injection,
      opts.image,
      opts.config ?? 'defaults',
    );
    const explicit = image && withImage(settings, image.value, `${image.from}:`);
    const log = createLogger('webhook');
    for (const [flag, file] of [
      ['tls-cert', opts['tls-cert']],
      ['tls-key', opts['tls-key']],
    ] as const) {
      try {
        readFileSync(file);
      } catch (err) {
        throw configError(
          `--${flag}: cannot read ${file}: ${(err as Error).message} (run edgemesh webhook-tls: it creates the Secret edgemesh-webhook-tls that the webhook mounts)`,
        );
      }
    }
    // An explicit image wins; else the image of the webhook's own container (own-image.ts).
    const own = explicit
      ? undefined
      : await readOwnImage({ podName: opts['pod-name'], namespace: opts['pod-namespace'], log });
    const config = explicit ?? withImage(settings, own?.image, `${own?.from}: image`);
    log.info({ image: config.image, from: image?.from ?? own?.from }, 'injecting this image');
    const registry = createRegistry('webhook');
    const server = await startWebhookServer({
      host: opts.host,
      port: opts.port,
      tlsCertFile: opts['tls-cert'],
      tlsKeyFile: opts['tls-key'],
      config,
      log,
      registry,
    });
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
    const source = opts.config ?? 'defaults';
    const { settings, image } = injectionSection(opts.sections.injection, opts.image, source);
    // Today's default for manual injection: this release's image, said on stderr.
    const config = withImage(settings, image ? image.value : RELEASE_IMAGE, `${image?.from ?? 'image'}:`);
    let text: string;
    try {
      text = readFileSync(opts.filename === '-' ? 0 : opts.filename, 'utf8');
    } catch (err) {
      throw configError(`--filename: cannot read ${opts.filename}: ${(err as Error).message}`);
    }
    const { yaml, report } = injectText(text, config);
    process.stdout.write(yaml);
    if (!opts.quiet) {
      const from = image?.from ?? 'the release default; set --image or injection.image to change it';
      process.stderr.write(`edgemesh inject: image ${config.image} (${from})\n`);
      for (const line of report) process.stderr.write(`edgemesh inject: ${line}\n`);
    }
    return 0;
  },
);
