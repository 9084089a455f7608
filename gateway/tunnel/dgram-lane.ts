/**
 * The datagram lane (docs/udp.md *The datagram lane*): a plain UDP socket pair between two
 * gateways, beside whatever path carries their session, on which the session's datagram
 * channel (dgram-channel.ts) sends its sealed datagrams. No SCTP, no DTLS, no TCP under them:
 * one AES-GCM seal (the channel's) and one sendto per message, as WireGuard carries packets.
 *
 * Why: on the UDP path datagrams rode an SCTP association (usrsctp's congestion window and
 * the thread that runs it held them to ~1–4k messages/s on this machine), and on TCP and
 * relay paths they are framed in the byte stream behind every lost segment. A UDP Service's
 * datagrams need neither reliability nor order.
 *
 * Opening: both sides send signed probes (lane-probe.ts) to every address the other offered
 * (lanes.ts: its STUN-mapped address and its LAN addresses), every PUNCH_INTERVAL_MS for
 * PUNCH_MS, so each NAT sees its own side send first; an authenticated probe is answered,
 * and the lane is up on a side once it took a probe or an answer: the peer's address is then
 * the source of the newest authenticated one. Kept: a probe every KEEPALIVE_MS (NAT mappings
 * of unreplied UDP last ~30 s in Linux conntrack); down after DEAD_MS without one, and the
 * channel falls back to the session's own way until a probe comes through again.
 *
 * Congestion: the channel sends on the lane only what its window admits (lane-window.ts: TCP's
 * rule for unreliable messages); the receiving side acknowledges what it opened with an ACK
 * (lane-probe.ts) after every ACK_EVERY messages, or ACK_DELAY_MS after the last one.
 *
 * This socket takes datagrams from anyone: what is not a probe goes to the channel, which
 * opens only what the peer sealed for this session (the rest is counted, never answered).
 */
import type dgram from 'node:dgram';
import type { Address } from '../../lib/tunnel/control.ts';
import type { Clock } from './clock.ts';
import type { MessagePort, PortCongestion } from './dgram-channel.ts';
import {
  type AckReport,
  LANE_VERSION,
  type LaneKeys,
  openProbe,
  type ProbeDrop,
  ProbeKind,
  sealProbe,
} from './lane-probe.ts';
import { LaneWindow } from './lane-window.ts';
import type { LaneCounters, LaneState } from './status.ts';

/** Probes to every candidate this often while the lane is not up (a round: ≤ MAX_CANDIDATES packets). */
export const PUNCH_INTERVAL_MS = 100;
/** Rounds at PUNCH_INTERVAL_MS for this long; after it, KEEPALIVE_MS rounds until up or closed. */
export const PUNCH_MS = 5_000;
export const KEEPALIVE_MS = 5_000;
/** No authenticated probe for this long: the lane is down (three keepalives missed). */
export const DEAD_MS = 16_000;
/** The peer's candidates probed at most (lanes.ts offers no more). */
export const MAX_CANDIDATES = 8;
/**
 * Largest message the channel should hand the lane as one bundle: with the seal's 25 bytes and
 * IP/UDP's 28 it stays under IPv6's minimum MTU (1,280), so a bundle is never an IP fragment
 * (NATs and firewalls drop fragments). A single datagram larger than this still goes alone,
 * as large as the app sent it.
 */
export const LANE_BUNDLE_BYTES = 1_200;
/** An ACK after this many messages opened since the last one… */
export const ACK_EVERY = 16;
/** …or this long after the first one not yet acknowledged. */
export const ACK_DELAY_MS = 5;

export interface LaneOptions {
  /** Bound, owned by the lane from now on (closed with it). */
  socket: dgram.Socket;
  keys: LaneKeys;
  clock: Clock;
  /** The state changed (logs, metrics). */
  onState?(state: LaneState, peer: Address | undefined): void;
}

export class DatagramLane implements MessagePort {
  readonly maxBundle = LANE_BUNDLE_BYTES;
  readonly counters: LaneCounters = { probesSent: 0, probesTaken: 0, refused: {}, sent: 0, sendErrors: 0 };
  readonly #socket: dgram.Socket;
  readonly #keys: LaneKeys;
  readonly #clock: Clock;
  readonly #onState: LaneOptions['onState'];
  #candidates: Address[] = [];
  #peer: Address | undefined;
  #state: LaneState = 'punching';
  #counter = 0;
  #highestTaken = -1;
  #lastProof = 0;
  #punchUntil = 0;
  #timer: ReturnType<Clock['setTimeout']> | undefined;
  readonly window = new LaneWindow();
  /** What this side opened from the lane, for its ACKs: highest sequence number, count. */
  #rxHighest = 0;
  #rxCount = 0;
  #rxAcked = 0;
  #ackTimer: ReturnType<Clock['setTimeout']> | undefined;
  #onMessage: ((msg: Buffer) => void) | undefined;
  readonly #onClosed: Array<() => void> = [];

  constructor(opts: LaneOptions) {
    this.#socket = opts.socket;
    this.#keys = opts.keys;
    this.#clock = opts.clock;
    this.#onState = opts.onState;
    this.#socket.on('message', (msg, rinfo) => this.#receive(msg, rinfo));
    // Without a listener a send error would be thrown from the socket; here it is a count.
    this.#socket.on('error', () => {
      this.counters.sendErrors++;
    });
    this.#socket.on('close', () => this.close());
  }

  get state(): LaneState {
    return this.#state;
  }

  /** Where messages go now: the source of the newest authenticated probe. */
  get peer(): Address | undefined {
    return this.#peer;
  }

  get localPort(): number {
    return this.#socket.address().port;
  }

  /** The peer's offered addresses: probed from now, PUNCH_MS at the fast rate. */
  probe(candidates: readonly Address[]): void {
    if (this.#state === 'closed') return;
    for (const c of candidates) {
      if (this.#candidates.length >= MAX_CANDIDATES) break;
      if (!this.#candidates.some((k) => k.ip === c.ip && k.port === c.port)) this.#candidates.push({ ...c });
    }
    this.#punchUntil = this.#clock.now() + PUNCH_MS;
    this.#schedule(0);
  }

  // MessagePort (dgram-channel.ts): the channel's sealed messages.

  readonly congestion: PortCongestion = {
    admit: () => this.window.admit(this.#clock.now()),
    sent: (seq) => this.window.sent(seq, this.#clock.now()),
    opened: (seq) => {
      if (seq > this.#rxHighest) this.#rxHighest = seq;
      this.#rxCount++;
      if (this.#rxCount - this.#rxAcked >= ACK_EVERY) this.#ack();
      else if (this.#ackTimer === undefined)
        this.#ackTimer = this.#clock.setTimeout(() => this.#ack(), ACK_DELAY_MS);
    },
  };

  isOpen(): boolean {
    return this.#state === 'up';
  }

  sendMessageBinary(buffer: Buffer): boolean {
    const to = this.#peer;
    if (this.#state !== 'up' || !to) return false;
    this.#socket.send(buffer, to.port, to.ip);
    this.counters.sent++;
    return true;
  }

  /** Bytes the kernel has not sent yet: a UDP socket queues none unless the interface is full. */
  bufferedAmount(): number {
    try {
      return this.#socket.getSendQueueSize();
    } catch {
      return 0; // closed
    }
  }

  onMessage(cb: (msg: string | Buffer | ArrayBuffer) => void): void {
    this.#onMessage = cb;
  }

  onClosed(cb: () => void): void {
    this.#onClosed.push(cb);
  }

  close(): void {
    if (this.#state === 'closed') return;
    this.#setState('closed');
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#clock.clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    try {
      this.#socket.close();
    } catch {
      // already closed
    }
    for (const cb of this.#onClosed.splice(0)) cb();
  }

  #receive(msg: Buffer, from: dgram.RemoteInfo): void {
    if (this.#state === 'closed') return;
    if (msg.length === 0 || msg[0] !== LANE_VERSION) {
      this.#onMessage?.(msg);
      return;
    }
    const opened = openProbe(this.#keys.receive, msg);
    if (!opened.ok) {
      this.#refuse(opened.reason);
      return;
    }
    if (opened.counter <= this.#highestTaken) {
      this.#refuse('stale'); // a replay, maybe from elsewhere: never moves the lane
      return;
    }
    this.#highestTaken = opened.counter;
    this.#lastProof = this.#clock.now();
    if (opened.ack) {
      // Only the window's: an ACK does not move the lane (probes and answers do).
      this.window.onAck(opened.ack.highest, opened.ack.received, this.#lastProof);
      return;
    }
    this.counters.probesTaken++;
    this.#peer = { ip: from.address, port: from.port };
    if (this.#state !== 'up') {
      this.#setState('up');
      this.#schedule(KEEPALIVE_MS);
    }
    if (opened.kind === ProbeKind.PROBE) this.#send(ProbeKind.ANSWER, this.#peer);
  }

  #refuse(reason: ProbeDrop | 'stale'): void {
    this.counters.refused[reason] = (this.counters.refused[reason] ?? 0) + 1;
  }

  #schedule(ms: number): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = this.#clock.setTimeout(() => this.#tick(), ms);
  }

  /** One round: keepalive to the peer when up, else probes to every candidate. */
  #tick(): void {
    this.#timer = undefined;
    if (this.#state === 'closed') return;
    const now = this.#clock.now();
    if (this.#state === 'up' && now - this.#lastProof > DEAD_MS) this.#setState('down');
    if (this.#state === 'up' && this.#peer) this.#send(ProbeKind.PROBE, this.#peer);
    else for (const c of this.#candidates) this.#send(ProbeKind.PROBE, c);
    // A peer that went quiet may be back at a new address: probe the candidates too, slowly.
    if (this.#state === 'down' && this.#peer) this.#send(ProbeKind.PROBE, this.#peer);
    const fast = this.#state !== 'up' && now < this.#punchUntil;
    this.#schedule(fast ? PUNCH_INTERVAL_MS : KEEPALIVE_MS);
  }

  /** A probe or answer (counted as probes), or with `ack` an ACK; each takes the next counter. */
  #send(kind: ProbeKind, to: Address, ack?: AckReport): void {
    if (ack === undefined) this.counters.probesSent++;
    this.#socket.send(sealProbe(this.#keys.send, kind, this.#counter++, ack), to.port, to.ip);
  }

  /** Reports what this side opened from the lane (the peer's window moves on it). */
  #ack(): void {
    this.#clock.clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    const to = this.#peer;
    if (this.#state === 'closed' || !to || this.#rxCount === this.#rxAcked) return;
    this.#rxAcked = this.#rxCount;
    this.#send(ProbeKind.ACK, to, { highest: this.#rxHighest, received: this.#rxCount });
  }

  #setState(state: LaneState): void {
    if (state === this.#state) return;
    this.#state = state;
    this.#onState?.(state, this.#peer);
  }
}
