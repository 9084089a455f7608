/**
 * `node sidecar/dns/main.ts`: the DNS server alone, answering from a catalog file, for the
 * network-namespace tests and bench/dns.ts. (In a pod the DNS server runs inside
 * `edgemesh sidecar`, fed by the gateway.) The catalog file is re-read when it changes;
 * until it exists and parses, cluster names answer SERVFAIL.
 */
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { CatalogStore } from '../../lib/catalog/store.ts';
import { CATALOG_FORMAT, type Catalog } from '../../lib/catalog/types.ts';
import { type CommandSpec, helpText, parseCommand } from '../../lib/cli.ts';
import { describeError } from '../../lib/errors.ts';
import { createLogger } from '../../lib/log.ts';
import { createRegistry, serveMetrics } from '../../lib/metrics.ts';
import { onShutdown } from '../../lib/shutdown.ts';
import { parseUpstream } from './forwarder.ts';
import { readResolvConf } from './resolv-conf.ts';
import { DEFAULT_DNS_PORT, startDnsServer } from './server.ts';

const spec = {
  name: 'dns (standalone)',
  summary: 'Kubernetes DNS from a catalog file; other names forwarded upstream',
  options: {
    'catalog-file': {
      type: 'string',
      description: 'catalog JSON file to answer from (followed for changes)',
    },
    port: { type: 'integer', description: 'UDP and TCP port', default: DEFAULT_DNS_PORT, min: 1, max: 65535 },
    listen: { type: 'list', description: 'listen addresses', default: ['127.0.0.1', '::1'] },
    upstream: { type: 'list', description: 'upstream resolvers IP[:PORT] (default: /etc/resolv.conf)' },
    'cluster-domain': { type: 'string', description: 'cluster domain', default: 'cluster.local' },
    search: { type: 'list', description: 'search domains whose cluster-name expansions answer NXDOMAIN' },
    'upstream-timeout-ms': {
      type: 'integer',
      description: 'per-attempt upstream timeout',
      default: 2000,
      min: 50,
      max: 30000,
    },
    'max-in-flight': {
      type: 'integer',
      description: 'upstream queries in flight at most',
      default: 512,
      min: 1,
      max: 8192,
    },
    'tcp-idle-ms': {
      type: 'integer',
      description: 'close idle TCP clients after',
      default: 10000,
      min: 100,
      max: 600000,
    },
    'metrics-port': {
      type: 'integer',
      description: 'serve /metrics on 127.0.0.1 (0: off)',
      default: 0,
      min: 0,
      max: 65535,
    },
  },
} satisfies CommandSpec;

async function main(): Promise<void> {
  const opts = parseCommand(spec, process.argv.slice(2));
  if (opts.help) {
    process.stdout.write(helpText(spec));
    return;
  }
  const log = createLogger('dns');
  const registry = createRegistry('dns');
  const resolv = opts.upstream && opts.upstream.length > 0 ? undefined : readResolvConf();
  const upstreams = (opts.upstream ?? resolv?.nameservers ?? []).map(parseUpstream);
  const store = new CatalogStore();
  const file = opts['catalog-file'];
  if (file) {
    const load = () => {
      try {
        const catalog = JSON.parse(readFileSync(file, 'utf8')) as Catalog;
        if (catalog?.format !== CATALOG_FORMAT || typeof catalog.services !== 'object') {
          throw new Error(`not a catalog (format ${CATALOG_FORMAT})`);
        }
        store.apply({ type: 'snapshot', catalog });
        log.info({ file, revision: catalog.revision }, 'catalog loaded');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
          log.warn({ file, err: describeError(err) }, 'catalog not loaded');
      }
    };
    load();
    watchFile(file, { interval: 100 }, load);
  }
  const dns = await startDnsServer({
    store,
    port: opts.port,
    hosts: opts.listen,
    upstreams,
    clusterDomain: opts['cluster-domain'],
    searchDomains: opts.search ?? resolv?.search,
    upstreamTimeoutMs: opts['upstream-timeout-ms'],
    tcpIdleMs: opts['tcp-idle-ms'],
    maxInFlight: opts['max-in-flight'],
    log,
    registry,
  });
  const metrics =
    opts['metrics-port'] > 0
      ? await serveMetrics(registry, { port: opts['metrics-port'], host: '127.0.0.1' })
      : undefined;
  onShutdown(log, async () => {
    if (file) unwatchFile(file);
    metrics?.close();
    await dns.close();
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`dns: ${describeError(err)}\n`);
  process.exit(2);
});
