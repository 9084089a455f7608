import type { Server } from 'node:http';
import { createRequire } from 'node:module';
import type * as PromClient from 'prom-client';
import { buildInfo } from './build-info.ts';

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

/**
 * prom-client's default metrics (collectDefaultMetrics), each from its own file, except the process
 * CPU counters: their module loads @opentelemetry/api (50 files) for exemplars we never enable,
 * ~2.5 MB private in every process (measured in a bare node). processCpuMetrics below keeps them.
 */
type DefaultMetric = (
  registry: Registry,
  config: { prefix: string; eventLoopMonitoringPrecision: number },
) => void;
const DEFAULT_METRICS = [
  'processStartTime',
  'osMemoryHeap',
  'processOpenFileDescriptors',
  'processMaxFileDescriptors',
  'eventLoopLag',
  'processResources',
  'processHandles',
  'processRequests',
  'heapSizeAndUsed',
  'heapSpacesSizeAndUsed',
  'version',
  'gc',
].map((name) => load(`prom-client/lib/metrics/${name}`) as DefaultMetric);

/** prom-client's process_cpu_{user,system,}_seconds_total: the same names, help and values. */
function processCpuMetrics(registry: Registry, prefix: string): void {
  let last = process.cpuUsage();
  const counter = (name: string, help: string, collect?: () => void) =>
    new Counter({ name: `${prefix}${name}`, help, registers: [registry], ...(collect ? { collect } : {}) });
  // One metric's collect sets all three, as in prom-client.
  const user = counter('process_cpu_user_seconds_total', 'Total user CPU time spent in seconds.', () => {
    const now = process.cpuUsage();
    const userMicros = now.user - last.user;
    const systemMicros = now.system - last.system;
    last = now;
    user.inc(userMicros / 1e6);
    system.inc(systemMicros / 1e6);
    total.inc((userMicros + systemMicros) / 1e6);
  });
  const system = counter('process_cpu_system_seconds_total', 'Total system CPU time spent in seconds.');
  const total = counter('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.');
}

// Not `import http from 'node:http'`: an ES import of node:http reads every export, and its lazy
// WebSocket/MessageEvent getters load Node's bundled undici (~6 MB private per process).
const http = process.getBuiltinModule('node:http');

/**
 * One registry per process part. Process and runtime metrics keep their standard names
 * (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `nodejs_*`, as every
 * Prometheus client library writes them), so the usual dashboards and alerts work unchanged;
 * the `component` label says which part.
 */
export function createRegistry(component: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ component });
  processCpuMetrics(registry, '');
  for (const metric of DEFAULT_METRICS) metric(registry, { prefix: '', eventLoopMonitoringPrecision: 10 });
  buildInfoMetric(registry);
  return registry;
}

/**
 * `edgemesh_build_info{component,version,commit,node_version} 1` (component is the registry's
 * default label): which release runs where, joinable onto any other series by component, as
 * kube-state-metrics and Prometheus' own build_info do.
 */
export function buildInfoMetric(registry: Registry, info = buildInfo()): void {
  const commit = info.commit === 'unknown' ? 'unknown' : `${info.commit}${info.dirty ? '-dirty' : ''}`;
  new Gauge({
    name: 'edgemesh_build_info',
    help: 'Always 1: the release (package version, git commit) and Node.js version this process runs',
    labelNames: ['version', 'commit', 'node_version'],
    registers: [registry],
  }).set({ version: info.version, commit, node_version: info.nodeVersion }, 1);
}

/** An extra route's answer; `type` defaults to text/plain (`/status` answers JSON). */
export interface RouteAnswer {
  status: number;
  body: string;
  type?: string;
}

/**
 * A tiny plain-HTTP server for `/metrics` (and optional extra GET routes such as `/ready`),
 * used by parts that have no HTTP framework of their own (sidecar, gateway, tunnel-server).
 */
export function serveMetrics(
  registry: Registry,
  opts: { port: number; host?: string; routes?: Record<string, () => RouteAnswer> },
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
      const { status, body, type } = route();
      res.writeHead(status, { 'content-type': type ?? 'text/plain' });
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

/**
 * Where a part serves /metrics (and /ready) unless told: the first specific address among
 * `candidates` (its listen address, its node's or pod's IP from the downward API) and
 * loopback — never all interfaces (issue 16 item 10): a hostNetwork part on 0.0.0.0 answers
 * on every interface of the node, public ones included. The kubelet probes the pod's IP
 * (the node's, with hostNetwork); tools on the node use loopback.
 */
export function defaultMetricsHosts(candidates: readonly (string | undefined)[]): string[] {
  const specific = candidates.find((c) => c !== undefined && c !== '' && c !== '0.0.0.0' && c !== '::');
  return [...new Set([...(specific ? [specific] : []), '127.0.0.1'])];
}

/** `serveMetrics` on each of `hosts` (same port): one server per address; close() ends them all. */
export async function serveMetricsOn(
  registry: Registry,
  hosts: readonly string[],
  opts: { port: number; routes?: Record<string, () => RouteAnswer> },
): Promise<{ close(): void }> {
  const servers: Server[] = [];
  try {
    for (const host of hosts) servers.push(await serveMetrics(registry, { ...opts, host }));
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
  return {
    close: () => {
      for (const s of servers) {
        s.closeAllConnections(); // keep-alive scrapers would hold a plain close() open
        s.close();
      }
    },
  };
}
