import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../harness/netns.ts';
import type { LabNode } from './lab.ts';
import { processLog, TUNNEL_PORT, TunnelLab } from './tunnel-fixture.ts';

// Path choice by measurement (gateway/tunnel/path-choice.ts): two tunnel-server replicas, the
// way to the first configured one 40 ms slower each way (a userspace delay forwarder: the lab
// kernel has no netem qdisc). Gateways behind symmetric NATs (relay only) relay through the
// faster replica, although configured order alone would pick the slow one.
const DELAY_MS = 40;

describe('relay via the fastest replica', () => {
  let t: TunnelLab;
  let a: LabNode;
  let b: LabNode;

  beforeAll(async () => {
    t = await TunnelLab.create(
      [
        { mapping: 'random', inbound: 'drop', nodes: 1, podsPerNode: 1 },
        { mapping: 'random', inbound: 'drop', nodes: 1, podsPerNode: 1 },
      ],
      2,
      [],
      'emr',
    );
    const slow = await t.delayedServer(0, DELAY_MS);
    const fast = `${t.lab.tunnelServers[1].addr}:${TUNNEL_PORT}`;
    // The slow replica first: configured order alone would relay through it.
    const servers = `${slow},${fast}`;
    a = t.lab.node('node1-1');
    b = t.lab.node('node2-1');
    for (const n of [a, b]) await t.startNode(n, { techniques: 'tcp,udp', servers });
  }, 180_000);
  afterAll(async () => {
    await t?.cleanup();
  });

  it('measures both control links and relays through the faster replica', async () => {
    // Both links measured (two PINGs at registration) before the first stream.
    const links = await waitFor(
      async () => {
        const s = (await t.status(a)).servers;
        return s.length === 2 && s.every((l) => l.up && l.rttMs !== undefined) ? s : undefined;
      },
      20_000,
      100,
      'both control links measured',
    );
    const [slowLink, fastLink] = links;
    console.log(`control link RTT: slow ${slowLink.rttMs} ms (via delay), fast ${fastLink.rttMs} ms`);
    expect(slowLink.rttMs).toBeGreaterThanOrEqual(2 * DELAY_MS);
    expect(fastLink.rttMs).toBeLessThan(slowLink.rttMs as number);

    const r = await t.send(a, b, 1_000_000);
    expect(r.error, processLog(a.name)).toBeUndefined();
    expect(r.bytes).toBe(1_000_000);
    expect(r.path).toBe('relay');
    const peer = (await t.status(a)).peers.find((p) => p.node === b.name);
    expect(peer?.paths.relay?.via, JSON.stringify(peer)).toBe('ts2');
    // The relay's own RTT (end-to-end PINGs through it) shows no 80 ms detour.
    const echo = await t.echo(a, b, 50);
    console.log(`echo through the relay: p50 ${echo.p50Us} µs`);
    expect(echo.error).toBeUndefined();
    expect(echo.p50Us).toBeLessThan(2 * DELAY_MS * 1000);
  }, 60_000);
});
