import { NetnsLab } from '../harness/netns.ts';

/**
 * A small internet in network namespaces, for tunnel and cluster tests.
 *
 *                    public segment 198.51.100.0/24 (bridge in "core")
 *          ts1 .11   ts2 .12  ...                     core .1
 *                                                      │ 203.0.113.<4k>/30 (core .4k+1, isp .4k+2)
 *                                                   isp<k>            one routed hop per site
 *                                                      │ 203.0.113.<64+4k>/30 (isp .+1, nat .+2 = public addr)
 *                                                   nat<k>            NAT router: MASQUERADE
 *                                                      │ site LAN 192.168.<k>.0/24 (bridge, router .1)
 *                                         node<k>-<i> .<10+i>
 *                                                      │ pod link 10.<k>.<i>.0/24 (node .1, pod .2)
 *                                         pod<k>-<i>
 *
 * Sites are numbered from 1. NAT flavours: `mapping` 'preserving' keeps the source port when
 * it can (MASQUERADE), 'random' picks a random port per connection (MASQUERADE
 * --random-fully: symmetric-like NAT, no hole punching possible). `inbound` 'drop' silently
 * drops unsolicited traffic from the WAN, 'reject' answers it (TCP RST, ICMP
 * port-unreachable), as a plain Linux router does.
 *
 * NAT routers expire UDP mappings after 30 s of silence (both directions).
 *
 * Nothing is attached to the root namespace and no namespace has a route out of the lab.
 */
export interface SiteSpec {
  mapping: 'preserving' | 'random';
  inbound: 'drop' | 'reject';
  nodes: number;
  /** Pod namespaces per node (default 0). */
  podsPerNode?: number;
}

export interface LabSpec {
  /** NetnsLab prefix, ≤ 4 chars (namespace and interface names carry it). */
  prefix: string;
  sites: SiteSpec[];
  /** Tunnel-server namespaces on the public segment (default 1). */
  tunnelServers?: number;
}

export interface PodHost {
  ns: string;
  addr: string;
}

export interface LabNode {
  /** e.g. "node1-2": site 1, node 2. */
  name: string;
  ns: string;
  /** LAN address, 192.168.<site>.<10+i>. */
  addr: string;
  pods: PodHost[];
}

export interface LabSite {
  mapping: SiteSpec['mapping'];
  inbound: SiteSpec['inbound'];
  index: number;
  /** The NAT router's namespace and its public (WAN) address. */
  natNs: string;
  publicAddr: string;
  /** The ISP router between this site and the core. */
  ispNs: string;
  lanCidr: string;
  gatewayAddr: string;
  nodes: LabNode[];
}

export interface PublicHost {
  ns: string;
  addr: string;
}

export class NatLab {
  readonly netns: NetnsLab;
  readonly sites: LabSite[] = [];
  readonly tunnelServers: PublicHost[] = [];
  readonly publicHosts: PublicHost[] = [];
  coreNs = '';

  private constructor(prefix: string) {
    this.netns = new NetnsLab(prefix);
  }

  /** Builds the whole lab; on failure removes what it made and rethrows. */
  static async create(spec: LabSpec): Promise<NatLab> {
    if (spec.sites.length < 1 || spec.sites.length > 15) throw new Error('natlab: 1..15 sites');
    const lab = new NatLab(spec.prefix);
    try {
      await lab.#build(spec);
      return lab;
    } catch (err) {
      await lab.cleanup();
      throw err;
    }
  }

  async #build(spec: LabSpec): Promise<void> {
    const n = this.netns;
    this.coreNs = await n.add('core');
    await this.#router(this.coreNs);
    await n.exec(this.coreNs, ['ip', 'link', 'add', 'pub', 'type', 'bridge']);
    await n.exec(this.coreNs, ['ip', 'addr', 'add', '198.51.100.1/24', 'dev', 'pub']);
    await n.exec(this.coreNs, ['ip', 'link', 'set', 'pub', 'up']);
    for (let t = 1; t <= (spec.tunnelServers ?? 1); t++) {
      const ns = await n.add(`ts${t}`);
      const addr = `198.51.100.${10 + t}`;
      await n.link({ ns: this.coreNs, ifname: `ts${t}` }, { ns, ifname: 'eth0', addr: `${addr}/24` });
      await n.exec(this.coreNs, ['ip', 'link', 'set', `ts${t}`, 'master', 'pub']);
      await n.exec(ns, ['ip', 'route', 'add', 'default', 'via', '198.51.100.1']);
      this.tunnelServers.push({ ns, addr });
    }
    for (const [i, siteSpec] of spec.sites.entries()) {
      this.sites.push(await this.#site(i + 1, siteSpec));
    }
  }

  async #site(k: number, spec: SiteSpec): Promise<LabSite> {
    const n = this.netns;
    const ispNs = await n.add(`isp${k}`);
    const natNs = await n.add(`nat${k}`);
    await this.#router(ispNs);
    await this.#router(natNs);
    const coreSide = `203.0.113.${4 * k + 1}`;
    const ispUp = `203.0.113.${4 * k + 2}`;
    await n.link(
      { ns: this.coreNs, ifname: `isp${k}`, addr: `${coreSide}/30` },
      { ns: ispNs, ifname: 'uplink', addr: `${ispUp}/30` },
    );
    const ispDown = `203.0.113.${64 + 4 * k + 1}`;
    const publicAddr = `203.0.113.${64 + 4 * k + 2}`;
    await n.link(
      { ns: ispNs, ifname: 'downlink', addr: `${ispDown}/30` },
      { ns: natNs, ifname: 'wan', addr: `${publicAddr}/30` },
    );
    await n.exec(this.coreNs, ['ip', 'route', 'add', `203.0.113.${64 + 4 * k}/30`, 'via', ispUp]);
    await n.exec(ispNs, ['ip', 'route', 'add', 'default', 'via', coreSide]);
    await n.exec(natNs, ['ip', 'route', 'add', 'default', 'via', ispDown]);

    const gatewayAddr = `192.168.${k}.1`;
    await n.exec(natNs, ['ip', 'link', 'add', 'lan', 'type', 'bridge']);
    await n.exec(natNs, ['ip', 'addr', 'add', `${gatewayAddr}/24`, 'dev', 'lan']);
    await n.exec(natNs, ['ip', 'link', 'set', 'lan', 'up']);
    await n.exec(natNs, ['iptables-restore'], { input: natRules(spec) });
    // UDP mappings expire after 30 s without traffic, even for flows seen both ways (Linux
    // keeps those 120 s by default; many home routers do not): keepalives must beat this.
    await n.exec(natNs, [
      'sysctl',
      '-qw',
      'net.netfilter.nf_conntrack_udp_timeout=30',
      'net.netfilter.nf_conntrack_udp_timeout_stream=30',
    ]);

    const nodes: LabNode[] = [];
    for (let i = 1; i <= spec.nodes; i++) {
      const name = `node${k}-${i}`;
      const ns = await n.add(name);
      const addr = `192.168.${k}.${10 + i}`;
      await n.link({ ns: natNs, ifname: `n${i}` }, { ns, ifname: 'eth0', addr: `${addr}/24` });
      await n.exec(natNs, ['ip', 'link', 'set', `n${i}`, 'master', 'lan']);
      await n.exec(ns, ['ip', 'route', 'add', 'default', 'via', gatewayAddr]);
      const pods: PodHost[] = [];
      for (let p = 1; p <= (spec.podsPerNode ?? 0); p++) {
        if (p > 1) throw new Error('natlab: at most one pod namespace per node for now');
        await this.#router(ns);
        const podNs = await n.add(`pod${k}-${i}`);
        const podAddr = `10.${k}.${i}.2`;
        await n.link(
          { ns, ifname: `pod${p}`, addr: `10.${k}.${i}.1/24` },
          { ns: podNs, ifname: 'eth0', addr: `${podAddr}/24` },
        );
        await n.exec(podNs, ['ip', 'route', 'add', 'default', 'via', `10.${k}.${i}.1`]);
        // The site routes each node's pod CIDR to that node (as host-gw CNIs do).
        await n.exec(natNs, ['ip', 'route', 'add', `10.${k}.${i}.0/24`, 'via', addr]);
        pods.push({ ns: podNs, addr: podAddr });
      }
      nodes.push({ name, ns, addr, pods });
    }
    return {
      mapping: spec.mapping,
      inbound: spec.inbound,
      index: k,
      natNs,
      ispNs,
      publicAddr,
      lanCidr: `192.168.${k}.0/24`,
      gatewayAddr,
      nodes,
    };
  }

  async #router(ns: string): Promise<void> {
    await this.netns.exec(ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  }

  /**
   * Another host on the public segment (e.g. a Kubernetes control plane in the "cloud"),
   * at 198.51.100.<100+n>; reachable from every site through its NAT.
   */
  async addPublicHost(name: string): Promise<PublicHost> {
    const n = this.publicHosts.length + 1;
    if (n > 100) throw new Error('natlab: too many public hosts');
    const ns = await this.netns.add(name);
    const addr = `198.51.100.${100 + n}`;
    await this.netns.link({ ns: this.coreNs, ifname: `ph${n}` }, { ns, ifname: 'eth0', addr: `${addr}/24` });
    await this.netns.exec(this.coreNs, ['ip', 'link', 'set', `ph${n}`, 'master', 'pub']);
    await this.netns.exec(ns, ['ip', 'route', 'add', 'default', 'via', '198.51.100.1']);
    const host = { ns, addr };
    this.publicHosts.push(host);
    return host;
  }

  /**
   * Routes `cidr` (a node's pod CIDR) to `node` on its site's router, as host-gw CNIs do,
   * for pod namespaces made by someone else (e.g. a test node agent) behind that node.
   */
  async routeToNode(node: LabNode, cidr: string): Promise<void> {
    const site = this.sites.find((s) => s.nodes.includes(node));
    if (!site) throw new Error(`natlab: ${node.name} is not in this lab`);
    await this.netns.exec(site.natNs, ['ip', 'route', 'add', cidr, 'via', node.addr]);
    await this.netns.exec(node.ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  }

  /**
   * A port forward on a site's NAT router: `publicPort` on its public address goes to
   * `to`:`port` on the LAN, past the router's drop/reject of unsolicited inbound; with
   * `from`, only for that source. TCP unless `protocol` says UDP (plain UDP through the same
   * NATs and hops as the tunnel: bench/udp-natlab.ts's baseline). Returns the router's
   * public address.
   */
  async forwardPort(
    site: LabSite,
    opts: { publicPort: number; to: string; port: number; from?: string; protocol?: 'tcp' | 'udp' },
  ): Promise<string> {
    const match = ['-i', 'wan', ...(opts.from ? ['-s', opts.from] : []), '-p', opts.protocol ?? 'tcp'];
    await this.netns.exec(site.natNs, [
      'iptables',
      '-w',
      '-t',
      'nat',
      '-A',
      'PREROUTING',
      ...match,
      '--dport',
      String(opts.publicPort),
      '-j',
      'DNAT',
      '--to-destination',
      `${opts.to}:${opts.port}`,
    ]);
    await this.netns.exec(site.natNs, [
      'iptables',
      '-w',
      '-I',
      'FORWARD',
      '1',
      ...match,
      '-d',
      opts.to,
      '--dport',
      String(opts.port),
      '-j',
      'ACCEPT',
    ]);
    return site.publicAddr;
  }

  /** The node called `name` ("node<k>-<i>"). */
  node(name: string): LabNode {
    for (const s of this.sites) for (const node of s.nodes) if (node.name === name) return node;
    throw new Error(`natlab: no node ${name}`);
  }

  exec(ns: string, argv: string[], opts?: Parameters<NetnsLab['exec']>[2]) {
    return this.netns.exec(ns, argv, opts);
  }

  run(ns: string, argv: string[], opts?: Parameters<NetnsLab['run']>[2]) {
    return this.netns.run(ns, argv, opts);
  }

  spawn(ns: string, argv: string[], opts?: Parameters<NetnsLab['spawn']>[2]) {
    return this.netns.spawn(ns, argv, opts);
  }

  /** Kills every process the lab started and removes every namespace. Safe to call twice. */
  cleanup(): Promise<void> {
    return this.netns.cleanup();
  }
}

/** The NAT router's rules as iptables-restore text (pure, so it can be read and diffed). */
export function natRules(spec: Pick<SiteSpec, 'mapping' | 'inbound'>): string {
  const masquerade = spec.mapping === 'random' ? '-j MASQUERADE --random-fully' : '-j MASQUERADE';
  const unsolicited =
    spec.inbound === 'drop'
      ? ['-A WAN_IN -j DROP']
      : [
          '-A WAN_IN -p tcp -j REJECT --reject-with tcp-reset',
          '-A WAN_IN -p udp -j REJECT --reject-with icmp-port-unreachable',
          '-A WAN_IN -j REJECT --reject-with icmp-host-unreachable',
        ];
  return [
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':INPUT ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    ':POSTROUTING ACCEPT [0:0]',
    `-A POSTROUTING -o wan ${masquerade}`,
    'COMMIT',
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    ':WAN_IN - [0:0]',
    '-A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT',
    '-A INPUT -i wan -j WAN_IN',
    '-A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT',
    '-A FORWARD -i wan -j WAN_IN',
    ...unsolicited,
    'COMMIT',
    '',
  ].join('\n');
}
