/**
 * The gateway's API client from a kubeconfig file or the in-cluster config, without loading
 * @kubernetes/client-node: that library costs every gateway ~1 s of start-up and ~85 MB
 * (measured: RSS of `node -e "await import('@kubernetes/client-node')"` 129 MB against 43 MB
 * for bare node), and a restarted gateway must serve its persisted catalog within 2 s.
 *
 * Read here, as kubectl reads them: the current context's cluster (`server`,
 * `certificate-authority[-data]`, `insecure-skip-tls-verify`, `tls-server-name`) and user
 * (`client-certificate[-data]`, `client-key[-data]`, `token`, `tokenFile`,
 * `username`/`password`); relative paths are relative to the kubeconfig's folder. A user
 * with an `exec` plugin or an `auth-provider` is handed to client-node's KubeConfig (loaded
 * only then), which runs them.
 *
 * In-cluster: KUBERNETES_SERVICE_HOST/PORT, the service-account token re-read at every
 * request (projected tokens rotate in place) and its CA.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { ApiClient, apiFromKubeConfig, type RequestAuth, readToken } from './client.ts';

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

type Loose = Record<string, unknown>;
const rec = (v: unknown): Loose =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Loose) : {};
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

function named(list: unknown, name: string, what: string, file: string): Loose {
  const found = (Array.isArray(list) ? list : []).find((e) => rec(e).name === name);
  if (!found) throw new Error(`kubeconfig ${file}: no ${what} named ${JSON.stringify(name)}`);
  return rec(rec(found)[what]);
}

/** An ApiClient for `contextName` (default: the current context) of kubeconfig `file`. */
export async function apiFromKubeconfigFile(file: string, contextOverride?: string): Promise<ApiClient> {
  let doc: Loose;
  try {
    // Loaded here, not at start: a gateway on an `--api-server` URL (the edge API) never reads
    // a kubeconfig, and yaml is ~0.1 s of every start's module loading.
    const { default: YAML } = await import('yaml');
    doc = rec(YAML.parse(readFileSync(file, 'utf8')));
  } catch (err) {
    throw new Error(`kubeconfig ${file}: ${(err as Error).message}`);
  }
  const contextName = contextOverride ?? str(doc['current-context']);
  if (!contextName) throw new Error(`kubeconfig ${file}: no current-context`);
  const context = named(doc.contexts, contextName, 'context', file);
  const cluster = named(doc.clusters, str(context.cluster) ?? '', 'cluster', file);
  const user = context.user === undefined ? {} : named(doc.users, str(context.user) ?? '', 'user', file);
  if (user.exec !== undefined || user['auth-provider'] !== undefined) {
    // Plugins need client-node's machinery; pay for it only here.
    const { KubeConfig } = await import('@kubernetes/client-node');
    const kc = new KubeConfig();
    kc.loadFromFile(file);
    kc.setCurrentContext(contextName);
    return apiFromKubeConfig(kc);
  }
  const server = str(cluster.server);
  if (!server)
    throw new Error(`kubeconfig ${file}: cluster ${JSON.stringify(context.cluster)} has no server`);
  const base = dirname(file);
  const material = (dataKey: string, fileKey: string, from: Loose): Buffer | undefined => {
    const data = str(from[dataKey]);
    if (data) return Buffer.from(data, 'base64');
    const path = str(from[fileKey]);
    if (!path) return undefined;
    const full = isAbsolute(path) ? path : join(base, path);
    try {
      return readFileSync(full);
    } catch (err) {
      throw new Error(
        `kubeconfig ${file}: ${fileKey} ${full}: ${(err as NodeJS.ErrnoException).code ?? err}`,
      );
    }
  };
  const fixed: RequestAuth = {
    headers: {},
    ca: material('certificate-authority-data', 'certificate-authority', cluster),
    cert: material('client-certificate-data', 'client-certificate', user),
    key: material('client-key-data', 'client-key', user),
    rejectUnauthorized: cluster['insecure-skip-tls-verify'] !== true,
    servername: str(cluster['tls-server-name']),
  };
  const token = str(user.token);
  const tokenFile = str(user.tokenFile);
  const username = str(user.username);
  if (token) fixed.headers.Authorization = `Bearer ${token}`;
  else if (username)
    fixed.headers.Authorization = `Basic ${Buffer.from(`${username}:${str(user.password) ?? ''}`).toString('base64')}`;
  if (!tokenFile) return new ApiClient(server, async () => fixed);
  const tokenPath = isAbsolute(tokenFile) ? tokenFile : join(base, tokenFile);
  return new ApiClient(server, async () => ({
    ...fixed,
    headers: { ...fixed.headers, Authorization: `Bearer ${readToken(tokenPath)}` },
  }));
}

/** An ApiClient from inside a pod (the service account's token and CA). */
export function apiInCluster(env: NodeJS.ProcessEnv = process.env, dir = SA_DIR): ApiClient {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!host) throw new Error('in-cluster config: KUBERNETES_SERVICE_HOST is unset (not in a pod?)');
  const ca = readFileSync(join(dir, 'ca.crt')); // missing: fail at start, naming the file
  const server = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  return new ApiClient(server, async () => ({
    headers: { Authorization: `Bearer ${readToken(join(dir, 'token'))}` },
    ca,
    rejectUnauthorized: true,
  }));
}
