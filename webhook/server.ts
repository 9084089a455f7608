import { readFileSync, watch } from 'node:fs';
import type { Socket } from 'node:net';
import { dirname } from 'node:path';
import { Transform } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import { Counter, Histogram, type Registry } from 'prom-client';
import { describeError, EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { review } from './admission.ts';
import type { InjectionConfig } from './config.ts';
import { certificateExpiryMetric } from './metrics.ts';

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
  limits?: Partial<WebhookLimits>;
}

/**
 * What a client may hold. The webhook is on the pod network and, with failurePolicy Fail,
 * pod creation waits on it: anyone who exhausts it blocks the cluster's pods. Only the API
 * server needs it, and it needs little: one request per pod CREATE, answered in ms.
 */
export interface WebhookLimits {
  /** Whole request, headers and body, from its first byte; absolute (not reset per byte). */
  requestTimeoutMs: number;
  /** Headers of a request, from its first byte. */
  headersTimeoutMs: number;
  /** TLS handshake. */
  handshakeTimeoutMs: number;
  /** Open connections in all (TLS, idle keep-alive, in flight). */
  maxConnections: number;
  /** Open connections from one source IP (the API server has a handful per replica). */
  maxConnectionsPerIp: number;
  /** Body bytes being received across all requests at once; past it, new body bytes get 503. */
  maxBodyBytesInFlight: number;
}

/**
 * 10 s: the API server's own timeout for this webhook (timeoutSeconds in
 * manifests/base/mutating-webhook.yaml) — an answer later than that is never read.
 * 256 connections × what each pins (~150 KB of TLS and parser state) and 32 MiB of bodies
 * (parsed, ~3×) keep the process inside its 256Mi limit over the ~120 MB it starts at.
 */
export const DEFAULT_WEBHOOK_LIMITS: WebhookLimits = {
  requestTimeoutMs: 10_000,
  headersTimeoutMs: 5_000,
  handshakeTimeoutMs: 5_000,
  maxConnections: 256,
  maxConnectionsPerIp: 128,
  maxBodyBytesInFlight: 32 * 1024 * 1024,
};

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
  certificateExpiryMetric(opts.registry, () => cert);

  const limits = { ...DEFAULT_WEBHOOK_LIMITS, ...opts.limits };
  const refused = new Counter({
    name: 'edgemesh_webhook_refused_total',
    help: 'Connections or requests refused for a limit (connection-limit, connection-limit-ip, body-budget)',
    labelNames: ['reason'],
    registers: [opts.registry],
  });

  const bodyLimit = opts.bodyLimit ?? 3 * 1024 * 1024;
  const app = Fastify({
    https: {
      cert,
      key,
      minVersion: 'TLSv1.2',
      handshakeTimeout: limits.handshakeTimeoutMs,
      // Node enforces the request/header timeouts on this tick (default 30 s: too coarse).
      connectionsCheckingInterval: 1_000,
    },
    bodyLimit,
    requestTimeout: limits.requestTimeoutMs,
    logger: false,
  });
  app.server.headersTimeout = limits.headersTimeoutMs;
  app.server.maxConnections = limits.maxConnections;
  app.server.on('tlsClientError', (_err: Error, socket: Socket) => socket.destroy());

  // Per-source cap, counted on the raw TCP connection (before TLS).
  const connsByIp = new Map<string, number>();
  let lastLimitLog = 0;
  app.server.on('connection', (socket: Socket) => {
    const ip = socket.remoteAddress ?? '';
    const n = connsByIp.get(ip) ?? 0;
    if (n >= limits.maxConnectionsPerIp) {
      refused.inc({ reason: 'connection-limit-ip' });
      if (Date.now() - lastLimitLog > 10_000) {
        lastLimitLog = Date.now();
        log.warn({ from: ip, limit: limits.maxConnectionsPerIp }, 'connection refused: per-IP limit reached');
      }
      socket.destroy();
      return;
    }
    connsByIp.set(ip, n + 1);
    socket.once('close', () => {
      const left = (connsByIp.get(ip) ?? 1) - 1;
      if (left > 0) connsByIp.set(ip, left);
      else connsByIp.delete(ip);
    });
  });
  app.server.on('drop', () => refused.inc({ reason: 'connection-limit' }));

  // A budget for body bytes being received at once: a flood of large bodies waits on no one.
  let bodyBytesInFlight = 0;
  app.addHook('preParsing', async (_req, _reply, payload) => {
    let mine = 0;
    const release = () => {
      bodyBytesInFlight -= mine;
      mine = 0;
    };
    const counted = new Transform({
      transform(chunk: Buffer, _enc, callback) {
        if (bodyBytesInFlight + chunk.length > limits.maxBodyBytesInFlight) {
          refused.inc({ reason: 'body-budget' });
          callback(
            Object.assign(new Error('webhook busy: too many request bodies in flight'), {
              statusCode: 503,
              code: 'EDGEMESH_ERR_UNAVAILABLE',
            }),
          );
          return;
        }
        mine += chunk.length;
        bodyBytesInFlight += chunk.length;
        callback(null, chunk);
      },
      flush(callback) {
        release();
        callback();
      },
    });
    counted.once('close', release);
    payload.once('error', (err) => counted.destroy(err));
    payload.once('close', release);
    return payload.pipe(counted);
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
