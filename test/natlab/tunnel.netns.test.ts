import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatNetcheck } from '../../ctl/netcheck.ts';
import { pathWords } from '../../ctl/status-format.ts';
import { waitFor } from '../harness/netns.ts';
import type { LabNode } from './lab.ts';
import { processLog, type SendResult, TunnelLab } from './tunnel-fixture.ts';

// The tunnel end to end in the NAT lab: real tunnel-server processes on the public
// segment, gateway tunnel nodes in site namespaces behind real iptables NAT, pods behind
// them. Every path claim is read from the gateway's own status, never assumed.
const MB = 1024 * 1024;
const BIG = 100 * MB;

describe('tunnel in the NAT lab', () => {
  let t: TunnelLab;
  let n: Record<string, LabNode>;

  beforeAll(async () => {
    t = await TunnelLab.create(
      [
        { mapping: 'preserving', inbound: 'drop', nodes: 2, podsPerNode: 1 }, // site 1
        { mapping: 'preserving', inbound: 'drop', nodes: 1, podsPerNode: 1 }, // site 2
        { mapping: 'preserving', inbound: 'reject', nodes: 1, podsPerNode: 1 }, // site 3
        { mapping: 'preserving', inbound: 'reject', nodes: 1, podsPerNode: 1 }, // site 4
        { mapping: 'random', inbound: 'drop', nodes: 1, podsPerNode: 1 }, // site 5: symmetric
      ],
      2,
    );
    n = Object.fromEntries(t.lab.sites.flatMap((s) => s.nodes.map((node) => [node.name, node])));
    for (const node of Object.values(n)) await t.startNode(node);
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  const intact = (r: SendResult, bytes: number) => {
    expect(r.error).toBeUndefined();
    expect(r.bytes).toBe(bytes);
    expect(r.reply).toBe(`${r.sha} ${bytes}`);
  };

  /** First stream (any path), then wait for the gateway's status to show `path` to the peer. */
  async function reach(from: LabNode, to: LabNode, path: string, timeoutMs = 20_000) {
    intact(await t.send(from, to, 1000), 1000);
    await waitFor(
      async () => (await t.peerPath(from, to)) === path,
      timeoutMs,
      200,
      `${from.name} → ${to.name} on ${path}`,
    ).catch(async (err) => {
      throw new Error(
        `${err.message}\nstatus: ${JSON.stringify(await t.status(from))}\n${processLog(from.name)}`,
      );
    });
    return (await t.status(from)).peers.find((p) => p.node === to.name);
  }

  /** How `edgemesh status` words the path from → to (from the gateway's /status document). */
  async function statusPath(from: LabNode, to: LabNode): Promise<string> {
    const doc = await t.gatewayStatus(from);
    const entry = doc.peers.find((p) => p.node === to.name);
    if (!entry) throw new Error(`${from.name}'s /status has no peer ${to.name}: ${JSON.stringify(doc)}`);
    // Traffic went both ways on the first stream already.
    expect(entry.bytesIn, 'bytes in').toBeGreaterThan(0);
    expect(entry.bytesOut, 'bytes out').toBeGreaterThan(0);
    return pathWords(entry);
  }

  it('same site: direct path, 100 MB intact', async () => {
    const peer = await reach(n['node1-1'], n['node1-2'], 'direct');
    expect(peer?.paths.direct?.transport).toBe('tcp');
    expect(await statusPath(n['node1-1'], n['node1-2'])).toBe('direct');
    const r = await t.send(n['node1-1'], n['node1-2'], BIG);
    expect(r.path).toBe('direct');
    intact(r, BIG);
  });

  it('two port-preserving NATs with DROP routers: TCP hole punch, 100 MB intact', async () => {
    const peer = await reach(n['node1-1'], n['node2-1'], 'punched');
    expect(peer?.paths.punched?.transport).toBe('tcp');
    expect(await statusPath(n['node1-1'], n['node2-1'])).toBe('punched TCP');
    const r = await t.send(n['node1-1'], n['node2-1'], BIG);
    expect(r.path).toBe('punched');
    intact(r, BIG);
  });

  it('two port-preserving NATs with REJECT (RST) routers: punched over UDP, 100 MB intact', async () => {
    const peer = await reach(n['node3-1'], n['node4-1'], 'punched');
    // TCP simultaneous open is refused by these routers; the path is the UDP one.
    expect(peer?.paths.punched?.transport).toBe('udp');
    expect(await statusPath(n['node3-1'], n['node4-1'])).toBe('punched UDP');
    // `edgemesh netcheck`: the RST routers refused the TCP punch, UDP connected, ports preserved.
    // The TCP punch races UDP and may end (3 s deadline) after UDP connected.
    const report = await waitFor(
      async () => {
        const text = formatNetcheck(await t.gatewayStatus(n['node3-1']));
        return /TCP hole punch: \d/.test(text) ? text : undefined;
      },
      10_000,
      250,
      'the TCP punch outcome',
    );
    if (/TCP hole punch: \d+ connected/.test(report)) {
      // The race the next test describes: on a loaded machine the TCP punch has connected
      // through these routers after UDP won (CI, 2026-12-07: twice, the retry seeing the same
      // record). A TCP path then replaces the UDP one by design: check that, say it, go on.
      console.log('tunnel.netns: the TCP punch connected through the RST routers this run (race)');
      const now = (await t.status(n['node3-1'])).peers.find((p) => p.node === 'node4-1');
      expect(now?.paths.punched?.transport).toBe('tcp');
    } else expect(report).toMatch(/TCP hole punch: .*refused by a RST/);
    expect(report).toMatch(/UDP \(ICE, STUN at the tunnel-servers\): .*connected/);
    expect(report).toContain('port preservation: yes');
    const r = await t.send(n['node3-1'], n['node4-1'], BIG, 120_000);
    expect(r.path).toBe('punched');
    intact(r, BIG);
  });

  it('the UDP path outlives the NAT routers 30 s UDP mapping timeout (keepalives)', async (ctx) => {
    const before = (await t.status(n['node3-1'])).peers.find((p) => p.node === 'node4-1')?.paths.punched;
    // The TCP punch races the UDP one; on a loaded machine it has once connected through the
    // RST-answering routers after UDP won, and replaced it (the faster transport, by design).
    // Then there is no UDP session whose keepalives this test could watch: said, not hidden.
    if (before?.transport === 'tcp') {
      ctx.skip('a TCP punch replaced the UDP path in this run: no UDP session to watch');
      return;
    }
    expect(before?.transport).toBe('udp');
    // 40 s without streams: only the session's own PINGs cross the NATs.
    await new Promise((r) => setTimeout(r, 40_000));
    const after = (await t.status(n['node3-1'])).peers.find((p) => p.node === 'node4-1')?.paths.punched;
    // The same session (same upAt), not a re-punched one, and it still carries data.
    expect(after?.upAt).toBe(before?.upAt);
    const r = await t.send(n['node3-1'], n['node4-1'], MB);
    expect(r.path).toBe('punched');
    intact(r, MB);
  });

  it('symmetric NAT on one side: stays on the relay after the direct search gives up, 100 MB intact', async () => {
    intact(await t.send(n['node2-1'], n['node5-1'], 1000), 1000);
    // The search ends (LAN, TCP punch, UDP all fail) and schedules a retry: only then is
    // "relay" the final answer rather than a path not yet upgraded.
    await waitFor(
      async () =>
        (await t.status(n['node2-1'])).peers.some(
          (p) => p.node === 'node5-1' && p.path === 'relay' && 'nextUpgradeAt' in p,
        ),
      30_000,
      250,
      'direct search to give up',
    );
    // `edgemesh status` names the replica carrying it, by the name the replica registered with.
    const servers = (await t.gatewayStatus(n['node2-1'])).tunnel.servers.map((s) => s.name);
    const relayed = await statusPath(n['node2-1'], n['node5-1']);
    expect(servers.map((name) => `relay via ${name}`)).toContain(relayed);
    // `edgemesh netcheck` on the symmetric side: its NAT rewrites ports.
    expect(formatNetcheck(await t.gatewayStatus(n['node5-1']))).toContain('port preservation: no');
    const r = await t.send(n['node2-1'], n['node5-1'], BIG);
    expect(r.path).toBe('relay');
    intact(r, BIG);
  });

  it('far gateway refuses a target that is not a local pod endpoint', async () => {
    for (const target of [`${n['node1-2'].addr}:22`, `${n['node1-2'].pods[0].addr}:9999`]) {
      const r = await t.lab.exec(n['node1-1'].ns, [
        new URL('../../node_modules/.bin/node', import.meta.url).pathname,
        join(new URL('./bin/', import.meta.url).pathname, 'send.ts'),
        '--node',
        'node1-2',
        '--target',
        target,
        '--bytes',
        '10',
      ]);
      expect(JSON.parse(r.stdout).error).toMatch(
        /^ERR EDGEMESH_ERR_DIAL_REFUSED .*is not an endpoint of a pod on node node1-2/,
      );
    }
  });

  it('forged certificates and tokens are refused by the tunnel-server and by peers', async () => {
    const r = await t.lab.exec(n['node1-2'].ns, [
      new URL('../../node_modules/.bin/node', import.meta.url).pathname,
      join(new URL('./bin/', import.meta.url).pathname, 'forged.ts'),
      '--ca',
      t.caFile,
      '--server',
      `${t.lab.tunnelServers[0].addr}:20007`,
      '--peer',
      `${n['node1-1'].addr}:20006`,
      '--token',
      t.tokens.get('node1-2') ?? '',
    ]);
    const results = JSON.parse(r.stdout) as Record<string, string>;
    // Each attempt must fail, and fail for the right reason.
    expect(results.serverWithForgedCert).toMatch(/^refused/);
    expect(results.peerWithForgedCert).toMatch(/^refused/);
    expect(results.enrolWithWrongToken).toMatch(/^refused: .*bad bootstrap token/);
    expect(results.peerAsServerWithNodeCert).toMatch(/^refused: .*expected tunnel-server/);
    // Control: the same script with the genuine CA material gets through.
    expect(results.control).toBe('ok');
  });

  it('tunnel-server killed mid-transfer: direct streams finish, the relayed one resumes via the other replica, not a byte lost', async () => {
    const relayed = n['node5-1'];
    const via =
      (await t.status(n['node2-1'])).peers.find((p) => p.node === relayed.name)?.paths.relay?.transport ?? '';
    const replica = via.endsWith('ts2') ? 1 : 0;
    const direct = t.send(n['node1-1'], n['node1-2'], 600 * MB, 120_000);
    const relay = t.send(n['node2-1'], relayed, 600 * MB, 120_000);
    // Kill only once both streams are open and carrying data on their paths.
    await waitFor(
      async () => {
        const [a, b] = [await t.status(n['node1-1']), await t.status(n['node2-1'])];
        const da = a.peers.find((p) => p.node === 'node1-2')?.paths.direct?.streams ?? 0;
        const rb = b.peers.find((p) => p.node === relayed.name)?.paths.relay?.streams ?? 0;
        return da > 0 && rb > 0;
      },
      20_000,
      50,
      'both transfers under way',
    );
    await new Promise((r) => setTimeout(r, 300));
    t.killServer(replica);
    const [d, rl] = await Promise.all([direct, relay]);
    // The direct stream never touched the tunnel-server.
    expect(d.path).toBe('direct');
    intact(d, 600 * MB);
    // The relayed stream's bytes went through the dead replica: it was parked at both
    // gateways and carried on through the other replica (lib/tunnel/resume.ts), whole.
    expect(rl.path).toBe('relay');
    intact(rl, 600 * MB);
    const resumed = async (node: LabNode) =>
      (await t.metrics(node)).match(
        /^edgemesh_tunnel_stream_resumes_total\{[^}]*result="resumed"[^}]*\} (\d+)/m,
      )?.[1];
    expect(await resumed(n['node2-1'])).toBe('1');
    expect(await resumed(relayed)).toBe('1');
    await waitFor(
      async () => {
        const p = (await t.status(n['node2-1'])).peers.find((x) => x.node === relayed.name);
        return p?.path === 'relay' && p.paths.relay?.transport.endsWith(replica === 0 ? 'ts2' : 'ts1');
      },
      10_000,
      100,
      'relay via the other replica',
    );
    const again = await t.send(n['node2-1'], relayed, 10 * MB);
    expect(again.path).toBe('relay');
    intact(again, 10 * MB);
  });

  it('cloud outage (every tunnel-server gone): punched paths carry on, same-site peers reconnect directly', async () => {
    for (const i of [...t.servers.keys()]) t.killServer(i);
    // An established cross-NAT path needs no server.
    const punched = await t.send(n['node1-1'], n['node2-1'], 10 * MB);
    expect(punched.path).toBe('punched');
    intact(punched, 10 * MB);
    // A restarted gateway has no sessions; its same-site peer is found from the catalog's
    // node addresses and reached on the LAN, with no relay to start from.
    const old = t.nodes.get('node1-2');
    if (old?.pid) process.kill(old.pid, 'SIGKILL');
    await t.startNode(n['node1-2'], { readyTimeoutMs: 500 });
    const r = await t.send(n['node1-2'], n['node1-1'], 10 * MB);
    expect(r.path).toBe('direct');
    intact(r, 10 * MB);
    // A peer behind another NAT cannot be reached without a rendezvous: a clear error.
    const far = await t.send(n['node1-2'], n['node5-1'], 1000);
    expect(far.error).toMatch(/^ERR EDGEMESH_ERR_UNAVAILABLE no path to node node5-1/);
  });
});
