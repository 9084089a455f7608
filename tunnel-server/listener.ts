import net from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { describeError, EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { plainIp } from '../lib/tunnel/control.ts';
import { identityOfCert, type TlsIdentity } from '../lib/tunnel/identity.ts';
import { peerIdentity, serverOptions } from '../lib/tunnel/tls.ts';
import { ConnectionCaps } from './admission.ts';
import type { ConnectionLimits } from './limits.ts';
import type { ServerMetrics } from './metrics.ts';
import type { NoisyLog } from './noisy-log.ts';

/**
 * A new connection's first byte must come within this: a gateway speaks at once (a TLS
 * ClientHello or a raw line), and a silent connection holds a connection slot.
 */
const FIRST_BYTE_TIMEOUT_MS = 10_000;

export interface ListenerDeps {
  host: string;
  port: number;
  identity: TlsIdentity;
  connections: ConnectionLimits;
  /** An enrolled gateway's TLS session: its certificate names `node`. */
  onControl: (node: string, socket: TLSSocket) => void;
  /** TLS without a client certificate: a gateway enrolling. */
  onEnrol: (socket: TLSSocket) => void;
  /** Not TLS: a relay leg or a punch probe (raw-line.ts), paused. */
  onRaw: (socket: net.Socket) => void;
  metrics: ServerMetrics;
  noisy: NoisyLog;
  log: Logger;
}

export interface Listener {
  port: number;
  /** A renewed serving certificate: new handshakes use it, established sessions keep theirs. */
  setIdentity(identity: TlsIdentity): void;
  close(): Promise<void>;
}

/**
 * The one public TCP port: each connection is counted against the caps (admission.ts), then
 * sorted by its first byte: 0x16 (a TLS handshake record) goes to the TLS server, which sorts
 * by client certificate (a node's: control; none: enrolment; anything else: refused),
 * anything else is raw. The TLS handshake has its own 10 s limit (lib/tunnel/tls.ts); Node
 * reports a failed or timed-out one and leaves the socket open, so it is destroyed here.
 */
export async function startListener(deps: ListenerDeps): Promise<Listener> {
  const { metrics: m, noisy, log } = deps;
  const caps = new ConnectionCaps(deps.connections);
  const tlsServer = new tls.Server({ ...serverOptions(deps.identity), rejectUnauthorized: false });
  tlsServer.on('secureConnection', (socket: TLSSocket) => {
    socket.on('error', () => undefined);
    const presented = socket.getPeerCertificate()?.raw;
    if (!presented) {
      deps.onEnrol(socket);
      return;
    }
    try {
      const id = peerIdentity(socket, deps.identity.caPem);
      if (id.kind !== 'node')
        throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, `${id.kind} certificate used as a node`);
      deps.onControl(id.name, socket);
    } catch (err) {
      m.refused.inc({ reason: 'bad-certificate' });
      noisy.warn(
        'bad-certificate',
        { err: describeError(err), claims: identityOfCert(presented), from: socket.remoteAddress },
        'refused a gateway certificate',
      );
      socket.destroy();
    }
  });
  tlsServer.on('tlsClientError', (err, socket) => {
    m.refused.inc({ reason: 'tls' });
    m.cut.inc({ reason: 'handshake' });
    log.debug({ err: err.message, from: socket.remoteAddress }, 'TLS handshake failed');
    socket.destroy();
  });

  /** Counts a new connection against the caps; false (and destroyed) when over one. */
  const admit = (socket: net.Socket): boolean => {
    const ip = plainIp(socket.remoteAddress);
    const over = caps.admit(ip);
    if (over) {
      m.refused.inc({ reason: over });
      noisy.warn(
        over,
        { from: ip, connections: caps.total, fromIp: caps.from(ip), limits: caps.limits },
        'connection refused: limit reached',
      );
      socket.destroy();
      return false;
    }
    m.connections.set(caps.total);
    socket.once('close', () => {
      caps.leave(ip);
      m.connections.set(caps.total);
    });
    return true;
  };

  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    socket.on('error', () => undefined);
    if (!admit(socket)) return;
    const timer = setTimeout(() => socket.destroy(), FIRST_BYTE_TIMEOUT_MS);
    // Gone before saying anything (allowHalfOpen would otherwise keep it until the timer).
    const onEnd = () => socket.destroy();
    socket.once('end', onEnd);
    socket.once('close', () => clearTimeout(timer));
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(timer);
      socket.removeListener('end', onEnd);
      socket.pause();
      socket.unshift(chunk);
      if (chunk[0] === 0x16) tlsServer.emit('connection', socket);
      else deps.onRaw(socket);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(deps.port, deps.host, () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    setIdentity: (identity) => tlsServer.setSecureContext(serverOptions(identity)),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
