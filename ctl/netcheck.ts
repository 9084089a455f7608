/**
 * `edgemesh netcheck NODE`: what the node's NAT looks like, told from what its gateway's
 * tunnel already learnt (the /status document's `nat` and tunnel-server links: nothing is sent
 * for the report), as `tailscale netcheck` tells it:
 *
 *   public address   the address each tunnel-server replica sees the node's links from: one
 *                    address for all, or several (egress that depends on the destination)
 *   port preserved   a link's or punch probe's local port against the port the replica saw:
 *                    equal on every one means a port-preserving NAT (TCP punching can work)
 *   TCP punch        each attempt's outcome: connected; refused (a router answered the SYN
 *                    with a RST: TCP punching cannot cross it, UDP is tried); no answer (dropped)
 *   UDP (ICE)        each attempt this gateway opened, through the replicas' STUN
 *
 * Pure: golden tests in netcheck.test.ts.
 */
import type { GatewayStatus } from '../lib/gateway-status.ts';

const hostOf = (addr: string) => addr.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
const portOf = (addr: string) => Number(/:(\d+)$/.exec(addr)?.[1] ?? Number.NaN);

function count<T extends string>(items: readonly T[]): [T, number][] {
  const m = new Map<T, number>();
  for (const i of items) m.set(i, (m.get(i) ?? 0) + 1);
  return [...m];
}

export function netcheckLines(s: GatewayStatus): string[] {
  const out = [
    `NAT report for ${s.node}, from what its gateway's tunnel has learnt (nothing is sent for it):`,
  ];
  const servers = s.tunnel.servers;
  if (s.tunnel.state === 'off')
    return [...out, '  * tunnel: off (no tunnel-servers configured): nothing to tell'];
  out.push(`  * tunnel: ${s.tunnel.detail.replace(/^tunnel:\s*/, '')}`);
  // Every observation of our address with the local port it came from.
  const seen = [
    ...servers.flatMap((v) =>
      v.observed
        ? [{ via: `link to ${v.name ?? v.address}`, observed: v.observed, localPort: v.localPort }]
        : [],
    ),
    ...s.nat.probes.map((p) => ({
      via: `punch probe to ${p.server}`,
      observed: p.observed,
      localPort: p.localPort as number | null,
    })),
  ];
  if (seen.length === 0) out.push('  * public address: not known yet (no tunnel-server link has registered)');
  else {
    const ips = count(seen.map((x) => hostOf(x.observed)));
    out.push(
      ips.length === 1
        ? `  * public address: ${ips[0][0]} (every one of ${seen.length} observations)`
        : `  * public address: ${ips.map(([ip, n]) => `${ip} (${n})`).join(', ')}: more than one, the egress depends on the destination (punching between two such nodes rarely works)`,
    );
    const withPort = seen.filter((x) => x.localPort !== null);
    const changed = withPort.filter((x) => portOf(x.observed) !== x.localPort);
    if (withPort.length === 0) out.push('  * port preservation: not known (no local ports recorded)');
    else if (changed.length === 0)
      out.push(
        `  * port preservation: yes (${withPort.length} of ${withPort.length}: the port the replica saw is the local one)`,
      );
    else
      out.push(
        `  * port preservation: no (${changed.length} of ${withPort.length} changed, e.g. ${changed[0].via}: local ${changed[0].localPort} seen as ${portOf(changed[0].observed)}): the NAT picks its own ports, TCP punching is unlikely to work`,
      );
  }
  for (const transport of ['tcp', 'udp'] as const) {
    const tries = s.nat.punches.filter((p) => p.transport === transport);
    const label = transport === 'tcp' ? 'TCP hole punch' : 'UDP (ICE, STUN at the tunnel-servers)';
    if (tries.length === 0) {
      out.push(`  * ${label}: not tried yet (a peer behind another NAT is tried when first reached)`);
      continue;
    }
    const words: Record<string, string> = {
      connected: 'connected',
      refused: 'refused by a RST (a router on the way answers unsolicited SYNs)',
      'no-answer': 'no answer (dropped)',
      failed: 'failed',
    };
    const parts = count(tries.map((t) => t.outcome)).map(([o, n]) => `${n} ${words[o]}`);
    out.push(
      `  * ${label}: ${parts.join(', ')} (last ${tries.length}; peers: ${[...new Set(tries.map((t) => t.peer))].join(', ')})`,
    );
    const lastFail = tries.find((t) => t.outcome !== 'connected' && t.detail);
    if (lastFail) out.push(`      last failure, ${lastFail.peer}: ${lastFail.detail}`);
  }
  const relayed = s.peers.filter((p) => p.path === 'relay').map((p) => p.node);
  if (relayed.length > 0) out.push(`  * on the relay now: ${relayed.join(', ')}`);
  return out;
}

export function formatNetcheck(s: GatewayStatus): string {
  return `${netcheckLines(s).join('\n')}\n`;
}
