/**
 * The UDP path's datagram channel (docs/udp.md *Datagrams without head-of-line blocking*): a
 * second SCTP data channel beside the session's reliable one, unordered and never
 * retransmitted, carrying each datagram of a datagram stream as one sealed message
 * (dgram-seal.ts). A lost datagram is lost, as UDP's would be; the ones after it are delivered
 * at once instead of waiting behind its retransmission as on the byte stream.
 *
 * Binding: the keys come from the TLS exporter of the session the gateways' node certificates
 * proved (on the reliable channel), so a message opens only if it was sealed by that peer for
 * this session and this direction. Whoever relayed the ICE/SDP signalling (and so could sit in
 * the DTLS under both channels) can drop datagrams, never inject, alter, move them to another
 * flow or replay them (ReplayWindow).
 *
 * Offered in the signalling: an offer carries `dgramChannel: 1` (DGRAM_CHANNEL_SIGNAL), an
 * answerer that knows it says the same in its answer, and only then does the offerer open the
 * channel (an older answerer would run TLS on any channel it is given). Without it, or while
 * the channel is not open, datagram streams stay framed on the stream (OPEN_DATAGRAM) as on
 * TCP and relay paths.
 *
 * Bundles: both ends also say `dgramBundle: 1` (DGRAM_BUNDLE_SIGNAL); to a peer that did, the
 * datagrams of one event-loop turn go as one sealed message (dgram-seal.ts sealBundle; one
 * cipher, one SCTP message, one DTLS record per turn instead of per datagram: those were most
 * of a gateway's CPU per datagram on this path). Every end opens both versions; an older peer
 * never says it, and gets one message per datagram as before.
 *
 * Ports: the channel seals and opens; a MessagePort carries its messages. On the UDP path the
 * first port is the SCTP channel; a datagram lane (dgram-lane.ts, a plain UDP socket pair) can
 * be preferred over it (`prefer`), or be the only port on a session of another path. Messages
 * go on the preferred port while it is open, else on the first; what arrives on either opens
 * with the same keys, sequence numbers and replay window.
 */
import type { TLSSocket } from 'node:tls';
import type { TlsRole } from '../../lib/tunnel/control.ts';
import type { MuxSession } from '../../lib/tunnel/mux.ts';
import {
  BUNDLE_MAX_RECORDS_BYTES,
  BUNDLE_VERSION,
  type DirectionKey,
  type EpochKeys,
  EXPORTER_BYTES,
  EXPORTER_LABEL,
  eachRecord,
  epochOf,
  openBundle,
  openDatagram,
  RECORD_HEADER_BYTES,
  ReplayWindow,
  sealBundle,
  sealDatagram,
  splitExported,
} from './dgram-seal.ts';

export const DGRAM_CHANNEL_LABEL = 'edgemesh-dgram';
/** SCTP partial reliability: no retransmission, no ordering (RFC 8831 §6.1, RFC 3758). */
export const DGRAM_CHANNEL_INIT = { unordered: true, maxRetransmits: 0 } as const;
/** The signal data field that offers (and in an answer, accepts) the channel. */
export const DGRAM_CHANNEL_SIGNAL = 'dgramChannel';
/** The signal data field that says this end opens bundles (and so may be sent them). */
export const DGRAM_BUNDLE_SIGNAL = 'dgramBundle';
/**
 * Messages waiting in the SCTP layer beyond this are dropped, not queued: a datagram late by
 * a queue is worse than one lost (the reliable channel's high-water mark is 1 MiB).
 */
const MAX_BUFFERED = 256 * 1024;

/** What the channel needs of a node-datachannel DataChannel (a fake one in tests). */
export interface MessagePort {
  sendMessageBinary(buffer: Buffer): boolean;
  bufferedAmount(): number;
  isOpen(): boolean;
  onMessage(cb: (msg: string | Buffer | ArrayBuffer) => void): void;
  onClosed(cb: () => void): void;
  close(): void;
  /** Largest bundle of records this port takes in one message (default BUNDLE_MAX_RECORDS_BYTES). */
  readonly maxBundle?: number;
  /** A port that limits its own rate (the lane's congestion window, lane-window.ts). */
  readonly congestion?: PortCongestion;
}

/** What the channel tells a congestion-controlled port, and asks of it. */
export interface PortCongestion {
  /** Whether one more message may go out now; false: the datagram is dropped (`full`). */
  admit(): boolean;
  /** A sealed message with this sequence number went out on the port. */
  sent(seq: number): void;
  /** A message that came in on the port opened (authentic, not a replay) with this number. */
  opened(seq: number): void;
}

/** TLSSocket.exportKeyingMaterial of the session the channel is bound to. */
export type KeyExporter = (length: number, label: string, context: Buffer) => Buffer;

export type DropReason =
  | 'full'
  | 'closed'
  | 'short'
  | 'version'
  | 'stream'
  | 'too-long'
  | 'auth'
  | 'no-key'
  | 'replay'
  | 'text'
  | 'bundle';

export class DatagramChannel {
  readonly #port: MessagePort;
  /** Used instead of #port while open (prefer): the datagram lane. */
  #preferred: MessagePort | undefined;
  readonly #exporter: KeyExporter;
  readonly #role: TlsRole;
  /** Epoch keys derived so far: the current ones and their neighbours (#keys trims). */
  readonly #epochs = new Map<number, EpochKeys>();
  readonly #replay = new ReplayWindow();
  #sendSeq = 0;
  #highestReceived = 0;
  #closed = false;
  /** The peer opens bundles: this turn's datagrams wait in #pending (records) for one message. */
  readonly #bundle: boolean;
  /** One buffer per channel, reused: sealing copies the records out. */
  readonly #pending: Buffer | undefined;
  #pendingBytes = 0;
  #pendingCount = 0;
  #flushScheduled = false;
  /** Each datagram that opened: its stream (the session's numbering) and payload. */
  onDatagram: ((stream: number, payload: Buffer) => void) | undefined;
  /** sent and received count datagrams; bundles, the messages that carried several. */
  readonly counters = {
    sent: 0,
    received: 0,
    bundles: 0,
    dropped: {} as Partial<Record<DropReason, number>>,
  };

  constructor(port: MessagePort, exporter: KeyExporter, role: TlsRole, opts: { bundle?: boolean } = {}) {
    this.#port = port;
    this.#exporter = exporter;
    this.#role = role;
    this.#bundle = opts.bundle === true;
    if (this.#bundle) this.#pending = Buffer.allocUnsafe(BUNDLE_MAX_RECORDS_BYTES);
    port.onMessage((msg) => this.#receive(msg, port));
    port.onClosed(() => {
      this.#closed = true;
    });
  }

  /** Whether datagrams can go on the channel now (else the mux frames them on the stream). */
  get open(): boolean {
    return !this.#closed && (this.#preferred?.isOpen() === true || this.#port.isOpen());
  }

  /**
   * Sends on `port` instead of the first one while it is open (a datagram lane); what arrives
   * on it is opened as what arrives on the first. Once per channel; closed with it.
   */
  prefer(port: MessagePort): void {
    if (this.#preferred || this.#closed) return;
    this.#preferred = port;
    port.onMessage((msg) => this.#receive(msg, port));
  }

  /** The port a message goes on now. */
  #out(): MessagePort {
    const p = this.#preferred;
    return p?.isOpen() ? p : this.#port;
  }

  /** Past the port's buffered bound, or its congestion window (a lane) admits no more. */
  #full(port: MessagePort): boolean {
    return port.bufferedAmount() > MAX_BUFFERED || port.congestion?.admit() === false;
  }

  /** Bundle bytes the port now in use takes in one message. */
  #bundleLimit(): number {
    return Math.min(BUNDLE_MAX_RECORDS_BYTES, this.#out().maxBundle ?? BUNDLE_MAX_RECORDS_BYTES);
  }

  /**
   * Seals and sends one datagram of `stream` (to a bundling peer: adds it to this turn's
   * bundle, sent when full or on the next turn); false when it was dropped (counted). The
   * buffered bound is checked once per message, for a bundle when it starts.
   */
  send(stream: number, payload: Uint8Array): boolean {
    if (!this.open) return this.#drop('closed');
    if (this.#bundle && RECORD_HEADER_BYTES + payload.length <= this.#bundleLimit())
      return this.#add(stream, payload);
    const port = this.#out();
    if (this.#full(port)) return this.#drop('full');
    const seq = this.#sendSeq++;
    const sealed = sealDatagram(this.#keys(epochOf(seq)).send, stream, seq, payload);
    try {
      port.sendMessageBinary(sealed);
    } catch {
      return this.#drop('closed'); // closed under us: libdatachannel throws
    }
    port.congestion?.sent(seq);
    this.counters.sent++;
    return true;
  }

  #add(stream: number, payload: Uint8Array): boolean {
    const size = RECORD_HEADER_BYTES + payload.length;
    if (this.#pendingBytes + size > this.#bundleLimit()) this.#flush();
    if (this.#pendingCount === 0) {
      if (this.#full(this.#out())) return this.#drop('full');
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        setImmediate(this.#flushSoon);
      }
    }
    const buf = this.#pending as Buffer; // made with #bundle, which #add needs
    const at = this.#pendingBytes;
    buf.writeUInt32BE(stream, at);
    buf.writeUInt16BE(payload.length, at + 4);
    buf.set(payload, at + RECORD_HEADER_BYTES);
    this.#pendingBytes += size;
    this.#pendingCount++;
    return true;
  }

  readonly #flushSoon = (): void => {
    this.#flushScheduled = false;
    this.#flush();
  };

  /** Sends the pending bundle; its datagrams count as sent, or as dropped when the channel closed since. */
  #flush(): void {
    const n = this.#pendingCount;
    if (n === 0 || !this.#pending) return;
    const records = this.#pending.subarray(0, this.#pendingBytes);
    this.#pendingCount = 0;
    this.#pendingBytes = 0;
    if (!this.open) {
      this.counters.dropped.closed = (this.counters.dropped.closed ?? 0) + n;
      return;
    }
    const seq = this.#sendSeq++;
    const port = this.#out();
    try {
      port.sendMessageBinary(sealBundle(this.#keys(epochOf(seq)).send, seq, records));
    } catch {
      this.counters.dropped.closed = (this.counters.dropped.closed ?? 0) + n;
      return;
    }
    port.congestion?.sent(seq);
    this.counters.sent += n;
    this.counters.bundles++;
  }

  close(): void {
    if (this.open) this.#flush();
    this.#closed = true;
    for (const port of [this.#port, this.#preferred]) {
      try {
        port?.close();
      } catch {
        // already closed
      }
    }
  }

  #receive(msg: string | Buffer | ArrayBuffer, port: MessagePort): void {
    if (typeof msg === 'string') {
      this.#drop('text');
      return;
    }
    const bytes = Buffer.isBuffer(msg) ? msg : Buffer.from(msg);
    if (bytes[0] === BUNDLE_VERSION) {
      this.#receiveBundle(bytes, port);
      return;
    }
    const opened = openDatagram(this.#receiveKey, bytes);
    if (!this.#admit(opened)) return;
    port.congestion?.opened(opened.seq);
    this.counters.received++;
    this.onDatagram?.(opened.stream, opened.payload);
  }

  /** A sealed message that opened and is not a replay (else counted as dropped, with why). */
  #admit<T extends { ok: true; seq: number }>(opened: T | { ok: false; reason: DropReason }): opened is T {
    if (!opened.ok) {
      this.#drop(opened.reason);
      return false;
    }
    if (!this.#replay.accept(opened.seq)) {
      this.#drop('replay');
      return false;
    }
    if (opened.seq > this.#highestReceived) this.#highestReceived = opened.seq;
    return true;
  }

  #receiveBundle(bytes: Buffer, port: MessagePort): void {
    const opened = openBundle(this.#receiveKey, bytes);
    if (!this.#admit(opened)) return;
    port.congestion?.opened(opened.seq);
    const whole = eachRecord(opened.records, (stream, payload) => {
      this.counters.received++;
      this.onDatagram?.(stream, payload);
    });
    if (!whole) this.#drop('bundle');
  }

  /** The receive key of an epoch next to the newest one received; none for any other. */
  readonly #receiveKey = (epoch: number): DirectionKey | undefined => {
    const current = epochOf(this.#highestReceived);
    if (epoch < current - 1 || epoch > current + 1) return undefined;
    return this.#keys(epoch).receive;
  };

  #keys(epoch: number): EpochKeys {
    let keys = this.#epochs.get(epoch);
    if (!keys) {
      const context = Buffer.alloc(4);
      context.writeUInt32BE(epoch);
      keys = splitExported(this.#exporter(EXPORTER_BYTES, EXPORTER_LABEL, context), this.#role);
      this.#epochs.set(epoch, keys);
      // Keep the send epoch and the receive epochs near the newest: old ones are never used.
      const keep = new Set([epochOf(this.#sendSeq), epochOf(this.#highestReceived)]);
      for (const e of this.#epochs.keys()) {
        if (![...keep].some((k) => Math.abs(k - e) <= 1)) this.#epochs.delete(e);
      }
    }
    return keys;
  }

  #drop(reason: DropReason): false {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
    return false;
  }
}

/**
 * Sessions' datagram channels (counters for `edgemesh status` and tests; the mux holds its
 * own, handed over by attachDatagramChannel).
 */
const channels = new WeakMap<object, DatagramChannel>();

/**
 * A channel on `port`, keyed by the exporter of the session's TLS socket, bound to `session`:
 * the mux (lib/tunnel/mux.ts, bindDatagramChannel) sends its datagram streams' datagrams on it
 * once both ends announced it, and hands what arrives on it to the open datagram stream with
 * that id. Closed with the session. The UDP path binds its SCTP channel, lanes.ts a lane.
 */
export function attachDatagramChannel(
  session: Pick<MuxSession, 'bindDatagramChannel' | 'role' | 'once'>,
  tls: TLSSocket,
  port: MessagePort,
  opts: { bundle: boolean },
): DatagramChannel {
  const channel = new DatagramChannel(
    port,
    (n, label, ctx) => tls.exportKeyingMaterial(n, label, ctx),
    session.role,
    opts,
  );
  channels.set(session, channel);
  session.bindDatagramChannel(channel);
  session.once('close', () => channel.close());
  return channel;
}

export function datagramChannelOf(session: object): DatagramChannel | undefined {
  const ch = channels.get(session);
  return ch?.open ? ch : undefined;
}

/** The channel bound to `session`, open or not (a lane is preferred on it: lanes.ts). */
export function boundChannelOf(session: object): DatagramChannel | undefined {
  return channels.get(session);
}
