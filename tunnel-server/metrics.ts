import { Counter, Gauge, type Registry } from 'prom-client';
import type { ConnectionLimits, RelayLimits } from './limits.ts';

/** The tunnel-server's counters and gauges, made once per server on its registry. */
export function serverMetrics(registry: Registry) {
  return {
    gateways: new Gauge({
      name: 'edgemesh_tunnel_server_gateways',
      help: 'Registered gateways',
      registers: [registry],
    }),
    relays: new Gauge({
      name: 'edgemesh_tunnel_server_relays',
      help: 'Active relayed sessions',
      registers: [registry],
    }),
    relayBytes: new Counter({
      name: 'edgemesh_tunnel_server_relay_bytes_total',
      help: 'Bytes relayed',
      registers: [registry],
    }),
    refused: new Counter({
      name: 'edgemesh_tunnel_server_refused_total',
      help: 'Connections or requests refused',
      labelNames: ['reason'],
      registers: [registry],
    }),
    enrolments: new Counter({
      name: 'edgemesh_tunnel_server_enrolments_total',
      help: 'Enrolment attempts',
      labelNames: ['result'],
      registers: [registry],
    }),
    punches: new Counter({
      name: 'edgemesh_tunnel_server_punches_total',
      help: 'Punches coordinated',
      registers: [registry],
    }),
    connections: new Gauge({
      name: 'edgemesh_tunnel_server_connections',
      help: 'Open TCP connections',
      registers: [registry],
    }),
    cut: new Counter({
      name: 'edgemesh_tunnel_server_cut_total',
      help: 'Connections closed by the server: slow-reader, enrol-deadline, handshake (timeout or failure)',
      labelNames: ['reason'],
      registers: [registry],
    }),
  };
}
export type ServerMetrics = ReturnType<typeof serverMetrics>;

/**
 * The tunnel-server's limits beside what uses them, so "relay saturation" is one division
 * (manifests/monitoring/edgemesh.rules.yaml): open connections against the connection cap
 * (past it new gateways, relay legs and probes are refused), and the busiest node's relayed
 * sessions against the per-node relay cap (past it that node's peers stay unreachable when
 * no direct path exists). The caps are flags (tunnel-server/cli.ts), fixed for the process.
 */
export function limitMetrics(
  registry: Registry,
  limits: { connections: ConnectionLimits; relays: RelayLimits },
  busiestNodeRelays: () => number,
): void {
  new Gauge({
    name: 'edgemesh_tunnel_server_connections_limit',
    help: 'Open TCP connections allowed in all (--max-connections); edgemesh_tunnel_server_connections is the use',
    registers: [registry],
  }).set(limits.connections.maxConnections);
  new Gauge({
    name: 'edgemesh_tunnel_server_relays_per_node_limit',
    help: 'Relayed sessions allowed per node (--relay-max-sessions); 0 = unlimited',
    registers: [registry],
  }).set(limits.relays.maxRelaysPerNode);
  new Gauge({
    name: 'edgemesh_tunnel_server_node_relays_max',
    help: 'Relayed sessions of the node with the most now (compare with the per-node limit)',
    registers: [registry],
    collect() {
      this.set(busiestNodeRelays());
    },
  });
}

/** The largest count in `byNode` (0 when empty). */
export function busiest(byNode: ReadonlyMap<string, number>): number {
  let max = 0;
  for (const n of byNode.values()) if (n > max) max = n;
  return max;
}
