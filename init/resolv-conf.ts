import { readFileSync } from 'node:fs';
import { configError } from '../lib/errors.ts';
import { type Cidr, parseCidr } from './cidr.ts';

/**
 * The pod's nameservers, read from the resolv.conf the app's resolver reads: kubelet writes
 * one file per pod and mounts it at /etc/resolv.conf in every container of the pod, the init
 * container included, so no extra mount is needed. DNS is captured only to these addresses
 * (Istio's default, `--capture-all-dns=false`): a query the app sends to any other address
 * (`dig @10.96.100.22`, its own DNS server run as a Service) is ordinary traffic.
 */

/** Larger than any resolv.conf kubelet writes (3 nameservers, 32 search domains ≤ 2048 chars). */
export const RESOLV_CONF_MAX_BYTES = 64 * 1024;

/**
 * `nameserver <address>` lines, in order, as host CIDRs (/32, /128), duplicates dropped.
 * A zone index (fe80::1%eth0) is dropped, as the sidecar's forwarder does: iptables matches
 * addresses only. Comments start with # or ; (glibc). Throws naming the line on an address
 * that is not one (glibc would skip it; kubelet writes only validated addresses, so a bad
 * line means the file is not what we think it is). No nameserver line means glibc's default,
 * the local host (127.0.0.1), which is what the app's resolver then queries.
 */
export function parseNameservers(text: string, path: string): Cidr[] {
  const found: Cidr[] = [];
  const lines = text.split('\n');
  for (const [i, raw] of lines.entries()) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const [key, address] = line.split(/\s+/);
    if (key !== 'nameserver') continue;
    if (!address) throw configError(`${path}:${i + 1}: "nameserver" without an address`);
    const host = address.replace(/%.*$/, '');
    const cidr = host.includes('/') ? `${JSON.stringify(host)} is not an address` : parseCidr(host);
    if (typeof cidr === 'string') throw configError(`${path}:${i + 1}: nameserver ${cidr}`);
    if (!found.some((c) => c.text === cidr.text)) found.push(cidr);
  }
  return found.length > 0 ? found : [{ family: 4, text: '127.0.0.1/32' }];
}

/**
 * Reads and parses `path`; every error names the file and says how to go without it. A file
 * that does not exist is glibc's case too: with no resolv.conf the resolver queries 127.0.0.1,
 * so that is what is captured (kubelet always writes one; a container run outside Kubernetes
 * may have none).
 */
export function readNameservers(path: string): Cidr[] {
  let text: string;
  try {
    const bytes = readFileSync(path);
    if (bytes.length > RESOLV_CONF_MAX_BYTES) {
      throw new Error(`${bytes.length} bytes, more than ${RESOLV_CONF_MAX_BYTES}`);
    }
    text = bytes.toString('utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return parseNameservers('', path);
    throw configError(
      `cannot read the pod's nameservers from ${path} (--resolv-conf): ${(err as Error).message}; ` +
        'DNS is captured only to them (--capture-all-dns=true captures every port-53 packet instead)',
    );
  }
  return parseNameservers(text, path);
}
