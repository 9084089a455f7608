import {
  CertificatesV1Api,
  CoreV1Api,
  type KubeConfig,
  type V1CertificateSigningRequest,
} from '@kubernetes/client-node';
import forge from 'node-forge';
import { describeError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { CSR_USAGES, LIFETIME_ANNOTATION, SIGNER_NAMES } from '../lib/tunnel/csr-api.ts';
import {
  type CertificateAuthority,
  type IdentityKind,
  type PeerIdentity,
  signCsr,
} from '../lib/tunnel/identity.ts';

/**
 * The edgemesh signer (issue 16 item 9): the only process that holds the mesh CA key. It runs
 * in the cluster with no listening socket, and signs `certificates.k8s.io/v1`
 * CertificateSigningRequests for the signerNames edgemesh.io/node and
 * edgemesh.io/tunnel-server, after checking each one itself:
 *
 *   - requested by the tunnel-server's service account (spec.username), nobody else;
 *   - the PKCS#10 request verifies, RSA ≥ 2048, its subject is only a common name that is a
 *     valid name, and it asks for no extensions (no SANs): the certificate names exactly
 *     edgemesh://<kind>/<common name>, added here;
 *   - usages are edgemesh's (digital signature, key encipherment, server auth, client auth);
 *   - for a node: the Node exists and is not revoked (annotation `edgemesh.io/revoked`).
 *
 * A CSR that passes is approved (condition Approved, reason EdgemeshSignerApproved) and
 * signed (status.certificate); one that does not is denied with the reason in the message
 * (the tunnel-server passes it on to the gateway). The lifetime is expirationSeconds (or,
 * below the API's minimum of 600 s, the edgemesh.io/expiration-seconds annotation) when
 * given, capped at `maxLifetimeSeconds`.
 *
 * A stolen tunnel-server can therefore still obtain certificates — for existing,
 * unrevoked nodes, while it holds its service account — but cannot keep the CA key, and
 * every certificate it gets leaves a CSR in the API server's audit log.
 */
export const REVOKED_ANNOTATION = 'edgemesh.io/revoked';

export interface SignerOptions {
  ca: CertificateAuthority;
  /** NAMESPACE:NAME of the tunnel-server's service account: the only requester signed for. */
  requester: string;
  maxLifetimeSeconds: number;
  log: Logger;
}

export type Decision =
  | { approve: true; id: PeerIdentity; seconds: number }
  | { approve: false; reason: string };

const KIND_OF_SIGNER = new Map<string, IdentityKind>(
  Object.entries(SIGNER_NAMES).map(([kind, signer]) => [signer, kind as IdentityKind]),
);
const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export class CsrSigner {
  readonly #certs: CertificatesV1Api;
  readonly #core: CoreV1Api;
  readonly #opts: SignerOptions;
  readonly #username: string;
  readonly #done = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(kc: KubeConfig, opts: SignerOptions) {
    this.#certs = kc.makeApiClient(CertificatesV1Api);
    this.#core = kc.makeApiClient(CoreV1Api);
    this.#opts = opts;
    const [ns, name] = opts.requester.split(':');
    this.#username = `system:serviceaccount:${ns}:${name}`;
  }

  /** Looks at every pending edgemesh CSR now, then every `intervalMs`. */
  start(intervalMs = 500): void {
    const tick = async () => {
      try {
        await this.reconcile();
      } catch (err) {
        this.#opts.log.warn({ err: describeError(err) }, 'listing CertificateSigningRequests failed');
      }
      if (!this.#closed) this.#timer = setTimeout(tick, intervalMs);
    };
    void tick();
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  /** One pass: decides every pending CSR of our signerNames. */
  async reconcile(): Promise<void> {
    const seen = new Set<string>();
    for (const signerName of KIND_OF_SIGNER.keys()) {
      const list = await this.#certs.listCertificateSigningRequest({
        fieldSelector: `spec.signerName=${signerName}`,
      });
      for (const csr of list.items) {
        const uid = csr.metadata?.uid ?? '';
        seen.add(uid);
        if (this.#done.has(uid) || csr.status?.certificate || (csr.status?.conditions?.length ?? 0) > 0)
          continue;
        this.#done.add(uid);
        await this.#handle(csr).catch((err) => {
          this.#done.delete(uid);
          this.#opts.log.warn(
            { csr: csr.metadata?.name, err: describeError(err) },
            'could not decide a CertificateSigningRequest: will retry',
          );
        });
      }
    }
    for (const uid of this.#done) if (!seen.has(uid)) this.#done.delete(uid);
  }

  /** What to do with a CSR (exported for tests through the class). */
  async decide(csr: V1CertificateSigningRequest): Promise<Decision> {
    const deny = (reason: string): Decision => ({ approve: false, reason });
    const kind = KIND_OF_SIGNER.get(csr.spec.signerName);
    if (!kind) return deny(`signer ${csr.spec.signerName} is not edgemesh's`);
    if (csr.spec.username !== this.#username)
      return deny(
        `requested by ${csr.spec.username}; only ${this.#username} may request edgemesh certificates`,
      );
    const usages = csr.spec.usages ?? [];
    if (usages.some((u) => !CSR_USAGES.includes(u)))
      return deny(`usages ${JSON.stringify(usages)}: only ${CSR_USAGES.join(', ')}`);
    let req: ReturnType<typeof forge.pki.certificationRequestFromPem>;
    try {
      req = forge.pki.certificationRequestFromPem(Buffer.from(csr.spec.request, 'base64').toString('utf8'));
    } catch (err) {
      return deny(`spec.request is not a PEM certificate request: ${(err as Error).message}`);
    }
    try {
      if (!req.verify()) return deny('the request signature does not verify');
    } catch {
      return deny('the request signature does not verify');
    }
    const pub = req.publicKey as forge.pki.rsa.PublicKey | null;
    if (!pub?.n || pub.n.bitLength() < 2048) return deny('the key must be RSA ≥ 2048 bits');
    const attrs = req.subject.attributes;
    if (attrs.length !== 1 || attrs[0].name !== 'commonName')
      return deny('the subject must be a common name only (the identity)');
    const name = String(attrs[0].value);
    if (name.length > 253 || !NAME.test(name))
      return deny(`${JSON.stringify(name)} is not a valid ${kind} name`);
    if (req.getAttribute({ name: 'extensionRequest' }))
      return deny(
        'the request asks for extensions (SANs): edgemesh certificates name only edgemesh://' +
          `${kind}/<name>`,
      );
    if (kind === 'node') {
      let node: Awaited<ReturnType<CoreV1Api['readNode']>>;
      try {
        node = await this.#core.readNode({ name });
      } catch (err) {
        if ((err as { code?: number }).code === 404) return deny(`node ${name} does not exist`);
        throw err;
      }
      const revoked = node.metadata?.annotations?.[REVOKED_ANNOTATION];
      if (revoked !== undefined) return deny(`node ${name} is revoked (${REVOKED_ANNOTATION}: ${revoked})`);
    }
    const max = this.#opts.maxLifetimeSeconds;
    const annotated = Number(csr.metadata?.annotations?.[LIFETIME_ANNOTATION]);
    const asked =
      csr.spec.expirationSeconds ?? (Number.isInteger(annotated) && annotated >= 10 ? annotated : max);
    const seconds = Math.min(asked, max);
    return { approve: true, id: { kind, name }, seconds };
  }

  async #handle(csr: V1CertificateSigningRequest): Promise<void> {
    const { log } = this.#opts;
    const name = csr.metadata?.name ?? '';
    const d = await this.decide(csr);
    const now = new Date();
    if (!d.approve) {
      csr.status = {
        conditions: [
          {
            type: 'Denied',
            status: 'True',
            reason: 'EdgemeshSignerDenied',
            message: d.reason,
            lastUpdateTime: now,
          },
        ],
      };
      await this.#certs.replaceCertificateSigningRequestApproval({ name, body: csr });
      log.warn(
        { csr: name, requester: csr.spec.username, reason: d.reason },
        'CertificateSigningRequest denied',
      );
      return;
    }
    const uri = `edgemesh://${d.id.kind}/${d.id.name}`;
    csr.status = {
      conditions: [
        {
          type: 'Approved',
          status: 'True',
          reason: 'EdgemeshSignerApproved',
          message: `${uri}, ${d.seconds} s`,
          lastUpdateTime: now,
        },
      ],
    };
    const approved = await this.#certs.replaceCertificateSigningRequestApproval({ name, body: csr });
    const certPem = signCsr(this.#opts.ca, Buffer.from(csr.spec.request, 'base64').toString('utf8'), d.id, {
      days: d.seconds / 86_400,
    });
    approved.status = { ...approved.status, certificate: Buffer.from(certPem).toString('base64') };
    await this.#certs.replaceCertificateSigningRequestStatus({ name, body: approved });
    log.info({ csr: name, identity: uri, seconds: d.seconds }, 'CertificateSigningRequest signed');
  }
}
