import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { busiest, limitMetrics } from './metrics.ts';
import { DEFAULT_CONNECTION_LIMITS } from './server.ts';

const samples = async (registry: Registry) =>
  (await registry.metrics()).split('\n').filter((l) => l !== '' && !l.startsWith('#'));

describe('limitMetrics', () => {
  it('exposes the configured caps and the busiest node at scrape time', async () => {
    const registry = new Registry();
    const byNode = new Map<string, number>();
    limitMetrics(
      registry,
      { connections: DEFAULT_CONNECTION_LIMITS, relays: { maxRelaysPerNode: 32, bytesPerSecondPerNode: 0 } },
      () => busiest(byNode),
    );
    expect(await samples(registry)).toEqual([
      'edgemesh_tunnel_server_connections_limit 1024',
      'edgemesh_tunnel_server_relays_per_node_limit 32',
      'edgemesh_tunnel_server_node_relays_max 0',
    ]);
    byNode.set('edge-a', 3).set('edge-b', 7).set('edge-c', 0);
    expect(await samples(registry)).toContain('edgemesh_tunnel_server_node_relays_max 7');
  });
});

describe('busiest', () => {
  it('is the largest count, 0 for none', () => {
    expect(busiest(new Map())).toBe(0);
    expect(
      busiest(
        new Map([
          ['a', 2],
          ['b', 0],
        ]),
      ),
    ).toBe(2);
  });
});
