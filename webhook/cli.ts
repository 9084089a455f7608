import { readFileSync } from 'node:fs';
import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { createLogger } from '../lib/log.ts';
import { createRegistry } from '../lib/metrics.ts';
import { onShutdown } from '../lib/shutdown.ts';
import { DEFAULT_CONFIG, injectionSection, RELEASE_IMAGE, withImage } from './config.ts';
import { readManifestSources } from './manifest-files.ts';
import { injectText, type ManualResult, uninjectText } from './manual.ts';
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

/** The webhook's options a shared config file (the ConfigMap's webhook.yaml) holds that inject has no use for. */
const WEBHOOK_ONLY = ['port', 'host', 'tls-cert', 'tls-key', 'pod-name', 'pod-namespace'] as const;

const MANIFEST_OPTIONS = {
  filename: {
    type: 'list',
    short: 'f',
    default: [],
    description:
      "manifest file or directory (recursing into *.yaml, *.yml, *.json), or '-' for standard input; repeatable, or give them as arguments",
  },
  quiet: { type: 'boolean', short: 'q', default: false, description: 'do not print what was done on stderr' },
} as const;

export const injectCommand = defineCommand(
  {
    name: 'inject',
    summary:
      'Print manifests with edgemesh injected into Pods and workload templates (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob); other kinds pass through unchanged, each named on stderr. Multi-document YAML or JSON in, YAML out (no anchors).',
    details: `Examples: edgemesh inject deploy.yaml | kubectl apply -f -
          edgemesh inject k8s/ --config manifests/base/config.yaml > injected.yaml
          kubectl get deploy web -o yaml | edgemesh inject - | kubectl apply -f -

--config takes the shipped ConfigMap manifest (manifests/base/config.yaml, or a rendered install
holding it: its data key webhook.yaml is read, the webhook's own options there are ignored) or a
bare file with an injection: mapping. Settings not given keep their defaults, also inside
sidecarResources/initResources ({ limits: { memory: 256Mi } } keeps the requests; null removes one).

${CONFIG_HELP}`,
    sections: ['injection'],
    positionals: true,
    positionalsUsage: '[FILE|DIR|-]...',
    configMapKey: 'webhook.yaml',
    configIgnores: WEBHOOK_ONLY,
    options: {
      ...MANIFEST_OPTIONS,
      config: {
        type: 'string',
        description:
          'the edgemesh-config ConfigMap manifest, or a config file (YAML/JSON) with an injection: mapping',
      },
      image: { type: 'string', description: 'image for the injected containers' },
    },
  },
  async (opts) => {
    const source = opts.config ?? 'defaults';
    const { settings, image } = injectionSection(opts.sections.injection, opts.image, source);
    // Today's default for manual injection: this release's image, said on stderr.
    const config = withImage(settings, image ? image.value : RELEASE_IMAGE, `${image?.from ?? 'image'}:`);
    const sources = readManifestSources([...opts.filename, ...opts._]);
    const results = sources.map((s) => injectText(s.text, config, sources.length > 1 ? s.name : undefined));
    writeResults('inject', results, opts.quiet, [
      `image ${config.image} (${image?.from ?? 'the release default; set --image or injection.image to change it'})`,
    ]);
    return 0;
  },
);

export const uninjectCommand = defineCommand(
  {
    name: 'uninject',
    summary:
      'Print manifests with what edgemesh inject (or the webhook) added removed: its init containers, its status annotation, the reserved-ports sysctl as it was, and the objects it created if nothing else was put in them. The inverse of inject.',
    details:
      'Examples: edgemesh uninject injected.yaml > plain.yaml\n          kubectl get deploy web -o yaml | edgemesh uninject - | kubectl apply -f -',
    positionals: true,
    positionalsUsage: '[FILE|DIR|-]...',
    options: MANIFEST_OPTIONS,
  },
  async (opts) => {
    const sources = readManifestSources([...opts.filename, ...opts._]);
    const results = sources.map((s) => uninjectText(s.text, sources.length > 1 ? s.name : undefined));
    writeResults('uninject', results, opts.quiet, []);
    return 0;
  },
);

/** The documents on stdout, one stream; what was done to each on stderr unless quiet. */
function writeResults(command: string, results: ManualResult[], quiet: boolean, header: string[]): void {
  process.stdout.write(
    results
      .map((r) => r.yaml)
      .filter((y) => y.length > 0)
      .join('---\n'),
  );
  if (quiet) return;
  for (const line of [...header, ...results.flatMap((r) => r.report)])
    process.stderr.write(`edgemesh ${command}: ${line}\n`);
}
