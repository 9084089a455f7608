/**
 * The gateway's transport to a Kubernetes API: GET a JSON body, or a watch stream of JSON
 * lines, over node:http / node:https. One transport for every API the gateway talks to:
 *
 * - a kubeconfig or the in-cluster config: client-node's KubeConfig only supplies the TLS
 *   material and the Authorization header (`applyToHTTPSOptions`, run per request so
 *   rotated tokens and exec plugins keep working);
 * - an explicit `--api-server` URL, as KubeEdge's edge API (edgecore's metaServer) is
 *   reached: plain `http://127.0.0.1:10550` without auth, or HTTPS with a service-account
 *   token (`--api-token-file`) and a CA (`--api-ca-file`). client-node's own fetch transport
 *   refuses plain HTTP unless TLS verification is off (issue #12), hence this module.
 *
 * Every failure is an ApiError whose message names the URL and the cause: the HTTP status
 * with the API's Status message, connection refused, a timeout, or the TLS problem.
 */
import { readFileSync } from 'node:fs';
import type { Agent, IncomingMessage } from 'node:http';
import type { RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { ListBodyDecoder, ListBodyError, type ListMeta } from './list-body.ts';

// Not `import http from 'node:http'` (nor https): an ES import of a builtin reads every export,
// and node:http's lazy WebSocket/MessageEvent getters load Node's bundled undici (~6 MB private,
// and ~0.3 s of a restart's CPU before it serves its persisted catalog; lib/metrics.ts likewise).
const http = process.getBuiltinModule('node:http');
const https = process.getBuiltinModule('node:https');

/** What a request needs besides the URL: headers (auth) and TLS material. */
export interface RequestAuth {
  headers: Record<string, string>;
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  rejectUnauthorized?: boolean;
  servername?: string;
}

/** A failed request: `url` and a cause a person can act on; `status` when the API answered. */
export class ApiError extends Error {
  readonly url: string;
  readonly status: number | undefined;
  constructor(url: string, cause: string, status?: number, method = 'GET') {
    super(`${method} ${url}: ${cause}`);
    this.name = 'ApiError';
    this.url = url;
    this.status = status;
  }
}

/** Connect + first byte of a LIST; watches have their own deadline (the reflector's). */
const RESPONSE_TIMEOUT_MS = 60_000;
/** Enough of an error body for the API's Status message; more is not read. */
const MAX_ERROR_BODY = 64 * 1024;
/** A body this large is refused (50,000 services is ~60 MB; a LIST is streamed, not buffered). */
const MAX_LIST_BODY = 512 * 1024 * 1024;

export class ApiClient {
  /** The server URL without a trailing slash, e.g. `http://127.0.0.1:10550`. */
  readonly server: string;
  readonly #auth: () => Promise<RequestAuth>;
  readonly #agent: Agent;

  constructor(server: string, auth: () => Promise<RequestAuth>) {
    this.server = server.replace(/\/+$/, '');
    this.#auth = auth;
    const url = new URL(this.server);
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new Error(`API server ${server}: must be http:// or https://`);
    this.#agent =
      url.protocol === 'https:' ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
  }

  /** GET `path` (with its query) and parse the JSON body. */
  async getJSON(path: string, signal?: AbortSignal): Promise<unknown> {
    const url = this.server + path;
    const res = await this.#request(path, signal);
    const body = await readBody(res, MAX_LIST_BODY, url);
    try {
      return JSON.parse(body);
    } catch {
      throw new ApiError(url, `HTTP ${res.statusCode}: the body is not JSON (${body.slice(0, 80)}…)`);
    }
  }

  /**
   * GET a LIST `path` and hand each element of its `items` to `onItem` as the body streams in
   * (list-body.ts): the body is never held whole, however many items one page holds (the edge
   * API answers every list in one page). Resolves with the list's metadata once the body ends;
   * rejects with an ApiError naming the URL, and for a body that is not a List the problem and
   * its byte offset. An error `onItem` throws ends the request and rejects with it.
   */
  async list(path: string, onItem: (item: unknown) => void, signal?: AbortSignal): Promise<ListMeta> {
    const url = this.server + path;
    const res = await this.#request(path, signal);
    const decoder = new ListBodyDecoder(path.split('?')[0], onItem);
    return new Promise((resolve, reject) => {
      let size = 0;
      let failed = false;
      const fail = (err: unknown) => {
        failed = true;
        res.destroy();
        reject(
          err instanceof ListBodyError
            ? new ApiError(
                url,
                `HTTP ${res.statusCode}: the body is not a List: ${err.problem} at byte ${err.offset}`,
              )
            : err,
        );
      };
      res.on('data', (chunk: Buffer) => {
        if (failed) return;
        size += chunk.length;
        if (size > MAX_LIST_BODY)
          return fail(new ApiError(url, `response larger than ${MAX_LIST_BODY} bytes`));
        try {
          decoder.write(chunk);
        } catch (err) {
          fail(err);
        }
      });
      res.on('end', () => {
        if (failed) return;
        try {
          resolve(decoder.end());
        } catch (err) {
          fail(err);
        }
      });
      res.on('error', (err) => reject(new ApiError(url, cause(err))));
      // Closed without an end: the connection broke (or `signal` aborted) mid-body.
      res.on('close', () => reject(new ApiError(url, signal?.aborted ? 'aborted' : 'the body was cut off')));
    });
  }

  /**
   * One request with a bounded text body (operator commands: SelfSubjectAccessReviews, dry-run
   * creates, a gateway's /status through pods/proxy). Non-2xx answers reject with an ApiError
   * carrying the status and the API's Status message.
   */
  async send(
    method: 'GET' | 'POST',
    path: string,
    opts: {
      body?: unknown;
      signal?: AbortSignal;
      maxBytes?: number;
      accept?: string;
      /** Resolve with these non-2xx answers too (a proxied /ready's 503 carries its body). */
      statuses?: readonly number[];
    } = {},
  ): Promise<{ status: number; text: string; contentType: string }> {
    const url = this.server + path;
    const res = await this.#request(path, opts.signal, false, method, opts.body, opts.accept, opts.statuses);
    const text = await readBody(res, opts.maxBytes ?? MAX_LIST_BODY, url);
    return { status: res.statusCode ?? 0, text, contentType: String(res.headers['content-type'] ?? '') };
  }

  /** POST `body` as JSON to `path` and parse the JSON answer. */
  async postJSON(path: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
    const { status, text } = await this.send('POST', path, { body, signal, maxBytes: MAX_ERROR_BODY * 16 });
    try {
      return JSON.parse(text);
    } catch {
      throw new ApiError(this.server + path, `HTTP ${status}: the body is not JSON`, status, 'POST');
    }
  }

  /**
   * GET a watch `path` and call `onLine` with each JSON line as it arrives. Resolves when the
   * server ends the stream or `signal` aborts; rejects on a failed request or a broken stream.
   */
  async watch(path: string, onLine: (value: unknown) => void, signal: AbortSignal): Promise<void> {
    const url = this.server + path;
    const res = await this.#request(path, signal, true);
    await new Promise<void>((resolve, reject) => {
      let pending = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        pending += chunk;
        let nl = pending.indexOf('\n');
        while (nl >= 0) {
          const line = pending.slice(0, nl).trim();
          pending = pending.slice(nl + 1);
          nl = pending.indexOf('\n');
          if (!line) continue;
          let value: unknown;
          try {
            value = JSON.parse(line);
          } catch {
            res.destroy();
            reject(new ApiError(url, `watch stream: a line is not JSON (${line.slice(0, 80)}…)`));
            return;
          }
          try {
            onLine(value);
          } catch (err) {
            res.destroy();
            reject(err);
            return;
          }
        }
      });
      res.on('end', () => resolve());
      res.on('error', (err) => (signal.aborted ? resolve() : reject(new ApiError(url, cause(err)))));
      res.on('close', () => resolve()); // aborted by us: end quietly
    });
  }

  close(): void {
    this.#agent.destroy();
  }

  async #request(
    path: string,
    signal?: AbortSignal,
    streaming = false,
    method: 'GET' | 'POST' = 'GET',
    body?: unknown,
    accept = 'application/json',
    statuses: readonly number[] = [],
  ): Promise<IncomingMessage> {
    const url = this.server + path;
    let auth: RequestAuth;
    try {
      auth = await this.#auth();
    } catch (err) {
      throw new ApiError(url, `credentials: ${(err as Error).message}`, undefined, method);
    }
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const target = new URL(url);
    const lib = target.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request(target, {
        method,
        agent: this.#agent,
        signal,
        headers: {
          Accept: accept,
          ...(payload
            ? { 'Content-Type': 'application/json', 'Content-Length': String(payload.length) }
            : {}),
          ...auth.headers,
        },
        ...(target.protocol === 'https:'
          ? {
              ca: auth.ca,
              cert: auth.cert,
              key: auth.key,
              servername: auth.servername,
              rejectUnauthorized: auth.rejectUnauthorized ?? true,
            }
          : {}),
      });
      // Until the response starts; a watch then runs as long as the reflector lets it.
      req.setTimeout(RESPONSE_TIMEOUT_MS, () =>
        req.destroy(
          new ApiError(url, `no response within ${RESPONSE_TIMEOUT_MS / 1000} s`, undefined, method),
        ),
      );
      req.on('response', (res) => {
        if (streaming) req.setTimeout(0);
        const status = res.statusCode ?? 0;
        if ((status >= 200 && status < 300) || statuses.includes(status)) {
          resolve(res);
          return;
        }
        readBody(res, MAX_ERROR_BODY, url, true).then(
          (text) => reject(new ApiError(url, `HTTP ${status}${statusMessage(text)}`, status, method)),
          reject,
        );
      });
      req.on('error', (err) =>
        reject(err instanceof ApiError ? err : new ApiError(url, cause(err), undefined, method)),
      );
      req.end(payload);
    });
  }
}

/**
 * A client for an explicit API URL (KubeEdge's edge API): no auth on http://; on https://
 * a bearer token read from `tokenFile` at every request (projected service-account tokens
 * are rotated in place; requests are seconds apart at most, so no watch on the file is
 * needed), the CA from `caFile`, or no verification only when asked for by name.
 */
export function apiFromUrl(opts: {
  url: string;
  tokenFile?: string;
  caFile?: string;
  insecureSkipTLSVerify?: boolean;
}): ApiClient {
  const ca = opts.caFile ? readFileSync(opts.caFile) : undefined; // a bad path fails at start
  return new ApiClient(opts.url, async () => {
    const headers: Record<string, string> = {};
    if (opts.tokenFile) headers.Authorization = `Bearer ${readToken(opts.tokenFile)}`;
    return { headers, ca, rejectUnauthorized: !opts.insecureSkipTLSVerify };
  });
}

/** A bearer token file's content, read now; errors name the file. */
export function readToken(path: string): string {
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new Error(`token file ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  if (!token) throw new Error(`token file ${path} is empty`);
  return token;
}

/** A client for the current context of a KubeConfig (a kubeconfig file or in-cluster). */
export function apiFromKubeConfig(kc: KubeConfig): ApiClient {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig: no current cluster');
  return new ApiClient(cluster.server, async () => {
    const opts: RequestOptions = {};
    await kc.applyToHTTPSOptions(opts);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.headers ?? {})) if (typeof v === 'string') headers[k] = v;
    if (opts.auth) headers.Authorization = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    return {
      headers,
      ca: opts.ca as Buffer | undefined,
      cert: opts.cert as Buffer | undefined,
      key: opts.key as Buffer | undefined,
      servername: opts.servername,
      rejectUnauthorized: opts.rejectUnauthorized,
    };
  });
}

/** A socket or TLS error → words: what happened, with the code to search for. */
export function cause(err: unknown): string {
  const e = err as NodeJS.ErrnoException & { reason?: string };
  const code = e?.code;
  if (e instanceof ApiError) return e.message;
  if (e?.name === 'AbortError') return 'aborted';
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused (ECONNREFUSED): nothing listens there';
    case 'ECONNRESET':
      return 'connection reset by the server (ECONNRESET)';
    case 'ETIMEDOUT':
      return 'connection timed out (ETIMEDOUT)';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `no route to the server (${code})`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `host name not resolved (${code})`;
  }
  const text = e?.message ?? String(err);
  if (
    code &&
    (code.startsWith('ERR_TLS') ||
      code.startsWith('ERR_SSL') ||
      /CERT|SELF_SIGNED|UNABLE_TO|SIGNATURE|HOSTNAME/.test(code))
  )
    return `TLS: ${text} (${code})`;
  return code ? `${text} (${code})` : text;
}

function statusMessage(body: string): string {
  try {
    const status = JSON.parse(body) as { message?: unknown; reason?: unknown };
    const parts = [status.reason, status.message].filter((p): p is string => typeof p === 'string' && !!p);
    if (parts.length > 0) return `: ${parts.join(': ')}`;
  } catch {}
  const text = body.trim().slice(0, 200);
  return text ? `: ${text}` : '';
}

function readBody(res: IncomingMessage, limit: number, url: string, truncate = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        res.destroy();
        if (truncate) resolve(Buffer.concat(chunks).toString('utf8'));
        else reject(new ApiError(url, `response larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', (err) => reject(new ApiError(url, cause(err))));
  });
}
