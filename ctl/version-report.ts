/**
 * `edgemesh version`'s findings, from what was read (pure; the API calls are in cluster.ts):
 * the client's build, and per part of the installation the versions its Pods run, read from
 * their images' tags (semver.ts), each compared with the client's version.
 *
 * Parts are the Pods labelled `app.kubernetes.io/part-of=edgemesh` in the edgemesh namespace,
 * named by `app.kubernetes.io/name` without its `edgemesh-` prefix (webhook, gateway,
 * gateway-edge, tunnel-server, signer). Sidecars are the `edgemesh-proxy` init containers of
 * injected Pods in every namespace; besides the client they are compared with the image the
 * webhook injects now (injected-image.ts): a pod injected before the last upgrade runs an
 * older sidecar until it is restarted.
 */
import type { BuildInfo } from '../lib/build-info.ts';
import { type InjectedImage, injectedImage } from './injected-image.ts';
import type { PodSummary } from './pods.ts';
import { imageVersion, type Skew, skewOf } from './semver.ts';

/** The injected sidecar's container name (docs/design.md, the injection contract). */
export const PROXY_CONTAINER = 'edgemesh-proxy';
export const PART_OF_SELECTOR = 'app.kubernetes.io/part-of=edgemesh';
/** Parts every installation has; a missing one is reported as such. */
export const EXPECTED_PARTS = ['webhook', 'gateway', 'tunnel-server', 'signer'] as const;

export interface ImageGroup {
  image: string;
  version: string | undefined;
  build: string | undefined;
  skew: Skew;
  pods: number;
  ready: number;
  /** Pods of this image that are not Ready (`name on node`), the first few. */
  unready: string[];
}

export interface PartVersions {
  part: string;
  /** One group per image the part's Pods run (more than one: a rollout, or a stuck node). */
  images: ImageGroup[];
  notes: string[];
}

export interface SidecarPod {
  namespace: string;
  name: string;
  node: string;
  image: string;
  version: string | undefined;
  skew: Skew;
  /** Not the image the webhook runs (and injects) now. */
  notInjectedImage: boolean;
}

export interface VersionReport {
  client: Pick<BuildInfo, 'version' | 'commit' | 'dirty' | 'source' | 'nodeVersion'>;
  server?: { url: string; source: string; kubernetes: string };
  namespace?: string;
  parts?: PartVersions[];
  sidecars?: {
    total: number;
    images: (ImageGroup & { notInjectedImage: boolean })[];
    /** Pods to act on (skew or not the injected image), or every one with `allPods`. */
    pods: SidecarPod[];
    /** The image the webhook injects now, or why it cannot be told (injected-image.ts). */
    injected: InjectedImage;
  };
  /** What could not be read, each naming the thing and the cause. */
  errors: string[];
  /** The skew found, one line each: what, which version, against what. */
  skew: string[];
}

/** The image of a part's own container: its first (the parts run one container each). */
const mainImage = (pod: PodSummary): string => pod.containers[0]?.image ?? '';

/** Unready pods named per image: enough to start looking, not a listing. */
const MAX_UNREADY_NAMED = 3;

function groupImages(
  entries: { image: string; ready: boolean; pod?: string }[],
  client: string,
): ImageGroup[] {
  const groups = new Map<string, ImageGroup>();
  for (const e of entries) {
    let g = groups.get(e.image);
    if (!g) {
      const v = imageVersion(e.image);
      g = { image: e.image, ...v, skew: skewOf(v.version, client), pods: 0, ready: 0, unready: [] };
      groups.set(e.image, g);
    }
    g.pods++;
    if (e.ready) g.ready++;
    else if (e.pod && g.unready.length < MAX_UNREADY_NAMED) g.unready.push(e.pod);
  }
  return [...groups.values()].sort((a, b) => b.pods - a.pods || a.image.localeCompare(b.image));
}

const skewWords = (skew: Skew, client: string): string =>
  skew === 'older'
    ? `older than the client (${client})`
    : skew === 'newer'
      ? `newer than the client (${client})`
      : 'version unknown (the image tag is not a version)';

/** The parts of the installation, from the Pods in the edgemesh namespace. Pure. */
export function partVersions(pods: readonly PodSummary[], client: string): PartVersions[] {
  const byPart = new Map<string, PodSummary[]>();
  for (const part of EXPECTED_PARTS) byPart.set(part, []);
  for (const pod of pods) {
    const name = pod.labels['app.kubernetes.io/name'];
    if (!name) continue;
    const part = name.replace(/^edgemesh-/, '');
    byPart.set(part, [...(byPart.get(part) ?? []), pod]);
  }
  return [...byPart.entries()].map(([part, list]) => {
    const images = groupImages(
      list.map((p) => ({
        image: mainImage(p),
        ready: p.ready,
        pod: `${p.name}${p.node ? ` on ${p.node}` : ''}`,
      })),
      client,
    );
    const notes: string[] = [];
    if (list.length === 0) notes.push('no pods');
    if (images.length > 1) notes.push(`${images.length} images: a rollout in progress, or pods left behind`);
    return { part, images, notes };
  });
}

/** The injected Pods' sidecars, against the client and the image injected now. Pure. */
export function sidecarVersions(
  pods: readonly PodSummary[],
  client: string,
  injected: InjectedImage,
  allPods: boolean,
): NonNullable<VersionReport['sidecars']> {
  const injectedImage = injected.image;
  const found: SidecarPod[] = [];
  const entries: { image: string; ready: boolean }[] = [];
  for (const pod of pods) {
    const proxy = pod.initContainers.find((c) => c.name === PROXY_CONTAINER);
    if (!proxy) continue;
    const { version } = imageVersion(proxy.image);
    entries.push({ image: proxy.image, ready: pod.ready });
    found.push({
      namespace: pod.namespace,
      name: pod.name,
      node: pod.node,
      image: proxy.image,
      version,
      skew: skewOf(version, client),
      notInjectedImage: injectedImage !== undefined && proxy.image !== injectedImage,
    });
  }
  const images = groupImages(entries, client).map((g) => ({
    ...g,
    notInjectedImage: injectedImage !== undefined && g.image !== injectedImage,
  }));
  const listed = allPods ? found : found.filter((p) => p.skew !== 'same' || p.notInjectedImage);
  listed.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  return { total: found.length, images, pods: listed, injected };
}

/** Everything together, with one skew line per finding. Pure. */
export function versionReport(input: {
  client: VersionReport['client'];
  server?: VersionReport['server'];
  namespace?: string;
  partPods?: readonly PodSummary[];
  sidecarPods?: readonly PodSummary[];
  /** The edgemesh-config ConfigMap's webhook.yaml (null: absent; Error: unreadable). */
  webhookConfig?: string | null | Error;
  allPods?: boolean;
  errors?: string[];
}): VersionReport {
  const client = input.client.version;
  const report: VersionReport = {
    client: input.client,
    ...(input.server ? { server: input.server } : {}),
    ...(input.namespace ? { namespace: input.namespace } : {}),
    errors: [...(input.errors ?? [])],
    skew: [],
  };
  if (input.partPods) {
    report.parts = partVersions(input.partPods, client);
    for (const p of report.parts)
      for (const g of p.images)
        if (g.skew !== 'same')
          report.skew.push(`${p.part} ${g.version ?? g.image}: ${skewWords(g.skew, client)}`);
  }
  if (input.sidecarPods) {
    const webhookPods = (input.partPods ?? []).filter(
      (p) => p.labels['app.kubernetes.io/name'] === 'edgemesh-webhook',
    );
    const injected = input.partPods
      ? injectedImage(webhookPods, input.webhookConfig ?? null)
      : ({ image: undefined, why: 'the edgemesh pods could not be read' } as const);
    report.sidecars = sidecarVersions(input.sidecarPods, client, injected, input.allPods ?? false);
    for (const g of report.sidecars.images) {
      const what = `${g.pods} sidecar${g.pods === 1 ? '' : 's'} on ${g.version ?? g.image}`;
      if (g.skew !== 'same') report.skew.push(`${what}: ${skewWords(g.skew, client)}`);
      else if (g.notInjectedImage)
        report.skew.push(
          `${what}: not the image injected now, ${injected.image} (${injected.image ? injected.from : ''}): restart those pods`,
        );
    }
  }
  return report;
}
