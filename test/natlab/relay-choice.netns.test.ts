import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../harness/netns.ts';
import type { LabNode } from './lab.ts';
import { processLog, TunnelLab } from './tunnel-fixture.ts';

// Path choice by measurement (gateway/tunnel/path-choice.ts): two tunnel-server replicas, each
// reached through a userspace delay forwarder (the lab kernel has no netem qdisc), the first
// configured one 40 ms slower each way. Gateways behind symmetric NATs (relay only) relay
// through the faster replica, although configured order alone would pick the slow one; when
// the fast one's path then slows to 300 ms each way, new streams move to the other replica.
const DELAY_MS = 40;
const DEGRADED_MS = 300;

describe('relay via the fastest replica', () => {
  let t: TunnelLab;
  let a: LabNode;
  let b: LabNode;
  let degrade: () => void;

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
    const fast = await t.delayedServer(1, 0, DEGRADED_MS);
    degrade = fast.degrade;
    // The slow replica first: configured order alone would relay through it.
    const servers = `${slow.address},${fast.address}`;
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

  it('the relay degrades (RTT spike): new streams move to a relay through the other replica', async () => {
    const before = (await t.status(a)).peers.find((p) => p.node === b.name);
    expect(before?.paths.relay?.via).toBe('ts2');
    // The relay's first health PING (1 s after it came up) is its baseline; then the spike.
    await new Promise((r) => setTimeout(r, 1_500));
    degrade();
    const t0 = Date.now();
    // Two spiked health PINGs (5 s apart) make the verdict; then a relay via ts1 is opened.
    const moved = await waitFor(
      async () => {
        const p = (await t.status(a)).peers.find((x) => x.node === b.name);
        return p?.paths.relay?.via === 'ts1' ? p : undefined;
      },
      40_000,
      250,
      'a relay via ts1',
    ).catch((err) => {
      const lines = processLog(a.name, 400_000)
        .split('\n')
        .filter((l) => /degraded|relay|path (up|down)/.test(l))
        .slice(-30);
      throw new Error(`${err.message}\n${lines.join('\n')}\nproxy: ${processLog('dly2', 500)}`);
    });
    console.log(`degraded relay replaced after ${Date.now() - t0} ms: ${JSON.stringify(moved.paths)}`);
    expect(processLog(a.name, 400_000)).toMatch(/tunnel path degraded/);
    const r = await t.send(a, b, 100_000);
    expect(r.error).toBeUndefined();
    expect(r.bytes).toBe(100_000);
    expect(r.path).toBe('relay');
    const after = (await t.status(a)).peers.find((x) => x.node === b.name);
    expect(after?.paths.relay?.via).toBe('ts1');
  }, 60_000);
});
