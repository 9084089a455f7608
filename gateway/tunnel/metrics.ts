/** The tunnel's Prometheus metrics (edgemesh_tunnel_*). */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { PeerStatus } from './status.ts';

export type TunnelMetrics = ReturnType<typeof tunnelMetrics>;

/** `peers()` is read at each scrape for the peers-by-path gauge. */
export function tunnelMetrics(registry: Registry | undefined, peers: () => readonly PeerStatus[]) {
  const registers = registry ? [registry] : [];
  return {
    streams: new Counter({
      name: 'edgemesh_tunnel_streams_total',
      help: 'Streams opened to peers',
      labelNames: ['path'],
      registers,
    }),
    paths: new Counter({
      name: 'edgemesh_tunnel_paths_up_total',
      help: 'Tunnel paths established',
      labelNames: ['path'],
      registers,
    }),
    refused: new Counter({
      name: 'edgemesh_tunnel_refused_total',
      help: 'Peer streams or connections refused',
      labelNames: ['reason'],
      registers,
    }),
    birthdays: new Counter({
      name: 'edgemesh_tunnel_birthday_attempts_total',
      help: 'Birthday punch attempts (one NAT symmetric) by role and result',
      labelNames: ['role', 'result'],
      registers,
    }),
    birthdayPackets: new Counter({
      name: 'edgemesh_tunnel_birthday_packets_total',
      help: 'Packets sent by birthday punch attempts, by role',
      labelNames: ['role'],
      registers,
    }),
    degraded: new Counter({
      name: 'edgemesh_tunnel_path_health_changes_total',
      help: 'Path health verdicts from keepalive PINGs (degraded: new streams move to the next best path)',
      labelNames: ['path', 'verdict'],
      registers,
    }),
    resumes: new Counter({
      name: 'edgemesh_tunnel_stream_resumes_total',
      help:
        'Resumable streams whose path was lost or left, by outcome: parked (its path was lost: waiting for ' +
        'a new one), moved (left for a better path found since), resumed ' +
        '(carried on, no byte lost), expired (no new path in time: reset), refused (the peer no longer ' +
        "had it), given-up (stopped being resumable: the peer's resend bound was full)",
      labelNames: ['result'],
      registers,
    }),
    lanes: new Counter({
      name: 'edgemesh_tunnel_dgram_lane_changes_total',
      help:
        "Datagram lanes (UDP Services' datagrams on a plain UDP socket pair beside a session) by the state " +
        'entered: up (an authenticated probe came through), down (none for 16 s: datagrams fall back to the ' +
        "session's own way), closed (with its session)",
      labelNames: ['state'],
      registers,
    }),
    peers: new Gauge({
      name: 'edgemesh_tunnel_peers',
      help: 'Peers by current best path',
      labelNames: ['path'],
      registers,
      collect() {
        this.reset();
        for (const p of peers()) this.inc({ path: p.path ?? 'none' });
      },
    }),
  };
}
