/**
 * One UDP flow whose endpoint is on another node, carried through this node's gateway:
 *
 *   app datagram ─(udp.c: not in its index, so a record to JS)─▶ proxy.ts ─▶ send()
 *     ─▶ TCP to the gateway: `EDGEMESH/1 DGRAM <node> <ip> <port>`, after `OK <path>`
 *        each datagram as `length u16 BE | payload` (lib/tunnel/frame.ts encodeDatagram)
 *   gateway ─framed replies─▶ DatagramDecoder ─▶ onReply ─▶ udp.c sendTo from ClusterIP:port
 *
 * The connection is this flow's alone (the gateway splices it to a tunnel datagram stream),
 * opened on the flow's first datagram and again on the first datagram after it broke (a
 * gateway restart, the far flow's idle FIN): the app's socket, and so its source port, is
 * not involved, so the app's flow simply continues ("no stream reset until restart").
 * Datagrams are never queued behind a slow connection: a few wait while it opens
 * (HOLD_DATAGRAMS), more are dropped and counted; a connection holding more than
 * MAX_BUFFERED_BYTES unsent, or MAX_QUEUED_DATAGRAMS accepted since its write() last returned
 * false (reset on its 'drain'), drops what comes next (UDP semantics: queueing would turn
 * loss into latency). After a failed open, datagrams within RETRY_AFTER_MS are dropped instead
 * of each trying again (a gateway that is down is not hammered by a busy flow).
 *
 * With a `carrier` (the UDP addon's gatewayFlow), the connection is handed over once the
 * gateway has answered: the addon keeps a dup of its fd, writes the app's datagrams framed
 * and deframes the replies on its own thread, and this object only keeps the fd ('carried')
 * until the addon reports the connection ended (carrierClosed) or the flow ends. JS still
 * opens every connection, so the request, its answer and the failure rules stay here.
 * Without a carrier (an addon built before gatewayFlow) JS carries the datagrams as below.
 */
import net from 'node:net';
import { formatRequest, parseReply, takeLine } from '../../../lib/gateway-protocol.ts';
import {
  DATAGRAM_HEADER_BYTES,
  DatagramDecoder,
  encodeDatagram,
  encodeDatagrams,
  FrameError,
  MAX_DATAGRAM,
} from '../../../lib/tunnel/frame.ts';

/** Datagrams held while the gateway connection opens (a request/answer burst fits). */
export const HOLD_DATAGRAMS = 16;
/** Unsent bytes on the gateway connection beyond which datagrams are dropped. */
export const MAX_BUFFERED_BYTES = 256 * 1024;
/**
 * Datagrams accepted onto a connection that is past its high-water mark (write() returned
 * false, no 'drain' since) beyond which datagrams are dropped: the byte bound alone lets
 * ~4,000 datagrams of 64 bytes wait (a second of stale RTP, game state or DNS retries). 256
 * is what an unread plain UDP socket holds (net.core.rmem_default 212,992: 256 of 64 bytes,
 * docs/udp.md), so the sidecar itself holds no more than that (the connection's kernel send
 * buffer, before the mark, is not counted). One increment per datagram accepted, no callback.
 */
export const MAX_QUEUED_DATAGRAMS = 256;
/**
 * The connection's write() high-water mark: the count above starts past it, so at Node's
 * default (64 KiB, ~1,000 datagrams of 64 bytes) the count would start too late to matter.
 * 16 KiB is ~250 small datagrams or 16 of 1,000 bytes; the kernel's send buffer is before it.
 */
export const WRITE_HIGH_WATER_BYTES = 16 * 1024;
/** errno of a carried send whose connection takes no more now (Linux). */
const EAGAIN = 11;
/** After a failed open, the next attempt waits this long (datagrams meanwhile dropped). */
export const RETRY_AFTER_MS = 250;
/** TCP connect plus the gateway's answer (it answers once the far side has its UDP socket). */
export const OPEN_TIMEOUT_MS = 5_000;

export interface GatewayAddress {
  host: string;
  port: number;
}

export type GatewayDrop = 'gateway-unavailable' | 'gateway-full';

/** The addon side of a carried connection (proxy.ts binds the flow's addresses). */
export interface GatewayCarrier {
  /** Takes the connected socket's fd over after the OK; the carried fd, or throws. */
  adopt(socketFd: number, held: Buffer, rest: Buffer): number;
  /** A datagram that reached JS while carried: framed by the addon; 0 or errno. */
  send(fd: number, payload: Buffer): number;
  close(fd: number): void;
}

export interface GatewayFlowEvents {
  /** A reply datagram from the endpoint. */
  onReply(datagram: Buffer): void;
  onDrop(reason: GatewayDrop): void;
  /**
   * A connection was opened (first, or again after it broke) or failed to open; `carrier`:
   * who carries its datagrams (the addon after a hand-over, else JS).
   */
  onOpen?(result: 'opened' | 'reopened' | 'failed', detail: string, carrier?: 'addon' | 'js'): void;
  /** The addon carries the flow on `fd` now; undefined: no longer (closed, ended). */
  onCarried?(fd: number | undefined): void;
}

type State =
  | { kind: 'idle'; failedAt?: number }
  | { kind: 'opening'; socket: net.Socket; held: Buffer[] }
  | {
      kind: 'open';
      socket: net.Socket;
      /** Datagrams accepted since write() returned false; undefined: it takes writes (drained). */
      waiting: number | undefined;
    }
  | { kind: 'carried'; fd: number }
  | { kind: 'closed' };

/** The connected socket's fd (libuv's TCP handle on Unix), or undefined where there is none. */
function fdOf(socket: net.Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

export class GatewayFlow {
  readonly #gateway: GatewayAddress;
  readonly #target: { node: string; ip: string; port: number };
  readonly #events: GatewayFlowEvents;
  readonly #carrier: GatewayCarrier | undefined;
  #state: State = { kind: 'idle' };
  #opened = 0;
  /**
   * The app's datagrams of the current addon batch (views of its buffer, a copy per batch),
   * framed into one buffer and written once when the batch's callback has returned: one
   * allocation and one write per batch instead of one per datagram (and no cork/nextTick).
   */
  #batch: Buffer[] = [];
  #batchBytes = 0;
  readonly #flush = () => this.#flushBatch();

  constructor(
    gateway: GatewayAddress,
    target: { node: string; ip: string; port: number },
    events: GatewayFlowEvents,
    carrier?: GatewayCarrier,
  ) {
    this.#gateway = gateway;
    this.#target = target;
    this.#events = events;
    this.#carrier = carrier;
  }

  /**
   * Datagrams accepted onto the connection since its write() returned false; undefined while
   * it takes writes, and when the addon carries the flow (it queues nothing of its own).
   */
  get waitingDatagrams(): number | undefined {
    return this.#state.kind === 'open' ? this.#state.waiting : undefined;
  }

  /** The carried connection's fd, if the addon carries the flow now. */
  get carriedFd(): number | undefined {
    return this.#state.kind === 'carried' ? this.#state.fd : undefined;
  }

  /**
   * The addon reports the carried connection on `fd` ended or broke: the fd is closed and the
   * flow's next datagram (which reaches JS again) opens a new connection. A report about an
   * fd this flow no longer carries is ignored.
   */
  carrierClosed(fd: number): boolean {
    if (this.#state.kind !== 'carried' || this.#state.fd !== fd) return false;
    this.#drop();
    return true;
  }

  /** The endpoint now (a re-pick): the next connection goes there; the current one ends. */
  retarget(target: { node: string; ip: string; port: number }): void {
    Object.assign(this.#target, target);
    this.#drop();
  }

  /** One datagram of the app's; false when it was dropped (counted through onDrop). */
  send(payload: Buffer): boolean {
    const s = this.#state;
    if (s.kind === 'closed') return false;
    if (s.kind === 'carried') {
      if (payload.length > MAX_DATAGRAM)
        throw new FrameError(`datagram of ${payload.length} bytes is over the ${MAX_DATAGRAM}-byte maximum`);
      const errno = (this.#carrier as GatewayCarrier).send(s.fd, payload);
      if (errno === 0) return true;
      this.#events.onDrop(errno === EAGAIN ? 'gateway-full' : 'gateway-unavailable');
      return false;
    }
    if (s.kind === 'open') {
      if (
        s.socket.writableLength + this.#batchBytes > MAX_BUFFERED_BYTES ||
        (s.waiting ?? 0) >= MAX_QUEUED_DATAGRAMS
      ) {
        this.#events.onDrop('gateway-full');
        return false;
      }
      // Refused here, as encodeDatagram would (not later in the flush, out of the caller's reach).
      if (payload.length > MAX_DATAGRAM)
        throw new FrameError(`datagram of ${payload.length} bytes is over the ${MAX_DATAGRAM}-byte maximum`);
      if (this.#batch.length === 0) queueMicrotask(this.#flush);
      this.#batch.push(payload);
      this.#batchBytes += DATAGRAM_HEADER_BYTES + payload.length;
      if (s.waiting !== undefined) s.waiting++;
      return true;
    }
    if (s.kind === 'opening') {
      if (s.held.length >= HOLD_DATAGRAMS) {
        this.#events.onDrop('gateway-unavailable');
        return false;
      }
      s.held.push(encodeDatagram(payload));
      return true;
    }
    if (s.failedAt !== undefined && Date.now() - s.failedAt < RETRY_AFTER_MS) {
      this.#events.onDrop('gateway-unavailable');
      return false;
    }
    this.#open(encodeDatagram(payload));
    return true;
  }

  #flushBatch(): void {
    const batch = this.#batch;
    if (batch.length === 0) return;
    this.#batch = [];
    this.#batchBytes = 0;
    const s = this.#state;
    // The connection went away since (retarget, close): the batch is lost like any datagram
    // sent to a connection that breaks.
    if (s.kind !== 'open') {
      for (const _ of batch) this.#events.onDrop('gateway-unavailable');
      return;
    }
    // Past the high-water mark: from here each accepted datagram counts until 'drain'.
    if (!s.socket.write(encodeDatagrams(batch))) s.waiting ??= 0;
  }

  /** Ends the flow (idle, evicted, proxy closing): the gateway ends its side at once. */
  close(): void {
    this.#drop();
    this.#state = { kind: 'closed' };
  }

  #drop(): void {
    const s = this.#state;
    if (s.kind === 'carried') {
      this.#state = { kind: 'idle' };
      (this.#carrier as GatewayCarrier).close(s.fd);
      this.#events.onCarried?.(undefined);
    } else if (s.kind === 'open' || s.kind === 'opening') {
      this.#state = { kind: 'idle' };
      s.socket.destroy();
    }
  }

  /**
   * The answered connection to the addon: true when it carries the flow now (JS's socket is
   * then destroyed: its fd closes, the addon's dup keeps the connection, nothing is sent).
   * False (JS carries on) without a carrier, without an fd, with bytes still unsent, or
   * when the addon refuses it.
   */
  #handOver(socket: net.Socket, held: Buffer[], rest: Buffer): boolean {
    const fd = fdOf(socket);
    if (!this.#carrier || fd === undefined || socket.writableLength > 0) return false;
    let carried: number;
    try {
      carried = this.#carrier.adopt(fd, Buffer.concat(held), rest);
    } catch {
      return false; // JS carries this connection: the same datagrams, slower
    }
    this.#state = { kind: 'carried', fd: carried };
    socket.removeAllListeners('data');
    socket.destroy();
    this.#events.onCarried?.(carried);
    return true;
  }

  #open(first: Buffer): void {
    const { node, ip, port } = this.#target;
    // writableHighWaterMark: a Duplex option net.Socket honours, though its types omit it.
    const options = { ...this.#gateway, writableHighWaterMark: WRITE_HIGH_WATER_BYTES };
    const socket = net.connect(options);
    socket.setNoDelay(true);
    const state: State = { kind: 'opening', socket, held: [first] };
    this.#state = state;
    // Request and held datagrams go in one write once connected: the gateway reads the
    // header line and hands the rest to the stream as early data.
    socket.write(formatRequest({ kind: 'datagram', node, ip, port }));
    const decoder = new DatagramDecoder();
    const onReply = (d: Buffer) => this.#events.onReply(d); // one per connection, not per chunk
    let header: Buffer | undefined = Buffer.alloc(0);
    const fail = (why: string) => {
      if (this.#state === state || (this.#state.kind === 'open' && this.#state.socket === socket)) {
        const wasOpen = this.#state.kind === 'open';
        this.#state = { kind: 'idle', ...(wasOpen ? {} : { failedAt: Date.now() }) };
        if (!wasOpen) {
          for (const _ of state.held) this.#events.onDrop('gateway-unavailable');
          this.#events.onOpen?.('failed', why);
        }
      }
      socket.destroy();
    };
    const timer = setTimeout(
      () => fail(`no answer from the gateway within ${OPEN_TIMEOUT_MS} ms`),
      OPEN_TIMEOUT_MS,
    );
    timer.unref();
    socket.on('data', (chunk: Buffer) => {
      if (header !== undefined) {
        header = header.length === 0 ? chunk : Buffer.concat([header, chunk]);
        let taken: ReturnType<typeof takeLine>;
        try {
          taken = takeLine(header); // throws past its header size limit
        } catch (err) {
          return fail(`bad gateway reply: ${(err as Error).message}`);
        }
        if (!taken) return;
        clearTimeout(timer);
        let reply: ReturnType<typeof parseReply>;
        try {
          reply = parseReply(taken.line);
        } catch (err) {
          return fail(`bad gateway reply: ${(err as Error).message}`);
        }
        if (!reply.ok) return fail(`gateway refused: ${reply.code} ${reply.message}`);
        header = undefined;
        if (this.#state !== state) return void socket.destroy();
        if (this.#handOver(socket, state.held, taken.rest)) {
          this.#events.onOpen?.(this.#opened++ === 0 ? 'opened' : 'reopened', reply.path, 'addon');
          return;
        }
        const open: State & { kind: 'open' } = { kind: 'open', socket, waiting: undefined };
        this.#state = open;
        // One listener per connection: the count of waiting datagrams restarts when it drains.
        socket.on('drain', () => {
          open.waiting = undefined;
        });
        if (!socket.write(Buffer.concat(state.held))) open.waiting = 0;
        this.#events.onOpen?.(this.#opened++ === 0 ? 'opened' : 'reopened', reply.path, 'js');
        chunk = taken.rest;
      }
      try {
        decoder.each(chunk, onReply);
      } catch (err) {
        return fail(`bad datagram from the gateway: ${(err as Error).message}`);
      }
    });
    // A clean end (the far flow idled out, the gateway closing) or a reset (restart): the
    // next datagram opens a new connection.
    socket.on('end', () => fail('gateway ended the flow'));
    socket.on('error', (err: NodeJS.ErrnoException) => fail(`gateway: ${err.code ?? err.message}`));
    socket.on('close', () => {
      clearTimeout(timer);
      fail('gateway connection closed');
    });
  }
}
