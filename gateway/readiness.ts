/**
 * The gateway's `/ready` (the kubelet's readinessProbe, `edgemesh check`, people with curl):
 * status 200 or 503, and a body that says why, one line per part:
 *
 *   ready                                       not ready: tunnel cannot start (…)
 *   catalog: revision 812                       catalog: revision 812
 *   tunnel: running, 1 of 1 tunnel-servers …    tunnel cannot start (this node's configuration, …): …
 *
 * Ready needs a catalog (persisted or listed) and a tunnel that is not broken by this node's
 * own setup or refused by a tunnel-server (streams.ts TunnelReadiness). A tunnel that only
 * cannot reach a tunnel-server now stays Ready: serving this node's pods is the gateway's
 * first job, and an edge node that restarts offline must come back Ready.
 */
import type { TunnelReadiness } from './streams.ts';

export interface ReadinessInput {
  /** The store has a catalog (the persisted one, or the API's first full list). */
  synced: boolean;
  revision: number | undefined;
  /** Absent: no tunnel configured (no tunnel-servers: same-node streams only). */
  tunnel: TunnelReadiness | undefined;
}

/** Pure: the /ready answer for what holds now. */
export function readinessAnswer(input: ReadinessInput): { status: number; body: string } {
  const catalog = input.synced
    ? `catalog: revision ${input.revision ?? 'unknown'}`
    : 'catalog: none yet (no persisted catalog, the API has not answered)';
  const tunnel = input.tunnel?.detail ?? 'tunnel: off (no tunnel-servers configured: same-node streams only)';
  const problems = [
    ...(input.synced ? [] : ['no catalog yet']),
    ...(input.tunnel && !input.tunnel.ready ? [input.tunnel.detail] : []),
  ];
  const head = problems.length === 0 ? 'ready' : `not ready: ${problems.join('; ')}`;
  return { status: problems.length === 0 ? 200 : 503, body: `${head}\n${catalog}\n${tunnel}\n` };
}
