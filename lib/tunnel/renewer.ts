import { type CertificateValidity, certificateValidity } from '../certs.ts';
import { describeError, EdgemeshError, ErrorCodes } from '../errors.ts';
import type { Logger } from '../log.ts';
import { Counter, Gauge, type Registry } from '../metrics.ts';
import type { TlsIdentity } from './identity.ts';
import { MAX_TIMER_MS, renewalTime, retryDelay, validityProblem } from './renewal.ts';

/**
 * Keeps a running process's TLS certificate fresh: renews it on the schedule of
 * lib/tunnel/renewal.ts and hands each new identity to `onRenewed`, which points new TLS
 * sessions at it (a server's SecureContext, the identity new dials use). Established sessions
 * are never touched: TLS 1.3 authenticates once, at the handshake, and cutting them would
 * drop their streams.
 *
 * Used by the gateway (node certificate, re-enrolled at a tunnel-server) and the
 * tunnel-server (its own serving certificate, signed by the mesh CA it holds). The operator
 * sees `<prefix>_certificate_expiry_seconds` (not-after, Unix time) and
 * `<prefix>_certificate_renewals_total{result="ok"|"error"}`; a renewal that fails is logged
 * with the certificate's name (its file) and the cause, as an error once it has expired.
 */
export interface CertificateMetrics {
  expiry: Gauge;
  renewals: Counter<'result'>;
}

/** `prefix`: `edgemesh_gateway` or `edgemesh_tunnel_server`. */
export function certificateMetrics(prefix: string, registry: Registry | undefined): CertificateMetrics {
  const registers = registry ? [registry] : [];
  return {
    expiry: new Gauge({
      name: `${prefix}_certificate_expiry_seconds`,
      help: 'When the TLS certificate in use expires (not-after, Unix time in seconds)',
      registers,
    }),
    renewals: new Counter({
      name: `${prefix}_certificate_renewals_total`,
      help: 'Certificate renewals while running, by result (ok, error)',
      labelNames: ['result'],
      registers,
    }),
  };
}

export interface RenewerOptions {
  /** Names the certificate in logs and errors, with its file: "node certificate /var/…/tunnel.crt". */
  what: string;
  current: TlsIdentity;
  /** Obtains a new identity (enrolment, or signing with a local CA). */
  renew(): Promise<TlsIdentity>;
  /** Points new TLS sessions at the new identity. */
  onRenewed(identity: TlsIdentity): void;
  metrics: CertificateMetrics;
  log: Logger;
  /** In [0, 1): where in the jitter window to renew (tests pin it). */
  random?: () => number;
}

export class CertificateRenewer {
  readonly #opts: RenewerOptions;
  #identity: TlsIdentity;
  #validity: CertificateValidity;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #closed = false;

  constructor(opts: RenewerOptions) {
    this.#opts = opts;
    this.#identity = opts.current;
    this.#validity = certificateValidity(opts.current.certPem);
    opts.metrics.expiry.set(this.#validity.notAfter / 1000);
  }

  get identity(): TlsIdentity {
    return this.#identity;
  }

  get validity(): CertificateValidity {
    return this.#validity;
  }

  start(): void {
    const at = renewalTime(this.#validity, (this.#opts.random ?? Math.random)());
    this.#opts.log.info(
      {
        certificate: this.#opts.what,
        serial: this.#validity.serial,
        notAfter: new Date(this.#validity.notAfter).toISOString(),
        renewAt: new Date(at).toISOString(),
      },
      'certificate renewal scheduled',
    );
    this.#wakeAt(at);
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  /** Sleeps until `at` (in steps: setTimeout cannot wait longer than ~24.8 days). */
  #wakeAt(at: number): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    const wait = Math.max(0, at - Date.now());
    this.#timer = setTimeout(
      () => (wait > MAX_TIMER_MS ? this.#wakeAt(at) : void this.#attempt()),
      Math.min(wait, MAX_TIMER_MS),
    );
    this.#timer.unref();
  }

  async #attempt(): Promise<void> {
    const { what, log, metrics } = this.#opts;
    const previous = this.#validity;
    try {
      const identity = await this.#opts.renew();
      const next = certificateValidity(identity.certPem);
      const problem = validityProblem(next, Date.now());
      if (problem) throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, `the new certificate is ${problem}`);
      if (this.#closed) return;
      this.#opts.onRenewed(identity);
      this.#identity = identity;
      this.#validity = next;
      this.#failures = 0;
      metrics.expiry.set(next.notAfter / 1000);
      metrics.renewals.inc({ result: 'ok' });
      log.info(
        {
          certificate: what,
          serial: next.serial,
          previousSerial: previous.serial,
          notAfter: new Date(next.notAfter).toISOString(),
        },
        'certificate renewed: new TLS sessions use it, established ones carry on',
      );
      this.start();
    } catch (err) {
      if (this.#closed) return;
      metrics.renewals.inc({ result: 'error' });
      const now = Date.now();
      const delay = retryDelay(this.#failures++, previous, now);
      const expired = validityProblem(previous, now);
      const fields = { certificate: what, err: describeError(err), retryInMs: delay };
      if (expired)
        log.error(
          { ...fields, problem: expired },
          `${what} ${expired} and could not be renewed: new TLS sessions fail until renewal succeeds`,
        );
      else
        log.warn(
          { ...fields, notAfter: new Date(previous.notAfter).toISOString() },
          `${what}: renewal failed, retrying`,
        );
      this.#wakeAt(now + delay);
    }
  }
}
