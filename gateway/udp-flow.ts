/**
 * The far end of a datagram stream (lib/tunnel/frame.ts OPEN_DATAGRAM): one UDP flow to a pod
 * endpoint on this node. A Duplex, so the tunnel's far end joins it to its stream with
 * `splice` exactly as it joins a TCP socket:
 *
 *   writable side  ← the stream's bytes: length-prefixed datagrams (DatagramDecoder), each
 *                    sent with one send() on a UDP socket connected to the endpoint
 *   readable side  → each datagram the endpoint sends back, length-prefixed (encodeDatagrams:
 *                    those read in one event-loop turn in one push)
 *
 * The socket is connected, so the kernel drops datagrams from anyone but the endpoint, and
 * replies map to their flow by socket, not by a lookup. Who may be dialled is the caller's
 * check (LocalDialer: only UDP ports of endpoints of pods on this node, as for TCP).
 *
 * Lifetime: a flow with no datagram either way for `idleMs` (30 s, the kernel's
 * nf_conntrack_udp_timeout that kube-proxy's UDP services rely on; LocalDialer gives a flow
 * its Service's edgemesh.io/udp-idle-timeout instead, udp-idle.ts, and followUdpIdle keeps
 * an open flow on that Service's current one) ends its readable side
 * (the stream's FIN tells the opener) and closes its socket; one that is still not finished
 * another `idleMs` later is destroyed. The opener ending its side (FIN) ends the flow at
 * once: nothing more will be sent and the opener reads no more replies. Expiry runs on one
 * coarse sweep for all flows (FlowSweeper), never a timer per flow. Replies the stream cannot
 * take are dropped and counted, not queued (UDP's semantics: queueing would turn loss into
 * latency): past `maxQueuedBytes` waiting, or past `maxQueuedDatagrams` accepted since a push
 * went over the readable side's high-water mark (REPLY_HIGH_WATER_BYTES) and before the
 * reader asked for more (_read, the readable side's 'drain').
 */
import dgram from 'node:dgram';
import { isIPv6 } from 'node:net';
import { Duplex } from 'node:stream';
import { EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import { DatagramDecoder, encodeDatagrams } from '../lib/tunnel/frame.ts';

export const DEFAULT_UDP_IDLE_MS = 30_000;
/** Replies waiting for the stream: a few hundred datagrams of typical size, one window's quarter. */
export const DEFAULT_MAX_QUEUED_BYTES = 256 * 1024;
/**
 * Replies accepted past the high-water mark: the byte bound alone lets ~4,000 replies of 64
 * bytes wait (a second of stale datagrams); 256 is what an unread plain UDP socket holds
 * (docs/udp.md). Counted with one increment per reply accepted, no callback per datagram.
 */
export const DEFAULT_MAX_QUEUED_DATAGRAMS = 256;
/**
 * The readable side's high-water mark, where the count above starts. Node's default (64 KiB,
 * ~1,000 small replies) would start it too late to matter; 16 KiB is ~250 replies of 64 bytes.
 * It only moves that point: replies are pushed as they arrive, whatever push() returns.
 */
export const REPLY_HIGH_WATER_BYTES = 16 * 1024;

export interface UdpFlowOptions {
  idleMs?: number;
  maxQueuedBytes?: number;
  maxQueuedDatagrams?: number;
  /** The sweep that expires idle flows (default: one shared by the process). */
  sweeper?: FlowSweeper;
}

/** Counts for /status and tests; one set per process. */
export const udpFlowCounters = {
  opened: 0,
  idleClosed: 0,
  /** Replies dropped because the stream towards the opener was full (bytes or count). */
  repliesDropped: 0,
  /** Datagrams from the opener that arrived after the flow went idle (its socket closed). */
  requestsDropped: 0,
  sendErrors: 0,
};

export class UdpFlow extends Duplex {
  readonly target: { ip: string; port: number };
  /** "ip port", as udp-idle.ts keys endpoint ports: the sweeper's index of flows by target. */
  readonly targetKey: string;
  readonly #socket: dgram.Socket;
  readonly #decoder = new DatagramDecoder();
  /** Set at the dial, and again when the Service's annotation changes (retime, udp-idle.ts). */
  #idleMs: number;
  readonly #maxQueued: number;
  readonly #maxQueuedDatagrams: number;
  /** Replies accepted since a push() returned false; undefined while the reader keeps up. */
  #waiting: number | undefined;
  readonly #sweeper: FlowSweeper;
  #lastActive: number;
  #socketOpen = true;
  #idleSince: number | undefined;
  /** Replies waiting for this turn's push (#flushReplies), and their framed size. */
  readonly #replies: Buffer[] = [];
  #repliesBytes = 0;
  /** Datagrams from the opener so far (activity is stamped once per chunk, not per datagram). */
  #sent = 0;
  /**
   * One datagram to the endpoint (one bound function per flow, not a closure per datagram).
   * No send callback: dgram defers the callback of every send that completed at once (nearly
   * all of them) to its own process.nextTick, a tick per datagram for nothing (0.2–2 µs of
   * the ~8 µs a send costs, measured). The price: a send that fails at once (ENOBUFS, EPERM
   * from a firewall) goes uncounted; the endpoint's ICMP refusal still reaches the socket's
   * 'error' through the receive side and is counted there.
   */
  readonly #sendOne = (d: Buffer): void => {
    this.#sent++;
    if (!this.#socketOpen) {
      udpFlowCounters.requestsDropped++;
      return;
    }
    this.#socket.send(d);
  };

  /** Use dialUdpFlow: the socket must be connected before the flow is handed out. */
  constructor(socket: dgram.Socket, target: { ip: string; port: number }, opts: UdpFlowOptions = {}) {
    super({ allowHalfOpen: true, readableHighWaterMark: REPLY_HIGH_WATER_BYTES });
    this.#socket = socket;
    this.target = target;
    this.targetKey = `${target.ip} ${target.port}`;
    this.#idleMs = opts.idleMs ?? DEFAULT_UDP_IDLE_MS;
    this.#maxQueued = opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    this.#maxQueuedDatagrams = opts.maxQueuedDatagrams ?? DEFAULT_MAX_QUEUED_DATAGRAMS;
    this.#sweeper = opts.sweeper ?? sharedSweeper();
    this.#lastActive = this.#sweeper.now();
    socket.on('message', (msg) => this.#reply(msg));
    // A connected UDP socket reports ICMP port unreachable as an error on a later call:
    // the endpoint is not listening (yet). UDP carries on; the next datagram may arrive.
    socket.on('error', () => {
      udpFlowCounters.sendErrors++;
    });
    this.#sweeper.add(this);
    udpFlowCounters.opened++;
  }

  #reply(msg: Buffer): void {
    this.#lastActive = this.#sweeper.now();
    if (
      this.readableLength + this.#repliesBytes + msg.length + 2 > this.#maxQueued ||
      (this.#waiting ?? 0) >= this.#maxQueuedDatagrams
    ) {
      udpFlowCounters.repliesDropped++;
      return;
    }
    if (this.#replies.length === 0) setImmediate(this.#flushReplies);
    this.#replies.push(msg);
    this.#repliesBytes += msg.length + 2;
    if (this.#waiting !== undefined) this.#waiting++;
  }

  /** This flow's idle timeout now (ms). */
  get idleMs(): number {
    return this.#idleMs;
  }

  /**
   * A new idle timeout for this open flow (its Service's edgemesh.io/udp-idle-timeout changed
   * or was removed: udp-idle.ts followUdpIdle). Read by the next sweep against the last
   * datagram as before: a flow idle longer than a shorter timeout ends then; a longer one
   * keeps a flow the old one would have ended.
   */
  retime(ms: number): void {
    if (!(ms > 0 && Number.isFinite(ms)))
      throw new RangeError(
        `udp flow to ${this.target.ip}:${this.target.port}: idle timeout must be > 0 ms, got ${ms}`,
      );
    this.#idleMs = ms;
  }

  /** Replies accepted since the readable side went over its high-water mark (undefined: it has not, or was read since). */
  get waitingDatagrams(): number | undefined {
    return this.#waiting;
  }

  /**
   * The replies read in one turn of the event loop (libuv reads a socket's queue in one go),
   * framed into one buffer and pushed once: one write towards the opener per turn, not one
   * per datagram, when the endpoint answers faster than one at a time.
   */
  readonly #flushReplies = (): void => {
    const replies = this.#replies;
    if (replies.length === 0) return;
    this.#repliesBytes = 0;
    if (this.destroyed || this.#idleSince !== undefined) {
      udpFlowCounters.repliesDropped += replies.length; // the flow ended meanwhile
      replies.length = 0;
      return;
    }
    const framed = encodeDatagrams(replies); // copies: the array is refilled next turn
    replies.length = 0;
    // Over the high-water mark (the stream towards the opener is not taking them): from here
    // each accepted reply counts, until the reader asks for more (_read).
    if (!this.push(framed)) this.#waiting ??= 0;
  };

  override _read(): void {
    // Replies are pushed as they arrive; the bounds in #reply stand in for backpressure. A
    // call here means the reader took the buffer below its high-water mark: the count restarts.
    this.#waiting = undefined;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    const before = this.#sent;
    try {
      this.#decoder.each(chunk, this.#sendOne);
    } catch (err) {
      callback(err as Error); // a length over the maximum: the stream is reset
      return;
    }
    if (this.#sent !== before) this.#lastActive = this.#sweeper.now();
    callback();
  }

  override _final(callback: (err?: Error | null) => void): void {
    // The opener ended the flow (its idle timeout, eviction, or its client went away):
    // nothing more will be sent and nobody reads later replies, so the flow ends both ways
    // now rather than holding the socket (and the opener's connection) for two idle periods.
    callback();
    if (this.#idleSince === undefined) {
      this.#flushReplies(); // replies read before the opener's end still go
      this.#idleSince = this.#sweeper.now(); // the sweep destroys it one idle period later at most
      this.#closeSocket();
      this.push(null);
    }
    this.#maybeDone();
  }

  /** @internal The sweep: `now` against the last datagram either way. */
  sweep(now: number): void {
    if (this.destroyed) return;
    if (this.#idleSince === undefined) {
      if (now - this.#lastActive < this.#idleMs) return;
      this.#flushReplies();
      this.#idleSince = now;
      udpFlowCounters.idleClosed++;
      this.#closeSocket();
      this.push(null); // FIN to the opener
      this.#maybeDone();
    } else if (now - this.#idleSince >= this.#idleMs) {
      this.destroy(); // the opener never finished its side
    }
  }

  #maybeDone(): void {
    if (this.writableFinished && this.readableEnded) this.destroy();
    else if (this.writableFinished && !this.#socketOpen) this.destroy();
  }

  #closeSocket(): void {
    if (!this.#socketOpen) return;
    this.#socketOpen = false;
    this.#socket.close();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#sweeper.delete(this);
    this.#closeSocket();
    callback(err);
  }
}

/** Creates the flow's socket, connected to the target. Rejects with UNAVAILABLE. */
export function dialUdpFlow(
  target: { ip: string; port: number },
  opts: UdpFlowOptions = {},
): Promise<UdpFlow> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(isIPv6(target.ip) ? 'udp6' : 'udp4');
    socket.once('error', (err) => {
      socket.close();
      reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, `udp ${target.ip}:${target.port}: ${err.message}`));
    });
    socket.connect(target.port, target.ip, () => {
      socket.removeAllListeners('error');
      resolve(new UdpFlow(socket, target, opts));
    });
  });
}

/**
 * One interval for every flow's idle check: a flow lives between its timeout and timeout +
 * one interval. The timer runs only while there are flows and does not keep the process up.
 */
export class FlowSweeper {
  readonly #flows = new Set<UdpFlow>();
  /**
   * The same flows by target ("ip port"): a catalog update re-reads the timeout of the flows
   * to the ports it touched (udp-idle.ts followUdpIdle), not of every flow. Kept on dial and
   * close, never on a datagram.
   */
  readonly #byTarget = new Map<string, Set<UdpFlow>>();
  readonly #intervalMs: number;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | undefined;

  constructor(intervalMs = 1_000, now: () => number = Date.now) {
    this.#intervalMs = intervalMs;
    this.#now = now;
  }

  get size(): number {
    return this.#flows.size;
  }

  /** The clock flows take their activity times from (a fake one in tests). */
  now(): number {
    return this.#now();
  }

  add(flow: UdpFlow): void {
    this.#flows.add(flow);
    const same = this.#byTarget.get(flow.targetKey);
    if (same) same.add(flow);
    else this.#byTarget.set(flow.targetKey, new Set([flow]));
    if (!this.#timer) {
      this.#timer = setInterval(() => this.sweep(), this.#intervalMs);
      this.#timer.unref();
    }
  }

  delete(flow: UdpFlow): void {
    this.#flows.delete(flow);
    const same = this.#byTarget.get(flow.targetKey);
    if (same?.delete(flow) && same.size === 0) this.#byTarget.delete(flow.targetKey);
    if (this.#flows.size === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  /** The open flows to `targetKey` ("ip port"), if any. */
  flowsTo(targetKey: string): ReadonlySet<UdpFlow> | undefined {
    return this.#byTarget.get(targetKey);
  }

  /** Runs one sweep now (the interval calls it; tests call it with a fake clock). */
  sweep(): void {
    const now = this.#now();
    for (const flow of [...this.#flows]) flow.sweep(now);
  }
}

let shared: FlowSweeper | undefined;
/** The process's sweep: flows dialled without a `sweeper` option are in it. */
export const sharedSweeper = (): FlowSweeper => {
  shared ??= new FlowSweeper();
  return shared;
};
