import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { QueryStats } from './stats.ts';

describe('QueryStats', () => {
  it('renders counters and a cumulative histogram in Prometheus text', async () => {
    const registry = new Registry();
    registry.setDefaultLabels({ component: 'sidecar' });
    const stats = new QueryStats();
    stats.register(registry);
    stats.record(1, 0, 0, 0.00004);
    stats.record(1, 0, 0, 0.0003);
    stats.record(28, 3, 2, 3);
    stats.record(4242, 0, 1, 0.001);
    const text = await registry.metrics();
    expect(text).toContain('# TYPE edgemesh_dns_queries_total counter');
    expect(text).toContain(
      'edgemesh_dns_queries_total{qtype="A",rcode="NOERROR",source="local",component="sidecar"} 2',
    );
    expect(text).toContain(
      'edgemesh_dns_queries_total{qtype="AAAA",rcode="NXDOMAIN",source="upstream",component="sidecar"} 1',
    );
    expect(text).toContain(
      'edgemesh_dns_queries_total{qtype="other",rcode="NOERROR",source="cache",component="sidecar"} 1',
    );
    expect(text).toContain('# TYPE edgemesh_dns_query_duration_seconds histogram');
    expect(text).toContain(
      'edgemesh_dns_query_duration_seconds_bucket{le="0.00005",source="local",component="sidecar"} 1',
    );
    expect(text).toContain(
      'edgemesh_dns_query_duration_seconds_bucket{le="0.0005",source="local",component="sidecar"} 2',
    );
    expect(text).toContain(
      'edgemesh_dns_query_duration_seconds_bucket{le="2.5",source="upstream",component="sidecar"} 0',
    );
    expect(text).toContain(
      'edgemesh_dns_query_duration_seconds_bucket{le="+Inf",source="upstream",component="sidecar"} 1',
    );
    expect(text).toContain('edgemesh_dns_query_duration_seconds_count{source="local",component="sidecar"} 2');
    expect(text).toContain(
      'edgemesh_dns_query_duration_seconds_sum{source="upstream",component="sidecar"} 3',
    );
    expect(stats.total('local', 0)).toBe(2);
  });
});
