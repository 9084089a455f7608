/**
 * The benchmark's own hands on a test control plane (test/cluster): admin requests with the
 * cluster's client cert over keep-alive HTTPS, and bulk creation with bounded concurrency
 * (one request per object: the API has no batch create; kubectl apply of a List does the same
 * one by one, serially).
 */
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';

export interface AdminCredentials {
  server: string;
  caFile: string;
  certFile: string;
  keyFile: string;
}

export class AdminApi {
  readonly #server: URL;
  readonly #agent: https.Agent;
  readonly #tls: { ca: Buffer; cert: Buffer; key: Buffer };

  constructor(creds: AdminCredentials, maxSockets = 16) {
    this.#server = new URL(creds.server);
    this.#agent = new https.Agent({ keepAlive: true, maxSockets });
    this.#tls = {
      ca: readFileSync(creds.caFile),
      cert: readFileSync(creds.certFile),
      key: readFileSync(creds.keyFile),
    };
  }

  request(
    method: string,
    path: string,
    body?: unknown,
    contentType = 'application/json',
  ): Promise<{ status: number; body: string }> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = https.request(
        new URL(path, this.#server),
        {
          method,
          agent: this.#agent,
          ...this.#tls,
          headers: {
            Accept: 'application/json',
            ...(payload === undefined
              ? {}
              : { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(payload) }),
          },
          timeout: 60_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
          );
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 60 s`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** A request that must succeed (2xx; `ok` adds statuses to accept); retried on 429/5xx/errors. */
  async must(
    method: string,
    path: string,
    body?: unknown,
    opts: { contentType?: string; ok?: number[]; attempts?: number } = {},
  ): Promise<string> {
    const attempts = opts.attempts ?? 20;
    let last = '';
    for (let i = 0; i < attempts; i++) {
      try {
        const r = await this.request(method, path, body, opts.contentType);
        if ((r.status >= 200 && r.status < 300) || opts.ok?.includes(r.status)) return r.body;
        last = `HTTP ${r.status}: ${r.body.slice(0, 300)}`;
        // 404 on a pod: its namespace's ServiceAccount may not exist yet; 429/5xx: overload.
        if (r.status !== 429 && r.status < 500 && !(r.status === 403 || r.status === 404)) break;
      } catch (err) {
        last = (err as Error).message;
      }
      await sleep(Math.min(200 * 2 ** i, 2_000));
    }
    throw new Error(`${method} ${path}: ${last}`);
  }

  /** Creates every object (POST to its collection), `concurrency` at a time; AlreadyExists is fine. */
  async createAll(items: { path: string; body: unknown }[], concurrency = 16): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const item = items[next++];
        await this.must('POST', item.path, item.body, { ok: [409] });
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  }

  close(): void {
    this.#agent.destroy();
  }
}
