import { Counter, Gauge, type Registry } from '../../lib/metrics.ts';
import { rcodeName, Type } from './wire.ts';

/**
 * The DNS metrics. Per-query ones without per-query label hashing: plain typed-array counters on the hot
 * path (prom-client's labelled inc/observe cost about as much as answering the query),
 * turned into Prometheus samples only when /metrics is scraped.
 *
 *   edgemesh_dns_queries_total{qtype,rcode,source}
 *   edgemesh_dns_query_duration_seconds{source} (histogram)
 */
/** gateway: a cluster name answered locally after asking the node's gateway (on-demand catalog). */
export const SOURCES = ['local', 'cache', 'upstream', 'gateway'] as const;
export type Source = (typeof SOURCES)[number];

const TYPE_LABELS = [...Object.keys(Type), 'SVCB', 'HTTPS', 'other'];
const TYPE_INDEX = new Uint8Array(65536).fill(TYPE_LABELS.length - 1);
for (const [name, value] of Object.entries(Type)) TYPE_INDEX[value] = TYPE_LABELS.indexOf(name);
TYPE_INDEX[64] = TYPE_LABELS.indexOf('SVCB');
TYPE_INDEX[65] = TYPE_LABELS.indexOf('HTTPS');
const RCODES = 16;
const BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
];

export class QueryStats {
  readonly #counts = new Float64Array(SOURCES.length * RCODES * TYPE_LABELS.length);
  /** Per source: one count per bucket plus +Inf, then sum and count. */
  readonly #latency = SOURCES.map(() => new Float64Array(BUCKETS.length + 3));

  record(qtype: number, rcode: number, source: number, seconds: number): void {
    this.#counts[(source * RCODES + (rcode & 0xf)) * TYPE_LABELS.length + TYPE_INDEX[qtype]]++;
    const h = this.#latency[source];
    let b = 0;
    while (b < BUCKETS.length && seconds > BUCKETS[b]) b++;
    h[b]++;
    h[BUCKETS.length + 1] += seconds;
    h[BUCKETS.length + 2]++;
  }

  /** Count of queries answered with `rcode` from `source` (all types); for tests. */
  total(source: Source, rcode: number): number {
    const s = SOURCES.indexOf(source);
    let n = 0;
    for (let t = 0; t < TYPE_LABELS.length; t++)
      n += this.#counts[(s * RCODES + rcode) * TYPE_LABELS.length + t];
    return n;
  }

  register(registry: Registry): void {
    const counts = this.#counts;
    const latency = this.#latency;
    registry.registerMetric(
      customMetric(
        'edgemesh_dns_queries_total',
        'DNS queries answered, by query type, response code and source (local zone, cache, upstream)',
        'counter',
        () => {
          const values = [];
          for (let s = 0; s < SOURCES.length; s++) {
            for (let r = 0; r < RCODES; r++) {
              for (let t = 0; t < TYPE_LABELS.length; t++) {
                const value = counts[(s * RCODES + r) * TYPE_LABELS.length + t];
                if (value > 0)
                  values.push({
                    labels: { qtype: TYPE_LABELS[t], rcode: rcodeName(r), source: SOURCES[s] },
                    value,
                  });
              }
            }
          }
          return values;
        },
      ),
    );
    const name = 'edgemesh_dns_query_duration_seconds';
    registry.registerMetric(
      customMetric(name, 'Time from receiving a DNS query to sending its answer', 'histogram', () =>
        SOURCES.flatMap((source, s) => {
          const h = latency[s];
          let cumulative = 0;
          const buckets = [...BUCKETS, Number.POSITIVE_INFINITY].map((le, b) => {
            cumulative += h[b];
            return {
              metricName: `${name}_bucket`,
              labels: { le: le === Number.POSITIVE_INFINITY ? '+Inf' : le, source },
              value: cumulative,
            };
          });
          return [
            ...buckets,
            { metricName: `${name}_sum`, labels: { source }, value: h[BUCKETS.length + 1] },
            { metricName: `${name}_count`, labels: { source }, value: h[BUCKETS.length + 2] },
          ];
        }),
      ),
    );
  }
}

/** The shape prom-client's Registry reads from a metric (name, help, type, get()). */
function customMetric(
  name: string,
  help: string,
  type: 'counter' | 'histogram',
  values: () => { labels: Record<string, string | number>; value: number; metricName?: string }[],
) {
  const metric = {
    name,
    help,
    type,
    aggregator: 'sum',
    get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
    reset: () => {},
  };
  return metric as unknown as Parameters<Registry['registerMetric']>[0];
}

/** The DNS server's other metrics (rare events and gauges), plus the per-query QueryStats. */
export function createDnsMetrics(
  registry: Registry | undefined,
  gauges: { cacheEntries: () => number; upstreamInFlight: () => number },
) {
  const registers = registry ? [registry] : [];
  const malformed = new Counter({
    name: 'edgemesh_dns_rejected_total',
    help: 'DNS messages rejected before answering (FORMERR/NOTIMP/BADVERS or dropped), by reason',
    labelNames: ['reason'],
    registers,
  });
  const upstream = new Counter({
    name: 'edgemesh_dns_upstream_events_total',
    help: 'Upstream resolver events: udp/tcp queries sent, timeouts, errors, busy (in-flight bound reached), malformed',
    labelNames: ['event'],
    registers,
  });
  const zoneBuilds = new Counter({
    name: 'edgemesh_dns_zone_builds_total',
    help: 'Times the cluster zone tables were rebuilt from the catalog',
    registers,
  });
  new Gauge({
    name: 'edgemesh_dns_cache_entries',
    help: 'Upstream answers in the DNS cache',
    registers,
    collect() {
      this.set(gauges.cacheEntries());
    },
  });
  new Gauge({
    name: 'edgemesh_dns_upstream_in_flight',
    help: 'Upstream DNS queries awaiting an answer',
    registers,
    collect() {
      this.set(gauges.upstreamInFlight());
    },
  });
  const stats = new QueryStats();
  if (registry) stats.register(registry);
  return { malformed, upstream, zoneBuilds, stats };
}

export type DnsMetrics = ReturnType<typeof createDnsMetrics>;
