import { readFileSync, watch } from 'node:fs';
import { dirname } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { Counter, Histogram, type Registry } from 'prom-client';
import { describeError, EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { review } from './admission.ts';
import type { InjectionConfig } from './config.ts';

export interface WebhookServerOptions {
  host: string;
  port: number;
  tlsCertFile: string;
  tlsKeyFile: string;
  config: InjectionConfig;
  log: Logger;
  registry: Registry;
  /** Largest AdmissionReview accepted; the API server caps objects at ~1.5 MiB. */
  bodyLimit?: number;
  /** How often to re-read the certificate files besides watching them (Secret volumes swap symlinks). */
  certPollMs?: number;
}

export interface WebhookServer {
  app: FastifyInstance;
  address: { host: string; port: number };
  /** Re-reads the certificate files now; returns whether they changed. */
  reloadCertificates(): boolean;
  close(): Promise<void>;
}

/**
 * The HTTPS admission server: a thin shell around the pure `review`. Certificates are
 * re-read when their files change (kubelet updates a mounted Secret by swapping a symlink),
 * so a rotation needs no restart.
 */
export async function startWebhookServer(opts: WebhookServerOptions): Promise<WebhookServer> {
  const { log, config } = opts;
  let cert = readFileSync(opts.tlsCertFile);
  let key = readFileSync(opts.tlsKeyFile);
  let shuttingDown = false;

  const decisions = new Counter({
    name: 'edgemesh_webhook_admissions_total',
    help: 'Admission decisions by outcome and reason code',
    labelNames: ['outcome', 'code'],
    registers: [opts.registry],
  });
  const badRequests = new Counter({
    name: 'edgemesh_webhook_bad_requests_total',
    help: 'Requests rejected before a decision (malformed, oversized, wrong kind)',
    labelNames: ['status'],
    registers: [opts.registry],
  });
  const duration = new Histogram({
    name: 'edgemesh_webhook_admission_duration_seconds',
    help: 'Time to decide an admission request',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1],
    registers: [opts.registry],
  });
  const reloads = new Counter({
    name: 'edgemesh_webhook_cert_reloads_total',
    help: 'Serving certificate reloads',
    labelNames: ['result'],
    registers: [opts.registry],
  });

  const bodyLimit = opts.bodyLimit ?? 3 * 1024 * 1024;
  const app = Fastify({
    https: { cert, key, minVersion: 'TLSv1.2' },
    bodyLimit: opts.bodyLimit ?? 3 * 1024 * 1024,
    logger: false,
  });

  // Fastify's own errors for bodies, restated for someone reading an API server event.
  const clearer: Record<string, string> = {
    FST_ERR_CTP_INVALID_MEDIA_TYPE: 'content-type must be application/json (an AdmissionReview)',
    FST_ERR_CTP_BODY_TOO_LARGE: `body is larger than ${bodyLimit} bytes`,
    FST_ERR_CTP_EMPTY_JSON_BODY: 'body is empty; expected an AdmissionReview',
    FST_ERR_CTP_INVALID_JSON_BODY: 'body is not valid JSON',
  };
  app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, _req, reply) => {
    const status =
      err instanceof EdgemeshError && err.code === ErrorCodes.BAD_REQUEST ? 400 : (err.statusCode ?? 500);
    const message =
      (err.code && clearer[err.code]) ??
      (err instanceof SyntaxError ? `body is not valid JSON: ${err.message}` : err.message);
    badRequests.inc({ status: String(status) });
    if (status >= 500) log.error({ err }, 'internal error handling request');
    else log.warn({ status, error: message }, 'rejected request');
    reply
      .code(status)
      .send({ error: err instanceof EdgemeshError ? err.code : (err.code ?? 'ERROR'), message });
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({ error: 'NOT_FOUND', message: `no route ${req.method} ${req.url}` });
  });

  app.post('/mutate', async (req) => {
    const end = duration.startTimer();
    const { response, decision } = review(req.body, config);
    end();
    decisions.inc({ outcome: decision.outcome, code: decision.code });
    log.info(
      {
        uid: decision.uid,
        pod: decision.pod,
        outcome: decision.outcome,
        reason: decision.reason,
        dryRun: decision.dryRun,
      },
      'admission decision',
    );
    return response;
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    if (shuttingDown) return reply.code(503).send({ status: 'shutting down' });
    return { status: 'ready' };
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', opts.registry.contentType);
    return opts.registry.metrics();
  });

  const reloadCertificates = (): boolean => {
    try {
      const nextCert = readFileSync(opts.tlsCertFile);
      const nextKey = readFileSync(opts.tlsKeyFile);
      if (nextCert.equals(cert) && nextKey.equals(key)) return false;
      // Throws on a mismatched or malformed pair: keep serving the old one then.
      app.server.setSecureContext({ cert: nextCert, key: nextKey, minVersion: 'TLSv1.2' });
      cert = nextCert;
      key = nextKey;
      reloads.inc({ result: 'ok' });
      log.info({ cert: opts.tlsCertFile }, 'serving certificate reloaded');
      return true;
    } catch (err) {
      reloads.inc({ result: 'error' });
      log.error({ error: describeError(err) }, 'certificate reload failed; keeping the current one');
      return false;
    }
  };

  // Watch the directories (a Secret volume replaces the ..data symlink, not the files) and
  // poll as a fallback for filesystems without inotify.
  const watchers = [...new Set([dirname(opts.tlsCertFile), dirname(opts.tlsKeyFile)])].map((dir) => {
    let timer: NodeJS.Timeout | undefined;
    return watch(dir, () => {
      clearTimeout(timer);
      timer = setTimeout(reloadCertificates, 200);
    });
  });
  const poll = setInterval(reloadCertificates, opts.certPollMs ?? 30_000);
  poll.unref();

  await app.listen({ host: opts.host, port: opts.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  log.info({ host: opts.host, port }, 'webhook listening');

  return {
    app,
    address: { host: opts.host, port },
    reloadCertificates,
    async close() {
      shuttingDown = true;
      clearInterval(poll);
      for (const w of watchers) w.close();
      await app.close();
    },
  };
}
