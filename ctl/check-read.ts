/**
 * What `edgemesh check` reads from the API server, each read returning its value or the Error
 * it gave (named, with the cause in words: cluster.ts describeApiFailure), never throwing, so
 * one forbidden read fails its own check and the others still run. Judgements are in
 * check-pre.ts and check-install.ts.
 */
import { type ApiClient, ApiError } from '../lib/kube/client.ts';
import { INJECT_LABEL } from '../webhook/inject.ts';
import { INJECTION_LABEL, WEBHOOK_CONFIG } from './check-install.ts';
import { INSTALL_ACCESS, type Read } from './check-pre.ts';
import { describeApiFailure } from './cluster.ts';
import { type PodSummary, podListPage } from './pods.ts';
import { isGateway, metricsPort, proxyFailure, proxyPath } from './status-read.ts';

type Loose = Record<string, unknown>;
const isRecord = (v: unknown): v is Loose => typeof v === 'object' && v !== null && !Array.isArray(v);
const enc = encodeURIComponent;

export class CheckReader {
  readonly #api: ApiClient;
  readonly #timeoutMs: number;

  constructor(api: ApiClient, timeoutMs: number) {
    this.#api = api;
    this.#timeoutMs = timeoutMs;
  }

  /** GET, null on 404, Error (described) otherwise. */
  async #get(path: string, what: string): Promise<Read<unknown>> {
    try {
      return await this.#api.getJSON(path, AbortSignal.timeout(this.#timeoutMs));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null;
      return new Error(describeApiFailure(what, err, this.#timeoutMs));
    }
  }

  async version(): Promise<Read<string>> {
    const body = await this.#get('/version', "the API server's version");
    if (body instanceof Error) return body;
    const v = isRecord(body) ? body.gitVersion : undefined;
    return typeof v === 'string' ? v : new Error("the API server's version: the answer has no gitVersion");
  }

  /** One SelfSubjectAccessReview per INSTALL_ACCESS entry. */
  async installAccess(namespace: string): Promise<Read<boolean>[]> {
    return Promise.all(
      INSTALL_ACCESS.map(async (a) => {
        const what = `SelfSubjectAccessReview (${a.verb} ${a.resource})`;
        try {
          const body = await this.#api.postJSON(
            '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews',
            {
              apiVersion: 'authorization.k8s.io/v1',
              kind: 'SelfSubjectAccessReview',
              spec: {
                resourceAttributes: {
                  verb: a.verb,
                  group: a.group,
                  resource: a.resource,
                  ...(a.namespaced ? { namespace } : {}),
                },
              },
            },
            AbortSignal.timeout(this.#timeoutMs),
          );
          const allowed = isRecord(body) && isRecord(body.status) ? body.status.allowed : undefined;
          return typeof allowed === 'boolean'
            ? allowed
            : new Error(`${what}: the answer has no status.allowed`);
        } catch (err) {
          return new Error(describeApiFailure(what, err, this.#timeoutMs));
        }
      }),
    );
  }

  async namespaceLabels(namespace: string): Promise<Read<Record<string, string> | null>> {
    const body = await this.#get(`/api/v1/namespaces/${enc(namespace)}`, `namespace ${namespace}`);
    if (body === null || body instanceof Error) return body;
    const labels =
      isRecord(body) && isRecord(body.metadata) && isRecord(body.metadata.labels) ? body.metadata.labels : {};
    return Object.fromEntries(
      Object.entries(labels).filter((e): e is [string, string] => typeof e[1] === 'string'),
    );
  }

  async pods(namespace: string | undefined, selector?: string): Promise<Read<PodSummary[]>> {
    const what = namespace ? `the pods in namespace ${namespace}` : 'the pods in all namespaces';
    const base = namespace ? `/api/v1/namespaces/${enc(namespace)}/pods` : '/api/v1/pods';
    const pods: PodSummary[] = [];
    let token: string | undefined;
    try {
      do {
        const q = [
          `limit=500`,
          ...(selector ? [`labelSelector=${enc(selector)}`] : []),
          ...(token ? [`continue=${enc(token)}`] : []),
        ];
        const body = await this.#get(`${base}?${q.join('&')}`, what);
        if (body instanceof Error) return body;
        const page = podListPage(body ?? {}, what);
        pods.push(...page.pods);
        token = page.continue;
      } while (token);
    } catch (err) {
      return err as Error;
    }
    return pods;
  }

  async configMapNames(namespace: string): Promise<Read<string[]>> {
    const body = await this.#get(
      `/api/v1/namespaces/${enc(namespace)}/configmaps?limit=500`,
      `the ConfigMaps in ${namespace}`,
    );
    if (body instanceof Error) return body;
    const items = isRecord(body) && Array.isArray(body.items) ? body.items : [];
    return items.flatMap((i) =>
      isRecord(i) && isRecord(i.metadata) && typeof i.metadata.name === 'string' ? [i.metadata.name] : [],
    );
  }

  /** All of a ConfigMap's or Secret's `data` (Secret values as the API gives them: base64); null when absent. */
  async data(
    kind: 'configmaps' | 'secrets',
    namespace: string,
    name: string,
  ): Promise<Read<Record<string, string> | null>> {
    const what = `${kind === 'secrets' ? 'Secret' : 'ConfigMap'} ${namespace}/${name}`;
    const body = await this.#get(`/api/v1/namespaces/${enc(namespace)}/${kind}/${enc(name)}`, what);
    if (body === null || body instanceof Error) return body;
    const data = isRecord(body) && isRecord(body.data) ? body.data : {};
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(data)) {
      if (typeof v !== 'string') return new Error(`${what}: ${k} is not text`);
      out[k] = v;
    }
    return out;
  }

  /** A key of a ConfigMap or (base64-decoded) Secret; null when either is absent. */
  async key(
    kind: 'configmaps' | 'secrets',
    namespace: string,
    name: string,
    key: string,
  ): Promise<Read<string | null>> {
    const what = `${kind === 'secrets' ? 'Secret' : 'ConfigMap'} ${namespace}/${name}`;
    const body = await this.#get(`/api/v1/namespaces/${enc(namespace)}/${kind}/${enc(name)}`, what);
    if (body === null || body instanceof Error) return body;
    const data = isRecord(body) && isRecord(body.data) ? body.data : {};
    const v = data[key];
    if (v === undefined) return null;
    if (typeof v !== 'string') return new Error(`${what}: ${key} is not text`);
    return kind === 'secrets' ? Buffer.from(v, 'base64').toString('utf8') : v;
  }

  async caBundles(): Promise<Read<{ webhook: string; pem: string }[] | null>> {
    const what = `MutatingWebhookConfiguration ${WEBHOOK_CONFIG}`;
    const body = await this.#get(
      `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${WEBHOOK_CONFIG}`,
      what,
    );
    if (body === null || body instanceof Error) return body;
    const hooks = isRecord(body) && Array.isArray(body.webhooks) ? body.webhooks.filter(isRecord) : [];
    if (hooks.length === 0) return new Error(`${what}: it has no webhooks`);
    return hooks.map((h) => {
      const cc = isRecord(h.clientConfig) ? h.clientConfig : {};
      const b = typeof cc.caBundle === 'string' ? cc.caBundle : '';
      return {
        webhook: typeof h.name === 'string' ? h.name : '?',
        pem: Buffer.from(b, 'base64').toString('utf8'),
      };
    });
  }

  /**
   * The webhook, end to end: a pod labelled for injection created with dryRun=All. The API
   * server calls the webhook as for a real pod (TLS with the caBundle, the Service, the
   * webhook's answer) and persists nothing; the answer shows whether it was injected.
   */
  async probeWebhook(namespace: string): Promise<Read<{ namespace: string; initContainers: string[] }>> {
    const what = `a dry-run pod in ${namespace}`;
    try {
      const body = await this.#api.postJSON(
        `/api/v1/namespaces/${enc(namespace)}/pods?dryRun=All`,
        {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { generateName: 'edgemesh-check-', labels: { [INJECT_LABEL]: 'true' } },
          spec: { containers: [{ name: 'probe', image: 'registry.k8s.io/pause:3.10' }] },
        },
        AbortSignal.timeout(this.#timeoutMs),
      );
      const spec = isRecord(body) && isRecord(body.spec) ? body.spec : {};
      const init = Array.isArray(spec.initContainers) ? spec.initContainers : [];
      return {
        namespace,
        initContainers: init.flatMap((c) => (isRecord(c) && typeof c.name === 'string' ? [c.name] : [])),
      };
    } catch (err) {
      return new Error(describeApiFailure(what, err, this.#timeoutMs));
    }
  }

  async injectionNamespaces(): Promise<Read<string[]>> {
    const body = await this.#get(
      `/api/v1/namespaces?labelSelector=${enc(`${INJECTION_LABEL}=enabled`)}`,
      `namespaces labelled ${INJECTION_LABEL}=enabled`,
    );
    if (body instanceof Error) return body;
    const items = isRecord(body) && Array.isArray(body.items) ? body.items : [];
    return items.flatMap((i) =>
      isRecord(i) && isRecord(i.metadata) && typeof i.metadata.name === 'string' ? [i.metadata.name] : [],
    );
  }

  /** /ready's first line of each unready, running gateway (why it is not Ready), through pods/proxy. */
  async gatewayReadiness(namespace: string, partPods: Read<PodSummary[]>): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (partPods instanceof Error) return out;
    const unready = partPods
      .filter((p) => isGateway(p) && !p.ready && p.phase === 'Running' && p.node)
      .slice(0, 16);
    await Promise.all(
      unready.map(async (p) => {
        const port = metricsPort(p);
        if (port <= 0) return;
        try {
          // /ready answers 503 with its causes when not Ready. The API server answers 503 too
          // when it cannot reach the node, but then with a Status object (JSON), not our text.
          const { text, contentType } = await this.#api.send(
            'GET',
            proxyPath(namespace, p.name, port, '/ready'),
            {
              signal: AbortSignal.timeout(this.#timeoutMs),
              maxBytes: 64 * 1024,
              accept: 'text/plain',
              statuses: [503],
            },
          );
          if (contentType.startsWith('text/plain'))
            out.set(p.name, `/ready: ${text.split('\n')[0].slice(0, 300)}`);
          else out.set(p.name, `its /ready could not be read through the API server: ${statusText(text)}`);
        } catch (err) {
          const f = proxyFailure(
            err,
            { namespace, pod: p.name, node: p.node, port, route: '/ready' },
            this.#timeoutMs,
          );
          out.set(p.name, `its /ready could not be read: ${f.error}`);
        }
      }),
    );
    return out;
  }
}

/** The message of a Kubernetes Status body, else the text itself (bounded). */
function statusText(text: string): string {
  try {
    const m = (JSON.parse(text) as { message?: unknown }).message;
    if (typeof m === 'string') return m.slice(0, 300);
  } catch {}
  return text.slice(0, 300);
}
