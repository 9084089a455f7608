import type { TLSSocket } from 'node:tls';
import { describeError, EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { plainIp } from '../lib/tunnel/control.ts';
import { assertName } from '../lib/tunnel/identity.ts';
import { MuxSession } from '../lib/tunnel/mux.ts';
import type { EnrolmentVerifier } from './enrol.ts';
import type { ServerMetrics } from './metrics.ts';
import type { NoisyLog } from './noisy-log.ts';

/**
 * From handshake to answer: one CSR + token round trip plus a TokenReview (seconds at
 * most). Absolute, so a certificate-less client cannot stay by PINGing (PINGs reset the
 * session's idle timer).
 */
export const ENROL_DEADLINE_MS = 30_000;
/**
 * No frame for this long closes an enrolling session: its client sends its one message right
 * after the handshake, so half the control sessions' 30 s is plenty.
 */
const ENROL_IDLE_TIMEOUT_MS = 15_000;
/**
 * Bytes queued towards an enrolling client before it counts as not reading. It gets one
 * answer (certificate + CA, ~3 KiB) and its PONGs, so 32 KiB is ample — and times the
 * connection cap (limits.ts) it must fit in memory.
 */
const ENROL_MAX_QUEUED = 32 * 1024;
/** Longest CSR or token accepted (a CSR is ~1 KiB, a service-account token ~1 KiB). */
const ENROL_FIELD_MAX = 16_384;

export interface EnrolDeps {
  /** Absent: enrolment is disabled and every attempt is refused. */
  verifier?: EnrolmentVerifier;
  signNode(csrPem: string, node: string): Promise<string>;
  /** The mesh CA certificate, handed to enrolled gateways. */
  caPem: string;
  metrics: ServerMetrics;
  noisy: NoisyLog;
  log: Logger;
}

/**
 * A gateway without a certificate yet (TLS with no client certificate): one message
 * { t: 'enrol', node, csr, token }, verified (enrol.ts) and answered with a signed node
 * certificate and the CA, or an error; then the connection is ended.
 */
export function acceptEnrolment(socket: TLSSocket, deps: EnrolDeps): void {
  const { metrics: m, noisy, log } = deps;
  const from = `${plainIp(socket.remoteAddress)}:${socket.remotePort}`;
  const session = new MuxSession(socket, {
    role: 'server',
    peer: `enrolling ${from}`,
    log,
    idleTimeoutMs: ENROL_IDLE_TIMEOUT_MS,
    maxQueuedBytes: ENROL_MAX_QUEUED,
    onSlowReader: () => m.cut.inc({ reason: 'slow-reader' }),
  });
  const deadline = setTimeout(() => {
    m.cut.inc({ reason: 'enrol-deadline' });
    noisy.warn('enrol-deadline', { from, limitMs: ENROL_DEADLINE_MS }, 'enrolment not done in time: closing');
    session.close(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'enrolment deadline passed'));
  }, ENROL_DEADLINE_MS);
  session.once('close', () => clearTimeout(deadline));
  session.once('control', async (msg) => {
    const node = typeof msg.node === 'string' ? msg.node : '';
    try {
      if (
        msg.t !== 'enrol' ||
        typeof msg.csr !== 'string' ||
        typeof msg.token !== 'string' ||
        msg.csr.length > ENROL_FIELD_MAX ||
        msg.token.length > ENROL_FIELD_MAX
      )
        throw new EdgemeshError(ErrorCodes.BAD_REQUEST, 'expected { t: "enrol", node, csr, token }');
      if (!deps.verifier)
        throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, 'enrolment is disabled on this server');
      assertName(node);
      await deps.verifier.verify({ node, token: msg.token });
      const certPem = await deps.signNode(msg.csr, node);
      m.enrolments.inc({ result: 'ok' });
      log.info({ node }, 'node enrolled');
      session.sendControl({ t: 'enrolled', cert: certPem, ca: deps.caPem });
    } catch (err) {
      m.enrolments.inc({ result: 'refused' });
      noisy.warn('enrol', { node, from, err: describeError(err) }, 'enrolment refused');
      session.sendControl({
        t: 'error',
        code: (err as EdgemeshError).code ?? ErrorCodes.INTERNAL,
        message: (err as Error).message,
      });
    }
    // The session sends what was queued at the end of this event-loop turn (lib/tunnel/mux.ts
    // #scheduleTurn, a setImmediate queued before this one): ending the socket now would drop
    // the answer, and the gateway would see only the end.
    setImmediate(() => socket.end());
  });
}
