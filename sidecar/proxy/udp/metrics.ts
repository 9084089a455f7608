import { Counter, Gauge, type Registry } from '../../../lib/metrics.ts';

/** Why a captured datagram was not forwarded (the `reason` label). */
export type DropReason =
  /** a UDP service with no ready endpoint at all */
  | 'no-endpoint'
  /** endpoints only on other nodes and the sidecar has no gateway (no --node-name/gateway) */
  | 'remote-endpoint'
  /** the gateway connection of a cross-node flow is being (re)opened and its hold is full,
   * or it failed (refused, gateway down) moments ago */
  | 'gateway-unavailable'
  /** the gateway connection does not take writes fast enough (over its write limit) */
  | 'gateway-full'
  /** the on-demand catalog is still asking the gateway and the hold queue is full */
  | 'catalog-pending'
  /** the upstream socket's buffer was full (EAGAIN) */
  | 'upstream-full'
  /** the send failed otherwise (ICMP unreachable reported, no route, ...) */
  | 'send-error'
  /** the flow's upstream socket could not be made (fds exhausted, ...) */
  | 'socket-error';

export const DROP_REASONS: readonly DropReason[] = [
  'no-endpoint',
  'remote-endpoint',
  'gateway-unavailable',
  'gateway-full',
  'catalog-pending',
  'upstream-full',
  'send-error',
  'socket-error',
];

/** Datagram counts the proxy keeps (JS path plus the addon's thread), read at scrape time. */
export interface UdpCounts {
  out: number;
  replies: number;
  /** Sends of known flows that failed on the addon's thread (socket buffer full, ICMP error). */
  fastFailed: number;
  /** Gateway flows' datagrams the addon's thread dropped: connection full / ended (not yet reopened). */
  gatewayFull?: number;
  gatewayDown?: number;
  /** Reports about flows that had left their fd, dropped by the addon (udp.c "Generations"). */
  staleReports?: number;
}

export interface UdpMetrics {
  datagrams: Counter<'direction'>;
  dropped: Counter<'reason'>;
  flows: Counter<'route'>;
  active: Gauge;
  staleReports: Counter;
  activeSource: () => number;
  /** The proxy sets it: the hot path counts in C, without a metric call per datagram. */
  countsSource: () => UdpCounts;
}

export function createUdpMetrics(registry?: Registry): UdpMetrics {
  const registers = registry ? [registry] : [];
  // The addon's counters only grow: what it counted since the last scrape is added.
  const seen = { failed: 0, full: 0, down: 0 };
  const metrics: UdpMetrics = {
    activeSource: () => 0,
    countsSource: () => ({ out: 0, replies: 0, fastFailed: 0 }),
    datagrams: new Counter({
      name: 'edgemesh_udp_datagrams_total',
      help: 'Captured UDP datagrams forwarded: out (app to endpoint), reply (endpoint to app)',
      labelNames: ['direction'],
      registers,
      collect() {
        const c = metrics.countsSource();
        this.reset();
        this.inc({ direction: 'out' }, c.out);
        this.inc({ direction: 'reply' }, c.replies);
      },
    }),
    dropped: new Counter({
      name: 'edgemesh_udp_datagrams_dropped_total',
      help: `Captured UDP datagrams not forwarded, by reason (${DROP_REASONS.join(', ')})`,
      labelNames: ['reason'],
      registers,
      collect() {
        // The addon's failed sends of known flows: counted there, added here as they grow.
        const c = metrics.countsSource();
        const grew = (key: keyof typeof seen, now: number, reason: DropReason) => {
          if (now > seen[key]) this.inc({ reason }, now - seen[key]);
          seen[key] = now;
        };
        grew('failed', c.fastFailed, 'upstream-full');
        grew('full', c.gatewayFull ?? 0, 'gateway-full');
        grew('down', c.gatewayDown ?? 0, 'gateway-unavailable');
      },
    }),
    flows: new Counter({
      name: 'edgemesh_udp_flows_total',
      help: 'UDP flows started, by route (service, passthrough)',
      labelNames: ['route'],
      registers,
    }),
    staleReports: new Counter({
      name: 'edgemesh_udp_stale_reports_total',
      help:
        'Reports of the UDP addon (flow active, ICMP error, gateway connection ended) about a flow the proxy had ' +
        'already closed, dropped because a new flow had taken its socket number (udp.c "Generations"). Harmless, no ' +
        'action needed: each one is a report kept from the wrong flow. It rises with flow churn (short idle ' +
        'timeouts, ICMP errors, gateway reconnects); without the drop each would have ended or kept alive another flow',
      registers,
      collect() {
        // The addon's own count since it started: set, as the datagram counts are.
        this.reset();
        this.inc(metrics.countsSource().staleReports ?? 0);
      },
    }),
    active: new Gauge({
      name: 'edgemesh_udp_active_flows',
      help: 'UDP flows in the flow table',
      registers,
      collect() {
        this.set(metrics.activeSource());
      },
    }),
  };
  // Every reason from the start: a dashboard sees 0, not a missing series.
  for (const reason of DROP_REASONS) metrics.dropped.labels(reason);
  return metrics;
}
