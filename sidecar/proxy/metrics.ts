import { Counter, Gauge, type Registry } from '../../lib/metrics.ts';
import { ServiceMetrics } from './service-metrics.ts';

/** The proxy's metrics, registered once per process on the sidecar's registry. */
export interface ProxyMetrics {
  connections: Counter<'route'>;
  active: Gauge;
  /** What `active` reports at scrape time (the proxy sets it): no per-connection bookkeeping. */
  activeSource: () => number;
  connectFailures: Counter<'via'>;
  httpRequests: Counter<'code'>;
  refused: Counter<'reason'>;
  /** By destination service: requests, latency, connections, bytes (service-metrics.ts). */
  services: ServiceMetrics;
}

export function createProxyMetrics(registry?: Registry): ProxyMetrics {
  const registers = registry ? [registry] : [];
  const metrics: ProxyMetrics = {
    activeSource: () => 0,
    services: new ServiceMetrics(registry),
    connections: new Counter({
      name: 'edgemesh_proxy_connections_total',
      help: 'Redirected connections accepted, by route (service, pod, passthrough, http)',
      labelNames: ['route'],
      registers,
    }),
    active: new Gauge({
      name: 'edgemesh_proxy_active_connections',
      help: 'Client connections open through the proxy',
      registers,
      collect() {
        this.set(metrics.activeSource());
      },
    }),
    connectFailures: new Counter({
      name: 'edgemesh_proxy_connect_failures_total',
      help: 'Failed upstream connects (each attempt), by way (pod or gateway)',
      labelNames: ['via'],
      registers,
    }),
    httpRequests: new Counter({
      name: 'edgemesh_proxy_http_requests_total',
      help: 'HTTP requests proxied on HTTP ports, by response status code',
      labelNames: ['code'],
      registers,
    }),
    refused: new Counter({
      name: 'edgemesh_proxy_refused_total',
      help: 'Connections refused: loop (destination is the proxy itself), no-original-dst, no-endpoint, unreachable',
      labelNames: ['reason'],
      registers,
    }),
  };
  return metrics;
}

/**
 * `edgemesh_proxy_http_requests_total{code}` for one status, its labelled child cached per
 * code: prom-client hashes the label object on every `inc(labels)`, measurable per request.
 */
export function statusCounter(metrics: ProxyMetrics): (status: number) => void {
  const children = new Map<number, { inc(): void }>();
  return (status) => {
    let child = children.get(status);
    if (!child) {
      child = metrics.httpRequests.labels({ code: status });
      children.set(status, child);
    }
    child.inc();
  };
}
