/**
 * `edgemesh status`'s text (`-o json` prints the NodeStatus list itself): per node, the
 * gateway's readiness, NAT class and tunnel-servers (up, control-link RTT, the preferred
 * relay), then each peer with its path, round trip, health, streams, bytes and how long the
 * path has been up, as `tailscale status` lists peers. Fields an older gateway does not send
 * show as "—". Pure: times are
 * told against the gateway's own clock (`now` in its document), so clock skew between the
 * operator's machine and the node changes nothing; golden tests in status.test.ts.
 */
import {
  BIRTHDAY_OUTCOMES,
  type GatewayStatus,
  type PathEntry,
  type PathHealthEntry,
  type PeerEntry,
  type ServerEntry,
} from '../lib/gateway-status.ts';
import type { NodeStatus } from './status-read.ts';
import { table } from './version-format.ts';

/** 42s, 12m3s, 3h12m, 2d4h. */
export function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? `${s % 60}s` : ''}`;
  if (s < 86_400)
    return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60) ? `${Math.floor((s % 3600) / 60)}m` : ''}`;
  return `${Math.floor(s / 86_400)}d${Math.floor((s % 86_400) / 3600) ? `${Math.floor((s % 86_400) / 3600)}h` : ''}`;
}

/** 0 B, 812 B, 1.2 KiB, 340 MiB, 2.0 GiB. */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

const rtt = (ms: number | null) =>
  ms === null ? '-' : ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`;

/** What an older gateway's document does not tell (the field is absent). */
const UNTOLD = '—';

/** A path's health: ok, ok (recovered 1m ago), degraded 42s: loss 2/5; — when not told. */
export function healthWords(h: PathHealthEntry | null | undefined, now: number): string {
  if (!h) return UNTOLD;
  if (h.state === 'ok') return h.since === null ? 'ok' : `ok (recovered ${duration(now - h.since)} ago)`;
  const since = h.since === null ? 'degraded' : `degraded ${duration(now - h.since)}`;
  if (!h.why) return since;
  return h.why.kind === 'loss'
    ? `${since}: loss ${h.why.lost}/${h.why.of}`
    : `${since}: RTT spike ${rtt(h.why.rttMs)} vs ${rtt(h.why.baselineMs)}`;
}

/** The last health PING: its RTT, `lost`, or nothing when not told. */
const lastPing = (h: PathHealthEntry | null | undefined): string =>
  !h ? '' : h.lastRttMs === null ? ', last ping lost or none yet' : `, last ping ${rtt(h.lastRttMs)}`;

/** A path other than the current one: its kind and, when degraded, why new streams left it. */
const otherPath = (x: PathEntry, now: number): string =>
  x.health?.state === 'degraded' ? `${x.path} ${healthWords(x.health, now)}${lastPing(x.health)}` : x.path;

function serverLine(srv: ServerEntry): string {
  const name = srv.name ? `${srv.name} ` : '';
  const parts = [srv.up ? 'up' : 'down'];
  if (srv.up)
    parts.push(
      `RTT ${srv.rttMs === undefined ? UNTOLD : srv.rttMs === null ? 'unmeasured' : rtt(srv.rttMs)}`,
    );
  if (srv.preferredRelay) parts.push('preferred relay');
  if (srv.observed) parts.push(`sees this node as ${srv.observed}`);
  return `  tunnel-server ${name}${srv.address}: ${parts.join(', ')}`;
}

function natLine(s: GatewayStatus): string {
  const c = s.nat.class;
  if (c === undefined) return `  NAT class: ${UNTOLD}`;
  if (c === null) return '  NAT class: not measured (measured when a birthday punch first needs it)';
  return `  NAT class: ${c.nat} (measured ${duration(s.now - c.at)} ago)`;
}

function birthdayNote(s: GatewayStatus, peer: string): string | undefined {
  const b = s.nat.birthdays?.find((x) => x.peer === peer);
  if (!b) return undefined;
  const counts = BIRTHDAY_OUTCOMES.filter((o) => (b.outcomes[o] ?? 0) > 0).map(
    (o) => `${b.outcomes[o]} ${o}`,
  );
  return counts.length === 0
    ? undefined
    : `birthday punches: ${counts.join(', ')} (last ${duration(s.now - b.lastAt)} ago)`;
}

/** The path in words: direct, punched TCP, punched UDP, relay via NAME. */
export function pathWords(p: PeerEntry): string {
  const cur = p.paths.find((x) => x.path === p.path);
  if (!p.path || !cur) return 'none';
  if (p.path === 'relay') return `relay via ${cur.via ?? cur.transport.replace(/^tcp via /, '')}`;
  if (p.path === 'punched') return `punched ${cur.transport.toUpperCase()}`;
  return 'direct';
}

/**
 * The current path's datagrams (UDP Services), when it carried any: how many went on the UDP
 * path's datagram channel or were framed on their streams, and each kind of drop, zeros left out.
 */
export function datagramNote(x: PathEntry | undefined): string | undefined {
  const d = x?.datagrams;
  if (!d) return undefined;
  const parts = [
    d.sent > 0 ? `${d.sent} sent on the channel` : '',
    d.framed > 0 ? `${d.framed} framed` : '',
    d.dropped > 0 ? `${d.dropped} dropped (channel full or closed)` : '',
    d.received > 0 ? `${d.received} received` : '',
    d.refused > 0 ? `${d.refused} refused (no open flow)` : '',
    d.overflow > 0 ? `${d.overflow} dropped (flow not read)` : '',
  ].filter(Boolean);
  return parts.length === 0 ? undefined : `datagrams: ${parts.join(', ')}`;
}

/** The current path's datagram lane, when one was started: its state and where the peer is seen. */
export function laneNote(x: PathEntry | undefined): string | undefined {
  const l = x?.lane;
  if (!l) return undefined;
  const at = l.peer ? ` to ${l.peer}` : '';
  return `datagram lane ${l.state}${at} (${l.sent} sent, ${l.probesTaken}/${l.probesSent} probes taken/sent)`;
}

function peerRow(p: PeerEntry, s: GatewayStatus): string[] {
  const now = s.now;
  const cur = p.paths.find((x) => x.path === p.path);
  const streams = p.paths.reduce((n, x) => n + x.streams, 0);
  const notes: string[] = [];
  if (p.path === 'relay' && p.nextUpgradeAt !== null)
    notes.push(`next direct-path try in ${duration(p.nextUpgradeAt - now)}`);
  if (!p.path) notes.push(p.firstUseAt === null ? 'never used' : 'no path up: the next stream sets one up');
  const draining = p.paths.filter((x) => x.path !== p.path).map((x) => otherPath(x, now));
  if (draining.length > 0) notes.push(`also ${draining.join(', ')} (finishing its streams)`);
  const birthdays = birthdayNote(s, p.node);
  if (birthdays) notes.push(birthdays);
  const datagrams = datagramNote(cur);
  if (datagrams) notes.push(datagrams);
  const lane = laneNote(cur);
  if (lane) notes.push(lane);
  return [
    p.node,
    pathWords(p),
    rtt(p.rttMs),
    cur ? healthWords(cur.health, now) : '-',
    String(streams),
    bytes(p.bytesIn),
    bytes(p.bytesOut),
    cur ? duration(now - cur.upAt) : '-',
    notes.join('; '),
  ];
}

function nodeBlock(s: GatewayStatus, pod: string): string[] {
  const out = [`${s.node}  (gateway ${pod}, ${s.ready ? 'ready' : 'NOT READY'})`];
  // /ready's first line names every cause; the tunnel's own line follows anyway.
  if (!s.ready && s.readiness !== `not ready: ${s.tunnel.detail}`) out.push(`  ${s.readiness}`);
  out.push(`  ${s.tunnel.detail}`);
  // The class is measured only by a running tunnel's first birthday punch.
  if (s.tunnel.state === 'running') out.push(natLine(s));
  for (const srv of s.tunnel.servers) out.push(serverLine(srv));
  if (s.peers.length === 0) {
    out.push(
      s.tunnel.state === 'running'
        ? '  no peers yet (a peer is added when a pod here first reaches a pod on it)'
        : '  no peers',
    );
    return out;
  }
  const rows = [['PEER', 'PATH', 'RTT', 'HEALTH', 'STREAMS', 'IN', 'OUT', 'UP FOR', 'NOTE']];
  for (const p of s.peers) rows.push(peerRow(p, s));
  out.push(...table(rows).map((l) => `  ${l}`));
  if (s.omittedPeers > 0)
    out.push(`  … and ${s.omittedPeers} peers used less recently (not listed by the gateway)`);
  return out;
}

export function formatStatus(nodes: readonly NodeStatus[], namespace: string): string {
  if (nodes.length === 0)
    return `no gateway pods in ${namespace}: edgemesh is not installed here, or in another --namespace\n`;
  const out: string[] = [];
  for (const n of nodes) {
    if (out.length > 0) out.push('');
    if ('status' in n.result) out.push(...nodeBlock(n.result.status, n.pod));
    else out.push(`${n.node}  (gateway ${n.pod}): not read: ${n.result.error}`, `  hint: ${n.result.hint}`);
  }
  const failed = nodes.filter((n) => !('status' in n.result)).length;
  out.push(
    '',
    failed === 0
      ? `${nodes.length} gateway${nodes.length === 1 ? '' : 's'} answered.`
      : `${nodes.length - failed} of ${nodes.length} gateways answered; ${failed} could not be read (above).`,
  );
  return `${out.join('\n')}\n`;
}
