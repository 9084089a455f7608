import type { Server } from 'node:http';
import { createRequire } from 'node:module';
import type * as PromClient from 'prom-client';

// The metric classes from their own files rather than prom-client's index, which also loads its
// Pushgateway (http, https, tls, zlib) and cluster aggregator: ~2 MB private in every sidecar.
// These are the same module instances the index re-exports, so both import styles mix freely.
const load = createRequire(import.meta.url);
export const Registry = load('prom-client/lib/registry') as typeof PromClient.Registry;
export type Registry = PromClient.Registry;
export const Counter = load('prom-client/lib/counter') as typeof PromClient.Counter;
export type Counter<T extends string = string> = PromClient.Counter<T>;
export const Gauge = load('prom-client/lib/gauge') as typeof PromClient.Gauge;
export type Gauge<T extends string = string> = PromClient.Gauge<T>;
export const Histogram = load('prom-client/lib/histogram') as typeof PromClient.Histogram;
export type Histogram<T extends string = string> = PromClient.Histogram<T>;
const collectDefaultMetrics = load(
  'prom-client/lib/defaultMetrics',
) as typeof PromClient.collectDefaultMetrics;

// Not `import http from 'node:http'`: an ES import of node:http reads every export, and its lazy
// WebSocket/MessageEvent getters load Node's bundled undici (~6 MB private per process).
const http = process.getBuiltinModule('node:http');

/** One registry per process part, with process/runtime metrics under the `edgemesh_` prefix. */
export function createRegistry(component: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ component });
  collectDefaultMetrics({ register: registry, prefix: 'edgemesh_' });
  return registry;
}

/**
 * A tiny plain-HTTP server for `/metrics` (and optional extra GET routes such as `/ready`),
 * used by parts that have no HTTP framework of their own (sidecar, gateway, tunnel-server).
 */
export function serveMetrics(
  registry: Registry,
  opts: { port: number; host?: string; routes?: Record<string, () => { status: number; body: string }> },
): Promise<Server> {
  const server = http.createServer(async (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/metrics') {
      res.setHeader('content-type', registry.contentType);
      res.end(await registry.metrics());
      return;
    }
    const route = req.method === 'GET' ? opts.routes?.[path] : undefined;
    if (route) {
      const { status, body } = route();
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(body);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '0.0.0.0', () => resolve(server));
  });
}
