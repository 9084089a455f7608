import { isIP } from 'node:net';
import { hostname } from 'node:os';
import type { KubeConfig } from '@kubernetes/client-node';
import { certificateValidity, checkedCaKey } from '../lib/certs.ts';
import { defineCommand, readPem } from '../lib/cli.ts';
import { configError, describeError, type EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import { createLogger } from '../lib/log.ts';
import { createRegistry, defaultMetricsHosts, serveMetricsOn } from '../lib/metrics.ts';
import { onShutdown } from '../lib/shutdown.ts';
import { KubernetesCsrClient } from '../lib/tunnel/csr-api.ts';
import {
  createCsr,
  generateKeyPem,
  type PeerIdentity,
  signCsr,
  type TlsIdentity,
} from '../lib/tunnel/identity.ts';
import { validityProblem } from '../lib/tunnel/renewal.ts';
import { CertificateRenewer, certificateMetrics } from '../lib/tunnel/renewer.ts';
import { type EnrolmentVerifier, StaticTokenVerifier, TokenReviewVerifier } from './enrol.ts';
import { DEFAULT_CONNECTION_LIMITS, startTunnelServer } from './server.ts';

function parseListen(v: string): { host: string; port: number } | undefined {
  const m = /^\[?([0-9a-fA-F.:]+)\]?:(\d{1,5})$/.exec(v);
  if (!m) return undefined;
  const port = Number(m[2]);
  return port <= 65535 ? { host: m[1], port } : undefined;
}

/**
 * A certificate lifetime: a whole number of s, m, h or d ("90d"; "20s" for tests that rotate
 * certificates while they run). At least 10 s: renewal happens at ~2/3 of it, and a shorter
 * certificate leaves no time for an enrolment round trip.
 */
export function parseLifetime(v: string): number | undefined {
  const m = /^(\d{1,6})(s|m|h|d)$/.exec(v);
  if (!m) return undefined;
  const ms =
    Number(m[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
  return ms >= 10_000 && ms <= 3650 * 86_400_000 ? ms : undefined;
}
const LIFETIME_RULE = 'must be a number with s, m, h or d (10s to 3650d), e.g. 90d';

export const tunnelServerCommand = defineCommand(
  {
    name: 'tunnel-server',
    summary:
      'Rendezvous and relay for gateways behind NATs: registry of enrolled gateways, observed addresses, ' +
      'hole-punch coordination, STUN, and a byte-splicing relay that never sees plaintext.',
    details:
      'Run any number of replicas; gateways connect to all of them. Node certificates (at enrolment) and this\n' +
      "replica's own serving certificate (at start, and again at ~2/3 of its lifetime) are signed by the\n" +
      'in-cluster edgemesh signer (--signer=kubernetes) or a CA key held here (--signer=local).\n' +
      'Protocol: docs/tunnel.md.',
    options: {
      listen: {
        type: 'string',
        default: '0.0.0.0:20007',
        description: 'TCP (and UDP/STUN) address ADDR:PORT',
        validate: (v: string) => (parseListen(v) ? undefined : 'must be ADDR:PORT'),
      },
      name: {
        type: 'string',
        default: hostname(),
        description: 'replica name (in its certificate and logs)',
      },
      'ca-cert': {
        type: 'string',
        default: '/etc/edgemesh/ca/ca.crt',
        description: 'mesh CA certificate (PEM)',
      },
      'ca-key': {
        type: 'string',
        default: '/etc/edgemesh/ca/ca.key',
        description: 'mesh CA private key (PEM), with --signer=local only',
      },
      signer: {
        type: 'string',
        default: 'local',
        description:
          'who signs certificates: local (the --ca-key held here) or kubernetes (CertificateSigningRequests ' +
          'signed by the in-cluster `edgemesh signer`; no CA key on this internet-facing server)',
        validate: (v: string) =>
          v === 'local' || v === 'kubernetes' ? undefined : 'must be local or kubernetes',
      },
      'node-cert-lifetime': {
        type: 'string',
        default: '90d',
        description: 'lifetime of node certificates signed at enrolment (gateways renew at ~2/3 of it)',
        validate: (v: string) => (parseLifetime(v) ? undefined : LIFETIME_RULE),
      },
      'server-cert-lifetime': {
        type: 'string',
        default: '90d',
        description: "lifetime of this replica's own certificate (renewed at ~2/3 of it while running)",
        validate: (v: string) => (parseLifetime(v) ? undefined : LIFETIME_RULE),
      },
      'server-ip': {
        type: 'list',
        default: [],
        description: 'public IPs to put in the serving certificate (informational; peers check the URI SAN)',
      },
      'enrol-tokens': {
        type: 'string',
        description: 'JSON file { node: sha256(token) } of bootstrap tokens (static enrolment)',
      },
      'token-review': {
        type: 'boolean',
        default: false,
        description: 'verify enrolment tokens with the API server (TokenReview + pod on node)',
      },
      kubeconfig: {
        type: 'string',
        description: 'kubeconfig for --token-review and --signer=kubernetes (in-cluster when absent)',
      },
      'gateway-service-account': {
        type: 'string',
        default: 'edgemesh-system:edgemesh-gateway',
        description: 'NAMESPACE:NAME of the gateways service account (--token-review)',
        validate: (v: string) =>
          /^[a-z0-9-]{1,63}:[a-z0-9.-]{1,253}$/.test(v) ? undefined : 'must be NAMESPACE:NAME',
      },
      'relay-max-sessions': {
        type: 'integer',
        default: 0,
        min: 0,
        description: 'concurrent relayed sessions per node (0 = unlimited)',
      },
      'relay-bytes-per-second': {
        type: 'integer',
        default: 0,
        min: 0,
        description: 'relay bandwidth per node in bytes/s (0 = unlimited; a limit slows, never cuts)',
      },
      'max-connections': {
        type: 'integer',
        default: DEFAULT_CONNECTION_LIMITS.maxConnections,
        min: 1,
        description: 'open TCP connections in all; more are closed at once',
      },
      'max-connections-per-ip': {
        type: 'integer',
        default: DEFAULT_CONNECTION_LIMITS.maxConnectionsPerIp,
        min: 1,
        description: "open TCP connections from one source IP (a site's NAT counts once)",
      },
      'metrics-host': {
        type: 'list',
        default: [],
        description:
          'addresses for /metrics (default: POD_IP from the downward API and 127.0.0.1; never all interfaces)',
      },
      'metrics-port': {
        type: 'integer',
        default: 0,
        min: 0,
        max: 65535,
        description: 'port for /metrics (0 = off)',
      },
      config: { type: 'string', description: 'config file (JSON or YAML) with any of these options' },
    },
  },
  async (opts) => {
    const log = createLogger('tunnel-server');
    const listen = parseListen(opts.listen);
    if (!listen) throw configError('--listen: must be ADDR:PORT');
    for (const h of opts['metrics-host'])
      if (!isIP(h)) throw configError(`--metrics-host: ${JSON.stringify(h)} is not an IP address`);
    const caPem = readPem('ca-cert', opts['ca-cert']);
    const serverSeconds = (parseLifetime(opts['server-cert-lifetime']) as number) / 1000;
    const nodeSeconds = (parseLifetime(opts['node-cert-lifetime']) as number) / 1000;
    let kc: KubeConfig | undefined;
    const kubeConfig = async () => {
      if (!kc) {
        const { KubeConfig } = await import('@kubernetes/client-node');
        kc = new KubeConfig();
        if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
        else kc.loadFromCluster();
      }
      return kc;
    };
    // Who signs: the in-cluster edgemesh signer through the CSR API (no CA key here), or the
    // mesh CA key given with --ca-key (standalone use and tests).
    let signIdentity: (csrPem: string, id: PeerIdentity, seconds: number) => Promise<string>;
    let signedBy: string;
    if (opts.signer === 'kubernetes') {
      const csrApi = new KubernetesCsrClient(await kubeConfig());
      signIdentity = (csrPem, id, seconds) => csrApi.request(csrPem, id, seconds);
      signedBy = 'the edgemesh signer, through the Kubernetes CSR API';
    } else {
      const keyPem = checkedCaKey(readPem('ca-key', opts['ca-key']), `--ca-key ${opts['ca-key']}`);
      const ca = { certPem: caPem, keyPem };
      signIdentity = async (csrPem, id, seconds) => signCsr(ca, csrPem, id, { days: seconds / 86_400 });
      signedBy = `the mesh CA ${opts['ca-cert']}`;
    }
    // This replica's serving identity: a fresh key each start and each renewal (a CA that has
    // expired is named with its file: nothing it signs is trusted).
    const issue = async (): Promise<TlsIdentity> => {
      let problem: string | undefined;
      try {
        problem = validityProblem(certificateValidity(caPem), Date.now());
      } catch (err) {
        problem = `not a PEM certificate (${(err as Error).message})`;
      }
      if (problem) throw configError(`--ca-cert: the mesh CA ${opts['ca-cert']} is ${problem}`);
      const id: PeerIdentity = { kind: 'tunnel-server', name: opts.name };
      const keyPem = generateKeyPem();
      const certPem = await signIdentity(createCsr(keyPem, id), id, serverSeconds);
      return { keyPem, certPem, caPem };
    };
    // Through the CSR API the first certificate needs the API server and the signer, which
    // may start after this pod (a whole cloud restarting): wait for them, retrying 1 s → 30 s,
    // instead of exiting into the kubelet's crash-loop backoff (up to 5 min).
    let identity: TlsIdentity | undefined;
    for (let delay = 1_000; !identity; delay = Math.min(delay * 2, 30_000)) {
      try {
        identity = await issue();
      } catch (err) {
        if (opts.signer !== 'kubernetes' || (err as EdgemeshError).code === ErrorCodes.CONFIG) throw err;
        log.warn(
          { err: describeError(err), retryInMs: delay },
          'no serving certificate yet (API server or edgemesh signer not answering): retrying',
        );
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    let verifier: EnrolmentVerifier | undefined;
    if (opts['token-review']) {
      verifier = new TokenReviewVerifier(await kubeConfig(), {
        serviceAccount: opts['gateway-service-account'],
      });
    } else if (opts['enrol-tokens']) {
      verifier = StaticTokenVerifier.fromFile(opts['enrol-tokens']);
    }
    const registry = createRegistry('tunnel-server');
    const server = await startTunnelServer({
      name: opts.name,
      ...listen,
      caPem,
      identity,
      signNode: (csrPem, node) => signIdentity(csrPem, { kind: 'node', name: node }, nodeSeconds),
      verifier,
      limits: {
        maxRelaysPerNode: opts['relay-max-sessions'],
        bytesPerSecondPerNode: opts['relay-bytes-per-second'],
      },
      connections: {
        maxConnections: opts['max-connections'],
        maxConnectionsPerIp: opts['max-connections-per-ip'],
      },
      log,
      registry,
    });
    const renewer = new CertificateRenewer({
      what: `tunnel-server certificate (signed by ${signedBy})`,
      current: identity,
      renew: issue,
      onRenewed: (id) => server.setIdentity(id),
      metrics: certificateMetrics('edgemesh_tunnel_server', registry),
      log,
    });
    renewer.start();
    const metrics =
      opts['metrics-port'] > 0
        ? await serveMetricsOn(
            registry,
            opts['metrics-host'].length > 0
              ? opts['metrics-host']
              : defaultMetricsHosts([listen.host, process.env.POD_IP]),
            { port: opts['metrics-port'] },
          )
        : undefined;
    onShutdown(log, async () => {
      metrics?.close();
      renewer.close();
      await server.close();
    });
  },
);
