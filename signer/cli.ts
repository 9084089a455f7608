import { isIP } from 'node:net';
import { checkedCaKey } from '../lib/certs.ts';
import { defineCommand, readPem } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { createLogger } from '../lib/log.ts';
import { createRegistry, defaultMetricsHosts, serveMetricsOn } from '../lib/metrics.ts';
import { onShutdown } from '../lib/shutdown.ts';
import { parseLifetime } from '../tunnel-server/cli.ts';
import { CsrSigner } from './signer.ts';

export const signerCommand = defineCommand(
  {
    name: 'signer',
    summary:
      'Signs edgemesh certificates (node and tunnel-server identities) requested through the Kubernetes ' +
      'CSR API, after checking requester, name and node; the only holder of the mesh CA key.',
    details:
      'Signers edgemesh.io/node and edgemesh.io/tunnel-server. Listens on no port unless --metrics-port\n' +
      'is set (process metrics and edgemesh_build_info). A node annotated\n' +
      'edgemesh.io/revoked is refused. Design: docs/tunnel.md "Identity and enrolment".',
    options: {
      'ca-cert': {
        type: 'string',
        default: '/etc/edgemesh/ca/ca.crt',
        description: 'mesh CA certificate (PEM)',
      },
      'ca-key': {
        type: 'string',
        default: '/etc/edgemesh/ca/ca.key',
        description: 'mesh CA private key (PEM)',
      },
      requester: {
        type: 'string',
        default: 'edgemesh-system:edgemesh-tunnel-server',
        description: 'NAMESPACE:NAME of the service account whose CSRs are signed (the tunnel-server)',
        validate: (v: string) =>
          /^[a-z0-9-]{1,63}:[a-z0-9.-]{1,253}$/.test(v) ? undefined : 'must be NAMESPACE:NAME',
      },
      'max-cert-lifetime': {
        type: 'string',
        default: '90d',
        description: 'longest certificate signed (a CSR may ask for less with expirationSeconds)',
        validate: (v: string) =>
          parseLifetime(v) ? undefined : 'must be a number with s, m, h or d (10s to 3650d)',
      },
      'interval-ms': {
        type: 'integer',
        default: 500,
        min: 50,
        description: 'how often pending CSRs are listed',
      },
      'metrics-port': {
        type: 'integer',
        default: 0,
        min: 0,
        max: 65535,
        description: 'port for /metrics (0 = off: the signer then listens on nothing)',
      },
      'metrics-host': {
        type: 'list',
        default: [],
        description:
          'addresses for /metrics (default: POD_IP from the downward API and 127.0.0.1; never all interfaces)',
      },
      kubeconfig: { type: 'string', description: 'kubeconfig (in-cluster when absent)' },
      config: { type: 'string', description: 'config file (JSON or YAML) with any of these options' },
    },
  },
  async (opts) => {
    for (const h of opts['metrics-host'])
      if (!isIP(h)) throw configError(`--metrics-host: ${JSON.stringify(h)} is not an IP address`);
    const log = createLogger('signer');
    const ca = {
      certPem: readPem('ca-cert', opts['ca-cert']),
      keyPem: checkedCaKey(readPem('ca-key', opts['ca-key']), `--ca-key ${opts['ca-key']}`),
    };
    const { KubeConfig } = await import('@kubernetes/client-node');
    const kc = new KubeConfig();
    if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
    else kc.loadFromCluster();
    const signer = new CsrSigner(kc, {
      ca,
      requester: opts.requester,
      maxLifetimeSeconds: Math.floor((parseLifetime(opts['max-cert-lifetime']) as number) / 1000),
      log,
    });
    signer.start(opts['interval-ms']);
    const metrics =
      opts['metrics-port'] > 0
        ? await serveMetricsOn(
            createRegistry('signer'),
            opts['metrics-host'].length > 0
              ? opts['metrics-host']
              : defaultMetricsHosts([process.env.POD_IP]),
            { port: opts['metrics-port'] },
          )
        : undefined;
    log.info({ requester: opts.requester }, 'signer ready');
    onShutdown(log, async () => {
      metrics?.close();
      await signer.close();
    });
  },
);
