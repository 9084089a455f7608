/**
 * `edgemesh check [--pre]`: flags only here; reads in check-read.ts, judgements in
 * check-pre.ts / check-install.ts, text in check-format.ts.
 */
import { buildInfo } from '../lib/build-info.ts';
import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { type CheckResult, checkExitCode, formatChecks } from './check-format.ts';
import { installChecks, MESH_CA, WEBHOOK_SECRET } from './check-install.ts';
import { apiCheck, preChecks } from './check-pre.ts';
import { CheckReader } from './check-read.ts';
import { clusterOptions, namespaceOption } from './flags.ts';
import { CONFIG_KEY, CONFIG_MAP } from './injected-image.ts';
import { chooseKubeconfig, connect } from './kube.ts';
import { isGateway, readStatusesOf } from './status-read.ts';
import { PART_OF_SELECTOR } from './version-report.ts';

export const checkCommand = defineCommand(
  {
    name: 'check',
    summary:
      'Check an edgemesh installation (or, with --pre, whether one can be made here): one line per ' +
      'check, ✔ passed, ‼ warning, × failed with a hint naming what to do.',
    details: [
      '--pre: the API server answers; Kubernetes 1.29 or newer (native sidecars); you may create every',
      'kind the manifests and edgemesh webhook-tls create (SelfSubjectAccessReviews); the namespace is',
      'free or already edgemesh.',
      '',
      "Installed: the webhook configuration's caBundle signed the serving certificate in its Secret,",
      'which names the Service and has 30 days or more left; webhook pods Ready; the webhook injects',
      '(a pod labelled sidecar.edgemesh.io/inject=true created with dryRun=All in --probe-namespace:',
      'the API server calls the webhook, nothing is stored); the mesh CA ConfigMap and Secret exist and',
      'agree; a Ready gateway on every node running injected pods (unready ones: their /ready);',
      'tunnel-server pods Ready; tunnel-servers in edgemesh-config set and not a placeholder; each',
      'gateway has a link up to a tunnel-server and runs with the current setting (its /status through',
      'pods/proxy; gateways the API server cannot reach are listed with the command to run on the node); injected',
      'pods on the image the webhook injects now; no pod left uninjected in namespaces labelled',
      'edgemesh.io/injection=enabled.',
      '',
      'Exit 0 when nothing failed (warnings do not fail it), 1 otherwise. Needs, installed: get',
      'mutatingwebhookconfigurations; get secrets, configmaps and pods/proxy and list pods in the',
      'edgemesh namespace; list pods and namespaces cluster-wide; create pods in --probe-namespace.',
      '',
      'Examples: edgemesh check --pre',
      '          edgemesh check -o json',
    ].join('\n'),
    options: {
      pre: { type: 'boolean', default: false, description: 'check the cluster before installing' },
      ...clusterOptions('API answer'),
      'probe-namespace': namespaceOption(
        'namespace for the dry-run pod that checks the webhook answers (not labelled edgemesh.io/injection=disabled)',
        'default',
      ),
    },
  },
  async (o) => {
    const choice = chooseKubeconfig(o.kubeconfig, process.env);
    if (choice.kind === 'none') throw configError(choice.why);
    const { api } = await connect(choice, o.context);
    const ns = o.namespace;
    const read = new CheckReader(api, o.timeout * 1000);
    let results: CheckResult[];
    try {
      const version = await read.version();
      if (o.pre) {
        const labels = version instanceof Error ? null : await read.namespaceLabels(ns);
        const exists = labels !== null && !(labels instanceof Error);
        results = preChecks({
          server: api.server,
          namespace: ns,
          version,
          access: version instanceof Error ? [] : await read.installAccess(ns),
          namespaceLabels: labels,
          ...(exists
            ? { namespacePods: await read.pods(ns), namespaceConfigMaps: await read.configMapNames(ns) }
            : {}),
        });
      } else {
        const api0 = apiCheck(api.server, version, 'kubernetes');
        if (version instanceof Error) results = [api0];
        else {
          const [caBundles, servingCert, probe, meshCaConfigMap, meshCaSecret, partPods, allPods] =
            await Promise.all([
              read.caBundles(),
              read.key('secrets', ns, WEBHOOK_SECRET, 'tls.crt'),
              read.probeWebhook(o['probe-namespace']),
              read.key('configmaps', ns, MESH_CA, 'ca.crt'),
              read.key('secrets', ns, MESH_CA, 'ca.crt'),
              read.pods(ns, PART_OF_SELECTOR),
              read.pods(undefined),
            ]);
          const [tunnelServersSetting, webhookYaml, injectionNamespaces, gatewayReadiness, gatewayStatuses] =
            await Promise.all([
              read.key('configmaps', ns, CONFIG_MAP, 'tunnel-servers'),
              read.key('configmaps', ns, CONFIG_MAP, CONFIG_KEY),
              read.injectionNamespaces(),
              read.gatewayReadiness(ns, partPods),
              // Which tunnel-server links each running gateway has up (its /status).
              partPods instanceof Error
                ? partPods
                : readStatusesOf(
                    api,
                    ns,
                    partPods.filter((p) => isGateway(p) && p.phase === 'Running' && p.node),
                    o.timeout * 1000,
                  ),
            ]);
          const info = buildInfo();
          results = [
            api0,
            ...installChecks({
              now: new Date(),
              namespace: ns,
              client: {
                version: info.version,
                commit: info.commit,
                dirty: info.dirty,
                source: info.source,
                nodeVersion: info.nodeVersion,
              },
              caBundles,
              servingCert,
              probe,
              meshCaConfigMap,
              meshCaSecret,
              partPods,
              allPods,
              gatewayReadiness,
              tunnelServersSetting,
              gatewayStatuses,
              webhookYaml,
              injectionNamespaces,
            }),
          ];
        }
      }
    } finally {
      api.close();
    }
    if (o.output === 'json')
      process.stdout.write(
        `${JSON.stringify({ pre: o.pre, namespace: ns, ok: checkExitCode(results) === 0, checks: results }, null, 2)}\n`,
      );
    else process.stdout.write(formatChecks(results));
    return checkExitCode(results);
  },
);
