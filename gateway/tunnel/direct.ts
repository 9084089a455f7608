/**
 * The direct path: TCP between the gateways, no tunnel-server involved. Inbound, the tunnel
 * listener (default port 20006) takes TLS from peers with a node certificate of the mesh;
 * outbound, a peer's LAN addresses are dialled, each for at most 1 s (same-site peers answer
 * in ms; others fail fast or not at all).
 */
import type net from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { describeError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { PeerInfo } from '../../lib/tunnel/control.ts';
import type { TlsIdentity } from '../../lib/tunnel/identity.ts';
import type { MuxSession } from '../../lib/tunnel/mux.ts';
import { dialableLan } from '../../lib/tunnel/peer-address.ts';
import { peerIdentity, serverOptions } from '../../lib/tunnel/tls.ts';
import type { Sessions } from './session.ts';
import { dial } from './tcp.ts';

export const LAN_DIAL_TIMEOUT_MS = 1_000;

export interface DirectListenerOptions {
  nodeName: string;
  identity(): TlsIdentity;
  log: Logger;
  /** A peer's TLS connection, its node name proven by its certificate. */
  accepted(peer: string, socket: TLSSocket): void;
  /** A connection refused for its certificate (metrics). */
  refused(): void;
}

/** The tunnel listener: peers dial it on this node's LAN (or public) address. */
export class DirectListener {
  readonly #opts: DirectListenerOptions;
  #server: tls.Server | undefined;

  constructor(opts: DirectListenerOptions) {
    this.#opts = opts;
  }

  /** Listens; resolves with the port (useful when `port` is 0). */
  async listen(port: number, host: string): Promise<number> {
    const server = tls.createServer(serverOptions(this.#opts.identity()), (socket) => this.#onDirect(socket));
    server.on('tlsClientError', (err) =>
      this.#opts.log.debug({ err: err.message }, 'refused a direct connection'),
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.#server = server;
    return (server.address() as net.AddressInfo).port;
  }

  /** New handshakes use `identity`; throws on a bad key (then nothing changed). */
  setIdentity(identity: TlsIdentity): void {
    this.#server?.setSecureContext(serverOptions(identity));
  }

  close(): Promise<void> {
    return new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }

  #onDirect(socket: TLSSocket): void {
    socket.on('error', () => undefined);
    try {
      const id = peerIdentity(socket, this.#opts.identity().caPem);
      if (id.kind !== 'node' || id.name === this.#opts.nodeName)
        throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, `unexpected peer ${id.kind}/${id.name}`);
      socket.setNoDelay(true);
      this.#opts.accepted(id.name, socket);
    } catch (err) {
      this.#opts.refused();
      this.#opts.log.warn({ err: describeError(err) }, 'refused a direct connection');
      socket.destroy();
    }
  }
}

export interface LanSources {
  /** What the tunnel-server last told of the peer (its registration). */
  info: PeerInfo | undefined;
  /** The catalog's addresses of the peer's node. */
  known: string[];
  /** The peer book's record (peer-book.ts). */
  remembered: { addresses: string[]; port: number } | undefined;
  /** This gateway's tunnel port: peers listen on the same one unless told otherwise. */
  ownPort: number;
  /** Addresses no peer may have: this gateway's own and the tunnel-servers'. */
  own: string[];
}

/** LAN addresses and tunnel port to try for a peer, and the addresses refused for it. Pure. */
export function lanCandidates(s: LanSources): { lan: string[]; port: number; dropped: string[] } {
  const port = s.info?.port ?? s.remembered?.port ?? s.ownPort;
  const all = [...new Set([...(s.info?.lan ?? []), ...s.known, ...(s.remembered?.addresses ?? [])])];
  // Never dial what no gateway may announce (an older tunnel-server let a node register its
  // peers' loopback, the metadata service, a kubelet port): lib/tunnel/peer-address.ts.
  const { lan, dropped } = dialableLan(all, port, {
    addresses: s.own,
    what: "this gateway's or a tunnel-server's address",
  });
  return { lan, port, dropped };
}

/**
 * Dials every address at once; the first TLS session up wins. We dialed, so we are the TLS
 * client whatever the names say. Rejects when none connects.
 */
export function dialLan(lan: string[], port: number, peer: string, sessions: Sessions): Promise<MuxSession> {
  const attempts = lan.map(async (ip) => {
    const socket = await dial({ ip, port }, { timeoutMs: LAN_DIAL_TIMEOUT_MS });
    return sessions.secure(socket, peer, 'client');
  });
  return Promise.any(attempts);
}
