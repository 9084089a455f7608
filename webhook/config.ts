import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { configError } from '../lib/errors.ts';
import { POD_CONTRACT } from '../lib/pod-contract.ts';

/**
 * What the webhook injects, as one typed, validated, frozen object. It comes from the
 * `edgemesh-config` ConfigMap (key webhook.yaml, mounted as a file and passed with `--config`), so a
 * cluster admin changes images or resources without rebuilding anything. Unknown keys are
 * errors: a typo must not silently fall back to a default.
 */
export interface InjectionConfig {
  /**
   * Image holding the `edgemesh` entrypoint, used for both injected containers. In order:
   * `--image` (EDGEMESH_IMAGE), `injection.image` in the config file, then for the webhook
   * the image of its own container (own-image.ts) and for `edgemesh inject` RELEASE_IMAGE.
   */
  image: string;
  imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  proxyUid: number;
  proxyGid: number;
  proxyPort: number;
  dnsPort: number;
  healthPort: number;
  metricsPort: number;
  gatewayPort: number;
  /**
   * The sidecar's transparent UDP port for pods with `traffic.edgemesh.io/capture-udp: "true"`:
   * the init's TPROXY rules deliver to it and the sidecar listens on it, so both get the same
   * `--udp-port`. Unset: neither is given the flag and both use their default, 15006 (injected
   * pods stay byte-identical). Set it when 15006 is taken in the pod, e.g. by an app's own UDP.
   */
  udpPort?: number;
  clusterDomain: string;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  sidecarResources: Resources;
  initResources: Resources;
  /**
   * NODE_OPTIONS for the sidecar: a small young generation keeps each pod's private memory
   * low (bench/memory.ts: 49 → 23 MB idle with types stripped ahead); the old-space cap
   * bounds it. Raise the cap for very large catalogs. One V8 platform thread instead of 4
   * (`--v8-pool-size=1`): fewer thread stacks and malloc arenas, ~0.3 MB private; bench/proxy.ts
   * showed no throughput change (GC helpers have 2 cores to share with the event loop anyway).
   */
  sidecarNodeOptions: string;
  /** Namespaces never injected, whatever their labels (the contract's list is always included). */
  excludedNamespaces: readonly string[];
}

export interface Resources {
  requests: Record<string, string>;
  limits: Record<string, string>;
}

/** The version recorded in `sidecar.edgemesh.io/status`; bump when the injected shape changes. */
export const INJECTION_VERSION = '1';

export const ALWAYS_EXCLUDED_NAMESPACES = [
  'kube-system',
  'kube-public',
  'kube-node-lease',
  'edgemesh-system',
] as const;

/**
 * The image of this release (its tag is package.json's version, checked by a test). The
 * default of `edgemesh inject`, of tests and benchmarks; never of the webhook, which injects
 * the image it runs itself unless told otherwise, so a retag reaches the injected containers.
 */
export const RELEASE_IMAGE = 'ghcr.io/edgemesh/edgemesh:0.1.0';

/** Injection settings without the image: what the webhook validates before it looks for one. */
export type InjectionSettings = Omit<InjectionConfig, 'image'>;

export const DEFAULT_CONFIG: InjectionConfig = Object.freeze({
  image: RELEASE_IMAGE,
  imagePullPolicy: 'IfNotPresent',
  proxyUid: POD_CONTRACT.proxyUid,
  proxyGid: POD_CONTRACT.proxyGid,
  proxyPort: POD_CONTRACT.proxyPort,
  dnsPort: POD_CONTRACT.dnsPort,
  healthPort: POD_CONTRACT.healthPort,
  metricsPort: POD_CONTRACT.metricsPort,
  gatewayPort: POD_CONTRACT.gatewayPort,
  // Present (so resolveSettings knows the key) but unset: see InjectionConfig.udpPort.
  udpPort: undefined,
  clusterDomain: 'cluster.local',
  logLevel: 'info',
  sidecarResources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
  initResources: { requests: { cpu: '10m', memory: '16Mi' }, limits: { memory: '64Mi' } },
  sidecarNodeOptions: '--max-semi-space-size=1 --max-old-space-size=96 --v8-pool-size=1',
  excludedNamespaces: ALWAYS_EXCLUDED_NAMESPACES,
}) as InjectionConfig;

const PORT_KEYS = [
  'proxyUid',
  'proxyGid',
  'proxyPort',
  'dnsPort',
  'healthPort',
  'metricsPort',
  'gatewayPort',
] as const;
// A Kubernetes quantity, e.g. 10m, 1.5, 128Mi, 1G.
const QUANTITY = /^[+]?(\d+(\.\d*)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e\d+)?$/;
const DNS_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
// An image reference as containerd/docker parse it: [registry[:port]/]path[:tag][@digest],
// path components lower case (distribution/reference's grammar, without IPv6 registries).
const DOMAIN_PART = '[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?';
const PATH_PART = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const IMAGE_REF = new RegExp(
  `^(?:${DOMAIN_PART}(?:\\.${DOMAIN_PART})*(?::\\d+)?/)?${PATH_PART}(?:/${PATH_PART})*` +
    '(?::\\w[\\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$',
);

/** Whether `image` is a well-formed image reference; otherwise the problem, for an error. */
export function imageProblem(image: unknown): string | undefined {
  if (typeof image !== 'string' || image.length === 0) return 'must be a non-empty image reference';
  if (!IMAGE_REF.test(image))
    return `${JSON.stringify(image)} is not an image reference like registry.example/edgemesh:0.1.0`;
  return undefined;
}

/**
 * Validates a partial config (from a file) over the defaults; errors name the key. Without
 * an `image` key the result has RELEASE_IMAGE: the webhook uses resolveSettings instead.
 */
export function resolveConfig(partial: Record<string, unknown>, source = 'config'): InjectionConfig {
  const { image = RELEASE_IMAGE, ...rest } = partial;
  return withImage(resolveSettings(rest, source), image, `${source}: image`);
}

/** `settings` with the injected image (validated; `where` names its source in the error). */
export function withImage(settings: InjectionSettings, image: unknown, where: string): InjectionConfig {
  const problem = imageProblem(image);
  if (problem) throw configError(`${where} ${problem}`);
  return deepFreeze({ ...settings, image: image as string });
}

/**
 * The `injection:` mapping of a --config file validated without its image, and the image
 * it or `--image` names explicitly (`--image` wins), with where that came from. An explicit
 * image that is not a string (`image:` with nothing after it) is an error in withImage, not
 * "unset".
 */
export function injectionSection(
  section: unknown,
  flagImage: string | undefined,
  source: string,
): { settings: InjectionSettings; image?: { value: unknown; from: string } } {
  const raw = section ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw configError(`${source}: injection must be a mapping`);
  const { image, ...rest } = raw as Record<string, unknown>;
  const settings = resolveSettings(rest, `${source} injection`);
  if (flagImage !== undefined) return { settings, image: { value: flagImage, from: '--image' } };
  if ('image' in raw) return { settings, image: { value: image, from: `${source} injection.image` } };
  return { settings };
}

/** Validates every setting but the image (the key is refused here; see resolveConfig). */
export function resolveSettings(partial: Record<string, unknown>, source = 'config'): InjectionSettings {
  const out: Record<string, unknown> = { ...DEFAULT_CONFIG };
  delete out.image;
  for (const [key, value] of Object.entries(partial)) {
    if (!(key in out)) throw configError(`${source}: unknown key ${JSON.stringify(key)}`);
    out[key] =
      key === 'sidecarResources' || key === 'initResources' ? mergeResources(out[key], value) : value;
  }
  const c = out as unknown as InjectionSettings;
  const fail = (key: string, why: string) => configError(`${source}: ${key} ${why}`);
  if (!['Always', 'IfNotPresent', 'Never'].includes(c.imagePullPolicy))
    throw fail('imagePullPolicy', 'must be Always, IfNotPresent or Never');
  for (const key of PORT_KEYS) {
    const v = c[key];
    const max = key.endsWith('Uid') || key.endsWith('Gid') ? 2 ** 31 - 1 : 65535;
    if (!Number.isInteger(v) || v < 1 || v > max) throw fail(key, `must be an integer 1..${max}`);
  }
  if (c.proxyUid === 0) throw fail('proxyUid', 'must not be 0 (root traffic would bypass capture)');
  if (c.udpPort !== undefined) {
    const v: unknown = c.udpPort;
    if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 65535)
      throw fail('udpPort', `must be an integer 1..65535, got ${JSON.stringify(v)}`);
    // The sidecar's DNS server holds UDP dnsPort: a TPROXY listener there would take its datagrams
    // (the init refuses the same pair: --udp-port and --dns-port must differ).
    if (v === c.dnsPort) throw fail('udpPort', `must differ from dnsPort (both ${v})`);
  }
  if (typeof c.clusterDomain !== 'string' || !DNS_NAME.test(c.clusterDomain))
    throw fail('clusterDomain', 'must be a DNS name such as cluster.local');
  if (
    typeof c.sidecarNodeOptions !== 'string' ||
    !/^(--[a-z0-9-]+(=[^\s]+)?(\s+|$))*$/.test(c.sidecarNodeOptions.trim())
  ) {
    throw fail('sidecarNodeOptions', 'must be space-separated --node-flags, e.g. "--max-old-space-size=96"');
  }
  if (!['trace', 'debug', 'info', 'warn', 'error'].includes(c.logLevel))
    throw fail('logLevel', 'must be trace, debug, info, warn or error');
  for (const key of ['sidecarResources', 'initResources'] as const)
    validateResources(c[key], `${source}: ${key}`);
  if (
    !Array.isArray(c.excludedNamespaces) ||
    !c.excludedNamespaces.every((n) => typeof n === 'string' && DNS_NAME.test(n))
  ) {
    throw fail('excludedNamespaces', 'must be a list of namespace names');
  }
  c.excludedNamespaces = [...new Set([...ALWAYS_EXCLUDED_NAMESPACES, ...c.excludedNamespaces])];
  return c;
}

/**
 * A partial resources override over the defaults: `{ limits: { memory: 256Mi } }` keeps the
 * default requests; a quantity set to null removes that default (no memory limit).
 * Anything that is not a mapping is left for validateResources to name.
 */
function mergeResources(defaults: unknown, override: unknown): unknown {
  const isMap = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isMap(defaults) || !isMap(override)) return override;
  const out: Record<string, unknown> = { ...defaults };
  for (const [part, value] of Object.entries(override)) {
    if (!isMap(value) || !isMap(defaults[part])) {
      out[part] = value;
      continue;
    }
    const merged: Record<string, unknown> = { ...defaults[part], ...value };
    for (const [name, q] of Object.entries(merged)) if (q === null) delete merged[name];
    out[part] = merged;
  }
  return out;
}

function validateResources(r: unknown, where: string): void {
  if (typeof r !== 'object' || r === null) throw configError(`${where} must be {requests, limits}`);
  const extra = Object.keys(r).find((k) => k !== 'requests' && k !== 'limits');
  if (extra !== undefined)
    throw configError(`${where}: unknown key ${JSON.stringify(extra)} (requests or limits)`);
  for (const part of ['requests', 'limits'] as const) {
    const m = (r as Record<string, unknown>)[part];
    if (typeof m !== 'object' || m === null || Array.isArray(m))
      throw configError(`${where}.${part} must be a mapping`);
    for (const [name, q] of Object.entries(m)) {
      if (typeof q !== 'string' || !QUANTITY.test(q))
        throw configError(`${where}.${part}.${name}: ${JSON.stringify(q)} is not a quantity`);
    }
  }
}

export function loadConfigFile(path: string | undefined): InjectionConfig {
  if (!path) return DEFAULT_CONFIG;
  let doc: unknown;
  try {
    doc = YAML.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw configError(`--config ${path}: ${(err as Error).message}`);
  }
  if (doc === null || doc === undefined) return resolveConfig({}, path);
  if (typeof doc !== 'object' || Array.isArray(doc)) throw configError(`--config ${path}: must be a mapping`);
  return resolveConfig(doc as Record<string, unknown>, path);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
