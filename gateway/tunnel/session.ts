/**
 * Sessions with peer gateways, whatever the path: TLS 1.3 with the node certificates over
 * the path's byte stream (the TLS client by role: the dialer on a direct or LAN dial, by
 * node name elsewhere), then the stream multiplexer. The far end of every stream is here:
 * a peer's stream is dialled through dialTarget (which refuses anything but this node's pod
 * endpoints) and spliced.
 */
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { describeError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { splice } from '../../lib/splice.ts';
import type { ReceiveBudget } from '../../lib/tunnel/budget.ts';
import type { TlsRole } from '../../lib/tunnel/control.ts';
import { ResetCode, type Target } from '../../lib/tunnel/frame.ts';
import type { TlsIdentity } from '../../lib/tunnel/identity.ts';
import { MuxSession } from '../../lib/tunnel/mux.ts';
import type { ResumeBook } from '../../lib/tunnel/resume.ts';
import { acceptTls, connectTls } from '../../lib/tunnel/tls.ts';
import type { PeerMessages } from '../streams.ts';
import type { Lanes } from './lanes.ts';

export interface SessionsOptions {
  /** The certificate for new handshakes (replaced on renewal). */
  identity(): TlsIdentity;
  log: Logger;
  /** One budget for all of a peer's sessions: a peer could otherwise open more of them. */
  budgetOf(peer: string): ReceiveBudget;
  /** One resume book per peer, as the budget: its streams outlive a lost path (resume.ts). */
  bookOf?(peer: string): ResumeBook;
  /** A peer's stream or a frame refused (metrics: edgemesh_tunnel_refused_total). */
  refused(reason: 'budget' | 'not-allowed' | 'dial-failed'): void;
  dialTarget(target: Target): Promise<Duplex>;
  messages?: PeerMessages;
  /** Datagram lanes (lanes.ts): their CONTROL messages, and a lane for a session UDP flows use. */
  lanes?: Pick<Lanes, 'onControl' | 'want'>;
}

export class Sessions {
  readonly #opts: SessionsOptions;

  constructor(opts: SessionsOptions) {
    this.#opts = opts;
  }

  /** Wraps an established byte stream in TLS (client or server per `role`) and a session. */
  async secure(socket: Duplex, peer: string, role: TlsRole): Promise<MuxSession> {
    const identity = this.#opts.identity();
    const expect = { kind: 'node' as const, name: peer };
    const { socket: tlsSocket } =
      role === 'client'
        ? await connectTls({ identity, expect, socket })
        : await acceptTls({ identity, expect, socket });
    return this.open(tlsSocket, peer, role);
  }

  /** A session on a TLS socket whose peer is already proven to be node `peer`. */
  open(socket: TLSSocket, peer: string, role: TlsRole): MuxSession {
    const opts = this.#opts;
    const session = new MuxSession(socket, {
      role,
      peer,
      log: opts.log,
      budget: opts.budgetOf(peer),
      resume: opts.bookOf?.(peer),
      onBudgetRefused: () => opts.refused('budget'),
    });
    session.on('control', (message) => {
      if (opts.lanes?.onControl(session, message)) return;
      opts.messages?.receive(peer, message);
    });
    session.on('stream', (stream, target) => {
      if (target.transport === 'udp') opts.lanes?.want(session);
      opts.dialTarget(target).then(
        (conn) => {
          // The opener may have given up (or the session died) while we dialed.
          if (stream.destroyed) {
            conn.destroy();
            return;
          }
          stream.accept();
          stream.chargeSink(conn); // what waits for the target counts against the peer's budget
          splice(stream, conn);
        },
        (err: unknown) => {
          const refused = err instanceof EdgemeshError && err.code === ErrorCodes.DIAL_REFUSED;
          opts.refused(refused ? 'not-allowed' : 'dial-failed');
          stream.refuse(refused ? ResetCode.REFUSED : ResetCode.DIAL_FAILED, describeError(err));
        },
      );
    });
    session.ping().catch(() => undefined);
    return session;
  }
}
