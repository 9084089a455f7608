/**
 * The punched TCP path: TCP simultaneous open, coordinated by a tunnel-server.
 *
 *   opener                      tunnel-server                     peer
 *   punch ─────────────────────▶
 *          ◀──────────── probe (token) ───────────▶
 *   EMT1 PROBE from a fresh port ▶  ◀ EMT1 PROBE from a fresh port
 *          ◀── punch-go (peer's observed addr) ──▶
 *   SYN from the probe's port ──────── crosses ──────── SYN from the probe's port
 *
 * The probe shows the server the address the NAT gives that port; a port-preserving NAT
 * keeps it for the SYN that follows from the same port. Both ends record each probe and
 * punch outcome (nat-log.ts) for `edgemesh netcheck`.
 */
import type net from 'node:net';
import { describeError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { ToGateway } from '../../lib/tunnel/control.ts';
import type { MuxSession } from '../../lib/tunnel/mux.ts';
import type { NatLog } from './nat-log.ts';
import type { ControlLink, Rendezvous } from './rendezvous.ts';
import type { Sessions } from './session.ts';
import { probe, simultaneousOpen } from './tcp.ts';

/** A NAT that lets the punch through does so within one SYN retransmit (1 s): 3 s in all. */
export const PUNCH_DEADLINE_MS = 3_000;
/**
 * The opener's wait for its `punch`: the punch itself plus 3 s for both ends' probes to
 * reach the server (a probe's own timeout). The server gives up on late probes after 5 s.
 */
export const PUNCH_REQUEST_TIMEOUT_MS = PUNCH_DEADLINE_MS + 3_000;
/** A probe's local port waits this long for its punch-go (the server's probe window is 5 s). */
export const PROBE_KEEP_MS = 10_000;

export interface TcpPunchOptions {
  sessions: Sessions;
  nat: NatLog;
  log: Logger;
}

export class TcpPunch {
  readonly #opts: TcpPunchOptions;
  /** Probes by punch id: the local port punch-go must dial from. */
  readonly #probes = new Map<string, Promise<number>>();

  constructor(opts: TcpPunchOptions) {
    this.#opts = opts;
  }

  /** Asks `link` to coordinate a punch with `peer`; resolves once the session is up. */
  request(rendezvous: Rendezvous, link: ControlLink, peer: string): Promise<unknown> {
    return rendezvous.request(link, { t: 'punch', peer }, PUNCH_REQUEST_TIMEOUT_MS);
  }

  /** A `probe`: both sides probe; the opener waits for punch-go, which needs both probes. */
  onProbe(link: ControlLink, msg: Extract<ToGateway, { t: 'probe' }>): void {
    const done = probe({ ip: link.address.host, port: link.address.port }, msg.token).then((r) => {
      this.#opts.nat.probe(link.serverName ?? link.label, r.localPort, `${r.observed.ip}:${r.observed.port}`);
      return r.localPort;
    });
    done.catch((err) => this.#opts.log.debug({ err: describeError(err) }, 'probe failed'));
    this.#probes.set(msg.id, done);
    setTimeout(() => this.#probes.delete(msg.id), PROBE_KEEP_MS).unref();
  }

  /** A `punch-go`: simultaneous open from the probe's port, then TLS; the session, or why not. */
  async onPunchGo(msg: Extract<ToGateway, { t: 'punch-go' }>): Promise<MuxSession> {
    const localPort = this.#probes.get(msg.id);
    this.#probes.delete(msg.id);
    if (!localPort) throw new EdgemeshError(ErrorCodes.UNAVAILABLE, 'punch-go without a probe');
    let socket: net.Socket;
    try {
      socket = await simultaneousOpen(await localPort, msg.addr, PUNCH_DEADLINE_MS);
    } catch (err) {
      this.#opts.nat.punch(msg.peer, 'tcp', err);
      throw err;
    }
    this.#opts.nat.punch(msg.peer, 'tcp');
    return this.#opts.sessions.secure(socket, msg.peer, msg.role);
  }
}
