/**
 * The `tunnel-servers` setting, parsed and sorted into usable entries and placeholders. Its
 * own module (no sockets, no ICE library) so `edgemesh check` can judge the ConfigMap's value
 * exactly as the gateway will.
 */
import { configError } from '../../lib/errors.ts';
import type { ServerAddress } from './server-link.ts';

/** Parses "host:port" / "[v6]:port" entries; errors name the flag. */
export function parseServers(list: string[], flag = '--tunnel-servers'): ServerAddress[] {
  return list.map((entry) => {
    const m = /^\[?([^\]\s]+?)\]?:(\d{1,5})$/.exec(entry);
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65535)
      throw configError(`${flag}: ${JSON.stringify(entry)} is not HOST:PORT`);
    return { host: m[1], port };
  });
}

/**
 * Tunnel-server addresses that can never work: the shipped ConfigMap's placeholder
 * (`tunnel.edgemesh.example`) and names under the TLDs reserved never to resolve (RFC 2606,
 * RFC 6761: .example, .invalid, .test, .localhost). They are left out; a gateway holding only
 * such entries cannot start its tunnel (retrying DNS forever would look like an outage). Pure.
 */
export function placeholderServers(servers: readonly ServerAddress[]): string[] {
  return servers
    .filter((s) => /(^|\.)(example|invalid|test|localhost)\.?$/i.test(s.host))
    .map((s) => `${s.host}:${s.port}`);
}

/** The configured servers without placeholders (the tunnel uses these), and those left out. Pure. */
export function usableServers(configured: readonly ServerAddress[]): {
  servers: ServerAddress[];
  ignored: string[];
} {
  const ignored = placeholderServers(configured);
  return { servers: configured.filter((s) => !ignored.includes(`${s.host}:${s.port}`)), ignored };
}
