import { randomBytes } from 'node:crypto';
import {
  CertificatesV1Api,
  type KubeConfig,
  type V1CertificateSigningRequest,
} from '@kubernetes/client-node';
import { EdgemeshError, ErrorCodes } from '../errors.ts';
import { assertName, type IdentityKind, type PeerIdentity } from './identity.ts';

/**
 * Certificates through the Kubernetes CSR API (issue 16 item 9): the tunnel-server holds no
 * CA key. It creates a `certificates.k8s.io/v1` CertificateSigningRequest whose signerName
 * says which kind of identity is asked for, and the in-cluster `edgemesh signer` (the only
 * holder of the mesh CA key) approves and signs it after its own checks (signer/signer.ts).
 *
 *   edgemesh.io/node            a gateway's node certificate (after enrolment proof)
 *   edgemesh.io/tunnel-server   a tunnel-server replica's serving certificate
 *
 * The name in the certificate is the CSR's subject common name; the signer adds the
 * edgemesh:// URI itself and refuses any other requested name or extension.
 */
export const SIGNER_NAMES: Record<IdentityKind, string> = {
  node: 'edgemesh.io/node',
  'tunnel-server': 'edgemesh.io/tunnel-server',
};

/** The usages every edgemesh certificate carries (TLS client and server: tunnels are mutual). */
export const CSR_USAGES = ['digital signature', 'key encipherment', 'server auth', 'client auth'];

/** The API server refuses expirationSeconds below this (certificates.k8s.io validation). */
export const MIN_EXPIRATION_SECONDS = 600;
/** Where a shorter lifetime is asked for (tests rotate certificates of seconds). */
export const LIFETIME_ANNOTATION = 'edgemesh.io/expiration-seconds';

export interface CsrApiOptions {
  /** How long to wait for the signer (ms); default 20 s (enrolment's deadline is 30 s). */
  timeoutMs?: number;
  /** Poll interval while waiting (ms); default 200. */
  pollMs?: number;
}

/**
 * Asks the cluster's edgemesh signer for a certificate: creates the CSR object, waits for
 * `status.certificate` (or a Denied/Failed condition, whose message is passed on), deletes
 * the object. Needs RBAC: create, get and delete certificatesigningrequests.
 */
export class KubernetesCsrClient {
  readonly #api: CertificatesV1Api;
  readonly #timeoutMs: number;
  readonly #pollMs: number;

  constructor(kc: KubeConfig, opts: CsrApiOptions = {}) {
    this.#api = kc.makeApiClient(CertificatesV1Api);
    this.#timeoutMs = opts.timeoutMs ?? 20_000;
    this.#pollMs = opts.pollMs ?? 200;
  }

  /**
   * `lifetimeSeconds` becomes expirationSeconds (a request: the signer caps it at its own
   * --max-cert-lifetime). Below the API's minimum of 600 s it goes in the annotation
   * edgemesh.io/expiration-seconds instead, which the signer reads the same way.
   */
  async request(csrPem: string, id: PeerIdentity, lifetimeSeconds: number): Promise<string> {
    assertName(id.name);
    const name = `edgemesh-${id.kind}-${id.name}`.slice(0, 230) + `-${randomBytes(4).toString('hex')}`;
    const seconds = Math.floor(lifetimeSeconds);
    const body: V1CertificateSigningRequest = {
      apiVersion: 'certificates.k8s.io/v1',
      kind: 'CertificateSigningRequest',
      metadata: {
        name,
        labels: { 'app.kubernetes.io/part-of': 'edgemesh' },
        ...(seconds < MIN_EXPIRATION_SECONDS
          ? { annotations: { [LIFETIME_ANNOTATION]: String(seconds) } }
          : {}),
      },
      spec: {
        signerName: SIGNER_NAMES[id.kind],
        request: Buffer.from(csrPem).toString('base64'),
        usages: CSR_USAGES,
        ...(seconds >= MIN_EXPIRATION_SECONDS ? { expirationSeconds: seconds } : {}),
      },
    };
    await this.#api.createCertificateSigningRequest({ body });
    try {
      const deadline = Date.now() + this.#timeoutMs;
      for (;;) {
        const csr = await this.#api.readCertificateSigningRequest({ name });
        const refused = csr.status?.conditions?.find(
          (c) => (c.type === 'Denied' || c.type === 'Failed') && c.status === 'True',
        );
        if (refused)
          throw new EdgemeshError(
            ErrorCodes.TUNNEL_AUTH,
            `the edgemesh signer refused CertificateSigningRequest ${name}: ${refused.reason ?? refused.type}: ${refused.message ?? ''}`,
          );
        if (csr.status?.certificate) return Buffer.from(csr.status.certificate, 'base64').toString('utf8');
        if (Date.now() > deadline)
          throw new EdgemeshError(
            ErrorCodes.UNAVAILABLE,
            `CertificateSigningRequest ${name} (${SIGNER_NAMES[id.kind]}) not signed within ${this.#timeoutMs} ms: is the edgemesh signer running?`,
          );
        await new Promise((r) => setTimeout(r, this.#pollMs));
      }
    } finally {
      await this.#api.deleteCertificateSigningRequest({ name }).catch(() => undefined);
    }
  }
}
