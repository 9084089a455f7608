import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { MAX_PEERS } from '../lib/gateway-status.ts';
import { peerMetrics, tunnelStateMetrics } from './metrics.ts';
import type { PeerStatus, TunnelStatus } from './tunnel/status.ts';

const peer = (node: string, over: Partial<PeerStatus> = {}): PeerStatus => ({
  node,
  path: 'relay',
  rttMs: 42.5,
  paths: {},
  bytesIn: 1000,
  bytesOut: 2000,
  firstUseAt: 1_700_000_000_000,
  nextUpgradeAt: undefined,
  ...over,
});
const status = (peers: PeerStatus[]): TunnelStatus => ({
  node: 'edge-a',
  listenPort: 20006,
  servers: [],
  peers,
  nat: { probes: [], punches: [] },
});
/** The exposition's sample lines for `name` (without # HELP / # TYPE). */
const samples = async (registry: Registry, name: string) =>
  (await registry.metrics()).split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));

describe('peerMetrics', () => {
  it('one path series per peer (1), its RTT in seconds and bytes by direction', async () => {
    const registry = new Registry();
    let now = status([
      peer('edge-b'),
      peer('cloud-1', { path: 'direct', rttMs: 3, bytesIn: 5, bytesOut: 7 }),
    ]);
    peerMetrics(registry, () => now);
    expect(await samples(registry, 'edgemesh_gateway_peer_path')).toEqual([
      'edgemesh_gateway_peer_path{peer="cloud-1",path="direct"} 1',
      'edgemesh_gateway_peer_path{peer="edge-b",path="relay"} 1',
    ]);
    expect(await samples(registry, 'edgemesh_gateway_peer_rtt_seconds')).toEqual([
      'edgemesh_gateway_peer_rtt_seconds{peer="cloud-1"} 0.003',
      'edgemesh_gateway_peer_rtt_seconds{peer="edge-b"} 0.0425',
    ]);
    expect(await samples(registry, 'edgemesh_gateway_peer_bytes_total')).toEqual([
      'edgemesh_gateway_peer_bytes_total{peer="cloud-1",direction="in"} 5',
      'edgemesh_gateway_peer_bytes_total{peer="cloud-1",direction="out"} 7',
      'edgemesh_gateway_peer_bytes_total{peer="edge-b",direction="in"} 1000',
      'edgemesh_gateway_peer_bytes_total{peer="edge-b",direction="out"} 2000',
    ]);
    // The next scrape shows what holds then: the path moved, the old series is gone, bytes grew.
    now = status([peer('edge-b', { path: 'punched', bytesIn: 1500 })]);
    expect(await samples(registry, 'edgemesh_gateway_peer_path')).toEqual([
      'edgemesh_gateway_peer_path{peer="edge-b",path="punched"} 1',
    ]);
    expect(await samples(registry, 'edgemesh_gateway_peer_bytes_total')).toContain(
      'edgemesh_gateway_peer_bytes_total{peer="edge-b",direction="in"} 1500',
    );
  });

  it('a peer with no session now is path "none" and has no RTT series', async () => {
    const registry = new Registry();
    peerMetrics(registry, () => status([peer('edge-b', { path: undefined, rttMs: undefined })]));
    expect(await samples(registry, 'edgemesh_gateway_peer_path')).toEqual([
      'edgemesh_gateway_peer_path{peer="edge-b",path="none"} 1',
    ]);
    expect(await samples(registry, 'edgemesh_gateway_peer_rtt_seconds')).toEqual([]);
  });

  it('no series before the tunnel runs, and at most MAX_PEERS (the most recently used)', async () => {
    const registry = new Registry();
    let now: TunnelStatus | undefined;
    peerMetrics(registry, () => now);
    expect(await samples(registry, 'edgemesh_gateway_peer_path')).toEqual([]);
    const many = Array.from({ length: MAX_PEERS + 1 }, (_, i) =>
      peer(`n${i}`, { firstUseAt: 1_700_000_000_000 + i }),
    );
    now = status(many);
    const paths = await samples(registry, 'edgemesh_gateway_peer_path');
    expect(paths).toHaveLength(MAX_PEERS);
    // n0 was used longest ago: it is the one left out.
    expect(paths.some((l) => l.includes('peer="n0"'))).toBe(false);
  });
});

describe('tunnelStateMetrics', () => {
  it('registers the per-peer series when given the tunnel status', async () => {
    const registry = new Registry();
    tunnelStateMetrics(registry, {
      readiness: () => ({
        state: 'running',
        ready: true,
        detail: 'tunnel: running',
        serversUp: 1,
        servers: 2,
      }),
      status: () => status([peer('edge-b')]),
    });
    expect(await samples(registry, 'edgemesh_gateway_tunnel_servers_up')).toEqual([
      'edgemesh_gateway_tunnel_servers_up 1',
    ]);
    expect(await samples(registry, 'edgemesh_gateway_tunnel_state')).toContain(
      'edgemesh_gateway_tunnel_state{state="running"} 1',
    );
    expect(await samples(registry, 'edgemesh_gateway_peer_path')).toEqual([
      'edgemesh_gateway_peer_path{peer="edge-b",path="relay"} 1',
    ]);
  });
});
