/**
 * The sidecar process: catalog source → store → DNS server + transparent proxy, with the
 * health endpoint (/ready once the catalog has synced and every listener is up), metrics,
 * and a graceful drain on SIGTERM (not ready at once, stop accepting, let connections finish).
 */
import { isIP } from 'node:net';
import type { CatalogSource } from '../lib/catalog/source.ts';
import { CatalogStore } from '../lib/catalog/store.ts';
import { configError } from '../lib/errors.ts';
import { createLogger, type Logger } from '../lib/log.ts';
import { createRegistry, type Registry, serveMetricsOn } from '../lib/metrics.ts';
import { onShutdown } from '../lib/shutdown.ts';
import { PodAnnouncer, type PodIdentity } from './announce.ts';
import type { CatalogLookup } from './catalog/lookup.ts';
import { type DnsServer, parseUpstream, readResolvConf, startDnsServer } from './dns/index.ts';
import { GatewayDialer, RoutingDialer } from './proxy/dialer.ts';
import { createProxyMetrics } from './proxy/metrics.ts';
import { OutboundProxy, type ProxyEngine } from './proxy/proxy.ts';

export interface SidecarConfig {
  catalogFile?: string;
  objectsFile?: string;
  dnsPort: number;
  proxyPort: number;
  healthPort: number;
  metricsPort: number;
  /** Addresses for /ready and /metrics (default 0.0.0.0: the pod's own namespace). */
  metricsHosts?: string[];
  upstreams?: string[];
  resolvConf: string;
  gateway?: { host: string; port: number };
  nodeName?: string;
  /** This pod (env POD_NAME/POD_NAMESPACE/POD_UID): announced to the gateway (announce.ts). */
  pod?: PodIdentity;
  clusterDomain: string;
  /** With a gateway: hold only what the pod uses (default) or the whole catalog over the feed. */
  catalogMode?: 'on-demand' | 'full';
  catalogIdleMs?: number;
  catalogNegativeMs?: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  drainMs: number;
  proxyHosts: string[];
  /** Undefined: native when the addon is built (proxy.ts). */
  proxyEngine?: ProxyEngine;
  /** `--capture-udp`: the UDP proxy (proxy/udp/proxy.ts); undefined: off. */
  udp?: { port: number; idleMs: number; maxFlows: number };
}

/** `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT` with an IP host; throws a message naming the problem. */
export function parseHostPort(text: string, defaultPort: number): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:]+)(?::(\d+))?$/.exec(text);
  const host = m ? m[1] : text; // a bare IPv6 address has several colons
  const portText = m ? m[2] : undefined;
  if (isIP(host) === 0) throw new Error(`${JSON.stringify(text)}: expected IP[:PORT]`);
  const port = portText === undefined ? defaultPort : Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new Error(`${JSON.stringify(text)}: bad port`);
  return { host, port };
}

/**
 * The configured catalog source, its module loaded only when chosen: in a pod it is the
 * on-demand catalog from the gateway (catalog/on-demand.ts), and the file sources' YAML parser
 * and object→catalog builder would only cost memory there.
 */
async function catalogSource(
  config: SidecarConfig,
  log: Logger,
  registry: Registry,
): Promise<CatalogSource & Partial<CatalogLookup>> {
  const opts = { log, clusterDomain: config.clusterDomain };
  if (config.catalogFile)
    return (await import('../lib/catalog/file-source.ts')).catalogFileSource(config.catalogFile, opts);
  if (config.objectsFile)
    return (await import('../lib/catalog/file-source.ts')).objectsFileSource(config.objectsFile, opts);
  if (config.gateway && config.catalogMode === 'full') {
    const { GatewayFeedSource } = await import('../lib/catalog/feed-source.ts');
    return new GatewayFeedSource({ host: config.gateway.host, port: config.gateway.port, log });
  }
  if (config.gateway) {
    const { OnDemandCatalog } = await import('./catalog/on-demand.ts');
    return new OnDemandCatalog({
      host: config.gateway.host,
      port: config.gateway.port,
      clusterDomain: config.clusterDomain,
      idleMs: config.catalogIdleMs,
      negativeTtlMs: config.catalogNegativeMs,
      log: log.child({ part: 'catalog' }),
      registry,
    });
  }
  throw configError('no catalog source: pass --gateway (or set HOST_IP), --catalog-file or --objects');
}

/**
 * A compacting, memory-reducing GC ("last resort": what V8 does on a low-memory notification).
 * V8 collects when JS allocates; an idle sidecar hardly allocates, so it would keep the garbage and
 * half-empty heap pages of whatever ran last (module loading, a burst of connections) for good.
 * Takes ~25 ms. The gc function comes from a fresh context, where the flag set here exposes it
 * (the main context was built without it); the context is garbage for the next collection.
 */
function compactHeap(): void {
  process.getBuiltinModule('node:v8').setFlagsFromString('--expose-gc');
  const gc = process.getBuiltinModule('node:vm').runInNewContext('gc') as NodeJS.GCFunction;
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
}

const QUIET_CHECK_MS = 10_000;
/** Quiet: under 1% of a core in the last check interval. */
const QUIET_CPU_MICROS = QUIET_CHECK_MS * 10;
/** Worth a compaction: RSS grew this much since the last one. */
const COMPACT_GROWTH_BYTES = 4 * 1024 * 1024;

/**
 * Compacts once start-up is done (idle private memory 15.4 -> 13.3-13.6 MB, bench/memory.ts),
 * then again whenever a check interval was quiet after the heap had grown: a pod that served a
 * burst goes back down instead of paying for the burst until the next one (after 20,000
 * connections: 35 -> 23 MB private). Never while busy, at most once per quiet period.
 */
function compactWhenQuiet(): NodeJS.Timeout {
  compactHeap();
  let baseline = process.memoryUsage.rss();
  let cpu = process.cpuUsage();
  return setInterval(() => {
    const used = process.cpuUsage(cpu);
    cpu = process.cpuUsage();
    if (used.user + used.system > QUIET_CPU_MICROS) return;
    if (process.memoryUsage.rss() < baseline + COMPACT_GROWTH_BYTES) return;
    compactHeap();
    baseline = process.memoryUsage.rss();
    cpu = process.cpuUsage();
  }, QUIET_CHECK_MS).unref();
}

export async function runSidecar(config: SidecarConfig): Promise<void> {
  const log = createLogger('sidecar');
  const registry = createRegistry('sidecar');
  if (config.catalogFile && config.objectsFile)
    throw configError('--catalog-file and --objects exclude each other');
  const source = await catalogSource(config, log, registry);
  // On-demand: DNS and the proxy ask for what the store does not hold; otherwise it holds everything.
  const lookup: CatalogLookup | undefined = source.ensure ? (source as CatalogLookup) : undefined;

  const resolv = config.upstreams?.length ? undefined : readResolvConf(config.resolvConf);
  const upstreams = (config.upstreams?.length ? config.upstreams : (resolv?.nameservers ?? [])).map(
    parseUpstream,
  );

  // On demand, the store's readers keep no old catalog: records change in place (store.ts).
  const store = new CatalogStore({ inPlace: lookup !== undefined });
  // Before the catalog: a pod that moved while the API was away is admitted by the gateway
  // only once this HELLO is taken (gateway/pod-moves.ts).
  const announcer =
    config.gateway && config.pod
      ? new PodAnnouncer({ ...config.gateway, pod: config.pod, log: log.child({ part: 'announce' }) })
      : undefined;
  announcer?.start();
  await source.start(store);

  const dns: DnsServer = await startDnsServer({
    store,
    lookup,
    port: config.dnsPort,
    upstreams,
    clusterDomain: config.clusterDomain,
    searchDomains: resolv?.search,
    log: log.child({ part: 'dns' }),
    registry,
  });

  const dialer = new RoutingDialer({
    nodeName: config.nodeName,
    gateway: config.gateway ? new GatewayDialer(config.gateway) : undefined,
  });
  const proxy = new OutboundProxy({
    store,
    lookup,
    dialer,
    port: config.proxyPort,
    hosts: config.proxyHosts,
    connectTimeoutMs: config.connectTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    engine: config.proxyEngine,
    log: log.child({ part: 'proxy' }),
    metrics: createProxyMetrics(registry),
  });
  await proxy.start();

  // Only with --capture-udp: its addon and sockets (and NET_ADMIN) are not paid for otherwise.
  const udp = config.udp
    ? new (await import('./proxy/udp/proxy.ts')).UdpProxy({
        store,
        lookup,
        port: config.udp.port,
        idleMs: config.udp.idleMs,
        maxFlows: config.udp.maxFlows,
        nodeName: config.nodeName,
        gateway: config.gateway,
        log: log.child({ part: 'udp' }),
        metrics: (await import('./proxy/udp/metrics.ts')).createUdpMetrics(registry),
      })
    : undefined;
  udp?.start();

  let shuttingDown = false;
  const servers: { close(): void }[] = [];
  const hosts = config.metricsHosts ?? ['0.0.0.0'];
  servers.push(
    await serveMetricsOn(registry, hosts, {
      port: config.healthPort,
      routes: {
        '/ready': () => {
          if (shuttingDown) return { status: 503, body: 'draining\n' };
          if (!store.synced) return { status: 503, body: 'catalog not synced\n' };
          if (!proxy.listening) return { status: 503, body: 'proxy not listening\n' };
          if (udp && !udp.listening) return { status: 503, body: 'udp proxy not listening\n' };
          return { status: 200, body: `ready (catalog revision ${store.current?.revision})\n` };
        },
      },
    }),
  );
  if (config.metricsPort !== 0 && config.metricsPort !== config.healthPort) {
    servers.push(await serveMetricsOn(registry, hosts, { port: config.metricsPort }));
  }
  log.info(
    {
      proxyPort: config.proxyPort,
      dnsPort: config.dnsPort,
      healthPort: config.healthPort,
      udpPort: config.udp?.port,
      gateway: config.gateway,
      nodeName: config.nodeName,
      source: config.catalogFile
        ? 'catalog-file'
        : config.objectsFile
          ? 'objects'
          : config.catalogMode === 'full'
            ? 'gateway-feed'
            : 'gateway-on-demand',
    },
    'sidecar started',
  );
  const compactor = compactWhenQuiet();

  onShutdown(
    log,
    async () => {
      shuttingDown = true;
      clearInterval(compactor);
      announcer?.stop();
      await proxy.drain(config.drainMs);
      udp?.close();
      await dns.close();
      await source.stop();
      for (const s of servers) s.close();
      log.info('sidecar stopped');
    },
    config.drainMs + 5_000,
  );
}
