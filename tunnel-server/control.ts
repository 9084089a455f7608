import type { TLSSocket } from 'node:tls';
import { describeError, EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { parseToServer, plainIp, type ToServer } from '../lib/tunnel/control.ts';
import { MuxSession } from '../lib/tunnel/mux.ts';
import { registrationProblem } from '../lib/tunnel/peer-address.ts';
import type { ServerMetrics } from './metrics.ts';
import type { GatewayRegistry } from './registry.ts';
import type { Request } from './rendezvous.ts';

/**
 * Bytes queued towards one enrolled gateway before it counts as not reading and is cut.
 * Control messages are ≤ 64 KiB and few; 1 MiB is far past what a reading gateway leaves.
 * The session's other timeouts are MuxSession's defaults: PING every 10 s, closed after
 * 30 s without a frame (which also ends the registration).
 */
const CONTROL_MAX_QUEUED = 1024 * 1024;

export interface ControlDeps {
  /** This replica's name (in 'registered'). */
  name: string;
  registry: GatewayRegistry;
  /** Requests from a registered gateway (rendezvous.ts). */
  onRequest: (node: string, msg: Request) => void;
  metrics: ServerMetrics;
  log: Logger;
}

/**
 * One enrolled gateway's control session (its certificate names `node`): its messages parsed
 * into typed ones (a malformed one closes the session), 'register' first, which puts it in
 * the registry (replacing an older session of the same node) and introduces its site; then
 * its requests go to `onRequest`. The registration ends with the session.
 */
export function acceptControl(node: string, socket: TLSSocket, deps: ControlDeps): void {
  const { registry, metrics: m, log } = deps;
  const session = new MuxSession(socket, {
    role: 'server',
    peer: node,
    log,
    maxQueuedBytes: CONTROL_MAX_QUEUED,
    onSlowReader: () => m.cut.inc({ reason: 'slow-reader' }),
  });
  const observed = { ip: plainIp(socket.remoteAddress), port: socket.remotePort ?? 0 };
  let registered = false;
  session.on('control', (raw) => {
    let msg: ToServer;
    try {
      msg = parseToServer(raw);
    } catch (err) {
      m.refused.inc({ reason: 'bad-control' });
      session.close(err as Error);
      return;
    }
    if (msg.t === 'register') {
      // Other gateways dial what is registered here: nothing that points them at their
      // own loopback, the metadata service, a kubelet or this server (peer-address.ts).
      const problem = registrationProblem(msg.lan, msg.port, [plainIp(socket.localAddress)]);
      if (problem) {
        m.refused.inc({ reason: 'bad-address' });
        log.warn({ node, lan: msg.lan, port: msg.port, reason: problem }, 'registration refused');
        session.sendControl({
          t: 'error',
          code: ErrorCodes.BAD_REQUEST,
          message: `registration refused: ${problem}`,
        });
        return;
      }
      // The old session's close (synchronous) removes its entry and logs 'gateway left'
      // before the new one goes in.
      const old = registry.get(node);
      if (old && old.link !== session)
        old.link.close(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'replaced by a new registration'));
      registry.set(node, {
        link: session,
        info: { lan: msg.lan, port: msg.port, observed },
        features: msg.features ?? [],
      });
      registered = true;
      m.gateways.set(registry.size);
      session.sendControl({ t: 'registered', server: deps.name, observed });
      log.info({ node, observed, lan: msg.lan }, 'gateway registered');
      for (const { to, msg: intro } of registry.siteIntroductions(node)) registry.send(to, intro);
      return;
    }
    if (!registered) {
      session.sendControl({ t: 'error', code: ErrorCodes.BAD_REQUEST, message: 'register first' });
      return;
    }
    deps.onRequest(node, msg);
  });
  session.on('close', (err) => {
    if (registry.leave(node, session)) {
      m.gateways.set(registry.size);
      log.info({ node, reason: err ? describeError(err) : 'closed' }, 'gateway left');
    }
  });
}
