/**
 * A stand-in for KubeEdge edgecore's metaServer (the edge API on 127.0.0.1:10550), small and
 * faithful in what the gateway depends on. Each behaviour cites the kubeedge/kubeedge file
 * (v1.22–v1.23) it reproduces; paths are under edge/pkg/metamanager/metaserver/ unless given
 * in full. Not reproduced: protobuf refusal, GET of one object, writes, label selectors; with
 * requireAuthorization, the JWT checks themselves, RBAC, and client certificates (below).
 *
 * - The cloud feeds a local cache (edgecore: cloudcore's dynamicController pushes the objects
 *   a local client watches into SQLite). Here: a LIST + WATCH of each configured resource on
 *   the real API server while connected. On reconnect the cache is refilled from a new LIST,
 *   which adds and updates but never deletes: a delete made while the node was offline does
 *   not reach the cache (kubeedge #2950, #4582), so the stale object stays and is replayed.
 * - LIST while connected is proxied to the cloud (cluster-wide); if that fails — offline,
 *   or the cloud answers 403/404 — it is answered from the local cache with 200, possibly
 *   empty or partial (kubernetes/storage/storage.go: REST.List, Agent.Apply error → r.Store.List;
 *   agent/agent.go: a Rejected application is an error).
 * - A LIST from the cache filters by field selector on metadata.name and metadata.namespace
 *   only: any other field (spec.nodeName) matches nothing, so it answers an empty list; an
 *   empty cache gives no resourceVersion (kubernetes/storage/sqlite/store.go: GetList).
 * - WATCH is always served from the local cache: the requested resourceVersion is ignored
 *   (forced to 0), every cached object is first replayed as ADDED, then changes follow; no
 *   BOOKMARK events, never 410 Gone (kubernetes/storage/sqlite/watcher.go: Watch, sync,
 *   parseMeta). The watch filter also knows spec.nodeName for Pods
 *   (pkg/metaserver/util/util.go: UnstructuredAttr).
 * - With the cloud gone, open watches stay open and silent: they read the local store, not
 *   the cloud (storage.go: REST.Watch logs the failed cloud application and still returns
 *   r.Store.Watch).
 * - timeoutSeconds ends a watch as the Kubernetes handlers do (handlerfactory/factory.go uses
 *   them with MinRequestTimeout 1800 s).
 *
 * With the `requireAuthorization` option (edgecore's RequireAuthorization feature gate,
 * pkg/features), as server.go does:
 * - HTTPS only, TLS 1.2 or later, with a serving certificate for CN=system:node:<node>,
 *   O=system:nodes and IP SANs 127.0.0.1 and 169.254.30.10, signed by the cluster's
 *   kubelet-serving signer, so a pod's service-account ca.crt verifies it (server.go:
 *   Start → startHTTPSServer on Config.Server and Config.DummyServer, makeTLSConfig;
 *   certificate/manager.go: NewServerCertificateManager). The test issues that certificate;
 *   client certificates (tls.VerifyClientCertIfGiven) are not asked for here.
 * - Authentication before anything else in the chain (server.go: BuildHandlerChain,
 *   WithAuthentication inside WithRequestInfo): a bearer token that does not authenticate
 *   answers 401 with the Status `Unauthorized` (bearertoken.go in k8s.io/apiserver: a token
 *   the authenticator refuses is an error, never a fallthrough; union.go NewFailOnError
 *   stops there; filters/authentication.go: Unauthorized → apierrors.NewUnauthorized
 *   ("Unauthorized")). The real one checks the token as a service-account JWT (signature
 *   with ServiceAccountKeyFiles, issuer, audience, the account still existing: buildAuth,
 *   auth/auth.go); here the valid tokens are a list the test sets, and may change
 *   (`setTokens`: a rotated token, an old one expired).
 * - No token (no `Authorization: Bearer <non-empty>`): v1.22 answers 401 like a wrong token
 *   (buildAuth there: bearertoken.New alone; an absent token is "not authenticated").
 *   v1.23 adds the anonymous authenticator behind it (buildAuth: authnunion.NewFailOnError
 *   (bearer, anonymous), commit 018ffc20 "support anonymous access for discovery paths"),
 *   so the request goes on as system:anonymous and RBAC refuses a LIST/WATCH with 403
 *   (filters/authorization.go, responsewriters/errors.go: forbiddenMessage) unless a
 *   binding grants it; option `anonymous: true` gives that. Discovery paths, which v1.23
 *   allows anonymously (AlwaysAllowDiscoveryAuthorizer), the stand-in does not serve.
 * - A token that authenticates is assumed allowed by RBAC (cloudcore's edge RBAC and the
 *   account's bindings are the cluster's business, not reproduced).
 */
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import { ObjectCache } from '../../gateway/kube/object-cache.ts';
import { Reflector } from '../../gateway/kube/reflector.ts';
import type { ApiClient } from '../../lib/kube/client.ts';

type Obj = { metadata?: { name?: string; namespace?: string }; spec?: { nodeName?: string } };

interface LocalWatch {
  resource: string;
  namespace: string | undefined;
  fieldSelector: [string, string, boolean][];
  res: http.ServerResponse;
}

export interface MetaServerOptions {
  /** The cloud (the real API server); cloudcore lists with its own broad identity. */
  upstream: ApiClient;
  /** Collection paths fed into the cache, e.g. `/api/v1/services`. */
  resources: string[];
  host?: string;
  port?: number;
  /** Listen on this Unix socket instead (a relay in a node's namespace serves 127.0.0.1:10550 from it). */
  path?: string;
  /** Start disconnected with an empty cache (a fresh edge node with no cloud). */
  startDisconnected?: boolean;
  /** edgecore's requireAuthorization feature gate: HTTPS and a bearer token (see above). */
  requireAuthorization?: {
    /** Serving certificate and key (PEM). */
    cert: string | Buffer;
    key: string | Buffer;
    /** Bearer tokens that authenticate; `setTokens` replaces them. */
    tokens: string[];
    /** v1.23+: no token → system:anonymous → 403 from RBAC; default v1.22: 401. */
    anonymous?: boolean;
  };
}

const UNAUTHORIZED = JSON.stringify({
  kind: 'Status',
  apiVersion: 'v1',
  metadata: {},
  status: 'Failure',
  message: 'Unauthorized',
  reason: 'Unauthorized',
  code: 401,
});

export class MetaServer {
  readonly #opts: MetaServerOptions;
  readonly #cache = new Map<string, Map<string, Obj>>(); // resource path → key → object
  readonly #watches = new Set<LocalWatch>();
  #feeds: Reflector[] = [];
  #connected = false;
  #revision = 0;
  #server: http.Server | undefined;
  #tokens = new Set<string>();
  /** Requests served, by how: for tests to see which path answered. */
  readonly served = { proxiedLists: 0, localLists: 0, watches: 0, unauthorized: 0, forbidden: 0 };
  /** With requireAuthorization: requests let through, by the token they carried. */
  readonly authenticated = new Map<string, number>();
  /** Requests refused 401 per bearer token they carried ('' for none): which client was refused, not just how many. */
  readonly rejected = new Map<string, number>();

  constructor(opts: MetaServerOptions) {
    this.#opts = opts;
    for (const r of opts.resources) this.#cache.set(r, new Map());
    this.#tokens = new Set(opts.requireAuthorization?.tokens ?? []);
  }

  static async start(opts: MetaServerOptions): Promise<MetaServer> {
    const m = new MetaServer(opts);
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      m.#handle(req, res).catch((err) => {
        if (!res.headersSent) res.writeHead(500).end(String(err));
        else res.destroy();
      });
    };
    const tls = opts.requireAuthorization;
    // server.go makeTLSConfig: MinVersion tls.VersionTLS12.
    m.#server = tls
      ? https.createServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, handler)
      : http.createServer(handler);
    await new Promise<void>((resolve) =>
      opts.path
        ? m.#server?.listen(opts.path, resolve)
        : m.#server?.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve),
    );
    if (!opts.startDisconnected) m.setConnected(true);
    return m;
  }

  get url(): string {
    if (this.#opts.path) return `unix:${this.#opts.path}`;
    const a = this.#server?.address() as net.AddressInfo;
    return `${this.#opts.requireAuthorization ? 'https' : 'http'}://${a.address}:${a.port}`;
  }

  /** With requireAuthorization: the tokens that authenticate from now on (open watches go on). */
  setTokens(tokens: string[]): void {
    this.#tokens = new Set(tokens);
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Objects in the local cache for `resource`. */
  cached(resource: string): string[] {
    return [...(this.#cache.get(resource)?.keys() ?? [])].sort();
  }

  /** Cloud link up or down. Down: LISTs come from the cache, watches go silent. */
  setConnected(connected: boolean): void {
    if (connected === this.#connected) return;
    this.#connected = connected;
    if (!connected) {
      const feeds = this.#feeds;
      this.#feeds = [];
      for (const f of feeds) void f.stop();
      return;
    }
    for (const resource of this.#opts.resources) {
      // A fresh view per connection: what was deleted while offline is never diffed away.
      const feed = new Reflector({
        api: this.#opts.upstream,
        path: resource,
        cache: new ObjectCache(),
        relist: false,
        watchTimeoutSeconds: 300,
        retryInitialMs: 200,
        onEvent: (e) => {
          if (e.type === 'delete') this.#remove(resource, e.key);
          else this.#upsert(resource, e.key, e.obj as Obj);
        },
        onListed: () => {},
        onError: () => {},
      });
      this.#feeds.push(feed);
      feed.start();
    }
  }

  async stop(): Promise<void> {
    this.setConnected(false);
    for (const w of this.#watches) w.res.end();
    const server = this.#server;
    if (!server) return;
    // close() waits for every connection to end, and a gateway keeps its connection (through
    // the node's socat relay, whose forked children outlive the relay's own PID) until the
    // gateway dies, which the cluster's stop does later: cut them all.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  #upsert(resource: string, key: string, obj: Obj): void {
    const objects = this.#cache.get(resource);
    if (!objects) return;
    const type = objects.has(key) ? 'MODIFIED' : 'ADDED';
    objects.set(key, obj);
    this.#revision++;
    this.#notify(resource, type, obj);
  }

  #remove(resource: string, key: string): void {
    const obj = this.#cache.get(resource)?.get(key);
    if (!obj) return;
    this.#cache.get(resource)?.delete(key);
    this.#revision++;
    this.#notify(resource, 'DELETED', obj);
  }

  #notify(resource: string, type: string, obj: Obj): void {
    for (const w of this.#watches) {
      if (w.resource === resource && matches(obj, w.namespace, w.fieldSelector, resource, true))
        w.res.write(`${JSON.stringify({ type, object: obj })}\n`);
    }
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://metaserver');
    const parsed = parsePath(url.pathname);
    if (this.#opts.requireAuthorization && !this.#authorize(req, res, url, parsed)) return;
    if (req.method !== 'GET' || !parsed || !this.#cache.has(parsed.resource)) {
      res
        .writeHead(404, { 'content-type': 'application/json' })
        .end(JSON.stringify({ kind: 'Status', status: 'Failure', code: 404, reason: 'NotFound' }));
      return;
    }
    const fieldSelector = parseSelector(url.searchParams.get('fieldSelector') ?? '');
    const watch = url.searchParams.get('watch');
    if (watch === '1' || watch === 'true') {
      this.#watch(parsed, fieldSelector, Number(url.searchParams.get('timeoutSeconds') ?? 1800), res);
      return;
    }
    if (this.#connected) {
      try {
        // storage.go REST.List: the cloud first.
        const body = await this.#opts.upstream.getJSON(url.pathname + url.search);
        this.served.proxiedLists++;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        return;
      } catch {
        // Offline or refused by the cloud (403/404): the local cache answers, with 200.
      }
    }
    this.served.localLists++;
    const items = [...(this.#cache.get(parsed.resource)?.values() ?? [])].filter((o) =>
      matches(o, parsed.namespace, fieldSelector, parsed.resource, false),
    );
    const kind = `${listKind(parsed.resource)}List`;
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        kind,
        apiVersion: parsed.groupVersion,
        metadata: items.length > 0 ? { resourceVersion: String(this.#revision) } : {},
        items,
      }),
    );
  }

  /** requireAuthorization: authentication, then (for anonymous) authorization; false = answered. */
  #authorize(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    url: URL,
    parsed: ReturnType<typeof parsePath>,
  ): boolean {
    // bearertoken.go: TrimSpace, split on ' ', scheme compared case-insensitively; a missing
    // header, another scheme or an empty token is "no token", not an error.
    const parts = (req.headers.authorization ?? '').trim().split(' ');
    const token = parts.length >= 2 && parts[0].toLowerCase() === 'bearer' && parts[1] ? parts[1] : undefined;
    if (token !== undefined) {
      if (this.#tokens.has(token)) {
        this.authenticated.set(token, (this.authenticated.get(token) ?? 0) + 1);
        return true;
      }
      this.rejected.set(token, (this.rejected.get(token) ?? 0) + 1);
      this.#unauthorized(res);
      return false;
    }
    if (!this.#opts.requireAuthorization?.anonymous) {
      // v1.22: no anonymous authenticator, so no token fails authentication.
      this.rejected.set('', (this.rejected.get('') ?? 0) + 1);
      this.#unauthorized(res);
      return false;
    }
    // v1.23: system:anonymous, refused by RBAC (responsewriters/errors.go: forbiddenMessage).
    this.served.forbidden++;
    if (!parsed) {
      // A non-resource path (discovery ones would be allowed, but are not served here).
      res.writeHead(403, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: `forbidden: User "system:anonymous" cannot get path "${url.pathname}"`,
          reason: 'Forbidden',
          details: {},
          code: 403,
        }),
      );
      return false;
    }
    const watch = url.searchParams.get('watch');
    const verb = watch === '1' || watch === 'true' ? 'watch' : 'list';
    const resource = parsed.resource.slice(parsed.resource.lastIndexOf('/') + 1);
    const group = parsed.groupVersion.includes('/') ? parsed.groupVersion.split('/')[0] : '';
    const scope = parsed.namespace ? `in the namespace "${parsed.namespace}"` : 'at the cluster scope';
    res.writeHead(403, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: `${resource}${group ? `.${group}` : ''} is forbidden: User "system:anonymous" cannot ${verb} resource "${resource}" in API group "${group}" ${scope}`,
        reason: 'Forbidden',
        details: { kind: resource, ...(group ? { group } : {}) },
        code: 403,
      }),
    );
    return false;
  }

  #unauthorized(res: http.ServerResponse): void {
    this.served.unauthorized++;
    res.writeHead(401, { 'content-type': 'application/json' }).end(UNAUTHORIZED);
  }

  #watch(
    parsed: { resource: string; namespace: string | undefined },
    fieldSelector: [string, string, boolean][],
    timeoutSeconds: number,
    res: http.ServerResponse,
  ): void {
    this.served.watches++;
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // watcher.go: rev forced to 0 → sync() replays every cached object as ADDED.
    for (const obj of this.#cache.get(parsed.resource)?.values() ?? []) {
      if (matches(obj, parsed.namespace, fieldSelector, parsed.resource, true))
        res.write(`${JSON.stringify({ type: 'ADDED', object: obj })}\n`);
    }
    const w: LocalWatch = { ...parsed, fieldSelector, res };
    this.#watches.add(w);
    const timer = setTimeout(() => res.end(), Math.max(1, timeoutSeconds) * 1000);
    res.on('close', () => {
      clearTimeout(timer);
      this.#watches.delete(w);
    });
  }
}

function parsePath(
  path: string,
): { resource: string; namespace: string | undefined; groupVersion: string } | undefined {
  const m = /^\/(api\/v1|apis\/[^/]+\/[^/]+)(?:\/namespaces\/([^/]+))?\/([a-z]+)$/.exec(path) ?? undefined;
  if (!m) return undefined;
  const [, prefix, namespace, resource] = m;
  return {
    resource: `/${prefix}/${resource}`,
    namespace,
    groupVersion: prefix === 'api/v1' ? 'v1' : prefix.slice('apis/'.length),
  };
}

const listKind = (resource: string): string =>
  ({
    services: 'Service',
    endpoints: 'Endpoints',
    endpointslices: 'EndpointSlice',
    pods: 'Pod',
    nodes: 'Node',
  })[resource.slice(resource.lastIndexOf('/') + 1)] ?? 'Unknown';

/** `a=b,c!=d` → [field, value, equal]. */
function parseSelector(text: string): [string, string, boolean][] {
  return text
    .split(',')
    .filter(Boolean)
    .map((term) => {
      const ne = term.indexOf('!=');
      if (ne >= 0) return [term.slice(0, ne), term.slice(ne + 2), false];
      const [field, value] = term.split(/==?/);
      return [field, value ?? '', true];
    });
}

function matches(
  obj: Obj,
  namespace: string | undefined,
  selector: [string, string, boolean][],
  resource: string,
  forWatch: boolean,
): boolean {
  if (namespace && obj.metadata?.namespace !== namespace) return false;
  const fields: Record<string, string | undefined> = {
    'metadata.name': obj.metadata?.name,
    'metadata.namespace': obj.metadata?.namespace,
  };
  // util.go UnstructuredAttr (the watch filter) adds spec.nodeName for Pods; store.go GetList does not.
  if (forWatch && resource.endsWith('/pods')) fields['spec.nodeName'] = obj.spec?.nodeName;
  return selector.every(([field, value, equal]) => ((fields[field] ?? '') === value) === equal);
}
