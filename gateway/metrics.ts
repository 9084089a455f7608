import type { CatalogStore } from '../lib/catalog/store.ts';
// Not prom-client's index: it loads @opentelemetry/api and the Pushgateway at start (lib/metrics.ts).
import { Counter, Gauge, type Registry } from '../lib/metrics.ts';
import { recentPeers } from './status.ts';
import type { Tunnel, TunnelReadiness } from './streams.ts';
import type { TunnelStatus } from './tunnel/status.ts';

export interface GatewayMetrics {
  feedClients: Gauge;
  streams: Counter<'path'>;
  errors: Counter<'code'>;
  refused: Counter<'reason'>;
  kubeEvents: Counter<'kind' | 'event'>;
  objectProblems: Counter;
}

/** Gateway metrics; catalog gauges are read from the store at scrape time. */
export function gatewayMetrics(
  registry: Registry,
  store: CatalogStore,
  feedClients: () => number,
): GatewayMetrics {
  new Gauge({
    name: 'edgemesh_gateway_catalog_revision',
    help: 'Revision of the catalog the gateway serves (-1 before it has one)',
    registers: [registry],
    collect() {
      this.set(store.current?.revision ?? -1);
    },
  });
  new Gauge({
    name: 'edgemesh_gateway_catalog_services',
    help: 'Services in the catalog',
    registers: [registry],
    collect() {
      this.set(Object.keys(store.current?.services ?? {}).length);
    },
  });
  new Gauge({
    name: 'edgemesh_gateway_catalog_endpoints',
    help: 'Endpoints in the catalog, over all services',
    registers: [registry],
    collect() {
      let n = 0;
      for (const entry of Object.values(store.current?.services ?? {})) n += entry.endpoints.length;
      this.set(n);
    },
  });
  return {
    feedClients: new Gauge({
      name: 'edgemesh_gateway_feed_clients',
      help: 'Sidecars connected to the catalog feed',
      registers: [registry],
      collect() {
        this.set(feedClients());
      },
    }),
    streams: new Counter({
      name: 'edgemesh_gateway_streams_total',
      help: 'CONNECT streams opened, by path (local, direct, punched, relay)',
      labelNames: ['path'],
      registers: [registry],
    }),
    errors: new Counter({
      name: 'edgemesh_gateway_errors_total',
      help: 'Errors by EDGEMESH_ERR_* code (refused targets, bad requests, failed dials, API errors)',
      labelNames: ['code'],
      registers: [registry],
    }),
    refused: new Counter({
      name: 'edgemesh_gateway_refused_total',
      help:
        'Sidecar-port connections refused before their request: not-a-local-pod (source is not a pod ' +
        'on this node), hold-limit (too many unknown sources held), header-limit (too many ' +
        'header-less connections from one source)',
      labelNames: ['reason'],
      registers: [registry],
    }),
    kubeEvents: new Counter({
      name: 'edgemesh_gateway_kube_events_total',
      help: 'Kubernetes object events seen by the watcher',
      labelNames: ['kind', 'event'],
      registers: [registry],
    }),
    // No label: a problem is free text naming the object (the log has it); the count is what
    // an alert needs ("a Service's annotation is being ignored").
    objectProblems: new Counter({
      name: 'edgemesh_gateway_object_problems_total',
      help:
        'Kubernetes objects the watcher skipped or corrected (an invalid port, cluster IP or ' +
        'annotation such as edgemesh.io/udp-idle-timeout); each is logged with the object named',
      registers: [registry],
    }),
  };
}

const TUNNEL_STATES: readonly TunnelReadiness['state'][] = [
  'starting',
  'running',
  'unreachable',
  'refused',
  'config',
];

/**
 * The tunnel's state for alerts: one series per state, 1 for the current one (a gateway not
 * Ready because of `config` or `refused`, or one `unreachable` for long), how many
 * tunnel-server links are up, and the per-peer series of peerMetrics. Read from the tunnel at
 * scrape time.
 */
export function tunnelStateMetrics(registry: Registry, tunnel: Pick<Tunnel, 'readiness' | 'status'>): void {
  const readiness = () => tunnel.readiness?.();
  peerMetrics(registry, () => tunnel.status?.());
  new Gauge({
    name: 'edgemesh_gateway_tunnel_state',
    help:
      'Always 1 for the tunnel state now: starting, running, unreachable (no tunnel-server answers; still ' +
      'Ready), refused (a tunnel-server refused enrolment; not Ready), config (this node cannot start it; ' +
      'not Ready). No series without a tunnel',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      this.reset();
      const r = readiness();
      if (!r) return;
      for (const state of TUNNEL_STATES) this.set({ state }, state === r.state ? 1 : 0);
    },
  });
  new Gauge({
    name: 'edgemesh_gateway_tunnel_servers_up',
    help: 'Tunnel-server links registered now (0 before the tunnel runs)',
    registers: [registry],
    collect() {
      this.set(readiness()?.serversUp ?? 0);
    },
  });
}

/**
 * Per peer, from the tunnel's status() at scrape time (the numbers `edgemesh status` shows):
 * the path in use now, its RTT, and the session bytes since this gateway started. The path
 * series is what "a peer stuck on the relay" alerts on (manifests/monitoring): the tunnel
 * keeps searching for a direct path, so a peer on `relay` for long means that search fails
 * and its traffic crosses the cloud. One series set per peer, bounded as /status is
 * (status.ts recentPeers: the MAX_PEERS most recently used); none before the tunnel runs.
 */
export function peerMetrics(registry: Registry, status: () => TunnelStatus | undefined): void {
  // Each collect reads status() afresh: a scrape a few seconds apart, cheap next to serialising.
  const peers = () => recentPeers(status()?.peers ?? []);
  new Gauge({
    name: 'edgemesh_gateway_peer_path',
    help: 'Always 1, for the path to each peer now: direct, punched, relay, none (no session now)',
    labelNames: ['peer', 'path'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of peers()) this.set({ peer: p.node, path: p.path ?? 'none' }, 1);
    },
  });
  new Gauge({
    name: 'edgemesh_gateway_peer_rtt_seconds',
    help: "Round-trip time to each peer on the path in use (the tunnel's PING); no series until measured",
    labelNames: ['peer'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of peers()) if (p.rttMs !== undefined) this.set({ peer: p.node }, p.rttMs / 1000);
    },
  });
  new Counter({
    name: 'edgemesh_gateway_peer_bytes_total',
    help: 'Tunnel session bytes with each peer since this gateway started, closed paths included, by direction (in, out)',
    labelNames: ['peer', 'direction'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of peers()) {
        this.inc({ peer: p.node, direction: 'in' }, p.bytesIn);
        this.inc({ peer: p.node, direction: 'out' }, p.bytesOut);
      }
    },
  });
}
