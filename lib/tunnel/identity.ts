import { X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { type CertificateAuthority, createCa, generateKeyPem, newCertificate } from '../certs.ts';
import { EdgemeshError, ErrorCodes } from '../errors.ts';

export { type CertificateAuthority, generateKeyPem };

/**
 * Per-node identities for the tunnel. The mesh CA (held by the tunnel-server) signs one
 * certificate per node; the node's private key is generated on the node and never leaves it
 * (the node sends a CSR). Who a certificate names is carried in a URI SAN, so a node
 * certificate cannot pose as a tunnel-server or as another node:
 *
 *   edgemesh://node/<node-name>        gateways (TLS client and server auth)
 *   edgemesh://tunnel-server/<name>    tunnel-server replicas
 *
 * Keys and the CA itself come from lib/certs.ts (shared with the webhook's TLS bootstrap).
 */
export type IdentityKind = 'node' | 'tunnel-server';

export interface PeerIdentity {
  kind: IdentityKind;
  name: string;
}

/** PEM material a TLS endpoint needs. */
export interface TlsIdentity {
  keyPem: string;
  certPem: string;
  /** The mesh CA certificate: the only trust anchor for peers. */
  caPem: string;
}

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function assertName(name: string): void {
  if (name.length > 253 || !NAME.test(name)) {
    throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, `${JSON.stringify(name)} is not a valid node name`);
  }
}

export function identityUri(id: PeerIdentity): string {
  return `edgemesh://${id.kind}/${id.name}`;
}

/** The mesh CA (kept under this name for the tunnel's callers). */
export function createCA(commonName = 'edgemesh mesh CA', days = 3650): CertificateAuthority {
  return createCa(commonName, { days });
}

export function createCsr(keyPem: string, id: PeerIdentity): string {
  assertName(id.name);
  const key = forge.pki.privateKeyFromPem(keyPem);
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  csr.setSubject([{ name: 'commonName', value: id.name }]);
  csr.sign(key, forge.md.sha256.create());
  return forge.pki.certificationRequestToPem(csr);
}

/**
 * Signs a CSR for the identity the caller has already verified. The CSR's own subject is
 * ignored: the certificate names only `id` (what enrolment proved), never what the
 * requester asked for.
 */
export function signCsr(
  ca: CertificateAuthority,
  csrPem: string,
  id: PeerIdentity,
  opts: { days?: number; ipSans?: string[]; dnsSans?: string[] } = {},
): string {
  assertName(id.name);
  let csr: ReturnType<typeof forge.pki.certificationRequestFromPem>;
  try {
    csr = forge.pki.certificationRequestFromPem(csrPem);
  } catch (err) {
    throw new EdgemeshError(
      ErrorCodes.TUNNEL_AUTH,
      `CSR is not a valid PEM certification request: ${(err as Error).message}`,
    );
  }
  if (!csr.verify()) throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, 'CSR signature does not verify');
  const pub = csr.publicKey as forge.pki.rsa.PublicKey | null;
  if (!pub?.n || pub.n.bitLength() < 2048)
    throw new EdgemeshError(ErrorCodes.TUNNEL_AUTH, 'CSR key must be RSA ≥ 2048 bits');
  const caKey = forge.pki.privateKeyFromPem(ca.keyPem);
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const cert = newCertificate(pub, new Date(), opts.days ?? 90);
  cert.setSubject([{ name: 'commonName', value: id.name }]);
  cert.setIssuer(caCert.subject.attributes);
  const altNames: { type: number; value?: string; ip?: string }[] = [{ type: 6, value: identityUri(id) }];
  for (const ip of opts.ipSans ?? []) altNames.push({ type: 7, ip });
  for (const dns of opts.dnsSans ?? []) altNames.push({ type: 2, value: dns });
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    { name: 'subjectAltName', altNames },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

/** Key + certificate for `id` straight from a CA held in the same process (tests, server bootstrap). */
export function issueIdentity(
  ca: CertificateAuthority,
  id: PeerIdentity,
  opts: { ipSans?: string[]; days?: number } = {},
): TlsIdentity {
  const keyPem = generateKeyPem();
  const certPem = signCsr(ca, createCsr(keyPem, id), id, opts);
  return { keyPem, certPem, caPem: ca.certPem };
}

/**
 * The identity a verified peer certificate names (from its edgemesh:// URI SAN), or
 * undefined when it names none or more than one.
 */
export function identityOfCert(raw: Buffer | string): PeerIdentity | undefined {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(raw);
  } catch {
    return undefined;
  }
  const uris = (cert.subjectAltName ?? '')
    .split(', ')
    .filter((s) => s.startsWith('URI:edgemesh://'))
    .map((s) => s.slice('URI:edgemesh://'.length));
  if (uris.length !== 1) return undefined;
  const m = /^(node|tunnel-server)\/(.+)$/.exec(uris[0]);
  if (!m || !NAME.test(m[2])) return undefined;
  return { kind: m[1] as IdentityKind, name: m[2] };
}
