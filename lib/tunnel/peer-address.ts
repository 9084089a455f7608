/**
 * Which LAN addresses and tunnel port a gateway may announce for itself (issue 16 item 10).
 *
 * Other gateways dial what a peer registered (LAN dial, 1 s per address), so an enrolled
 * node that registered 127.0.0.1, 169.254.169.254 or port 10250 made every gateway that
 * wanted to reach it connect to its own loopback, the cloud metadata service or its own
 * kubelet. The tunnel-server refuses such a registration (`register` answered with an error
 * naming the address and why), and a receiving gateway drops such candidates again (from any
 * source: an older tunnel-server, its peer book, the catalog) before it dials.
 *
 * Refused: addresses no peer can be reached on from another host (unspecified, loopback,
 * link-local — which holds the metadata service —, multicast, broadcast and reserved), the
 * tunnel-server's own, and ports that are not a tunnel port: privileged ones (< 1024) and
 * the well-known ports of Kubernetes' node and control-plane services. Pure: no I/O.
 */
import { ipToBytes } from '../ip.ts';

/** Well-known Kubernetes ports on nodes and control planes: never a gateway's tunnel port. */
const KUBERNETES_PORTS: ReadonlyMap<number, string> = new Map([
  [2379, 'etcd'],
  [2380, 'etcd peer'],
  [6443, 'kube-apiserver'],
  [10248, 'kubelet healthz'],
  [10249, 'kube-proxy metrics'],
  [10250, 'kubelet API'],
  [10255, 'kubelet read-only'],
  [10256, 'kube-proxy health'],
  [10257, 'kube-controller-manager'],
  [10259, 'kube-scheduler'],
]);

/** Why `port` cannot be a gateway's tunnel port, or undefined when it can. */
export function tunnelPortProblem(port: number): string | undefined {
  if (!Number.isInteger(port) || port < 1 || port > 65535) return `port ${port} is not a TCP port`;
  if (port < 1024) return `port ${port} is privileged (below 1024), not a tunnel port`;
  const service = KUBERNETES_PORTS.get(port);
  return service ? `port ${port} is the ${service} port, not a tunnel port` : undefined;
}

/** Why `ip` cannot be a peer's LAN address, or undefined when it can. */
export function lanAddressProblem(ip: string): string | undefined {
  const b = ipToBytes(ip);
  if (!b) return `${ip} is not an IP address`;
  const what = b.length === 4 ? ipv4Kind(b) : ipv6Kind(b);
  return what ? `${ip} is ${what}, not reachable from another host` : undefined;
}

function ipv4Kind(b: Uint8Array): string | undefined {
  if (b[0] === 0) return 'unspecified ("this network", 0.0.0.0/8)';
  if (b[0] === 127) return 'a loopback address';
  if (b[0] === 169 && b[1] === 254) return 'a link-local address (169.254.0.0/16, e.g. cloud metadata)';
  if (b[0] >= 224 && b[0] < 240) return 'a multicast address';
  if (b[0] >= 240) return 'a reserved or broadcast address';
  return undefined;
}

function ipv6Kind(b: Uint8Array): string | undefined {
  const zeros = (from: number, to: number) => b.subarray(from, to).every((x) => x === 0);
  // IPv4-mapped (::ffff:a.b.c.d): what the IPv4 address is.
  if (zeros(0, 10) && b[10] === 0xff && b[11] === 0xff) return ipv4Kind(b.subarray(12));
  if (zeros(0, 15) && b[15] === 0) return 'unspecified (::)';
  if (zeros(0, 15) && b[15] === 1) return 'the loopback address';
  if (b[0] === 0xfe && (b[1] & 0xc0) === 0x80) return 'a link-local address (fe80::/10)';
  if (b[0] === 0xff) return 'a multicast address';
  return undefined;
}

/**
 * Why a registration (`lan` addresses, tunnel `port`) is refused, or undefined when it is
 * fine. `serverAddresses`: the tunnel-server's own (the address the gateway reached it on).
 */
export function registrationProblem(
  lan: readonly string[],
  port: number,
  serverAddresses: readonly string[],
): string | undefined {
  const portProblem = tunnelPortProblem(port);
  if (portProblem) return portProblem;
  for (const ip of lan) {
    const problem =
      lanAddressProblem(ip) ?? ownAddress(ip, serverAddresses, "the tunnel-server's own address");
    if (problem) return `lan ${problem}`;
  }
  return undefined;
}

/**
 * A peer's LAN candidates without the ones no gateway may dial: `dropped` names each and why
 * (for the log line). All are dropped when the port is not a tunnel port.
 */
export function dialableLan(
  lan: readonly string[],
  port: number,
  own: { addresses: readonly string[]; what: string },
): { lan: string[]; dropped: string[] } {
  const portProblem = tunnelPortProblem(port);
  if (portProblem) return { lan: [], dropped: lan.length > 0 ? [portProblem] : [] };
  const ok: string[] = [];
  const dropped: string[] = [];
  for (const ip of lan) {
    const problem = lanAddressProblem(ip) ?? ownAddress(ip, own.addresses, own.what);
    if (problem) dropped.push(problem);
    else ok.push(ip);
  }
  return { lan: ok, dropped };
}

function ownAddress(ip: string, own: readonly string[], what: string): string | undefined {
  const b = ipToBytes(ip);
  if (!b) return undefined;
  const same = own.some((o) => ipToBytes(o)?.equals(b) === true);
  return same ? `${ip} is ${what}` : undefined;
}
