import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AuthenticationV1Api, CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import { assertName } from '../lib/tunnel/identity.ts';

/**
 * Enrolment: a gateway proves which node it runs on, and the tunnel-server signs a
 * certificate for that node name only. How the proof is checked is pluggable:
 *
 *   - TokenReviewVerifier: the gateway presents its projected service-account token; the
 *     API server's TokenReview says whose it is (the gateway's service account, bound to a
 *     pod), and the pod must be running on the node the gateway claims.
 *   - StaticTokenVerifier: a file of per-node bootstrap tokens (SHA-256 hex), for clusters
 *     without API access from the tunnel-server, and for the NAT lab.
 *
 * A verifier throws an EdgemeshError (TUNNEL_AUTH) saying why it refused.
 */
export interface EnrolmentVerifier {
  verify(request: { node: string; token: string }): Promise<void>;
}

const refuse = (message: string) =>
  new EdgemeshError(ErrorCodes.TUNNEL_AUTH, `enrolment refused: ${message}`);

export class StaticTokenVerifier implements EnrolmentVerifier {
  readonly #hashes: Map<string, Buffer>;

  /** `file`: JSON object { "<node>": "<sha256 hex of the node's token>" }. */
  static fromFile(file: string): StaticTokenVerifier {
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new EdgemeshError(
        ErrorCodes.CONFIG,
        `--enrol-tokens: cannot read ${file}: ${(err as Error).message}`,
      );
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
      throw new EdgemeshError(
        ErrorCodes.CONFIG,
        `--enrol-tokens: ${file} must be a JSON object of node → sha256`,
      );
    const entries = Object.entries(doc as Record<string, unknown>);
    for (const [node, hash] of entries) {
      assertName(node);
      if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash))
        throw new EdgemeshError(ErrorCodes.CONFIG, `--enrol-tokens: ${node}: expected a sha256 hex digest`);
    }
    return new StaticTokenVerifier(new Map(entries.map(([n, h]) => [n, Buffer.from(h as string, 'hex')])));
  }

  constructor(hashes: Map<string, Buffer>) {
    this.#hashes = hashes;
  }

  async verify({ node, token }: { node: string; token: string }): Promise<void> {
    const want = this.#hashes.get(node);
    const got = createHash('sha256').update(token).digest();
    if (!want || !timingSafeEqual(want, got)) throw refuse(`bad bootstrap token for node ${node}`);
  }
}

/**
 * Checks a projected service-account token with the API server (TokenReview), then that the
 * pod the token is bound to runs on the claimed node. Needs RBAC: create tokenreviews, get pods.
 */
export class TokenReviewVerifier implements EnrolmentVerifier {
  readonly #auth: AuthenticationV1Api;
  readonly #core: CoreV1Api;
  readonly #serviceAccount: string;
  readonly #audiences: string[];

  constructor(kc: KubeConfig, opts: { serviceAccount: string; audiences?: string[] }) {
    this.#auth = kc.makeApiClient(AuthenticationV1Api);
    this.#core = kc.makeApiClient(CoreV1Api);
    // "namespace:name" → the username TokenReview reports for that account.
    const [ns, name] = opts.serviceAccount.split(':');
    this.#serviceAccount = `system:serviceaccount:${ns}:${name}`;
    this.#audiences = opts.audiences ?? ['edgemesh-tunnel'];
  }

  async verify({ node, token }: { node: string; token: string }): Promise<void> {
    const review = await this.#auth.createTokenReview({
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenReview',
        spec: { token, audiences: this.#audiences },
      },
    });
    const status = review.status;
    if (!status?.authenticated)
      throw refuse(`token not authenticated${status?.error ? `: ${status.error}` : ''}`);
    if (status.user?.username !== this.#serviceAccount)
      throw refuse(`token belongs to ${status.user?.username}, expected ${this.#serviceAccount}`);
    const extra = status.user?.extra ?? {};
    const podName = extra['authentication.kubernetes.io/pod-name']?.[0];
    if (!podName) throw refuse('token is not bound to a pod (use a projected service-account token)');
    const tokenNode = extra['authentication.kubernetes.io/node-name']?.[0];
    if (tokenNode !== undefined && tokenNode !== node)
      throw refuse(`token is bound to node ${tokenNode}, not ${node}`);
    const namespace = this.#serviceAccount.split(':')[2];
    const pod = await this.#core.readNamespacedPod({ name: podName, namespace });
    if (pod.spec?.nodeName !== node)
      throw refuse(`pod ${podName} runs on ${pod.spec?.nodeName}, not ${node}`);
    if (pod.status?.phase !== 'Running' && pod.status?.phase !== 'Pending')
      throw refuse(`pod ${podName} is ${pod.status?.phase}`);
  }
}
