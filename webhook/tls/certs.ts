import forge from 'node-forge';
import { createCa as createSharedCa, generateKeyPem, newCertificate } from '../../lib/certs.ts';

/**
 * Certificates for the webhook, made with node-forge. Pure apart from randomness: the
 * caller passes `now`, so expiry and rotation decisions are testable.
 */
export interface KeyPairPem {
  certPem: string;
  keyPem: string;
}

export interface WebhookCertificates {
  ca: KeyPairPem;
  serving: KeyPairPem;
}

const DAY_MS = 86_400_000;
export const CA_VALIDITY_DAYS = 3650;
export const SERVING_VALIDITY_DAYS = 365;
/** Rotate the serving certificate once it is this close to expiry. */
export const ROTATE_BEFORE_DAYS = 30;

/** The DNS names a Service is reached by from the API server. */
export function serviceDnsNames(
  service: string,
  namespace: string,
  clusterDomain = 'cluster.local',
): string[] {
  return [
    service,
    `${service}.${namespace}`,
    `${service}.${namespace}.svc`,
    `${service}.${namespace}.svc.${clusterDomain}`,
  ];
}

export function createCa(now: Date, commonName = 'edgemesh-webhook-ca'): KeyPairPem {
  return createSharedCa(commonName, { now, days: CA_VALIDITY_DAYS });
}

export function createServingCert(
  ca: KeyPairPem,
  dnsNames: string[],
  now: Date,
  ipAddresses: string[] = [],
): KeyPairPem {
  if (dnsNames.length === 0 && ipAddresses.length === 0)
    throw new Error('a serving certificate needs at least one DNS name or IP');
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const caKey = forge.pki.privateKeyFromPem(ca.keyPem);
  const keyPem = generateKeyPem();
  const key = forge.pki.privateKeyFromPem(keyPem);
  const cert = newCertificate(forge.pki.setRsaPublicKey(key.n, key.e), now, SERVING_VALIDITY_DAYS);
  cert.setSubject([{ name: 'commonName', value: dnsNames[0] ?? ipAddresses[0] }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: [
        ...dnsNames.map((value) => ({ type: 2, value })),
        ...ipAddresses.map((ip) => ({ type: 7, ip })),
      ],
    },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem };
}

export interface CertFacts {
  notAfter: Date;
  dnsNames: string[];
  ipAddresses: string[];
  issuedBy: (ca: KeyPairPem) => boolean;
  matchesKey: (keyPem: string) => boolean;
}

export function inspect(certPem: string): CertFacts {
  const cert = forge.pki.certificateFromPem(certPem);
  const san = cert.getExtension('subjectAltName') as
    | { altNames?: Array<{ type: number; value?: string; ip?: string }> }
    | undefined;
  return {
    notAfter: cert.validity.notAfter,
    dnsNames: (san?.altNames ?? []).filter((n) => n.type === 2).map((n) => n.value ?? ''),
    ipAddresses: (san?.altNames ?? []).filter((n) => n.type === 7).map((n) => n.ip ?? ''),
    issuedBy: (ca) => {
      try {
        return forge.pki.certificateFromPem(ca.certPem).verify(cert);
      } catch {
        return false;
      }
    },
    matchesKey: (keyPem) => {
      try {
        const key = forge.pki.privateKeyFromPem(keyPem);
        const pub = cert.publicKey as forge.pki.rsa.PublicKey;
        return key.n.equals(pub.n) && key.e.equals(pub.e);
      } catch {
        return false;
      }
    },
  };
}

/**
 * Why the stored certificates must be replaced (or undefined when they are fine): missing,
 * unparsable, not from this CA, wrong names, or expiring within ROTATE_BEFORE_DAYS.
 */
export function rotationReason(
  stored: Partial<WebhookCertificates> | undefined,
  dnsNames: string[],
  now: Date,
): string | undefined {
  if (!stored?.ca || !stored.serving) return 'no certificates stored yet';
  let serving: CertFacts;
  let ca: CertFacts;
  try {
    serving = inspect(stored.serving.certPem);
    ca = inspect(stored.ca.certPem);
  } catch (err) {
    return `stored certificate is unreadable: ${(err as Error).message}`;
  }
  if (!serving.issuedBy(stored.ca)) return 'serving certificate is not signed by the stored CA';
  if (!serving.matchesKey(stored.serving.keyPem)) return 'serving key does not match the certificate';
  const missing = dnsNames.filter((n) => !serving.dnsNames.includes(n));
  if (missing.length > 0) return `serving certificate lacks ${missing.join(', ')}`;
  const left = (d: Date) => (d.getTime() - now.getTime()) / DAY_MS;
  if (left(ca.notAfter) < ROTATE_BEFORE_DAYS) return `CA expires in ${Math.floor(left(ca.notAfter))} days`;
  if (left(serving.notAfter) < ROTATE_BEFORE_DAYS)
    return `serving certificate expires in ${Math.floor(left(serving.notAfter))} days`;
  return undefined;
}
