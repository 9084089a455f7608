import http from 'node:http';
import { collectDefaultMetrics, Registry } from 'prom-client';

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
): Promise<http.Server> {
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
