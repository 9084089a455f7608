import {
  createPrivateKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  X509Certificate,
} from 'node:crypto';
import forge from 'node-forge';
import { configError } from './errors.ts';

/**
 * Certificate basics shared by the webhook's TLS bootstrap and the tunnel's mesh CA.
 * RSA because node-forge (used to build certificates and CSRs) signs only with RSA; the keys
 * themselves come from node:crypto (native, ~50 ms, where forge's pure-JS generator takes seconds).
 */
export interface CertificateAuthority {
  certPem: string;
  keyPem: string;
}

export function generateKeyPem(): string {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
}

/**
 * Why `keyPem` cannot be the mesh CA's key, or undefined when it can. node-forge signs only
 * with RSA, and its own error for an EC key ("ASN.1 object does not contain an RSAPrivateKey")
 * names neither the file nor what to do. EC P-256 would mean building certificates without
 * forge; until then it is refused here, at start, with the way out.
 */
export function caKeyProblem(keyPem: string): string | undefined {
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    return `not a readable PEM private key (${(err as Error).message})`;
  }
  if (key.asymmetricKeyType === 'rsa') return undefined;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  return (
    `is an ${String(key.asymmetricKeyType).toUpperCase()}${curve ? ` ${curve}` : ''} key, but the mesh CA must be RSA ` +
    '(its certificates are signed with node-forge, which signs only with RSA): ' +
    'let edgemesh webhook-tls create the CA, or make an RSA key (openssl genrsa 2048)'
  );
}

/** `keyPem` when it can sign as the mesh CA; else a config error naming `where` (flag and file). */
export function checkedCaKey(keyPem: string, where: string): string {
  const problem = caKeyProblem(keyPem);
  if (problem) throw configError(`${where}: ${problem}`);
  return keyPem;
}

/** A positive 128-bit serial number (leading bit cleared keeps the DER integer positive). */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] &= 0x7f;
  return b.toString('hex');
}

/**
 * An unsigned certificate for `publicKey` with a random serial, valid for `days` (fractions
 * allowed: tests use certificates of seconds) from a minute before `now` (clock skew between
 * nodes). A certificate shorter than ten minutes is backdated by a tenth of its lifetime
 * instead, so that renewal at two thirds of its validity still falls after it was issued.
 * Callers add names and extensions, then sign.
 */
export function newCertificate(
  publicKey: forge.pki.PublicKey,
  now: Date,
  days: number,
): forge.pki.Certificate {
  const lifetimeMs = Math.round(days * 86_400_000);
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = new Date(now.getTime() - Math.min(60_000, Math.floor(lifetimeMs / 10)));
  cert.validity.notAfter = new Date(now.getTime() + lifetimeMs);
  return cert;
}

/** What renewal and metrics need from a certificate: its serial and validity (ms epoch). */
export interface CertificateValidity {
  serial: string;
  notBefore: number;
  notAfter: number;
}

/** The validity of a PEM certificate; throws (with the parser's reason) when it is not one. */
export function certificateValidity(certPem: string): CertificateValidity {
  const cert = new X509Certificate(certPem);
  return {
    serial: cert.serialNumber.toLowerCase(),
    notBefore: Date.parse(cert.validFrom),
    notAfter: Date.parse(cert.validTo),
  };
}

/** A self-signed CA valid from a minute before `now` for `days`. */
export function createCa(commonName: string, opts: { now?: Date; days?: number } = {}): CertificateAuthority {
  const now = opts.now ?? new Date();
  const keyPem = generateKeyPem();
  const key = forge.pki.privateKeyFromPem(keyPem);
  const cert = newCertificate(forge.pki.setRsaPublicKey(key.n, key.e), now, opts.days ?? 3650);
  const subject = [{ name: 'commonName', value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(key, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem };
}
