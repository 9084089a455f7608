/**
 * Operator commands (run on a workstation or in CI, never deployed): `edgemesh version`.
 * Flags only here; what is read is in cluster.ts, what it means in version-report.ts, how it
 * reads in version-format.ts.
 */
import { buildInfo } from '../lib/build-info.ts';
import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { ClusterReader } from './cluster.ts';
import { clusterOptions } from './flags.ts';
import { CONFIG_KEY, CONFIG_MAP } from './injected-image.ts';
import { chooseKubeconfig, connect } from './kube.ts';
import type { PodSummary } from './pods.ts';
import { clientLine, formatVersionReport } from './version-format.ts';
import { type VersionReport, versionReport } from './version-report.ts';

/** The client's own line, for `edgemesh --version`. */
export function clientVersionLine(): string {
  return clientLine(buildInfo());
}

export const versionCommand = defineCommand(
  {
    name: 'version',
    summary:
      "Print this client's version and commit and, when a kubeconfig is usable (as kubectl version " +
      'decides), the versions the cluster runs: webhook, gateways, tunnel-servers, signer and the ' +
      "injected sidecars, with any skew against the client's version.",
    details: [
      'Which cluster: --kubeconfig, else the first existing file in $KUBECONFIG, else ~/.kube/config,',
      'else the in-cluster service account. Without any, only the client is printed (exit 0) unless',
      "--cluster asks for the cluster. Versions are read from the Pods' image tags",
      '(<version> or <version>-<12 hex build>); sidecars are also checked against the image the',
      'webhook injects now (its --image, else injection.image in ConfigMap edgemesh-config, else',
      'its own image). Exit 1 when something could not be read.',
      '',
      'Needs: get /version; list pods in the edgemesh namespace; list pods cluster-wide (sidecars);',
      'get configmaps in the edgemesh namespace (optional).',
      '',
      'Examples: edgemesh version',
      '          edgemesh version --client',
      '          edgemesh version --cluster --context prod --all-pods -o json',
    ].join('\n'),
    options: {
      client: { type: 'boolean', default: false, description: 'only the client, no cluster' },
      cluster: {
        type: 'boolean',
        default: false,
        description: 'require the cluster: fail when no kubeconfig is usable',
      },
      ...clusterOptions('API answer'),
      'all-pods': {
        type: 'boolean',
        default: false,
        description: 'list every injected pod, not only those whose sidecar differs',
      },
    },
  },
  async (o) => {
    if (o.client && o.cluster) throw configError('--client and --cluster exclude each other');
    const info = buildInfo();
    if (info.problem) process.stderr.write(`edgemesh version: warning: ${info.problem}\n`);
    const client: VersionReport['client'] = {
      version: info.version,
      commit: info.commit,
      dirty: info.dirty,
      source: info.source,
      nodeVersion: info.nodeVersion,
    };
    const print = (report: VersionReport, note?: string) => {
      if (o.output === 'json') process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else process.stdout.write(formatVersionReport(report) + (note ? `${note}\n` : ''));
      return report.errors.length > 0 ? 1 : 0;
    };
    if (o.client) return print(versionReport({ client }));
    const choice = chooseKubeconfig(o.kubeconfig, process.env);
    if (choice.kind === 'none') {
      if (o.cluster) throw configError(`--cluster: ${choice.why}`);
      return print(
        versionReport({ client }),
        `(cluster versions not shown: ${choice.why}; --cluster makes that an error)`,
      );
    }
    const { api, source } = await connect(choice, o.context);
    const reader = new ClusterReader(api, o.timeout * 1000);
    const errors: string[] = [];
    try {
      let kubernetes: string;
      try {
        kubernetes = await reader.serverVersion();
      } catch (err) {
        // Nothing else would answer either: one error, not three of the same.
        const error = `API server ${api.server} (from ${source}): ${(err as Error).message}`;
        return print(versionReport({ client, errors: [error] }));
      }
      const attempt = async (read: () => Promise<PodSummary[]>) => {
        try {
          return await read();
        } catch (err) {
          errors.push((err as Error).message);
          return undefined;
        }
      };
      const [partPods, sidecarPods, webhookConfig] = await Promise.all([
        attempt(() => reader.partPods(o.namespace)),
        attempt(() => reader.allPods()),
        // Not an error when unreadable: only the sidecars' comparison with it is lost, and
        // the report says why.
        reader.configMapKey(o.namespace, CONFIG_MAP, CONFIG_KEY).catch((err: Error) => err),
      ]);
      return print(
        versionReport({
          client,
          server: { url: api.server, source, kubernetes },
          namespace: o.namespace,
          partPods,
          sidecarPods,
          webhookConfig,
          allPods: o['all-pods'],
          errors,
        }),
      );
    } finally {
      api.close();
    }
  },
);
