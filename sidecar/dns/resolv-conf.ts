import { readFileSync } from 'node:fs';
import net from 'node:net';
import { configError } from '../../lib/errors.ts';

/**
 * The pod's original resolver settings. The sidecar forwards non-cluster names to these
 * nameservers: with DNS capture on, its own queries (uid 1337) are exempt from the port-53
 * redirect, so they reach the real resolvers.
 */
export interface ResolvConf {
  nameservers: string[];
  search: string[];
  ndots: number;
}

export function parseResolvConf(text: string): ResolvConf {
  const nameservers: string[] = [];
  let search: string[] = [];
  let domain: string | undefined;
  let ndots = 1;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const [key, ...args] = line.split(/\s+/);
    if (key === 'nameserver' && args[0]) {
      // A zone index (fe80::1%eth0) is not usable from a socket send: drop the scope.
      const ip = args[0].replace(/%.*$/, '');
      if (net.isIP(ip)) nameservers.push(ip);
    } else if (key === 'search') {
      search = args; // the last search line wins, as in glibc
    } else if (key === 'domain' && args[0]) {
      domain = args[0];
    } else if (key === 'options') {
      for (const opt of args) {
        const m = /^ndots:(\d+)$/.exec(opt);
        if (m) ndots = Math.min(Number(m[1]), 15);
      }
    }
  }
  if (search.length === 0 && domain) search = [domain];
  return { nameservers, search, ndots };
}

/** Reads resolv.conf; errors name the file. No nameserver means glibc's default, 127.0.0.1. */
export function readResolvConf(path = '/etc/resolv.conf'): ResolvConf {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw configError(
      `cannot read ${path} for the DNS upstreams: ${(err as Error).message}; pass --upstream`,
    );
  }
  const conf = parseResolvConf(text);
  if (conf.nameservers.length === 0) conf.nameservers.push('127.0.0.1');
  return conf;
}
