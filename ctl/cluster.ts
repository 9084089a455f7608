/**
 * What `edgemesh version` reads from the API server: GET /version, the edgemesh Pods in its
 * namespace, and every Pod (paged) for the injected sidecars. Each failure becomes one line
 * naming what was read and why it failed (unreachable, no answer in time, forbidden with the
 * API's own words), so a user without cluster-wide `list pods` still sees the rest.
 */
import { type ApiClient, ApiError } from '../lib/kube/client.ts';
import { type PodSummary, podListPage } from './pods.ts';
import { PART_OF_SELECTOR } from './version-report.ts';

/** Pods per page: a 10,000-pod cluster in 20 requests, each a few MB at most. */
const PAGE = 500;

/** `what` failed: the API's status or the connection problem, said for people. */
export function describeApiFailure(what: string, err: unknown, timeoutMs: number): string {
  if (err instanceof ApiError) {
    if (err.status === 401)
      return `${what}: unauthorized (HTTP 401): the API server did not accept the credentials`;
    if (err.status === 403) return `${what}: forbidden: ${err.message.replace(/^GET \S+: /, '')}`;
    if (err.message.endsWith(': aborted'))
      return `${what}: no answer from ${new URL(err.url).origin} within ${timeoutMs / 1000} s`;
    return `${what}: ${err.message}`;
  }
  return `${what}: ${(err as Error)?.message ?? String(err)}`;
}

export class ClusterReader {
  readonly #api: ApiClient;
  readonly #timeoutMs: number;

  constructor(api: ApiClient, timeoutMs: number) {
    this.#api = api;
    this.#timeoutMs = timeoutMs;
  }

  async #get(path: string, what: string): Promise<unknown> {
    try {
      return await this.#api.getJSON(path, AbortSignal.timeout(this.#timeoutMs));
    } catch (err) {
      throw new Error(describeApiFailure(what, err, this.#timeoutMs));
    }
  }

  /** The API server's Kubernetes version (`gitVersion`). */
  async serverVersion(): Promise<string> {
    const what = "the API server's version";
    const body = await this.#get('/version', what);
    const v = (body as { gitVersion?: unknown } | null)?.gitVersion;
    if (typeof v !== 'string' || !/^v?\d+\.\d+/.test(v))
      throw new Error(`${what}: the answer has no gitVersion`);
    return v;
  }

  /** The edgemesh parts' Pods in `namespace`. */
  async partPods(namespace: string): Promise<PodSummary[]> {
    const what = `the edgemesh pods in namespace ${namespace} (${PART_OF_SELECTOR})`;
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods?labelSelector=${encodeURIComponent(PART_OF_SELECTOR)}`;
    return this.#pages(path, what);
  }

  /**
   * One key of a ConfigMap: its text, null when the ConfigMap or the key does not exist (the
   * webhook then runs with its defaults).
   */
  async configMapKey(namespace: string, name: string, key: string): Promise<string | null> {
    const what = `ConfigMap ${namespace}/${name}`;
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps/${encodeURIComponent(name)}`;
    let body: unknown;
    try {
      body = await this.#api.getJSON(path, AbortSignal.timeout(this.#timeoutMs));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null;
      throw new Error(describeApiFailure(what, err, this.#timeoutMs));
    }
    const data = (body as { data?: unknown } | null)?.data;
    if (data === undefined) return null;
    if (typeof data !== 'object' || data === null) throw new Error(`${what}: data is not a mapping`);
    const value = (data as Record<string, unknown>)[key];
    if (value === undefined) return null;
    if (typeof value !== 'string') throw new Error(`${what}: ${key} is not text`);
    return value;
  }

  /** Every Pod in the cluster (the injected ones are picked by version-report.ts). */
  async allPods(): Promise<PodSummary[]> {
    return this.#pages('/api/v1/pods', 'the pods in all namespaces (for their sidecars)');
  }

  async #pages(path: string, what: string): Promise<PodSummary[]> {
    const pods: PodSummary[] = [];
    let token: string | undefined;
    const sep = path.includes('?') ? '&' : '?';
    do {
      const page = `${path}${sep}limit=${PAGE}${token ? `&continue=${encodeURIComponent(token)}` : ''}`;
      const body = await this.#get(page, what);
      const result = podListPage(body, what);
      pods.push(...result.pods);
      token = result.continue;
    } while (token);
    return pods;
  }
}
