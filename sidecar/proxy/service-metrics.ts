/**
 * Per destination service metrics: what a mesh user asks of a sidecar first (Linkerd's
 * `request_total` / `response_latency_ms` by `dst_service`, Istio's `istio_requests_total`).
 *
 *   edgemesh_proxy_service_requests_total{dst_namespace,dst_service,dst_port,class}   HTTP exchanges by response class
 *   edgemesh_proxy_service_request_duration_seconds{…}   request head received → response head sent back (histogram)
 *   edgemesh_proxy_service_connections_total{…}          client connections to the service (L4 and HTTP ports)
 *   edgemesh_proxy_service_bytes_total{…,direction}      bytes carried: sent = app → service, received = service → app
 *
 * Why not prom-client's labelled metrics: every `inc(labels)` hashes its label object, and the
 * HTTP fast path spends a few microseconds per request in all. Here the hot path is one
 * Map.get per connection or request and a few array increments; the label strings are built
 * at scrape time. Cardinality follows the services this pod talks to (the on-demand catalog
 * holds only those), and a service that left the catalog is dropped at the next scrape
 * (`live`): its series end, as Prometheus expects of a target that stops reporting them.
 */
import type { Registry } from '../../lib/metrics.ts';

/** Upper bounds in seconds: 1 ms (same-node hop) up to 10 s (a slow upstream). */
export const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

/** What the proxy records for one service port; one object per `namespace/name:port`, reused. */
export class ServiceStats {
  readonly labels: { dst_namespace: string; dst_service: string; dst_port: string };
  /** Requests by response class (index = status / 100 - 1). */
  readonly classes = new Float64Array(CLASSES.length);
  /** Histogram buckets (not cumulative here: summed at scrape), the last one +Inf. */
  readonly buckets = new Float64Array(DURATION_BUCKETS.length + 1);
  durationSum = 0;
  durationCount = 0;
  connections = 0;
  sent = 0;
  received = 0;

  constructor(namespace: string, service: string, port: number) {
    this.labels = { dst_namespace: namespace, dst_service: service, dst_port: String(port) };
  }

  /** One exchange answered with `status`; `seconds` from its request head to its response head. */
  request(status: number, seconds?: number): void {
    const cls = Math.trunc(status / 100) - 1;
    if (!(cls >= 0 && cls < CLASSES.length)) return; // not an HTTP status: nothing to count
    this.classes[cls] = (this.classes[cls] as number) + 1;
    if (seconds === undefined || !(seconds >= 0)) return;
    let i = 0;
    while (i < DURATION_BUCKETS.length && seconds > (DURATION_BUCKETS[i] as number)) i++;
    this.buckets[i] = (this.buckets[i] as number) + 1;
    this.durationSum += seconds;
    this.durationCount++;
  }

  connection(): void {
    this.connections++;
  }

  /** Bytes of one finished connection: `sent` from the app, `received` back to it. */
  bytes(sent: number, received: number): void {
    if (sent > 0) this.sent += sent;
    if (received > 0) this.received += received;
  }
}

/** A service port as the route table has it (sidecar/proxy/route.ts): nothing built per call. */
export interface ServiceRef {
  /** `namespace/name:port`, the route table's key. */
  key: string;
  service: { namespace: string; name: string };
  port: { port: number };
}

type Sample = { labels: Record<string, string>; value: number; metricName?: string };

export class ServiceMetrics {
  readonly #byKey = new Map<string, ServiceStats>();
  /** The service-port keys still in the catalog, or undefined when unknown (keep everything): the proxy sets it. */
  live: () => ReadonlySet<string> | undefined = () => undefined;

  constructor(registry?: Registry) {
    if (!registry) return;
    const family = (name: string, help: string, type: string, values: () => Sample[]) =>
      // The shape prom-client's Registry reads from a metric (name, help, type, get()).
      registry.registerMetric({
        name,
        help,
        type,
        get: () => ({ name, help, type, values: values() }),
      } as never);
    family(
      'edgemesh_proxy_service_requests_total',
      'HTTP requests proxied, by destination service and response class (answers of the proxy itself included)',
      'counter',
      () =>
        this.#each((s, out) =>
          s.classes.forEach((v, i) => {
            if (v > 0) out.push({ labels: { ...s.labels, class: CLASSES[i] as string }, value: v });
          }),
        ),
    );
    family(
      'edgemesh_proxy_service_request_duration_seconds',
      'Time from an HTTP request head received to its response head sent back, by destination service',
      'histogram',
      () =>
        this.#each((s, out) => {
          if (s.durationCount === 0) return;
          const name = 'edgemesh_proxy_service_request_duration_seconds';
          let cumulative = 0;
          s.buckets.forEach((v, i) => {
            cumulative += v;
            const le = i < DURATION_BUCKETS.length ? String(DURATION_BUCKETS[i]) : '+Inf';
            out.push({ metricName: `${name}_bucket`, labels: { ...s.labels, le }, value: cumulative });
          });
          out.push({ metricName: `${name}_sum`, labels: s.labels, value: s.durationSum });
          out.push({ metricName: `${name}_count`, labels: s.labels, value: s.durationCount });
        }),
    );
    family(
      'edgemesh_proxy_service_connections_total',
      'Client connections to a service port (L4 and HTTP), by destination service',
      'counter',
      () => this.#each((s, out) => out.push({ labels: s.labels, value: s.connections })),
    );
    family(
      'edgemesh_proxy_service_bytes_total',
      'Bytes carried for finished connections, by destination service; sent: app to service, received: service to app',
      'counter',
      () =>
        this.#each((s, out) => {
          out.push({ labels: { ...s.labels, direction: 'sent' }, value: s.sent });
          out.push({ labels: { ...s.labels, direction: 'received' }, value: s.received });
        }),
    );
  }

  /** The stats of a service port, created on first use. */
  of(ref: ServiceRef): ServiceStats {
    let stats = this.#byKey.get(ref.key);
    if (!stats) {
      stats = new ServiceStats(ref.service.namespace, ref.service.name, ref.port.port);
      this.#byKey.set(ref.key, stats);
    }
    return stats;
  }

  /** Services held now (tests, and the sidecar's own memory accounting). */
  get size(): number {
    return this.#byKey.size;
  }

  /** Drops services no longer in the catalog, then lists samples of the rest. */
  #each(fill: (s: ServiceStats, out: Sample[]) => void): Sample[] {
    const live = this.live();
    const out: Sample[] = [];
    for (const [key, stats] of this.#byKey) {
      if (live && !live.has(key)) {
        this.#byKey.delete(key);
        continue;
      }
      fill(stats, out);
    }
    return out;
  }
}
