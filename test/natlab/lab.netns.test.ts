import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../harness/netns.ts';
import { NatLab } from './lab.ts';

// The lab itself must behave like the internet it stands for, or every tunnel test on top
// of it proves nothing: NAT applied, port preservation per flavour, unsolicited inbound
// dropped or rejected per flavour, no route between site LANs and none out of the lab.
describe('NAT lab', () => {
  let lab: NatLab;
  const echoPort = 7000;

  beforeAll(async () => {
    lab = await NatLab.create({
      prefix: 'emt',
      tunnelServers: 2,
      sites: [
        { mapping: 'preserving', inbound: 'drop', nodes: 2, podsPerNode: 1 },
        { mapping: 'random', inbound: 'reject', nodes: 1 },
      ],
    });
    // Each public host answers with the address and port it sees the client coming from.
    for (const ts of lab.tunnelServers) {
      lab.spawn(ts.ns, [
        'socat',
        `TCP-LISTEN:${echoPort},reuseaddr,fork`,
        'SYSTEM:echo $SOCAT_PEERADDR $SOCAT_PEERPORT',
      ]);
    }
    await waitFor(
      async () => (await lab.run(lab.tunnelServers[1].ns, ['ss', '-ltn'])).stdout.includes(`:${echoPort}`),
      5000,
    );
  });
  afterAll(async () => {
    await lab?.cleanup();
  });

  const seenFrom = async (ns: string, server: string, sourcePort: number) => {
    const r = await lab.exec(ns, [
      'socat',
      '-T2',
      '-',
      `TCP:${server}:${echoPort},sourceport=${sourcePort},reuseaddr`,
    ]);
    return r.stdout.trim().replace(' ', ':');
  };

  it('port-preserving NAT maps a node to the public address with its own source port', async () => {
    const [site] = lab.sites;
    const seen1 = await seenFrom(site.nodes[0].ns, lab.tunnelServers[0].addr, 41001);
    const seen2 = await seenFrom(site.nodes[0].ns, lab.tunnelServers[1].addr, 41001);
    expect(seen1).toBe(`${site.publicAddr}:41001`);
    expect(seen2).toBe(`${site.publicAddr}:41001`);
  });

  it('random-fully NAT gives different public ports for the same source port', async () => {
    const site = lab.sites[1];
    const seen = [
      await seenFrom(site.nodes[0].ns, lab.tunnelServers[0].addr, 41002),
      await seenFrom(site.nodes[0].ns, lab.tunnelServers[1].addr, 41002),
    ];
    for (const s of seen) expect(s.startsWith(`${site.publicAddr}:`)).toBe(true);
    const ports = seen.map((s) => s.split(':')[1]);
    // A mapping that kept 41002 for both would be punchable; random-fully almost never does.
    expect(ports[0] === '41002' && ports[1] === '41002').toBe(false);
  });

  it('a pod behind a node is routed and NATed like its node', async () => {
    const pod = lab.sites[0].nodes[0].pods[0];
    const seen = await seenFrom(pod.ns, lab.tunnelServers[0].addr, 41003);
    expect(seen).toBe(`${lab.sites[0].publicAddr}:41003`);
  });

  it('DROP router: unsolicited inbound TCP times out', async () => {
    const r = await lab.run(lab.tunnelServers[0].ns, [
      'socat',
      '-T1',
      '-',
      `TCP:${lab.sites[0].publicAddr}:41001,connect-timeout=1`,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/timed out/i);
  });

  it('REJECT router: unsolicited inbound TCP is answered with RST', async () => {
    const r = await lab.run(lab.tunnelServers[0].ns, [
      'socat',
      '-T1',
      '-',
      `TCP:${lab.sites[1].publicAddr}:41001,connect-timeout=1`,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/refused/i);
  });

  it('extra public hosts and pod CIDRs made by others are routed like the built-in ones', async () => {
    const cloud = await lab.addPublicHost('cloud');
    lab.spawn(cloud.ns, [
      'socat',
      `TCP-LISTEN:${echoPort},reuseaddr,fork`,
      'SYSTEM:echo $SOCAT_PEERADDR $SOCAT_PEERPORT',
    ]);
    await waitFor(
      async () => (await lab.run(cloud.ns, ['ss', '-ltn'])).stdout.includes(`:${echoPort}`),
      5000,
    );
    const node = lab.sites[0].nodes[1];
    // A pod namespace the lab did not make, behind node1-2 on 10.1.99.0/24.
    const podNs = await lab.netns.add('extpod');
    await lab.netns.link(
      { ns: node.ns, ifname: 'ext0', addr: '10.1.99.1/24' },
      { ns: podNs, ifname: 'eth0', addr: '10.1.99.2/24' },
    );
    await lab.exec(podNs, ['ip', 'route', 'add', 'default', 'via', '10.1.99.1']);
    await lab.routeToNode(node, '10.1.99.0/24');
    expect(await seenFrom(podNs, cloud.addr, 41004)).toBe(`${lab.sites[0].publicAddr}:41004`);
  });

  it('NAT routers expire UDP mappings after 30 s of silence', async () => {
    const r = await lab.exec(lab.sites[0].natNs, [
      'sysctl',
      '-n',
      'net.netfilter.nf_conntrack_udp_timeout_stream',
    ]);
    expect(r.stdout.trim()).toBe('30');
  });

  it('site LANs are not routed to each other and nothing routes out of the lab', async () => {
    const r = await lab.run(lab.sites[1].nodes[0].ns, [
      'socat',
      '-T1',
      '-',
      `TCP:${lab.sites[0].nodes[0].addr}:22,connect-timeout=1`,
    ]);
    expect(r.code).not.toBe(0);
    const out = await lab.run(lab.coreNs, ['ip', 'route', 'get', '8.8.8.8']);
    expect(out.code).not.toBe(0);
    expect(out.stderr).toMatch(/unreachable/i);
  });
});
