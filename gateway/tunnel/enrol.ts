import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import tls from 'node:tls';
import { certificateValidity } from '../../lib/certs.ts';
import { describeError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { createCsr, generateKeyPem, identityOfCert, type TlsIdentity } from '../../lib/tunnel/identity.ts';
import { MuxSession } from '../../lib/tunnel/mux.ts';
import { renewalDue, validityProblem } from '../../lib/tunnel/renewal.ts';
import type { ServerAddress } from './server-link.ts';

/**
 * A gateway's identity: its own key (generated here on first start, kept in the state
 * directory, never sent anywhere) and a certificate for its node name from the mesh CA,
 * obtained by enrolment at any tunnel-server replica: TLS to the server (verified against
 * the mesh CA as a tunnel-server), then { t: "enrol", node, csr, token } where the token
 * proves the node (a projected service-account token, or a bootstrap token).
 *
 * At start a certificate past its renewal point (lib/tunnel/renewal.ts: two thirds of its
 * life), expired, or unreadable is replaced by enrolling again; while running,
 * `renewIdentity` enrols again with the same key (the key never changes: it never leaves the
 * node, and keeping it means the key and certificate files cannot disagree after a crash
 * between two writes). Each attempt reads the token anew: kubelet rotates projected tokens
 * (hourly, and a token expires), so the one read at start may no longer be accepted.
 */
export interface EnrolOptions {
  nodeName: string;
  stateDir: string;
  caPem: string;
  servers: ServerAddress[];
  /** Reads the proof token (re-read on each attempt: projected tokens rotate). */
  token: () => Promise<string>;
  log: Logger;
  timeoutMs?: number;
}

export const certFileOf = (stateDir: string): string => join(stateDir, 'tunnel.crt');
const keyFileOf = (stateDir: string): string => join(stateDir, 'tunnel.key');

export async function loadOrEnrol(opts: EnrolOptions): Promise<TlsIdentity> {
  const keyFile = keyFileOf(opts.stateDir);
  const certFile = certFileOf(opts.stateDir);
  await mkdir(opts.stateDir, { recursive: true });
  let keyPem = await readFile(keyFile, 'utf8').catch(() => undefined);
  if (!keyPem) {
    keyPem = generateKeyPem();
    await atomicWrite(keyFile, keyPem, 0o600);
  }
  const existing = await readFile(certFile, 'utf8').catch((err: Error) => {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      opts.log.warn(
        { file: certFile, err: err.message },
        'cannot read the node certificate: enrolling again',
      );
    return undefined;
  });
  if (existing) {
    const problem = certificateProblem(existing, opts.nodeName, opts.caPem, Date.now());
    if (!problem) return { keyPem, certPem: existing, caPem: opts.caPem };
    opts.log.info({ file: certFile, problem }, 'node certificate not kept: enrolling again');
  }
  return enrol(opts, keyPem);
}

/** Enrols again with the key on disk (renewal while running); writes and returns the new identity. */
export async function renewIdentity(opts: EnrolOptions): Promise<TlsIdentity> {
  const keyFile = keyFileOf(opts.stateDir);
  const keyPem = await readFile(keyFile, 'utf8').catch((err: Error) => {
    throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, `cannot read the node key ${keyFile}: ${err.message}`);
  });
  return enrol(opts, keyPem);
}

async function enrol(opts: EnrolOptions, keyPem: string): Promise<TlsIdentity> {
  const certFile = certFileOf(opts.stateDir);
  const csr = createCsr(keyPem, { kind: 'node', name: opts.nodeName });
  const failures: { server: string; err: unknown }[] = [];
  for (const server of opts.servers) {
    try {
      const certPem = await enrolAt(
        server,
        { node: opts.nodeName, csr, token: await opts.token() },
        opts.caPem,
        opts.timeoutMs ?? 10_000,
      );
      const problem = certificateProblem(certPem, opts.nodeName, opts.caPem, Date.now());
      if (problem)
        throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, `server returned a certificate that ${problem}`);
      // Kept on disk for the next start; a failed write is this node's problem, not the server's.
      await atomicWrite(certFile, certPem, 0o644).catch((err: Error) => {
        throw new EdgemeshError(
          ErrorCodes.CONFIG,
          `cannot write the node certificate ${certFile}: ${err.message}`,
        );
      });
      opts.log.info({ server: `${server.host}:${server.port}`, file: certFile }, 'enrolled with the mesh CA');
      return { keyPem, certPem, caPem: opts.caPem };
    } catch (err) {
      if (err instanceof EdgemeshError && err.code === ErrorCodes.CONFIG) throw err;
      failures.push({ server: `${server.host}:${server.port}`, err });
      opts.log.warn({ server: `${server.host}:${server.port}`, err: describeError(err) }, 'enrolment failed');
    }
  }
  throw enrolmentFailure(failures);
}

/**
 * One error for a round of failed attempts: TUNNEL_AUTH when any tunnel-server answered and
 * refused (or showed a certificate the mesh CA does not sign) — retrying will not help until
 * someone acts — else UNAVAILABLE (none reachable now: the cloud may be away). Each server is
 * named with its cause. Pure.
 */
export function enrolmentFailure(failures: readonly { server: string; err: unknown }[]): EdgemeshError {
  const refused = failures.filter((f) => isRefusal(f.err));
  const list = (fs: readonly { server: string; err: unknown }[]) =>
    fs.map((f) => `${f.server}: ${describeError(f.err)}`).join('; ');
  if (refused.length > 0)
    return new EdgemeshError(ErrorCodes.TUNNEL_AUTH, `enrolment refused by ${list(refused)}`);
  return new EdgemeshError(
    ErrorCodes.UNAVAILABLE,
    `no tunnel-server reachable for enrolment: ${failures.length > 0 ? list(failures) : 'none configured'}`,
  );
}

/** TLS verification codes: the server's certificate is not one our mesh CA signed. */
const CERT_CODES = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|SIGNATURE/;

function isRefusal(err: unknown): boolean {
  if (err instanceof EdgemeshError) return err.code === ErrorCodes.TUNNEL_AUTH;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && CERT_CODES.test(code);
}

/** Why a certificate will not do for `node` now (not this node, not the mesh CA's, renewal due), or undefined. */
export function certificateProblem(
  certPem: string,
  node: string,
  caPem: string,
  now: number,
): string | undefined {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    return `is not a PEM certificate (${(err as Error).message})`;
  }
  const id = identityOfCert(certPem);
  if (id?.kind !== 'node' || id.name !== node)
    return `names ${id ? `${id.kind}/${id.name}` : 'no edgemesh identity'}, not node/${node}`;
  if (!cert.verify(new X509Certificate(caPem).publicKey)) return 'is not signed by the mesh CA';
  const validity = certificateValidity(certPem);
  const invalid = validityProblem(validity, now);
  if (invalid) return `is ${invalid}`;
  if (renewalDue(validity, now))
    return `is due for renewal (two thirds of its life passed; expires ${new Date(validity.notAfter).toISOString()})`;
  return undefined;
}

function enrolAt(
  server: ServerAddress,
  request: { node: string; csr: string; token: string },
  caPem: string,
  timeoutMs: number,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: server.host,
      port: server.port,
      ca: [caPem],
      minVersion: 'TLSv1.3',
      checkServerIdentity: (_host, cert) => {
        const id = cert.raw ? identityOfCert(cert.raw) : undefined;
        return id?.kind === 'tunnel-server'
          ? undefined
          : new EdgemeshError(ErrorCodes.TUNNEL_AUTH, 'not a tunnel-server certificate');
      },
    });
    const timer = setTimeout(
      () => socket.destroy(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'enrolment timed out')),
      timeoutMs,
    );
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('secureConnect', () => {
      const session = new MuxSession(socket, { role: 'client', peer: 'tunnel-server' });
      session.once('control', (msg) => {
        clearTimeout(timer);
        if (msg.t === 'enrolled' && typeof msg.cert === 'string') resolve(msg.cert);
        else {
          // The server's own code says whether it refused us (TUNNEL_AUTH) or could not
          // decide now (its API or signer away: UNAVAILABLE, INTERNAL): only a refusal is final.
          const message = String(msg.message ?? 'enrolment refused').slice(0, 500);
          const transient = msg.code === ErrorCodes.UNAVAILABLE || msg.code === ErrorCodes.INTERNAL;
          reject(new EdgemeshError(transient ? ErrorCodes.UNAVAILABLE : ErrorCodes.TUNNEL_AUTH, message));
        }
        session.close();
      });
      session.once('close', (err) =>
        reject(err ?? new EdgemeshError(ErrorCodes.UNAVAILABLE, 'closed during enrolment')),
      );
      session.sendControl({ t: 'enrol', ...request });
    });
  });
}

async function atomicWrite(file: string, data: string, mode: number): Promise<void> {
  const tmp = `${file}.tmp`;
  await writeFile(tmp, data, { mode });
  await rename(tmp, file);
}
