/**
 * The sidecar's DNS server (docs/dns.md). Typical wiring in the sidecar command:
 *
 *   const conf = readResolvConf();
 *   const dns = await startDnsServer({
 *     store, port: 15053, upstreams: conf.nameservers.map(parseUpstream),
 *     clusterDomain: 'cluster.local', searchDomains: conf.search, log, registry,
 *   });
 *   // ... on shutdown: await dns.close();
 */
export { parseUpstream, type Upstream } from './forwarder.ts';
export { parseResolvConf, type ResolvConf, readResolvConf } from './resolv-conf.ts';
export { DEFAULT_DNS_PORT, type DnsServer, type DnsServerOptions, startDnsServer } from './server.ts';
