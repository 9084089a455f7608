/**
 * The sidecar's UDP proxy on :15006 (with `--capture-udp`, docs/udp.md). The init's TPROXY
 * rules deliver the app's outbound UDP here with the original destination; for each datagram:
 *
 *   flow table (flows.ts) by app address + original destination
 *     new        route: a UDP service port → its balancer picks an endpoint (with a
 *                gateway any, else a directly reachable one); anything else → the
 *                destination itself (passthrough)
 *                → an upstream socket connected to it (the addon), replies sent from a
 *                  socket bound to the original destination, so the app sees that address
 *                → endpoint on another node: a GatewayFlow (gateway-flow.ts), a DGRAM
 *                  connection to the node's gateway, opened here; once the gateway has
 *                  answered, the addon takes the connection over (gatewayFlow) and carries
 *                  the flow both ways as it does direct ones, replies from the same reply
 *                  socket; a broken connection is reported (REC_CLOSED) and opened again
 *                  here on the flow's next datagram. (An addon built without gatewayFlow:
 *                  the datagrams come here and replies go out with its sendTo.)
 *     existing   send on the flow's upstream socket
 *     repicked   the endpoint left the ready set: same socket, connected to the new pick
 *   dropped and counted (edgemesh_udp_datagrams_dropped_total{reason}) otherwise.
 * Once a flow has its upstream socket, the addon forwards its datagrams both ways itself;
 * only new flows (and datagrams racing their creation) come here. So endpoint changes are
 * applied to the flows when the catalog changes (#onCatalog), not when a datagram passes.
 *
 * Flows end after idling for the idle timeout (both directions count: the addon reports
 * active flows once per round), on one coarse sweep. Reply sockets are shared by the flows
 * to one destination and closed with the last.
 *
 * The addon's thread reads; this class runs on the JS thread only.
 */
import type { CatalogStore } from '../../../lib/catalog/store.ts';
import type { Catalog } from '../../../lib/catalog/types.ts';
import { type Logger, silentLogger } from '../../../lib/log.ts';
import { POD_CONTRACT } from '../../../lib/pod-contract.ts';
import { type CatalogLookup, HOLDS_EVERYTHING } from '../../catalog/lookup.ts';
import { Balancer } from '../lb.ts';
import { normalizeIp, type Target } from '../route.ts';
import { DEFAULT_IDLE_MS, DEFAULT_MAX_FLOWS, type Flow, FlowTable, type Route } from './flows.ts';
import { type GatewayAddress, GatewayFlow } from './gateway-flow.ts';
import { createUdpMetrics, type DropReason, type UdpMetrics } from './metrics.ts';
import {
  ERRNO,
  errnoOf,
  loadUdpAddon,
  REC_ACTIVE,
  REC_CLOSED,
  REC_DATAGRAM,
  REC_ERROR,
  RECORD_SLOTS,
  type UdpAddon,
  UdpEngine,
} from './native-udp.ts';
import { hostOf, isRemote, UdpRouteTable as Table, type UdpRouteTable, type UdpService } from './routes.ts';

export const UDP_PROXY_PORT = POD_CONTRACT.udpPort;
/** One sweep for the whole table: a flow lives between its timeout and timeout + 1 s. */
const SWEEP_MS = 1_000;
/** Datagrams held per destination while the on-demand catalog asks the gateway. */
const HOLD_PER_DST = 8;

export interface UdpProxyOptions {
  store: CatalogStore;
  lookup?: CatalogLookup;
  port?: number;
  /** This node: endpoints elsewhere are the gateway's (without `gateway`: dropped, counted). */
  nodeName?: string;
  /** The node's gateway (the TCP proxy's): flows to endpoints on other nodes go through it. */
  gateway?: GatewayAddress;
  idleMs?: number;
  maxFlows?: number;
  /** Families to listen on; IPv6 is skipped when the pod has none. */
  families?: readonly (4 | 6)[];
  log?: Logger;
  metrics?: UdpMetrics;
  /** Test hook: the addon (default: build/udp.node). */
  addon?: UdpAddon | Error;
}

type ResolvedOptions = Required<Omit<UdpProxyOptions, 'nodeName' | 'addon' | 'gateway'>> & {
  nodeName: string | undefined;
  gateway: GatewayAddress | undefined;
};

interface Upstream {
  /** The addon's upstream socket; for a gateway flow its carried connection, or -1 (none now). */
  fd: number;
  reply: ReplySocket;
  service: UdpService | undefined;
  gateway?: GatewayFlow;
}
interface ReplySocket {
  addr: string;
  fd: number;
  flows: number;
}

export class UdpProxy {
  readonly #opts: ResolvedOptions;
  readonly #engine: UdpEngine;
  readonly #flows: FlowTable<Upstream>;
  /** Flows by upstream fd (sparse array: fds are small ints), for the addon's ACTIVE/ERROR records. */
  readonly #byFd: (Flow<Upstream> | undefined)[] = [];
  readonly #replies = new Map<string, ReplySocket>();
  readonly #balancers = new Map<string, { balancer: Balancer<Target>; revision: number }>();
  readonly #pending = new Map<string, Buffer[]>();
  readonly #listeners: number[] = [];
  readonly #drop: Record<DropReason, { inc(): void }>;
  /** Datagrams sent from JS (new flows, gateway flows); the addon counts the rest. */
  #outJs = 0;
  /** Replies of gateway flows (sent from JS). */
  #repliesJs = 0;
  #unsubscribe: (() => void) | undefined;
  #table: UdpRouteTable | undefined;
  #tableOf: { catalog: Catalog; revision: number } | undefined;
  #sweeper: NodeJS.Timeout | undefined;

  constructor(options: UdpProxyOptions) {
    // Field by field: an option passed as undefined takes its default.
    this.#opts = {
      store: options.store,
      lookup: options.lookup ?? HOLDS_EVERYTHING,
      port: options.port ?? UDP_PROXY_PORT,
      idleMs: options.idleMs ?? DEFAULT_IDLE_MS,
      maxFlows: options.maxFlows ?? DEFAULT_MAX_FLOWS,
      families: options.families ?? [4, 6],
      log: options.log ?? silentLogger,
      metrics: options.metrics ?? createUdpMetrics(),
      nodeName: options.nodeName,
      gateway: options.gateway,
    };
    const m = this.#opts.metrics;
    this.#drop = Object.fromEntries(
      (
        [
          'no-endpoint',
          'remote-endpoint',
          'gateway-unavailable',
          'gateway-full',
          'catalog-pending',
          'upstream-full',
          'send-error',
          'socket-error',
        ] as const
      ).map((r) => [r, m.dropped.labels(r)]),
    ) as Record<DropReason, { inc(): void }>;
    m.activeSource = () => this.#flows.size;
    m.countsSource = () => {
      const c = this.#engine.stats();
      return {
        out: this.#outJs + c.out,
        replies: c.replies + this.#repliesJs,
        fastFailed: c.failed,
        gatewayFull: c.gatewayFull,
        gatewayDown: c.gatewayDown,
        staleReports: c.staleReports,
      };
    };
    this.#flows = new FlowTable<Upstream>(
      { idleMs: this.#opts.idleMs, maxFlows: this.#opts.maxFlows },
      (flow) => this.#endFlow(flow),
    );
    this.#engine = new UdpEngine((data, recs) => {
      // Nothing may escape into the addon's callback (N-API would only print a warning).
      try {
        this.#onBatch(data, recs);
      } catch (err) {
        this.#opts.log.error({ err: (err as Error).stack }, 'udp batch failed');
      }
    }, options.addon ?? loadUdpAddon());
  }

  /** Binds the transparent listeners (needs NET_ADMIN) and starts the idle sweep. */
  start(): void {
    for (const family of this.#opts.families) {
      try {
        this.#listeners.push(this.#engine.listen(family, this.#opts.port));
      } catch (err) {
        const errno = errnoOf(err);
        if (family === 6 && (errno === ERRNO.EAFNOSUPPORT || errno === ERRNO.EADDRNOTAVAIL)) {
          this.#opts.log.info('IPv6 not available: UDP proxy listens on IPv4 only');
          continue;
        }
        throw err;
      }
    }
    this.#sweeper = setInterval(() => this.#flows.sweep(), SWEEP_MS).unref();
    this.#unsubscribe = this.#opts.store.subscribe((_catalog, update) => {
      // Pod and node updates change no service's endpoints; a service update only its own flows.
      if (update.type === 'snapshot') this.#onCatalog(undefined);
      else if (update.type === 'service') this.#onCatalog(`${update.key}:`);
    });
    this.#opts.log.info({ port: this.#opts.port, idleMs: this.#opts.idleMs }, 'udp proxy listening');
  }

  get listening(): boolean {
    return this.#listeners.length > 0;
  }

  get flows(): number {
    return this.#flows.size;
  }

  /** Ends every flow and closes every socket. */
  close(): void {
    if (this.#sweeper) clearInterval(this.#sweeper);
    this.#unsubscribe?.();
    for (const fd of this.#listeners.splice(0)) this.#engine.close(fd);
    // Ending flows closes their sockets; the engine then stops its thread.
    for (const flow of [...this.#flows.values()]) this.#flows.remove(flow);
    this.#engine.stop();
  }

  #onBatch(data: Buffer, recs: (number | string | undefined)[]): void {
    let out = 0;
    for (let i = 0; i < recs.length; i += RECORD_SLOTS) {
      const kind = recs[i] as number;
      const fd = recs[i + 1] as number;
      if (kind === REC_DATAGRAM) {
        if (
          this.#forward(
            data,
            recs[i + 2] as number,
            recs[i + 3] as number,
            recs[i + 4] as string,
            recs[i + 5] as string,
          )
        )
          out++;
      } else if (kind === REC_ACTIVE) {
        const flow = this.#byFd[fd];
        if (flow) this.#flows.touch(flow);
      } else if (kind === REC_ERROR) {
        this.#upstreamError(fd, recs[i + 2] as number);
      } else if (kind === REC_CLOSED) {
        this.#carrierClosed(fd, recs[i + 2] as number);
      }
    }
    this.#outJs += out;
  }

  /**
   * The catalog changed (`keyPrefix`: only this service's ports, "namespace/name:"; undefined:
   * every service): every flow whose endpoint left its service's ready set moves to a
   * new pick (same upstream socket, connected anew, so the app keeps its address); a flow
   * whose service has no direct endpoint left ends (its next datagram is dropped, counted).
   * Every flow of the service takes its idle timeout as it is now (edgemesh.io/udp-idle-timeout
   * changed or removed), from the next sweep: its datagrams reach JS no more, so this is
   * where a live flow can learn it.
   */
  #onCatalog(keyPrefix: string | undefined): void {
    const table = this.#routes();
    if (!table) return;
    for (const flow of [...this.#flows.values()]) {
      const up = flow.value;
      if (!up?.service || (keyPrefix !== undefined && !up.service.key.startsWith(keyPrefix))) continue;
      const service = table.resolve(flow.dst);
      if (!service || service.choices.length === 0) {
        this.#flows.remove(flow);
        continue;
      }
      this.#flows.retime(flow, service.idleMs);
      if (service.ready.has(flow.endpoint)) continue;
      const balancer = this.#balancer(service, table);
      const next = balancer.pick({ clientIp: hostOf(flow.client) })?.id;
      if (next === undefined) {
        this.#flows.remove(flow);
        continue;
      }
      this.#balancers.get(up.service.key)?.balancer.release(flow.endpoint);
      flow.endpoint = next;
      up.service = service;
      balancer.acquire(next); // before: a carrier swap releases and acquires it again
      this.#retarget(flow, service);
    }
  }

  /** One datagram from the app; true when it was sent on. */
  #forward(data: Buffer, offset: number, length: number, client: string, dst: string): boolean {
    const table = this.#routes();
    const service = table?.resolve(dst);
    let route: Route;
    if (service) {
      if (service.choices.length === 0) {
        this.#drop[service.targets.length === 0 ? 'no-endpoint' : 'remote-endpoint'].inc();
        return false;
      }
      const balancer = this.#balancer(service, table as UdpRouteTable);
      route = {
        ready: service.ready,
        pick: () => balancer.pick({ clientIp: hostOf(client) })?.id,
        // The Service's edgemesh.io/udp-idle-timeout, else the table's default (flows.ts).
        idleMs: service.idleMs,
      };
    } else {
      // Not a service (yet): the on-demand catalog may not hold it; a known flow never waits.
      if (!this.#flows.get(client, dst) && this.#awaitCatalog(data, offset, length, client, dst))
        return false;
      route = passthrough(dst);
    }
    const found = this.#flows.lookup(client, dst, route);
    if (found.kind === 'no-endpoint') {
      this.#drop['no-endpoint'].inc();
      return false;
    }
    const { flow } = found;
    if (found.kind === 'new') {
      if (!this.#openFlow(flow, service)) return false;
    } else if (found.kind === 'repicked') {
      if (!this.#retarget(flow, service)) {
        this.#drop['socket-error'].inc();
        return false;
      }
    }
    const up = flow.value as Upstream;
    if (up.gateway) return up.gateway.send(data.subarray(offset, offset + length));
    const errno = this.#engine.send(up.fd, data, offset, length);
    if (errno === 0) return true;
    if (errno === ERRNO.EAGAIN) this.#drop['upstream-full'].inc();
    else {
      this.#drop['send-error'].inc();
      // ECONNREFUSED: an earlier datagram drew a port unreachable; the next one picks again.
      if (errno === ERRNO.ECONNREFUSED) this.#upstreamError(up.fd, errno);
    }
    return false;
  }

  /**
   * The flow's endpoint changed (flow.endpoint is the new one): the same upstream socket
   * connected anew, or the gateway flow's next connection to the new endpoint; a change
   * between direct and gateway makes the flow's carrier anew (the app's address and the
   * reply socket stay). False (flow ended) when that fails.
   */
  #retarget(flow: Flow<Upstream>, service: UdpService | undefined): boolean {
    const up = flow.value as Upstream;
    const target = service?.byId.get(flow.endpoint);
    const remote = this.#opts.gateway !== undefined && isRemote(target, this.#opts.nodeName);
    try {
      if (remote && up.gateway && target?.nodeName) {
        up.gateway.retarget({ node: target.nodeName, ip: target.ip, port: target.port });
        return true;
      }
      if (!remote && !up.gateway) {
        this.#engine.retarget(up.fd, flow.endpoint);
        return true;
      }
    } catch (err) {
      this.#opts.log.warn({ err: (err as Error).message, endpoint: flow.endpoint }, 'udp re-pick failed');
      this.#flows.remove(flow);
      return false;
    }
    // Direct ↔ gateway: a new carrier for the same flow.
    up.reply.flows++; // kept across the swap: the reply socket must not close in between
    this.#release(flow, false);
    const ok = this.#openFlow(flow, service, up.reply);
    up.reply.flows--;
    return ok;
  }

  #openFlow(flow: Flow<Upstream>, service: UdpService | undefined, kept?: ReplySocket): boolean {
    let reply = kept ?? this.#replies.get(flow.dst);
    try {
      if (!reply) {
        reply = { addr: flow.dst, fd: this.#engine.replySocket(flow.dst), flows: 0 };
        this.#replies.set(flow.dst, reply);
      }
      const target = service?.byId.get(flow.endpoint);
      if (this.#opts.gateway && target?.nodeName && isRemote(target, this.#opts.nodeName)) {
        const up: Upstream = { fd: -1, reply, service };
        up.gateway = this.#gatewayFlow(flow, up, target.nodeName, target.ip, target.port);
        reply.flows++;
        flow.value = up;
        this.#balancers.get((service as UdpService).key)?.balancer.acquire(flow.endpoint);
        this.#opts.metrics.flows.inc({ route: 'gateway' });
        return true;
      }
      const fd = this.#engine.upstream(flow.endpoint, reply.fd, flow.client, flow.dst);
      reply.flows++;
      flow.value = { fd, reply, service };
      this.#byFd[fd] = flow;
      if (service) this.#balancers.get(service.key)?.balancer.acquire(flow.endpoint);
      this.#opts.metrics.flows.inc({ route: service ? 'service' : 'passthrough' });
      return true;
    } catch (err) {
      this.#opts.log.warn(
        { err: (err as Error).message, dst: flow.dst, endpoint: flow.endpoint },
        'udp flow failed',
      );
      if (reply && reply.flows === 0) this.#closeReply(reply);
      this.#flows.remove(flow);
      this.#drop['socket-error'].inc();
      return false;
    }
  }

  /** An ICMP error on a flow's upstream: the endpoint is told to the balancer, the flow ends. */
  #upstreamError(fd: number, errno: number): void {
    const flow = this.#byFd[fd];
    if (!flow) return;
    const service = flow.value?.service;
    if (service && errno === ERRNO.ECONNREFUSED)
      this.#balancers.get(service.key)?.balancer.reportFailure(flow.endpoint);
    this.#flows.remove(flow);
  }

  /**
   * A carried gateway connection ended: the flow stays (app address, reply socket, endpoint)
   * and its next datagram, which now reaches JS, opens a new connection.
   */
  #carrierClosed(fd: number, errno: number): void {
    const flow = this.#byFd[fd];
    const up = flow?.value;
    if (!flow || !up?.gateway?.carrierClosed(fd)) return;
    const where = { client: flow.client, dst: flow.dst, endpoint: flow.endpoint };
    if (errno === ERRNO.EPROTO) this.#opts.log.warn(where, 'udp gateway flow: bad frame from the gateway');
    else this.#opts.log.debug({ ...where, errno }, 'udp gateway flow: connection ended');
  }

  /** A gateway flow's carrier: replies go back from the flow's reply socket. */
  #gatewayFlow(flow: Flow<Upstream>, up: Upstream, node: string, ip: string, port: number): GatewayFlow {
    const log = this.#opts.log;
    return new GatewayFlow(
      this.#opts.gateway as GatewayAddress,
      { node, ip, port },
      {
        onReply: (d) => {
          if (flow.value !== up) return; // the flow ended or changed carrier meanwhile
          this.#flows.touch(flow);
          if (this.#engine.sendTo(up.reply.fd, flow.client, d, 0, d.length) === 0) this.#repliesJs++;
          else this.#drop['send-error'].inc();
        },
        onDrop: (reason) => this.#drop[reason].inc(),
        onOpen: (result, detail, carrier) => {
          const where = { client: flow.client, dst: flow.dst, node, endpoint: flow.endpoint, carrier };
          if (result === 'failed') log.warn({ ...where, err: detail }, 'udp gateway flow failed');
          else if (result === 'reopened') log.info({ ...where, path: detail }, 'udp gateway flow reopened');
          else log.debug({ ...where, path: detail }, 'udp gateway flow opened');
        },
        onCarried: (fd) => {
          if (up.fd >= 0 && this.#byFd[up.fd] === flow) this.#byFd[up.fd] = undefined;
          up.fd = fd ?? -1;
          if (fd !== undefined) this.#byFd[fd] = flow;
        },
      },
      this.#engine.carriesGatewayFlows
        ? {
            adopt: (socketFd, held, rest) =>
              this.#engine.gatewayFlow(socketFd, up.reply.fd, flow.client, flow.dst, held, rest),
            send: (fd, payload) => this.#engine.send(fd, payload, 0, payload.length),
            close: (fd) => this.#engine.close(fd),
          }
        : undefined,
    );
  }

  #endFlow(flow: Flow<Upstream>): void {
    this.#release(flow, true);
  }

  /** Frees the flow's carrier (and with `reply` its share of the reply socket). */
  #release(flow: Flow<Upstream>, reply: boolean): void {
    const up = flow.value;
    if (!up) return;
    flow.value = undefined;
    if (up.gateway) up.gateway.close();
    else {
      this.#byFd[up.fd] = undefined;
      this.#engine.close(up.fd);
    }
    if (up.service) this.#balancers.get(up.service.key)?.balancer.release(flow.endpoint);
    if (reply && --up.reply.flows === 0) this.#closeReply(up.reply);
  }

  #closeReply(reply: ReplySocket): void {
    this.#replies.delete(reply.addr);
    this.#engine.close(reply.fd);
  }

  /** The table of the store's current catalog, compiled once per revision. */
  #routes(): UdpRouteTable | undefined {
    const catalog = this.#opts.store.current;
    if (!catalog) return undefined;
    if (this.#tableOf?.catalog !== catalog || this.#tableOf.revision !== catalog.revision) {
      this.#table = new Table(catalog, this.#opts.nodeName, this.#opts.gateway !== undefined);
      this.#tableOf = { catalog, revision: catalog.revision };
    }
    return this.#table;
  }

  /** The service port's balancer (kept across revisions: round-robin position, counts). */
  #balancer(service: UdpService, table: UdpRouteTable): Balancer<Target> {
    let entry = this.#balancers.get(service.key);
    if (!entry || entry.balancer.policy !== service.service.lbPolicy) {
      const affinity = service.service.sessionAffinity;
      entry = {
        balancer: new Balancer<Target>({
          policy: service.service.lbPolicy,
          ...(affinity.type === 'ClientIP' ? { affinityTimeoutMs: affinity.timeoutSeconds * 1000 } : {}),
        }),
        revision: -1,
      };
      this.#balancers.set(service.key, entry);
    }
    if (entry.revision !== table.revision) {
      entry.balancer.setChoices(service.choices.map((t) => ({ id: t.id, value: t })));
      entry.revision = table.revision;
    }
    return entry.balancer;
  }

  /**
   * On-demand catalog: a destination the store does not answer yet is asked of the gateway;
   * the datagram waits (a few per destination) and is forwarded once the answer is in.
   * True when the datagram was taken (held or dropped).
   */
  #awaitCatalog(data: Buffer, offset: number, length: number, client: string, dst: string): boolean {
    const held = this.#pending.get(dst);
    const copy = () => Buffer.concat([Buffer.from(`${client}|`), data.subarray(offset, offset + length)]);
    if (held) {
      if (held.length < HOLD_PER_DST) held.push(copy());
      else this.#drop['catalog-pending'].inc();
      return true;
    }
    const pending = this.#opts.lookup.ensure({ kind: 'ip', ip: normalizeIp(hostOf(dst)) });
    if (!pending) return false;
    this.#pending.set(dst, [copy()]);
    void pending.then(() => {
      const queued = this.#pending.get(dst) ?? [];
      this.#pending.delete(dst);
      for (const item of queued) {
        const bar = item.indexOf(0x7c); // '|': client text, then the payload
        const sent = this.#forwardHeld(
          item,
          bar + 1,
          item.length - bar - 1,
          item.toString('latin1', 0, bar),
          dst,
        );
        if (sent) this.#outJs++;
      }
    });
    return true;
  }

  #forwardHeld(data: Buffer, offset: number, length: number, client: string, dst: string): boolean {
    // The answer is in the store now (or the gateway could not say): no second wait.
    const route = this.#routes()?.resolve(dst);
    if (!route) {
      const found = this.#flows.lookup(client, dst, passthrough(dst));
      if (found.kind === 'no-endpoint') return false;
      if (found.kind === 'new' && !this.#openFlow(found.flow, undefined)) return false;
      return this.#engine.send((found.flow.value as Upstream).fd, data, offset, length) === 0;
    }
    return this.#forward(data, offset, length, client, dst);
  }
}

/** A destination that is no service: forwarded to itself, as if it had not been captured. */
function passthrough(dst: string): Route {
  // Only `has` is read (flows.ts); no Set per datagram.
  const ready = { has: (id: string) => id === dst } as ReadonlySet<string>;
  return { ready, pick: () => dst };
}
