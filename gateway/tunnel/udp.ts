import { randomBytes } from 'node:crypto';
import { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import nodeDataChannel, { type RtcConfig } from 'node-datachannel';
import { describeError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { LogGate } from '../../lib/log-gate.ts';
import { type ToGateway, tlsRole } from '../../lib/tunnel/control.ts';
import type { MuxSession } from '../../lib/tunnel/mux.ts';
import type { Birthdays, Pin } from './birthday.ts';
import {
  attachDatagramChannel,
  DGRAM_BUNDLE_SIGNAL,
  DGRAM_CHANNEL_INIT,
  DGRAM_CHANNEL_LABEL,
  DGRAM_CHANNEL_SIGNAL,
} from './dgram-channel.ts';
import type { NatLog } from './nat-log.ts';
import type { ControlLink } from './rendezvous.ts';
import type { Sessions } from './session.ts';

/**
 * The UDP path, for NATs where TCP punching fails (routers that answer an unsolicited SYN
 * with RST): ICE (libjuice via node-datachannel) finds a UDP path using the tunnel-server's
 * STUN answer for server-reflexive candidates; SDP and candidates travel as `signal`
 * control messages. On the resulting SCTP data channel (DTLS inside) the gateways run their
 * own TLS 1.3 with node certificates, exactly as on TCP, so the peer's identity is proven
 * end to end and not by whatever relayed the signalling.
 *
 * Beside it, when both ends offer it in the signalling, a second channel for datagrams
 * (dgram-channel.ts: unordered, no retransmission, sealed with keys from that TLS session).
 *
 * Timeouts: ICE must open the channel within 8 s (checks are paced at tens of ms; 8 s
 * survives lost rounds), else the attempt is dropped. Keepalive: the mux session's PING
 * every 10 s keeps the UDP NAT mappings (30 s here) open, on top of ICE consent checks.
 */
const OPEN_TIMEOUT_MS = 8_000;
/**
 * A pinned attempt (after a birthday hit) starts with both NAT mappings open and one candidate
 * pair that works: 5 s is many rounds of checks even on a loaded node; the mappings last 30 s.
 */
const PINNED_OPEN_TIMEOUT_MS = 5_000;
/** Signals of a pinned attempt that come while its pin is awaited: a handful of candidates. */
const MAX_EARLY_SIGNALS = 16;
const BIRTHDAY_ID = /^[0-9a-f]{16}$/;
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;
const MAX_MESSAGE = 16 * 1024;
const MAX_ATTEMPTS = 32;
/**
 * Answered attempts one peer may hold at once: a peer's upgrade runs one UDP attempt at a
 * time (a few overlap across retries), so any more come from a peer filling our slots to
 * keep other peers' UDP paths out (issue 16 item 10).
 */
const MAX_ATTEMPTS_PER_PEER = 4;

/**
 * Which layer gave up when an open UDP path's peer connection goes `disconnected` or `failed`,
 * for the session's close reason and the log. libdatachannel (v0.24.5 peerconnection.cpp:
 * 179-186, 257-262, 340-345) reports `disconnected` when the SCTP association or DTLS ends
 * (libjuice never reports ICE disconnected) and `failed` when ICE or DTLS fails. (Its ICE
 * state reaches JavaScript after the connection state, so it cannot tell them apart here.)
 * The SCTP association is aborted by usrsctp after 5 retransmission timeouts in a row
 * (sctptransport.cpp:140-143, `maxRetransmitAttempts`, not settable through
 * node-datachannel 0.33.4), which a periodic loss that keeps hitting one chunk's
 * retransmissions reaches in 1-3 s (docs/tunnel.md *The UDP path under loss*); ICE fails
 * when its consent checks go unanswered for 30 s (RFC 7675, libjuice).
 */
export function pathLossReason(pcState: 'disconnected' | 'failed'): string {
  if (pcState === 'disconnected')
    return 'UDP path lost: the SCTP association (or DTLS) under the data channel ended: retransmission limit reached, or the peer closed it';
  return 'UDP path lost: ICE or DTLS failed: consent checks unanswered (the peer gone or the path dead)';
}

/** Why a peer's offer gets no attempt (slots in use: `peers`, one entry per attempt), or undefined. */
export function attemptRefusal(peers: readonly string[], peer: string): string | undefined {
  if (peers.length >= MAX_ATTEMPTS) return `all ${MAX_ATTEMPTS} UDP attempt slots are in use`;
  const own = peers.filter((p) => p === peer).length;
  if (own >= MAX_ATTEMPTS_PER_PEER)
    return `${peer} already holds ${own} UDP attempts (at most ${MAX_ATTEMPTS_PER_PEER})`;
  return undefined;
}

/**
 * The peer connection's configuration: STUN at the tunnel-server (`stun`), or, pinned, no
 * STUN (the mapping that matters is the one the birthday hit opened) and only that port.
 */
export function udpPathConfig(stun: { host: string; port: number }, pin?: Pick<Pin, 'port'>): RtcConfig {
  return {
    iceServers: pin ? [] : [`stun:${stun.host}:${stun.port}`],
    maxMessageSize: 256 * 1024,
    ...(pin ? { portRangeBegin: pin.port, portRangeEnd: pin.port } : {}),
  };
}

type PC = InstanceType<typeof nodeDataChannel.PeerConnection>;
type DC = ReturnType<PC['createDataChannel']>;

/** The peer a UDP path is for (peer.ts Peer): its name, and where its session goes. */
export interface UdpPeer {
  readonly name: string;
  add(kind: 'punched', session: MuxSession, transport: 'udp'): void;
}

export interface UdpPathsOptions {
  nodeName: string;
  log: Logger;
  sessions: Sessions;
  /** Outcomes of the attempts this end opened (the answering end does not record them). */
  nat: NatLog;
  /** Birthday punching (birthday.ts): the pin of a hard side's attempt, for its pinned offer. */
  birthdays?: () => Birthdays | undefined;
}

/** What a birthday hit gives an ICE attempt (see connectPinned). */
interface Pinning {
  pin: Pin;
  birthday: string;
  /** The remote candidate added once the remote description is set. */
  added: boolean;
}

interface Attempt {
  pc: PC;
  peer: string;
  timer: NodeJS.Timeout;
  done: Promise<MuxSession>;
  pinning?: Pinning;
  /** The datagram channel (dgram-channel.ts), once opened (offerer) or announced (answerer). */
  dgram?: DC;
  /** Binds `dgram` to the session once both exist (whichever comes second calls it). */
  bindDgram?: () => void;
  /** The peer said DGRAM_BUNDLE_SIGNAL: its channel opens bundles (dgram-channel.ts). */
  peerBundles?: boolean;
}

export class UdpPaths {
  readonly #opts: UdpPathsOptions;
  readonly #log: Logger;
  readonly #attempts = new Map<string, Attempt>();
  readonly #gate = new LogGate(10_000);
  /** Pinned offers waiting for their birthday pin: their signals, in order. */
  readonly #early = new Map<string, Extract<ToGateway, { t: 'signal' }>[]>();

  constructor(opts: UdpPathsOptions) {
    this.#opts = opts;
    this.#log = opts.log;
  }

  /** Opener: offer a data channel to `peer` through `link`; resolves once the path is up. */
  connect(link: ControlLink, peer: UdpPeer): Promise<MuxSession> {
    const id = randomBytes(8).toString('hex');
    const attempt = this.#start(id, link, peer, true);
    return attempt.done.then(
      (session) => {
        this.#opts.nat.punch(peer.name, 'udp');
        return session;
      },
      (err) => {
        this.#opts.nat.punch(peer.name, 'udp', err);
        throw err;
      },
    );
  }

  /**
   * Opener of a pinned attempt (the easy side after a birthday hit): the ICE agent binds the
   * hit's local port, whose NAT mapping towards the peer is open, and is told the peer's
   * public address as a candidate; the offer names the birthday so the peer pins its side.
   */
  connectPinned(link: ControlLink, peer: UdpPeer, pin: Pin, birthday: string): Promise<MuxSession> {
    const id = randomBytes(8).toString('hex');
    return this.#start(id, link, peer, true, { pin, birthday, added: false }).done;
  }

  /** Signalling from the peer (answerer side starts here). */
  onSignal(link: ControlLink, msg: Extract<ToGateway, { t: 'signal' }>, peer: UdpPeer): void {
    const early = this.#early.get(msg.id);
    if (early) {
      if (early.length < MAX_EARLY_SIGNALS) early.push(msg);
      return;
    }
    let attempt = this.#attempts.get(msg.id);
    if (!attempt) {
      if (msg.data.type !== 'offer') return; // stale candidate of a finished attempt
      if (msg.data.birthday !== undefined) {
        this.#pinnedOffer(link, msg, peer);
        return;
      }
      // Each attempt holds an ICE agent and sockets until its timeout: cap them, per peer too.
      const refusal = attemptRefusal(
        [...this.#attempts.values()].map((a) => a.peer),
        peer.name,
      );
      if (refusal) {
        if (this.#gate.pass().log) this.#log.warn({ peer: peer.name, reason: refusal }, 'UDP offer ignored');
        return;
      }
      attempt = this.#start(msg.id, link, peer, false, undefined, msg.data[DGRAM_CHANNEL_SIGNAL] === 1);
      attempt.peerBundles = msg.data[DGRAM_BUNDLE_SIGNAL] === 1;
      attempt.done.catch((err) =>
        this.#log.debug({ peer: peer.name, err: describeError(err) }, 'UDP answer failed'),
      );
    }
    const { data } = msg;
    try {
      if (typeof data.sdp === 'string' && (data.type === 'offer' || data.type === 'answer')) {
        attempt.pc.setRemoteDescription(data.sdp, data.type);
        if (data.type === 'answer' && data[DGRAM_CHANNEL_SIGNAL] === 1 && !attempt.dgram) {
          // The answerer takes the datagram channel: open it (an older one never says so).
          attempt.peerBundles = data[DGRAM_BUNDLE_SIGNAL] === 1;
          attempt.dgram = attempt.pc.createDataChannel(DGRAM_CHANNEL_LABEL, DGRAM_CHANNEL_INIT);
          attempt.bindDgram?.();
        }
        const pinning = attempt.pinning;
        if (pinning && !pinning.added) {
          // The peer's public address on the hit: its checks and ours cross the open mappings.
          pinning.added = true;
          const { ip, port } = pinning.pin.remote;
          attempt.pc.addRemoteCandidate(
            `a=candidate:1 1 UDP 1686052607 ${ip} ${port} typ srflx raddr 0.0.0.0 rport 0`,
            '0',
          );
        }
      } else if (typeof data.candidate === 'string' && typeof data.mid === 'string') {
        attempt.pc.addRemoteCandidate(data.candidate, data.mid);
      }
    } catch (err) {
      this.#log.debug({ err: describeError(err) }, 'bad ICE signal ignored');
    }
  }

  /** A pinned offer (the hard side after a birthday hit): waits for the pin, then answers. */
  #pinnedOffer(link: ControlLink, msg: Extract<ToGateway, { t: 'signal' }>, peer: UdpPeer): void {
    const birthday = msg.data.birthday;
    const pinned =
      typeof birthday === 'string' && BIRTHDAY_ID.test(birthday)
        ? this.#opts.birthdays?.()?.pinned(birthday)
        : undefined;
    if (!pinned) return; // not (or no longer) ours
    this.#early.set(msg.id, []);
    pinned.pin.then(
      (pin) => {
        const early = this.#early.get(msg.id) ?? [];
        this.#early.delete(msg.id);
        if (this.#attempts.has(msg.id)) return;
        const attempt = this.#start(
          msg.id,
          link,
          peer,
          false,
          { pin, birthday: birthday as string, added: false },
          msg.data[DGRAM_CHANNEL_SIGNAL] === 1,
        );
        attempt.peerBundles = msg.data[DGRAM_BUNDLE_SIGNAL] === 1;
        pinned.attach(attempt.done);
        attempt.done.catch((err) =>
          this.#log.debug({ peer: peer.name, err: describeError(err) }, 'pinned UDP answer failed'),
        );
        for (const m of [msg, ...early]) this.onSignal(link, m, peer);
      },
      () => this.#early.delete(msg.id),
    );
  }

  /**
   * `dgramOffered` (answerer): the offer asked for the datagram channel; the answer says yes.
   * An offerer always asks.
   */
  #start(
    id: string,
    link: ControlLink,
    peer: UdpPeer,
    offerer: boolean,
    pinning?: Pinning,
    dgramOffered = false,
  ): Attempt {
    const { nodeName, sessions } = this.#opts;
    const pc = new nodeDataChannel.PeerConnection(
      `${nodeName}-${id}`,
      udpPathConfig(link.address, pinning?.pin),
    );
    const signal = (data: Record<string, unknown>) => {
      const extra: Record<string, unknown> = {};
      if (pinning && offerer && data.type === 'offer') extra.birthday = pinning.birthday;
      if ((offerer && data.type === 'offer') || (dgramOffered && data.type === 'answer')) {
        extra[DGRAM_CHANNEL_SIGNAL] = 1;
        extra[DGRAM_BUNDLE_SIGNAL] = 1;
      }
      link.send({ t: 'signal', id, peer: peer.name, data: { ...data, ...extra } });
    };
    const openTimeout = pinning ? PINNED_OPEN_TIMEOUT_MS : OPEN_TIMEOUT_MS;
    pc.onLocalDescription((sdp, type) => signal({ sdp, type }));
    pc.onLocalCandidate((candidate, mid) => signal({ candidate, mid }));
    let timer: NodeJS.Timeout | undefined;
    const done = new Promise<MuxSession>((resolve, reject) => {
      timer = setTimeout(() => {
        reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, `ICE did not connect in ${openTimeout} ms`));
      }, openTimeout);
      const onChannel = (dc: DC) => {
        const open = async () => {
          clearTimeout(timer);
          try {
            const stream = new ChannelStream(dc);
            // libdatachannel reports the state before it closes the channel: the stream ends
            // with the layer that gave up as its error, not as a plain EOF.
            pc.onStateChange((state) => {
              if (state !== 'disconnected' && state !== 'failed') return;
              const reason = pathLossReason(state);
              if (this.#gate.pass().log) this.#log.info({ peer: peer.name, reason }, 'UDP path lost');
              stream.destroy(new EdgemeshError(ErrorCodes.UNAVAILABLE, reason));
            });
            const role = tlsRole(nodeName, peer.name);
            const session = await sessions.secure(stream, peer.name, role);
            session.once('close', () => pc.close());
            attempt.bindDgram = () => this.#bindDgram(attempt, session);
            attempt.bindDgram();
            peer.add('punched', session, 'udp');
            resolve(session);
          } catch (err) {
            reject(err);
          }
        };
        if (dc.isOpen()) open();
        else dc.onOpen(open);
      };
      if (offerer) onChannel(pc.createDataChannel('edgemesh'));
      else
        pc.onDataChannel((dc) => {
          if (dc.getLabel() !== DGRAM_CHANNEL_LABEL) onChannel(dc);
          else if (dgramOffered && !attempt.dgram) {
            attempt.dgram = dc;
            attempt.bindDgram?.();
          } else dc.close(); // not asked for: a second one, or the offer never said so
        });
    });
    // The channel callbacks above that read `attempt` run on later turns, after this.
    const attempt: Attempt = {
      pc,
      peer: peer.name,
      timer: timer as unknown as NodeJS.Timeout,
      done,
      pinning,
    };
    this.#attempts.set(id, attempt);
    done.then(
      () => this.#attempts.delete(id),
      () => {
        this.#attempts.delete(id);
        pc.close();
      },
    );
    return attempt;
  }

  /**
   * Binds the attempt's datagram channel to its session once both exist: its keys are that
   * TLS session's exporter, and closing the session closes it (with the peer connection).
   */
  #bindDgram(attempt: Attempt, session: MuxSession): void {
    const dc = attempt.dgram;
    if (!dc || !(session.socket instanceof TLSSocket)) return;
    attempt.bindDgram = undefined;
    attachDatagramChannel(session, session.socket, dc, { bundle: attempt.peerBundles === true });
    this.#log.debug({ peer: attempt.peer }, 'UDP path: datagram channel bound to the session');
  }

  close(): void {
    for (const a of this.#attempts.values()) {
      clearTimeout(a.timer);
      a.pc.close();
    }
    this.#attempts.clear();
  }
}

/**
 * A data channel as a byte stream with real backpressure: writes wait while more than
 * HIGH_WATER bytes are queued in the SCTP layer (node-datachannel's own stream wrapper
 * drops messages instead). Reads are bounded by the mux windows above it.
 */
export class ChannelStream extends Duplex {
  readonly #dc: DC;
  #waiting: (() => void) | undefined;

  constructor(dc: DC) {
    super({ allowHalfOpen: false });
    this.#dc = dc;
    dc.setBufferedAmountLowThreshold(LOW_WATER);
    dc.onBufferedAmountLow(() => {
      const w = this.#waiting;
      this.#waiting = undefined;
      w?.();
    });
    dc.onMessage((msg) => {
      if (typeof msg === 'string') return;
      this.push(Buffer.isBuffer(msg) ? msg : Buffer.from(msg));
    });
    dc.onClosed(() => {
      this.push(null);
      this.destroy();
    });
    dc.onError((e) => this.destroy(new EdgemeshError(ErrorCodes.UNAVAILABLE, `data channel: ${e}`)));
  }

  override _read(): void {}

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    try {
      // false only means "queued, not sent yet" (libdatachannel); errors throw.
      for (let off = 0; off < chunk.length; off += MAX_MESSAGE)
        this.#dc.sendMessageBinary(chunk.subarray(off, off + MAX_MESSAGE));
    } catch (err) {
      callback(err as Error);
      return;
    }
    if (this.#dc.bufferedAmount() > HIGH_WATER) this.#waiting = () => callback();
    else callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    try {
      this.#dc.close();
    } catch {
      // already closed
    }
    callback(err);
  }
}
