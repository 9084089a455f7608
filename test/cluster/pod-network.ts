import { execFile } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/**
 * Pod networking on a test node, the way kubenet did it: a bridge `cbr0` in the node's
 * namespace holding the first address of the node's pod CIDR, one veth per pod (node end on
 * the bridge, pod end `eth0` with an address from the CIDR and a default route via the
 * bridge). The node forwards, so pods reach whatever the node reaches; nothing here adds
 * routes between nodes (that is the lab's or the mesh's business).
 */
export const BRIDGE = 'cbr0';

export async function setUpNodeNetwork(nodeNs: string, podCidr: string): Promise<void> {
  const { gateway, prefix } = parseCidr(podCidr);
  await ip(nodeNs, ['link', 'add', BRIDGE, 'type', 'bridge']).catch((err: Error) => {
    if (!/File exists/.test(err.message)) throw err;
  });
  await ip(nodeNs, ['addr', 'replace', `${gateway}/${prefix}`, 'dev', BRIDGE]);
  // A fixed MAC: a bridge without one takes its lowest port's MAC and changes it as pods come
  // and go, leaving pods' ARP entries for their gateway stale (their packets to the node were
  // lost for up to ~45 s after a neighbouring pod was deleted).
  const mac = `02:00:${gateway
    .split('.')
    .map((o) => Number(o).toString(16).padStart(2, '0'))
    .join(':')}`;
  await ip(nodeNs, ['link', 'set', BRIDGE, 'address', mac]);
  await ip(nodeNs, ['link', 'set', BRIDGE, 'up']);
  await run(['ip', 'netns', 'exec', nodeNs, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
}

export interface PodSandbox {
  netns: string;
  hostVeth: string;
  ip: string;
}

/**
 * Creates the pod's namespace and wires it to the node's bridge. `dns` becomes the pod's
 * /etc/resolv.conf (`ip netns exec` bind-mounts /etc/netns/<ns>/ files over /etc).
 */
export async function createPodSandbox(opts: {
  nodeNs: string;
  netns: string;
  hostVeth: string;
  ip: string;
  podCidr: string;
  resolvConf: string;
  hosts: string;
}): Promise<PodSandbox> {
  const { gateway, prefix } = parseCidr(opts.podCidr);
  await run(['ip', 'netns', 'add', opts.netns]);
  await mkdir(`/etc/netns/${opts.netns}`, { recursive: true });
  await writeFile(`/etc/netns/${opts.netns}/resolv.conf`, opts.resolvConf);
  await writeFile(`/etc/netns/${opts.netns}/hosts`, opts.hosts);
  await ip(opts.netns, ['link', 'set', 'lo', 'up']);
  const tmp = `t${opts.hostVeth.slice(1)}`;
  await run([
    'ip',
    'link',
    'add',
    opts.hostVeth,
    'netns',
    opts.nodeNs,
    'type',
    'veth',
    'peer',
    'name',
    tmp,
    'netns',
    opts.netns,
  ]);
  await ip(opts.nodeNs, ['link', 'set', opts.hostVeth, 'master', BRIDGE, 'up']);
  await ip(opts.netns, ['link', 'set', tmp, 'name', 'eth0']);
  await ip(opts.netns, ['addr', 'add', `${opts.ip}/${prefix}`, 'dev', 'eth0']);
  await ip(opts.netns, ['link', 'set', 'eth0', 'up']);
  await ip(opts.netns, ['route', 'add', 'default', 'via', gateway]);
  return { netns: opts.netns, hostVeth: opts.hostVeth, ip: opts.ip };
}

/** Deletes the pod's namespace (its veth goes with it) and its /etc/netns files. */
export async function deletePodSandbox(netns: string): Promise<void> {
  // Anything still running in it (a daemon a container forked) dies first.
  const pids = await run(['ip', 'netns', 'pids', netns]).then(
    (out) => out.split(/\s+/).filter(Boolean),
    () => [],
  );
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await run(['ip', 'netns', 'del', netns]).catch(() => undefined);
  await rm(`/etc/netns/${netns}`, { recursive: true, force: true });
}

/** Hands out pod addresses from a node's CIDR (.2 upwards; .1 is the bridge). */
export class IpPool {
  readonly #base: number[];
  readonly #size: number;
  readonly #used = new Set<string>();
  #last = 1;

  constructor(cidr: string) {
    const { octets, prefix } = parseCidr(cidr);
    if (prefix < 16 || prefix > 29) throw new Error(`pod CIDR ${cidr}: prefix must be /16../29`);
    this.#base = octets;
    this.#size = 2 ** (32 - prefix);
  }

  /** Next free address after the last one handed out (like host-local IPAM), so a deleted
   * pod's address is not reused at once while EndpointSlices may still list it. */
  allocate(): string {
    const base = toNumber(this.#base);
    const hosts = this.#size - 3; // minus network, bridge (.1) and broadcast
    for (let n = 0; n < hosts; n++) {
      const i = 2 + ((this.#last - 2 + 1 + n) % hosts);
      const ip = toDotted(base + i);
      if (!this.#used.has(ip)) {
        this.#used.add(ip);
        this.#last = i;
        return ip;
      }
    }
    throw new Error('pod CIDR exhausted');
  }

  release(ip: string): void {
    this.#used.delete(ip);
  }
}

export function parseCidr(cidr: string): { octets: number[]; prefix: number; gateway: string } {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const prefix = m ? Number(m[5]) : -1;
  if (!m || octets.some((o) => o > 255) || prefix > 32) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const network = (toNumber(octets) & mask) >>> 0;
  return { octets: toOctets(network), prefix, gateway: toDotted(network + 1) };
}

function toNumber(o: number[]): number {
  return (((o[0] ?? 0) << 24) | ((o[1] ?? 0) << 16) | ((o[2] ?? 0) << 8) | (o[3] ?? 0)) >>> 0;
}

function toOctets(n: number): number[] {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}

function toDotted(n: number): string {
  return toOctets(n).join('.');
}

async function ip(ns: string, args: string[]): Promise<void> {
  await run(['ip', '-n', ns, ...args]);
}

async function run(argv: string[]): Promise<string> {
  try {
    return (await execFileP(argv[0] as string, argv.slice(1), { timeout: 15_000 })).stdout;
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`${argv.join(' ')}: ${(e.stderr ?? String(err)).trim()}`);
  }
}
