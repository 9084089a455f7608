/**
 * The UDP addon (sidecar/native/udp.c) as the UDP proxy sees it: transparent listeners whose
 * datagrams of new flows arrive in batches with their original destination, connected
 * upstream sockets per flow, and reply sockets bound to an original destination. Datagrams of
 * known flows, both ways, are forwarded by the addon's thread without entering JavaScript; JS
 * is told which flows were active and reads the counts with stats().
 *
 * Flows to endpoints on other nodes: JS opens the flow's DGRAM connection to the gateway and
 * hands it over once answered (gatewayFlow); from then the addon carries it as framed TCP.
 * An older build without gatewayFlow leaves those flows to JS (gateway-flow.ts).
 *
 * Sockets are fds (small ints, unique while open): the proxy's ids for flows' upstreams. The
 * kernel gives a closed number to the next socket, so a report about a closed flow must not
 * reach the flow that got its number: the addon drops the ones stale on arrival (udp.c
 * "Generations"), UdpEngine those a close makes stale while their batch is handled.
 */
import { createRequire } from 'node:module';

/**
 * Record kinds in a batch (udp.c REC_*), 6 array slots each: kind, fd, a, b, src, dst.
 * REC_DROPPED is no kind of the addon's: a report UdpEngine struck out of the batch being
 * handled because its flow was closed meanwhile (dropReportsOf).
 */
export const REC_DROPPED = 0;
export const REC_DATAGRAM = 1;
export const REC_ACTIVE = 2;
export const REC_ERROR = 3;
/** A gateway flow's connection ended (errno 0), broke (errno) or sent a bad frame (EPROTO). */
export const REC_CLOSED = 4;
export const RECORD_SLOTS = 6;

/**
 * The batch callback: payloads in `data`; per record kind, fd, (offset|errno), length, src,
 * dst. For REC_ACTIVE/ERROR/CLOSED the 4th slot is the flow's generation (udp.c
 * "Generations"): the addon has already dropped the reports of flows gone from their fd.
 */
export type OnBatch = (data: Buffer, records: (number | string | undefined)[]) => void;

type Engine = object;
export interface UdpAddon {
  create(onBatch: OnBatch): Engine;
  listen(engine: Engine, family: 4 | 6, port: number): number;
  replySocket(engine: Engine, addr: string): number;
  upstream(engine: Engine, endpoint: string, replyFd: number, client: string, dst: string): number;
  /**
   * Takes over a flow's connection to the gateway after its OK (the addon keeps a dup of
   * `tcpFd`): writes `held` (framed datagrams), sends the replies framed in `rest` to
   * `client` from `replyFd`, then carries the flow; returns the fd that is the flow's.
   * Absent in builds from before it (the proxy then carries those flows in JS).
   */
  gatewayFlow?(
    engine: Engine,
    tcpFd: number,
    replyFd: number,
    client: string,
    dst: string,
    held: Buffer,
    rest: Buffer,
  ): number;
  retarget(engine: Engine, fd: number, endpoint: string): void;
  /** 0, or the errno of the failed send. */
  send(engine: Engine, fd: number, data: Buffer, offset: number, length: number): number;
  /** A reply of a flow JS carries (gateway flows), sent from the reply socket to `client`: 0 or errno. */
  sendTo(
    engine: Engine,
    replyFd: number,
    client: string,
    data: Buffer,
    offset: number,
    length: number,
  ): number;
  close(engine: Engine, fd: number): void;
  /**
   * Datagrams the addon's thread sent itself (known flows), replies it forwarded, its failed
   * sends; then (builds with gatewayFlow) gateway flows' datagrams dropped because the
   * connection was full, and because it had ended; then (builds with generations) reports
   * dropped because their flow had left the fd (udp.c "Generations").
   */
  stats(engine: Engine): [number, number, number, number?, number?, number?];
  stop(engine: Engine): void;
}

let addon: UdpAddon | Error | undefined;

/** The compiled addon, or why it is not available (not built: no C compiler at install). */
export function loadUdpAddon(): UdpAddon | Error {
  if (addon === undefined) {
    try {
      // EDGEMESH_UDP_ADDON: a test hook for another build, e.g. build/udp-sanitized.node.
      const path = process.env.EDGEMESH_UDP_ADDON || '../../native/build/udp.node';
      addon = createRequire(import.meta.url)(path) as UdpAddon;
    } catch (err) {
      addon = new Error(
        `native UDP path not available (sidecar/native/build.sh builds it): ${(err as Error).message}`,
      );
    }
  }
  return addon;
}

/** errno values the proxy acts on (Linux). */
export const ERRNO = {
  EAGAIN: 11,
  EPIPE: 32,
  EPROTO: 71,
  ECONNREFUSED: 111,
  EAFNOSUPPORT: 97,
  EADDRNOTAVAIL: 99,
} as const;

/** The errno of an addon call's thrown error (its code is "errno N"), or undefined. */
export function errnoOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown }).code;
  const m = typeof code === 'string' ? /^errno (\d+)$/.exec(code) : null;
  return m ? Number(m[1]) : undefined;
}

export interface EngineStats {
  out: number;
  replies: number;
  failed: number;
  /** Gateway flows' datagrams dropped on the addon's thread: connection full / ended. */
  gatewayFull: number;
  gatewayDown: number;
  /** Reports of flows that had left their fd by the time they reached JS, dropped. */
  staleReports: number;
}

/**
 * Strikes out (kind REC_DROPPED) the reports about `fd` in a batch: its flow was closed while
 * the batch was being handled, so the reports still ahead of the handler are about a flow
 * that is gone, and a flow opened next in the same batch may get the same fd number (the
 * kernel reuses the lowest free one). Reports already handled are past: changing them is
 * harmless. Datagrams of new flows carry the listener's fd and are kept.
 */
export function dropReportsOf(records: (number | string | undefined)[], fd: number): void {
  for (let i = 0; i < records.length; i += RECORD_SLOTS) {
    const kind = records[i];
    if (records[i + 1] === fd && (kind === REC_ACTIVE || kind === REC_ERROR || kind === REC_CLOSED))
      records[i] = REC_DROPPED;
  }
}

/** One engine: its thread and sockets. */
export class UdpEngine {
  readonly #addon: UdpAddon;
  readonly #engine: Engine;
  #stopped = false;
  /** The batch the handler is in, while it is: close() strikes out its reports of the fd. */
  #handling: (number | string | undefined)[] | undefined;

  constructor(onBatch: OnBatch, loaded: UdpAddon | Error = loadUdpAddon()) {
    if (loaded instanceof Error) throw loaded;
    this.#addon = loaded;
    // The addon drops the reports that were stale when the batch arrived (udp.c
    // "Generations"); the ones that become stale while it is handled are dropped in close().
    this.#engine = loaded.create((data, records) => {
      this.#handling = records;
      try {
        onBatch(data, records);
      } finally {
        this.#handling = undefined;
      }
    });
  }

  listen(family: 4 | 6, port: number): number {
    return this.#addon.listen(this.#engine, family, port);
  }
  replySocket(addr: string): number {
    return this.#addon.replySocket(this.#engine, addr);
  }
  /** The flow's upstream socket; the addon sends the flow's later datagrams on it itself. */
  upstream(endpoint: string, replyFd: number, client: string, dst: string): number {
    return this.#addon.upstream(this.#engine, endpoint, replyFd, client, dst);
  }
  /** Whether this build carries gateway flows itself (gatewayFlow). */
  get carriesGatewayFlows(): boolean {
    return typeof this.#addon.gatewayFlow === 'function';
  }
  gatewayFlow(
    tcpFd: number,
    replyFd: number,
    client: string,
    dst: string,
    held: Buffer,
    rest: Buffer,
  ): number {
    const adopt = this.#addon.gatewayFlow;
    if (!adopt)
      throw new Error('this build of the UDP addon cannot carry gateway flows (rebuild sidecar/native)');
    return adopt.call(this.#addon, this.#engine, tcpFd, replyFd, client, dst, held, rest);
  }
  retarget(fd: number, endpoint: string): void {
    this.#addon.retarget(this.#engine, fd, endpoint);
  }
  send(fd: number, data: Buffer, offset: number, length: number): number {
    return this.#addon.send(this.#engine, fd, data, offset, length);
  }
  sendTo(replyFd: number, client: string, data: Buffer, offset: number, length: number): number {
    return this.#addon.sendTo(this.#engine, replyFd, client, data, offset, length);
  }
  close(fd: number): void {
    if (this.#handling) dropReportsOf(this.#handling, fd);
    if (!this.#stopped) this.#addon.close(this.#engine, fd);
  }
  stats(): EngineStats {
    if (this.#stopped) return this.#last;
    const [out, replies, failed, gatewayFull = 0, gatewayDown = 0, staleReports = 0] = this.#addon.stats(
      this.#engine,
    );
    this.#last = { out, replies, failed, gatewayFull, gatewayDown, staleReports };
    return this.#last;
  }
  #last: EngineStats = { out: 0, replies: 0, failed: 0, gatewayFull: 0, gatewayDown: 0, staleReports: 0 };
  stop(): void {
    if (this.#stopped) return;
    this.stats();
    this.#stopped = true;
    this.#addon.stop(this.#engine);
  }
}
