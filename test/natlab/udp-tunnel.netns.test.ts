import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../harness/netns.ts';
import type { LabNode } from './lab.ts';
import { TunnelLab } from './tunnel-fixture.ts';
import { spawnDnsmasq, startUdpNode, udpPods } from './udp-lab.ts';

/**
 * Datagram streams across the NAT lab (issue 18): gateway/testing/udp-node.ts on each node (the
 * gateway's tunnel with its LocalDialer as the far end, a datagram forwarder as the near end),
 * a real DNS server (dnsmasq) in each pod on UDP 5353, `dig` as the client in node A's
 * namespace. A query sent into A's forwarder is carried on a datagram stream to the pod on B's
 * node, answered by dnsmasq, and the answer comes back — on a punched TCP path (two port-
 * preserving NATs) and on the relay (a symmetric NAT). The path is read from the gateway's
 * status and from the flow's own report, never assumed.
 *
 *   node A (site 1) 127.0.0.1:16001 → B's pod :5353   16002 → C's pod :5353
 *                   16003 → B's pod :5354 (not an endpoint port: refused at B)
 *   node B (site 2, preserving NAT)     node C (site 3, symmetric NAT: relay only)
 */
const DNS_PORT = 5353;

describe('datagram streams through the NAT lab', () => {
  let t: TunnelLab;
  let A: LabNode;
  let B: LabNode;
  let C: LabNode;
  const output = new Map<string, string>();

  const name = (n: LabNode) => `only.${n.name.replace(/[^a-z0-9-]/g, '')}.example`;
  const answerOf = (i: number) => `192.0.2.${100 + i}`;

  beforeAll(async () => {
    t = await TunnelLab.create(
      [
        { mapping: 'preserving', inbound: 'drop', nodes: 1, podsPerNode: 1 }, // A
        { mapping: 'preserving', inbound: 'drop', nodes: 1, podsPerNode: 1 }, // B: punched TCP
        { mapping: 'random', inbound: 'drop', nodes: 1, podsPerNode: 1 }, // C: symmetric, relay
      ],
      2,
      [],
      'emu',
    );
    [A, B, C] = t.lab.sites.map((s) => s.nodes[0]);
    // A real DNS server in each pod, knowing one name only (no upstream: anything else is refused).
    for (const [i, node] of [A, B, C].entries())
      spawnDnsmasq(t, node.pods[0], DNS_PORT, name(node), answerOf(i));
    // Each pod's UDP endpoint port, as the catalog lists it (5353 only).
    const pods = udpPods([A, B, C], DNS_PORT);
    const forward = [
      `16001=${B.name},${B.pods[0].addr},${DNS_PORT}`,
      `16002=${C.name},${C.pods[0].addr},${DNS_PORT}`,
      `16003=${B.name},${B.pods[0].addr},${DNS_PORT + 1}`,
    ].join(';');
    await startUdpNode(t, A, forward, pods, output);
    await startUdpNode(t, B, '', pods, output);
    await startUdpNode(t, C, '', pods, output);
  }, 180_000);
  afterAll(async () => {
    await t?.cleanup();
  });

  /** dig through A's forwarder; the answer's address, or what went wrong. */
  async function dig(localPort: number, qname: string): Promise<string> {
    const r = await t.lab.run(A.ns, [
      'dig',
      '+short',
      '+time=4',
      '+tries=2',
      '-p',
      String(localPort),
      '@127.0.0.1',
      qname,
      'A',
    ]);
    return r.code === 0 ? r.stdout.trim() : `dig failed (${r.code}): ${r.stdout.trim()} ${r.stderr.trim()}`;
  }

  const flowLines = (node: LabNode) =>
    (output.get(node.name) ?? '')
      .split('\n')
      .filter((l) => l.startsWith('{"flow"'))
      .map((l) => JSON.parse(l) as { flow: string; to: string; path?: string; error?: string });

  async function pathTo(peer: LabNode): Promise<string | undefined> {
    const r = await t.lab.exec(A.ns, ['curl', '-sf', 'http://127.0.0.1:15091/status']);
    const status = JSON.parse(r.stdout) as {
      peers: { node: string; path?: string; paths: Record<string, { transport: string }> }[];
    };
    const p = status.peers.find((x) => x.node === peer.name);
    return p?.path === 'punched' ? `punched ${p.paths.punched?.transport}` : p?.path;
  }

  it('a query into A reaches the real DNS server on B and its answer comes back, then on punched TCP', async () => {
    // The first flow rides whatever path is up first (the relay, while A seeks a direct one).
    expect(await dig(16001, name(B))).toBe(answerOf(1));
    await waitFor(async () => (await pathTo(B)) === 'punched tcp', 30_000, 200, 'A → B punched over TCP');
    // A new flow (dig uses a new source port per run): a new datagram stream on the punched path.
    expect(await dig(16001, name(B))).toBe(answerOf(1));
    const flows = flowLines(A).filter((f) => f.to.startsWith(B.name));
    expect(flows.length).toBeGreaterThanOrEqual(2);
    expect(flows.at(-1)).toMatchObject({ path: 'punched' });
    expect(flows.every((f) => f.error === undefined)).toBe(true);
  });

  interface LaneView {
    state: string;
    peer?: string;
    counters: { sent: number; probesTaken: number };
  }
  /** `node`'s punched path to `peer`: its lane and datagram counters, from the gateway's status. */
  async function punchedOf(node: LabNode, peer: LabNode) {
    const r = await t.lab.exec(node.ns, ['curl', '-sf', 'http://127.0.0.1:15091/status']);
    const status = JSON.parse(r.stdout) as {
      peers: {
        node: string;
        paths: Record<string, { lane?: LaneView; datagrams?: { sent: number; received: number } }>;
      }[];
    };
    return status.peers.find((x) => x.node === peer.name)?.paths.punched;
  }

  it('beside the punched TCP session the datagrams ride a datagram lane, both ways', async () => {
    // The flow above started the lane on A's punched session to B (and B's, on A's offer).
    await waitFor(async () => (await punchedOf(A, B))?.lane?.state === 'up', 15_000, 200, 'A → B lane up');
    await waitFor(async () => (await punchedOf(B, A))?.lane?.state === 'up', 15_000, 200, 'B → A lane up');
    const before = (await punchedOf(A, B))?.lane?.counters.sent ?? 0;
    for (let i = 0; i < 5; i++) expect(await dig(16001, name(B))).toBe(answerOf(1));
    const a = await punchedOf(A, B);
    const b = await punchedOf(B, A);
    // Queries went on A's lane, answers on B's: sealed by the channel, sent on the lane socket.
    expect(a?.lane?.counters.sent).toBeGreaterThanOrEqual(before + 5);
    expect(b?.lane?.counters.sent).toBeGreaterThanOrEqual(5);
    expect(a?.datagrams?.received).toBeGreaterThanOrEqual(5);
    // Each side sees the other at its site's public address (the NAT's), not at its LAN one.
    expect(a?.lane?.peer?.split(':')[0]).toBe(t.lab.sites[1].publicAddr);
    expect(b?.lane?.peer?.split(':')[0]).toBe(t.lab.sites[0].publicAddr);
  });

  it('across a symmetric NAT the datagram stream runs on the relay', async () => {
    expect(await dig(16002, name(C))).toBe(answerOf(2));
    expect(await pathTo(C)).toBe('relay');
    expect(
      flowLines(A)
        .filter((f) => f.to.startsWith(C.name))
        .at(-1),
    ).toMatchObject({ path: 'relay' });
  });

  it("B's gateway refuses a UDP port that is not an endpoint of its pod (the TCP rule): no datagram leaves", async () => {
    const r = await dig(16003, name(B));
    expect(r).toMatch(/dig failed|timed out|no servers could be reached/);
    const refused = flowLines(A).find((f) => f.to.endsWith(`:${DNS_PORT + 1}`));
    expect(refused?.error).toMatch(
      new RegExp(
        `${B.pods[0].addr.replaceAll('.', '\\.')}:5354/udp is not an endpoint of a pod on node ${B.name}`,
      ),
    );
  });

  it('the far gateway counted the flows it opened', async () => {
    const r = await t.lab.exec(B.ns, ['curl', '-sf', 'http://127.0.0.1:15091/udp-flows']);
    const counters = JSON.parse(r.stdout) as { opened: number; repliesDropped: number };
    expect(counters.opened).toBeGreaterThanOrEqual(2);
    expect(counters.repliesDropped).toBe(0);
  });
});
