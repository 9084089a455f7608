import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import tls from 'node:tls';
import { describeError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { createCsr, generateKeyPem, identityOfCert, type TlsIdentity } from '../../lib/tunnel/identity.ts';
import { MuxSession } from '../../lib/tunnel/mux.ts';
import type { ServerAddress } from './server-link.ts';

/**
 * A gateway's identity: its own key (generated here on first start, kept in the state
 * directory, never sent anywhere) and a certificate for its node name from the mesh CA,
 * obtained by enrolment at any tunnel-server replica: TLS to the server (verified against
 * the mesh CA as a tunnel-server), then { t: "enrol", node, csr, token } where the token
 * proves the node (a projected service-account token, or a bootstrap token).
 * A certificate with less than a third of its life left is renewed at start.
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

export async function loadOrEnrol(opts: EnrolOptions): Promise<TlsIdentity> {
  const keyFile = join(opts.stateDir, 'tunnel.key');
  const certFile = join(opts.stateDir, 'tunnel.crt');
  await mkdir(opts.stateDir, { recursive: true });
  let keyPem = await readFile(keyFile, 'utf8').catch(() => undefined);
  if (!keyPem) {
    keyPem = generateKeyPem();
    await atomicWrite(keyFile, keyPem, 0o600);
  }
  const existing = await readFile(certFile, 'utf8').catch(() => undefined);
  if (existing && usable(existing, opts.nodeName, opts.caPem))
    return { keyPem, certPem: existing, caPem: opts.caPem };

  const csr = createCsr(keyPem, { kind: 'node', name: opts.nodeName });
  let lastErr: unknown;
  for (const server of opts.servers) {
    try {
      const certPem = await enrolAt(
        server,
        { node: opts.nodeName, csr, token: await opts.token() },
        opts.caPem,
        opts.timeoutMs ?? 10_000,
      );
      if (!usable(certPem, opts.nodeName, opts.caPem))
        throw new EdgemeshError(
          ErrorCodes.TUNNEL_AUTH,
          'server returned a certificate that does not name this node',
        );
      await atomicWrite(certFile, certPem, 0o644);
      opts.log.info({ server: `${server.host}:${server.port}` }, 'enrolled with the mesh CA');
      return { keyPem, certPem, caPem: opts.caPem };
    } catch (err) {
      lastErr = err;
      opts.log.warn({ server: `${server.host}:${server.port}`, err: describeError(err) }, 'enrolment failed');
    }
  }
  throw new EdgemeshError(
    ErrorCodes.TUNNEL_AUTH,
    `enrolment failed at every tunnel-server: ${describeError(lastErr)}`,
  );
}

function usable(certPem: string, node: string, caPem: string): boolean {
  try {
    const cert = new X509Certificate(certPem);
    const ca = new X509Certificate(caPem);
    const id = identityOfCert(certPem);
    const from = Date.parse(cert.validFrom);
    const to = Date.parse(cert.validTo);
    const now = Date.now();
    return id?.kind === 'node' && id.name === node && cert.verify(ca.publicKey) && now < to - (to - from) / 3;
  } catch {
    return false;
  }
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
        else reject(new EdgemeshError(ErrorCodes.TUNNEL_AUTH, String(msg.message ?? 'enrolment refused')));
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
