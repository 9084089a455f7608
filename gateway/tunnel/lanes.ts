/**
 * Datagram lanes per session (dgram-lane.ts has the why): started on a session the first time
 * a UDP Service's flow uses it, from either end, and closed with it.
 *
 *   A (a datagram stream opens)                                   B
 *   bind a UDP socket, ask a tunnel-server's STUN for its public address
 *   {t: "dgram-lane", addrs: [public, LAN…]} ─── session CONTROL ──▶ bind, STUN, probe A's addrs
 *                   ◀── {t: "dgram-lane", answer: true, addrs: […]}
 *   probe B's addrs ◀════════════ signed probes both ways (UDP) ═══════════▶
 *   the first authenticated probe or answer: the lane is up on that side
 *
 * The lane's messages are the session's datagram channel's: on the UDP path the lane is
 * preferred over the SCTP channel (DatagramChannel.prefer); on a TCP or relay path the lane
 * is the channel's only port, bound to the session when the lane starts (the mux sends a
 * datagram there only while the lane is up, and frames it on its stream otherwise).
 *
 * A gateway from before lanes ignores the message (gateway/pod-moves.ts ignores CONTROL
 * messages it does not know): the lane never comes up and nothing changes. Offers are
 * validated (offeredAddresses): at most MAX_CANDIDATES IPv4 addresses another host can reach,
 * unprivileged ports; a malformed one is refused with a log line and never probed.
 */
import dgram from 'node:dgram';
import { isIPv4 } from 'node:net';
import { TLSSocket } from 'node:tls';
import { describeError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Address } from '../../lib/tunnel/control.ts';
import type { MuxSession } from '../../lib/tunnel/mux.ts';
import { lanAddressProblem } from '../../lib/tunnel/peer-address.ts';
import type { Clock } from './clock.ts';
import { attachDatagramChannel, boundChannelOf } from './dgram-channel.ts';
import { DatagramLane, MAX_CANDIDATES } from './dgram-lane.ts';
import { LANE_EXPORTER_LABEL, LANE_KEY_BYTES, laneKeys } from './lane-probe.ts';
import type { LaneState, LaneStatus } from './status.ts';
import { stunMapped } from './stun-client.ts';

export const LANE_MESSAGE = 'dgram-lane';
/** Asked for each lane socket's receive and send buffers (the kernel caps it at net.core.[rw]mem_max). */
export const LANE_SOCKET_BUFFER = 1024 * 1024;
/** One tunnel-server's STUN answer (the lab answers in < 1 ms; 4 sends, 250 ms apart). */
export const LANE_STUN_TIMEOUT_MS = 1_000;

export interface LaneOffer {
  /** An answer to our offer: not answered again. */
  answer: boolean;
  addrs: Address[];
}

/** A `dgram-lane` CONTROL message's offer, or why it is refused (named for the log line). */
export function offeredAddresses(m: Record<string, unknown>): LaneOffer | { error: string } {
  const list = m.addrs;
  if (!Array.isArray(list) || list.length > MAX_CANDIDATES)
    return { error: `addrs must be a list of at most ${MAX_CANDIDATES} addresses` };
  const addrs: Address[] = [];
  for (const a of list) {
    if (typeof a !== 'object' || a === null) return { error: 'an address is not an object' };
    const { ip, port } = a as Record<string, unknown>;
    if (typeof ip !== 'string' || !isIPv4(ip)) return { error: `${shown(ip)} is not an IPv4 address` };
    const problem = lanAddressProblem(ip);
    if (problem) return { error: problem };
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1024 || port > 65535)
      return { error: `port ${shown(port)} of ${ip} is not an unprivileged UDP port` };
    addrs.push({ ip, port });
  }
  return { answer: m.answer === true, addrs };
}

/** A peer's value in a log line: strings and numbers cut short, anything else by its type. */
function shown(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.slice(0, 64));
  return typeof v === 'number' ? String(v) : `a ${v === null ? 'null' : typeof v}`;
}

export interface LanesOptions {
  log: Logger;
  clock: Clock;
  /** The tunnel-server replicas up: their STUN tells the lane socket's public address. */
  stunServers(): Address[];
  /** This node's LAN addresses, offered with the lane's port (same-site peers). */
  lanAddresses(): readonly string[];
  /** Address the lane sockets bind (default all). */
  bindHost?: string;
  /** A lane changed state (metrics). */
  onState?(state: LaneState): void;
}

interface Entry {
  lane: DatagramLane | undefined;
  /** Candidates offered before our socket was ready. */
  pending: Address[];
}

export class Lanes {
  readonly #opts: LanesOptions;
  readonly #entries = new WeakMap<MuxSession, Entry>();
  readonly #open = new Set<DatagramLane>();

  constructor(opts: LanesOptions) {
    this.#opts = opts;
  }

  /** A datagram stream uses `session`: start its lane (once) and offer it. */
  want(session: MuxSession): void {
    this.#start(session, false);
  }

  /** A CONTROL message: true when it was the lane's (taken here, whatever it said). */
  onControl(session: MuxSession, message: Record<string, unknown>): boolean {
    if (message.t !== LANE_MESSAGE) return false;
    const offer = offeredAddresses(message);
    if ('error' in offer) {
      this.#opts.log.warn({ peer: session.peer, why: offer.error }, 'datagram lane offer refused');
      return true;
    }
    let entry = this.#entries.get(session);
    if (!entry) {
      if (offer.answer) return true; // to an offer this end no longer has
      entry = this.#start(session, true);
      if (!entry) return true;
    }
    if (entry.lane) entry.lane.probe(offer.addrs);
    else entry.pending.push(...offer.addrs);
    return true;
  }

  /** For /status: the lane of `session`, if it has one. */
  statusOf(session: object): LaneStatus | undefined {
    const lane = this.#entries.get(session as MuxSession)?.lane;
    if (!lane) return undefined;
    const peer = lane.peer;
    return {
      state: lane.state,
      ...(peer ? { peer: `${peer.ip}:${peer.port}` } : {}),
      counters: { ...lane.counters, refused: { ...lane.counters.refused } },
      window: {
        size: lane.window.window,
        inFlight: lane.window.inFlight,
        rttMs: Math.round(lane.window.rttMs * 1000) / 1000,
        ...lane.window.counters,
      },
    };
  }

  close(): void {
    for (const lane of this.#open) lane.close();
    this.#open.clear();
  }

  #start(session: MuxSession, answering: boolean): Entry | undefined {
    const existing = this.#entries.get(session);
    if (existing) return existing;
    const tls = session.socket;
    if (!(tls instanceof TLSSocket) || !session.usable) return undefined;
    const entry: Entry = { lane: undefined, pending: [] };
    this.#entries.set(session, entry);
    this.#begin(session, tls, entry, answering).catch((err: unknown) =>
      this.#opts.log.warn({ peer: session.peer, err: describeError(err) }, 'datagram lane not started'),
    );
    return entry;
  }

  async #begin(session: MuxSession, tls: TLSSocket, entry: Entry, answering: boolean): Promise<void> {
    const opts = this.#opts;
    // Bursts arrive faster than one event-loop turn reads them (a blast of a UDP Service, a GC
    // pause): the kernel's default 208 KiB holds ~90 full-size datagrams, then drops.
    const socket = dgram.createSocket({
      type: 'udp4',
      recvBufferSize: LANE_SOCKET_BUFFER,
      sendBufferSize: LANE_SOCKET_BUFFER,
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, opts.bindHost ?? '0.0.0.0', () => {
        socket.off('error', reject);
        resolve();
      });
    });
    // Before the lane listens: a STUN answer is not for the channel.
    const mapped = await this.#mapped(socket);
    if (!session.usable) {
      socket.close();
      return;
    }
    const keys = laneKeys(
      tls.exportKeyingMaterial(LANE_KEY_BYTES, LANE_EXPORTER_LABEL, Buffer.alloc(0)),
      session.role,
    );
    const lane = new DatagramLane({
      socket,
      keys,
      clock: opts.clock,
      onState: (state, peer) => {
        opts.log.info(
          { peer: session.peer, state, at: peer ? `${peer.ip}:${peer.port}` : undefined },
          'datagram lane',
        );
        opts.onState?.(state);
      },
    });
    entry.lane = lane;
    this.#open.add(lane);
    lane.onClosed(() => this.#open.delete(lane));
    session.once('close', () => lane.close());
    const channel = boundChannelOf(session);
    if (channel) channel.prefer(lane);
    // A peer that speaks lanes opens bundles (both came with UDP Services across sites).
    else attachDatagramChannel(session, tls, lane, { bundle: true });
    const port = lane.localPort;
    const addrs: Address[] = [];
    if (mapped) addrs.push(mapped);
    for (const ip of opts.lanAddresses())
      if (isIPv4(ip) && !addrs.some((a) => a.ip === ip && a.port === port)) addrs.push({ ip, port });
    session.sendControl({
      t: LANE_MESSAGE,
      ...(answering ? { answer: true } : {}),
      addrs: addrs.slice(0, MAX_CANDIDATES),
    });
    if (entry.pending.length > 0) lane.probe(entry.pending.splice(0));
  }

  /** The socket's public address from the first tunnel-server that answers; none: LAN only. */
  async #mapped(socket: dgram.Socket): Promise<Address | undefined> {
    for (const server of this.#opts.stunServers().slice(0, 3)) {
      const mapped = await stunMapped(socket, server, LANE_STUN_TIMEOUT_MS).catch(() => undefined);
      if (mapped) return mapped;
    }
    return undefined;
  }
}
