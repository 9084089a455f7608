/**
 * Which lookup (lib/catalog/lookup-protocol.ts) answers a DNS name, so the sidecar asks the
 * gateway for one service rather than for a name: every name of a service (A/AAAA, headless
 * hosts, SRV) shares its key and one answer serves them all. Pure.
 *
 *   <ns>.svc.<zone>                          NS <ns>
 *   <svc>.<ns>.svc.<zone>, <x>.<svc>.<ns>.svc.<zone>, _<p>._<proto>.<svc>.<ns>.svc.<zone>
 *                                            SVC <ns>/<svc>
 *   <dashed ip>.<ns>.pod.<zone>              IP <ip>
 *   <reversed ip>.in-addr.arpa / ip6.arpa    IP <ip>
 *   anything else                            none: what the sidecar holds answers it
 *                                            (the apex, svc.<zone>, dns-version, NXDOMAIN)
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { LookupKey } from '../../lib/catalog/lookup-protocol.ts';
import { canonicalIP } from '../../lib/catalog/validate.ts';

const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** The lookup for a lower-case query name without a trailing dot, or undefined. */
export function keyForName(name: string, domain: string): LookupKey | undefined {
  if (name.endsWith('.arpa')) {
    const ip = ipFromReverse(name);
    return ip ? { kind: 'ip', ip } : undefined;
  }
  if (!name.endsWith(`.${domain}`)) return undefined;
  const labels = name.slice(0, -(domain.length + 1)).split('.');
  const n = labels.length;
  if (labels[n - 1] === 'svc') {
    if (n === 2) return LABEL.test(labels[0]) ? { kind: 'ns', namespace: labels[0] } : undefined;
    if (n >= 3 && LABEL.test(labels[n - 2]) && LABEL.test(labels[n - 3]))
      return { kind: 'svc', namespace: labels[n - 2], name: labels[n - 3] };
    return undefined;
  }
  if (labels[n - 1] === 'pod' && n === 3) {
    const ip = ipFromDashed(labels[0]);
    return ip ? { kind: 'ip', ip } : undefined;
  }
  return undefined;
}

/** 10-244-1-5 → 10.244.1.5; 2001-db8--1 → 2001:db8::1 (canonical), or undefined. */
function ipFromDashed(label: string): string | undefined {
  const v4 = label.replace(/-/g, '.');
  if (isIPv4(v4)) return v4;
  const v6 = label.replace(/-/g, ':');
  return isIPv6(v6) ? canonicalIP(v6) : undefined;
}

/** 5.1.244.10.in-addr.arpa → 10.244.1.5; a full 32-nibble ip6.arpa name → the IPv6 address. */
function ipFromReverse(name: string): string | undefined {
  if (name.endsWith('.in-addr.arpa')) {
    const labels = name.slice(0, -'.in-addr.arpa'.length).split('.');
    if (labels.length !== 4 || !labels.every((l) => OCTET.test(l))) return undefined;
    return labels.reverse().join('.');
  }
  if (name.endsWith('.ip6.arpa')) {
    const nibbles = name.slice(0, -'.ip6.arpa'.length).split('.');
    if (nibbles.length !== 32 || !nibbles.every((x) => /^[0-9a-f]$/.test(x))) return undefined;
    const hex = nibbles.reverse().join('');
    return canonicalIP(hex.match(/.{4}/g)!.join(':'));
  }
  return undefined;
}
