/**
 * Birthday punching, the runner (birthday-plan.ts has the why, the numbers and the pure parts):
 * a direct UDP path when exactly one of two gateways is behind a hard (symmetric) NAT.
 *
 *   opener (either side)            tunnel-server (signal, as is)            peer
 *   classify own NAT (STUN ×replicas)
 *   hello {nat, secret, addr|ip} ───────────────────────────────────────▶ classify, hello back
 *          ◀──────────────────────────────────────────────────────────── (or bye: why not)
 *   both: role = birthdayRole(own, peer's)   — skip unless exactly one is hard
 *   hard: 256 sockets → easy's addr, every 1 s      easy: ≤ 1,000 probes → hard IP:random port
 *   first packet through: the easy side sends `chosen` to it, the hard side keeps that socket
 *   both close their sockets; the ports (and the NAT mappings they opened) go to an ICE agent
 *   pinned to them (udp.ts connectPinned / the answer side), each given the other's address
 *   as a candidate: the path is then the ordinary UDP path (TLS over the data channel).
 *
 * Bounded: BIRTHDAY_DEADLINE_MS from the hellos for a hit, MAX_ATTEMPTS at once (each holds up
 * to 256 sockets), packets per attempt as packetBudget() says. State lives per attempt id and
 * goes with the attempt.
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { describeError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import {
  type Address,
  type BirthdaySignal,
  type PeerInfo,
  parseBirthdaySignal,
  type ToGateway,
} from '../../lib/tunnel/control.ts';
import type { MuxSession } from '../../lib/tunnel/mux.ts';
import {
  ACK_REPEATS,
  BIRTHDAY_DEADLINE_MS,
  type BirthdayRole,
  birthdayRole,
  encodePacket,
  HARD_SOCKETS,
  hardRoundAt,
  MAX_PROBES,
  PacketKind,
  parsePacket,
  probeAt,
  probePorts,
} from './birthday-plan.ts';
import type { NatClassifier, NatClassResult } from './nat-type.ts';
import type { ControlLink } from './rendezvous.ts';
import { stunMapped } from './stun-client.ts';

/** The peer's hello must come within 3 s (an older gateway never answers: it ignores the signal). */
export const HELLO_TIMEOUT_MS = 3_000;
/** Attempts at once, both roles: each holds up to HARD_SOCKETS sockets for ≤ 5 s. */
export const MAX_BIRTHDAYS = 4;
/**
 * The hard side waits this long for the easy side's pinned ICE offer and the path on it, once it
 * has its socket (the offer crosses two TLS control sessions; ICE then needs a few rounds).
 */
export const PIN_WAIT_MS = 6_000;
/** Probes go out in batches every 15 ms (timers finer than that are not kept under load). */
const TICK_MS = 15;

/** A hit: this end's local port and the far end's public address, for the ICE agent. */
export interface Pin {
  port: number;
  remote: Address;
}

export interface BirthdayPeer {
  readonly name: string;
  /** The peer's registration as the tunnel-server told it (its public address: `observed`). */
  readonly info?: PeerInfo | undefined;
}

/** What the runner needs of the UDP path (udp.ts UdpPaths). */
export interface PinnedUdp {
  connectPinned(link: ControlLink, peer: BirthdayPeer, pin: Pin, birthday: string): Promise<MuxSession>;
}

export interface BirthdayCounters {
  /** One per attempt that ran or was skipped: role easy|hard|none, result, with which peer. */
  attempt(
    role: BirthdayRole | 'none',
    result: 'connected' | 'no-hit' | 'skipped' | 'failed',
    peer: string,
  ): void;
  packets(role: BirthdayRole, n: number): void;
}

export interface BirthdaysOptions {
  log: Logger;
  classifier: NatClassifier;
  /** The STUN servers to classify against: every tunnel-server replica that is up. */
  stunServers(): Address[];
  udp: PinnedUdp;
  counters: BirthdayCounters;
  random?: () => number;
}

interface Attempt {
  id: string;
  peer: string;
  secret: Buffer;
  opener: boolean;
  /** Easy side: the probe socket and the address the server saw it as. */
  easy?: { socket: dgram.Socket; mapped: Address };
  sockets: dgram.Socket[];
  timers: NodeJS.Timeout[];
  /** Opener: the peer's hello. */
  hello?: (msg: Extract<BirthdaySignal, { step: 'hello' }> | Error) => void;
  pin: Promise<Pin>;
  setPin(pin: Pin): void;
  failPin(err: Error): void;
  /** Answer side of ICE (hard side): its session, for the opener's promise. */
  session?: (done: Promise<MuxSession>) => void;
  closed: boolean;
}

export class Birthdays {
  readonly #opts: BirthdaysOptions;
  readonly #attempts = new Map<string, Attempt>();

  constructor(opts: BirthdaysOptions) {
    this.#opts = opts;
  }

  /** Opener: try a birthday punch with `peer` through `link`; resolves with the path's session. */
  async start(link: ControlLink, peer: BirthdayPeer): Promise<MuxSession> {
    const { log, counters } = this.#opts;
    if (this.#running() >= MAX_BIRTHDAYS)
      throw new EdgemeshError(ErrorCodes.UNAVAILABLE, `birthday punch: ${MAX_BIRTHDAYS} attempts running`);
    const a = this.#attempt(randomBytes(8).toString('hex'), peer.name, randomBytes(16), true);
    try {
      const hello = await this.#hello(link, a);
      const peerHello = await new Promise<Extract<BirthdaySignal, { step: 'hello' }>>((resolve, reject) => {
        a.hello = (m) => (m instanceof Error ? reject(m) : resolve(m));
        a.timers.push(
          setTimeout(
            () =>
              reject(
                new EdgemeshError(ErrorCodes.UNAVAILABLE, `no birthday hello in ${HELLO_TIMEOUT_MS} ms`),
              ),
            HELLO_TIMEOUT_MS,
          ),
        );
      });
      const role = birthdayRole(hello.nat, peerHello.nat);
      if (typeof role !== 'string') {
        counters.attempt('none', 'skipped', peer.name);
        log.info(
          { peer: peer.name, own: hello.nat, theirs: peerHello.nat, reason: role.skip },
          'birthday punch skipped',
        );
        throw new EdgemeshError(ErrorCodes.UNAVAILABLE, `birthday punch skipped: ${role.skip}`);
      }
      return await this.#run(link, a, role, peerHello, peer);
    } finally {
      this.#end(a);
    }
  }

  /** A birthday signal from `peer` (either end). Invalid ones are dropped. */
  onSignal(link: ControlLink, msg: Extract<ToGateway, { t: 'signal' }>, peer: BirthdayPeer): void {
    let data: BirthdaySignal;
    try {
      data = parseBirthdaySignal(msg.data);
    } catch (err) {
      this.#opts.log.debug({ peer: peer.name, err: describeError(err) }, 'bad birthday signal dropped');
      return;
    }
    const a = this.#attempts.get(msg.id);
    if (a) {
      if (a.peer !== peer.name) return;
      if (data.step === 'bye') a.hello?.(new EdgemeshError(ErrorCodes.UNAVAILABLE, `peer: ${data.reason}`));
      else a.hello?.(data);
      return;
    }
    if (data.step !== 'hello') return;
    this.#answer(link, msg.id, peer, data).catch((err) =>
      this.#opts.log.debug({ peer: peer.name, err: describeError(err) }, 'birthday answer ended'),
    );
  }

  /**
   * The hard side of attempt `id` as the ICE answerer: its pin once the easy side's `chosen`
   * came (undefined for an unknown attempt), and where the session goes.
   */
  pinned(id: string): { pin: Promise<Pin>; attach(done: Promise<MuxSession>): void } | undefined {
    const a = this.#attempts.get(id);
    if (!a) return undefined;
    return { pin: a.pin, attach: (done) => a.session?.(done) };
  }

  close(): void {
    for (const a of this.#attempts.values()) this.#end(a);
  }

  /** Attempts not yet ended (ended ones stay findable a while for a late pinned offer). */
  #running(): number {
    let n = 0;
    for (const a of this.#attempts.values()) if (!a.closed) n++;
    return n;
  }

  async #answer(
    link: ControlLink,
    id: string,
    peer: BirthdayPeer,
    theirs: Extract<BirthdaySignal, { step: 'hello' }>,
  ): Promise<void> {
    if (this.#running() >= MAX_BIRTHDAYS) {
      link.send({
        t: 'signal',
        id,
        peer: peer.name,
        data: { type: 'birthday', step: 'bye', reason: 'busy' },
      });
      return;
    }
    const a = this.#attempt(id, peer.name, Buffer.from(theirs.secret, 'hex'), false);
    try {
      const hello = await this.#hello(link, a);
      const role = birthdayRole(hello.nat, theirs.nat);
      if (typeof role !== 'string') return; // the opener logs and counts it
      await this.#run(link, a, role, theirs, peer);
    } finally {
      this.#end(a);
    }
  }

  #attempt(id: string, peer: string, secret: Buffer, opener: boolean): Attempt {
    let setPin: (p: Pin) => void = () => undefined;
    let failPin: (e: Error) => void = () => undefined;
    const pin = new Promise<Pin>((resolve, reject) => {
      setPin = resolve;
      failPin = reject;
    });
    pin.catch(() => undefined);
    const a: Attempt = {
      id,
      peer,
      secret,
      opener,
      sockets: [],
      timers: [],
      pin,
      setPin,
      failPin,
      closed: false,
    };
    this.#attempts.set(id, a);
    return a;
  }

  /** Classifies this NAT, opens the easy side's socket, sends our hello; returns what it said. */
  async #hello(link: ControlLink, a: Attempt): Promise<{ nat: NatClassResult['nat'] }> {
    const servers = this.#opts.stunServers();
    const self = await this.#opts.classifier.classify(servers).catch(() => undefined);
    const nat = self?.nat ?? 'unknown';
    const data: Record<string, unknown> = {
      type: 'birthday',
      step: 'hello',
      nat,
      secret: a.secret.toString('hex'),
    };
    if (nat === 'easy') {
      const socket = await bound();
      a.sockets.push(socket);
      const stun = { ip: link.address.host, port: link.address.port };
      const mapped = await stunMapped(socket, stun).catch(() => undefined);
      if (mapped) {
        a.easy = { socket, mapped };
        data.addr = mapped;
      } else data.nat = 'unknown';
    } else if (nat === 'hard') {
      if (self?.publicIp) data.ip = self.publicIp;
      else data.nat = 'unknown';
    }
    link.send({ t: 'signal', id: a.id, peer: a.peer, data });
    return { nat: data.nat as NatClassResult['nat'] };
  }

  /** Runs this side's role until a hit and the path on it, or the deadline. */
  async #run(
    link: ControlLink,
    a: Attempt,
    role: BirthdayRole,
    theirs: Extract<BirthdaySignal, { step: 'hello' }>,
    peer: BirthdayPeer,
  ): Promise<MuxSession> {
    const { log, counters } = this.#opts;
    // Up to 1,792 packets go where the hello says: only to where the tunnel-server sees the
    // peer, so an enrolled gateway cannot aim this gateway's packets at someone else.
    const target = role === 'easy' ? theirs.ip : theirs.addr?.ip;
    const seen = peer.info?.observed.ip;
    if (target === undefined || target !== seen) {
      counters.attempt(role, 'failed', a.peer);
      throw new EdgemeshError(
        ErrorCodes.UNAVAILABLE,
        `birthday: ${peer.name} names ${target ?? 'no address'}, the tunnel-server sees it at ${seen ?? 'no address'}`,
      );
    }
    const t0 = Date.now();
    log.info({ peer: a.peer, role, opener: a.opener }, 'birthday punch started');
    const deadline = new Promise<never>((_, reject) =>
      a.timers.push(
        setTimeout(
          () =>
            reject(
              new EdgemeshError(ErrorCodes.UNAVAILABLE, `no birthday hit in ${BIRTHDAY_DEADLINE_MS} ms`),
            ),
          BIRTHDAY_DEADLINE_MS,
        ),
      ),
    );
    deadline.catch(() => undefined);
    let sent = 0;
    const count = () => sent++;
    try {
      let pin: Pin;
      if (role === 'easy') {
        if (!a.easy || !theirs.ip)
          throw new EdgemeshError(ErrorCodes.INTERNAL, 'birthday: easy side without its socket');
        pin = await Promise.race([this.#easy(a, theirs.ip, count), deadline]);
      } else {
        if (!theirs.addr)
          throw new EdgemeshError(ErrorCodes.UNAVAILABLE, 'birthday: easy side sent no address');
        pin = await Promise.race([this.#hard(a, theirs.addr, count), deadline]);
      }
      const hitMs = Date.now() - t0;
      await closeAll(a.sockets);
      a.sockets = [];
      log.info({ peer: a.peer, role, packets: sent, hitMs, local: pin.port }, 'birthday punch hit');
      let session: Promise<MuxSession>;
      if (role === 'easy') session = this.#opts.udp.connectPinned(link, { name: a.peer }, pin, a.id);
      else {
        a.setPin(pin);
        session = new Promise<MuxSession>((resolve, reject) => {
          a.session = (done) => done.then(resolve, reject);
          a.timers.push(
            setTimeout(
              () =>
                reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, `no pinned ICE offer in ${PIN_WAIT_MS} ms`)),
              PIN_WAIT_MS,
            ),
          );
        });
      }
      const s = await session;
      counters.attempt(role, 'connected', a.peer);
      log.info(
        { peer: a.peer, role, packets: sent, hitMs, pathMs: Date.now() - t0 },
        'birthday punch connected',
      );
      return s;
    } catch (err) {
      const noHit = /no birthday hit/.test(describeError(err));
      counters.attempt(role, noHit ? 'no-hit' : 'failed', a.peer);
      log.info({ peer: a.peer, role, packets: sent, err: describeError(err) }, 'birthday punch failed');
      throw err;
    } finally {
      counters.packets(role, sent);
    }
  }

  /** Easy side: probe random ports of `ip` from the one socket until a packet of ours comes back. */
  #easy(a: Attempt, ip: string, count: () => void): Promise<Pin> {
    const easy = a.easy as NonNullable<Attempt['easy']>;
    const { socket } = easy;
    const localPort = socket.address().port;
    const ports = probePorts(MAX_PROBES, this.#opts.random ?? Math.random);
    const probe = encodePacket(PacketKind.probe, a.secret);
    const chosen = encodePacket(PacketKind.chosen, a.secret);
    return new Promise<Pin>((resolve) => {
      let next = 0;
      let done = false;
      const start = Date.now();
      const tick = () => {
        const elapsed = Date.now() - start;
        for (
          let at = probeAt(next);
          !done && at !== undefined && at <= elapsed && next < ports.length;
          at = probeAt(next)
        ) {
          socket.send(probe, ports[next++], ip, () => undefined);
          count();
        }
        if (!done && probeAt(next) !== undefined && next < ports.length)
          a.timers.push(setTimeout(tick, TICK_MS));
      };
      socket.on('message', (msg, rinfo) => {
        if (done || rinfo.address !== ip || parsePacket(msg, a.secret) === undefined) return;
        done = true;
        // Back to back: the socket closes next (the ICE agent takes its port).
        for (let i = 0; i < ACK_REPEATS; i++) {
          socket.send(chosen, rinfo.port, ip, () => undefined);
          count();
        }
        resolve({ port: localPort, remote: { ip, port: rinfo.port } });
      });
      tick();
    });
  }

  /** Hard side: HARD_SOCKETS sockets send to the easy side's address each round; `chosen` picks one. */
  async #hard(a: Attempt, easy: Address, count: () => void): Promise<Pin> {
    const sockets = await Promise.all(Array.from({ length: HARD_SOCKETS }, () => bound()));
    a.sockets.push(...sockets);
    if (a.closed) throw new EdgemeshError(ErrorCodes.UNAVAILABLE, 'birthday attempt closed');
    const spray = encodePacket(PacketKind.probe, a.secret);
    const reply = encodePacket(PacketKind.reply, a.secret);
    return new Promise<Pin>((resolve) => {
      let done = false;
      for (const s of sockets) {
        let replies = 0;
        s.on('message', (msg, rinfo) => {
          if (done || rinfo.address !== easy.ip || rinfo.port !== easy.port) return;
          const kind = parsePacket(msg, a.secret);
          if (kind === PacketKind.chosen) {
            done = true;
            resolve({ port: s.address().port, remote: easy });
          } else if (kind === PacketKind.probe && replies < 2) {
            // A probe came through: answer it, so the easy side sees this port (and chooses it).
            replies++;
            s.send(reply, easy.port, easy.ip, () => undefined);
            count();
          }
        });
      }
      const round = (r: number) => {
        if (done || a.closed) return;
        for (const s of sockets) {
          s.send(spray, easy.port, easy.ip, () => undefined);
          count();
        }
        const at = hardRoundAt(r + 1);
        if (at !== undefined) a.timers.push(setTimeout(() => round(r + 1), at - (hardRoundAt(r) ?? 0)));
      };
      round(0);
    });
  }

  #end(a: Attempt): void {
    if (a.closed) return;
    a.closed = true;
    for (const t of a.timers) clearTimeout(t);
    a.failPin(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'birthday attempt ended'));
    closeAll(a.sockets).catch(() => undefined);
    // The hard side's attempt stays findable for the pinned offer a little longer (pinned()).
    setTimeout(() => this.#attempts.delete(a.id), PIN_WAIT_MS).unref();
  }
}

function bound(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => undefined); // ICMP-driven send errors on a probe say nothing useful
  return new Promise((resolve) => s.bind(0, () => resolve(s)));
}

/** Closes sockets and waits until their ports are free (the ICE agent binds one next). */
function closeAll(sockets: dgram.Socket[]): Promise<void> {
  return Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((resolve) => {
          try {
            s.close(() => resolve());
          } catch {
            resolve(); // already closed
          }
        }),
    ),
  ).then(() => undefined);
}
