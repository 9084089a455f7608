import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../harness/netns.ts';
import type { LabNode } from './lab.ts';
import { processLog, TunnelLab } from './tunnel-fixture.ts';

// Resumable streams (lib/tunnel/resume.ts) moving, in the NAT lab: two sites behind
// port-preserving NATs with DROP routers (a TCP hole punch works), one tunnel-server. A
// peer's first stream goes through the relay while the punch is still being made; when the
// punched path comes up the stream moves over mid-transfer. Before, it stayed on the relay
// until it ended (docs/tunnel.md). The relay-replica-killed case is in tunnel.netns.test.ts.
const MB = 1024 * 1024;

describe('resumable streams in the NAT lab', () => {
  let t: TunnelLab;
  let a: LabNode;
  let b: LabNode;

  beforeAll(async () => {
    t = await TunnelLab.create(
      [
        { mapping: 'preserving', inbound: 'drop', nodes: 1, podsPerNode: 1 },
        { mapping: 'preserving', inbound: 'drop', nodes: 1, podsPerNode: 1 },
      ],
      1,
      [],
      'emrs',
    );
    [a, b] = t.lab.sites.map((s) => s.nodes[0]);
    for (const node of [a, b]) await t.startNode(node);
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  const counter = async (node: LabNode, result: string) =>
    Number(
      (await t.metrics(node)).match(
        new RegExp(`^edgemesh_tunnel_stream_resumes_total\\{[^}]*result="${result}"[^}]*\\} (\\d+)`, 'm'),
      )?.[1] ?? 0,
    );

  it('a stream opened on the relay moves to the punched path found mid-transfer: intact, the relay freed', async () => {
    // Large enough to be under way when the punch (well under a second here) completes.
    const bytes = 1024 * MB;
    const transfer = t.send(a, b, bytes, 180_000);
    await waitFor(async () => (await t.peerPath(a, b)) === 'punched', 30_000, 100, 'punched path').catch(
      async (err) => {
        throw new Error(
          `${err.message}\nstatus: ${JSON.stringify(await t.status(a))}\n${processLog(a.name)}`,
        );
      },
    );
    const r = await transfer;
    expect(r.error).toBeUndefined();
    // The path the stream started on, as the gateway answered it.
    expect(r.path).toBe('relay');
    expect(r.reply).toBe(`${r.sha} ${bytes}`);
    expect(await counter(a, 'moved')).toBe(1);
    expect(await counter(a, 'resumed')).toBe(1);
    expect(await counter(b, 'resumed')).toBe(1);
    // The relay carried no stream any more, so its GOAWAY closed it.
    await waitFor(
      async () => (await t.status(a)).peers.find((p) => p.node === b.name)?.paths.relay === undefined,
      10_000,
      100,
      'relay closed',
    );
  });
});
