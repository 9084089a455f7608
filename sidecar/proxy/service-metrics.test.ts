import { describe, expect, it } from 'vitest';
import { Registry } from '../../lib/metrics.ts';
import { DURATION_BUCKETS, ServiceMetrics } from './service-metrics.ts';

const web = { key: 'shop/web:80', service: { namespace: 'shop', name: 'web' }, port: { port: 80 } };
const db = { key: 'shop/db:5432', service: { namespace: 'shop', name: 'db' }, port: { port: 5432 } };
const L = 'dst_namespace="shop",dst_service="web",dst_port="80"';

function setUp() {
  const registry = new Registry();
  const metrics = new ServiceMetrics(registry);
  const scrape = async () => (await registry.metrics()).split('\n').filter((l) => !l.startsWith('#') && l);
  return { metrics, scrape };
}

describe('ServiceMetrics', () => {
  it('exposes requests by class, a cumulative latency histogram, connections and bytes per service port', async () => {
    const { metrics, scrape } = setUp();
    const s = metrics.of(web);
    expect(metrics.of(web)).toBe(s); // one object per service port
    s.request(200, 0.0004);
    s.request(204, 0.003);
    s.request(503, 0);
    s.request(101, 20); // past the last bound: +Inf only
    s.connection();
    s.bytes(10, 2048);
    s.bytes(5, 0);
    const lines = await scrape();
    expect(lines).toEqual([
      `edgemesh_proxy_service_requests_total{${L},class="1xx"} 1`,
      `edgemesh_proxy_service_requests_total{${L},class="2xx"} 2`,
      `edgemesh_proxy_service_requests_total{${L},class="5xx"} 1`,
      ...DURATION_BUCKETS.map((le) => {
        const n = (le >= 0.001 ? 2 : 1) + (le >= 0.005 ? 1 : 0);
        return `edgemesh_proxy_service_request_duration_seconds_bucket{${L},le="${le}"} ${n}`;
      }),
      `edgemesh_proxy_service_request_duration_seconds_bucket{${L},le="+Inf"} 4`,
      `edgemesh_proxy_service_request_duration_seconds_sum{${L}} 20.0034`,
      `edgemesh_proxy_service_request_duration_seconds_count{${L}} 4`,
      `edgemesh_proxy_service_connections_total{${L}} 1`,
      `edgemesh_proxy_service_bytes_total{${L},direction="sent"} 15`,
      `edgemesh_proxy_service_bytes_total{${L},direction="received"} 2048`,
    ]);
  });

  it('ignores statuses outside 1xx-5xx, and latencies that are not numbers ≥ 0 (the status still counts)', async () => {
    const { metrics, scrape } = setUp();
    const s = metrics.of(web);
    s.request(99, 0.1);
    s.request(600);
    s.request(200, Number.NaN);
    s.request(200, -1);
    const lines = await scrape();
    expect(lines.filter((l) => l.includes('requests_total'))).toEqual([
      `edgemesh_proxy_service_requests_total{${L},class="2xx"} 2`,
    ]);
    // Neither the out-of-range statuses nor the bad latencies reached the histogram.
    expect(lines.some((l) => l.includes('duration_seconds'))).toBe(false);
  });

  it('drops a service that left the catalog at the next scrape, and starts it afresh if it returns', async () => {
    const { metrics, scrape } = setUp();
    let live = new Set([web.key, db.key]);
    metrics.live = () => live;
    metrics.of(web).connection();
    metrics.of(db).connection();
    expect((await scrape()).filter((l) => l.includes('connections_total'))).toHaveLength(2);
    live = new Set([db.key]);
    const lines = await scrape();
    expect(lines.some((l) => l.includes('dst_service="web"'))).toBe(false);
    expect(metrics.size).toBe(1);
    live = new Set([web.key, db.key]);
    metrics.of(web).connection();
    expect(await scrape()).toContain(`edgemesh_proxy_service_connections_total{${L}} 1`);
  });

  it('keeps everything while the catalog is unknown', async () => {
    const { metrics, scrape } = setUp();
    metrics.of(web).connection();
    expect(await scrape()).toContain(`edgemesh_proxy_service_connections_total{${L}} 1`);
  });

  it('escapes nothing it should not: label values are catalog names, validated as DNS labels upstream', async () => {
    const { metrics, scrape } = setUp();
    metrics
      .of({ key: 'a-b/c-d:8080', service: { namespace: 'a-b', name: 'c-d' }, port: { port: 8080 } })
      .connection();
    expect(await scrape()).toContain(
      'edgemesh_proxy_service_connections_total{dst_namespace="a-b",dst_service="c-d",dst_port="8080"} 1',
    );
  });
});
