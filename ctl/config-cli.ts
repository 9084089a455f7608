/**
 * `edgemesh config get [KEY]` and `edgemesh config set KEY VALUE`: flags and API calls only;
 * validation in settings.ts (the gateway's own), the restart and rollout judgement in config.ts.
 * Reads go through the operator commands' client (gateway/kube); the two PATCHes (ConfigMap,
 * DaemonSet restart annotation) through @kubernetes/client-node, as webhook-tls writes.
 */
import {
  ApiException,
  AppsV1Api,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { defineCommand } from '../lib/cli.ts';
import { configError, EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import type { ApiClient } from '../lib/kube/client.ts';
import { connectionCause } from '../webhook/tls/bootstrap.ts';
import { CheckReader } from './check-read.ts';
import {
  changeLine,
  daemonSetRollout,
  daemonSetsReading,
  formatSettings,
  parseWait,
  restartPatch,
} from './config.ts';
import { clusterOptions } from './flags.ts';
import { chooseKubeconfig, connect, type KubeconfigChoice } from './kube.ts';
import { CONFIG_MAP, isSettingKey, SETTING_KEYS, type Settings, validateSetting } from './settings.ts';

const POLL_MS = 2_000;

export const configCommand = defineCommand(
  {
    name: 'config',
    summary:
      "Get or set the gateways' settings in ConfigMap edgemesh-config. set validates the value as a " +
      'gateway does, patches the ConfigMap, restarts the gateway DaemonSets that read it (as kubectl ' +
      'rollout restart) and waits for the rollout.',
    positionals: true,
    positionalsUsage: 'get [KEY] | set KEY VALUE',
    details: [
      `Keys: ${SETTING_KEYS.join(', ')}.`,
      '  tunnel-servers           public HOST:PORT of the tunnel-server replicas, comma separated',
      '  kubernetes-service-host  the API server address for gateways on nodes without kube-proxy',
      '  kubernetes-service-port  its port',
      '',
      'Gateways read these once at start, so set restarts daemonset/edgemesh-gateway (and, for',
      'tunnel-servers, daemonset/edgemesh-gateway-edge of the KubeEdge overlay when it exists) and',
      'waits up to --wait for every pod to be replaced and available; a value equal to the current one',
      'changes and restarts nothing. Exit 1 when the rollout did not finish in time (the change stays',
      'applied and the rollout goes on: kubectl rollout status daemonset/edgemesh-gateway).',
      '',
      'Needs: get configmaps (get); patch configmaps and get/patch daemonsets in the edgemesh namespace (set).',
      '',
      'Examples: edgemesh config get',
      '          edgemesh config set tunnel-servers 198.51.100.7:20006',
      '          edgemesh config set tunnel-servers 198.51.100.7:20006,203.0.113.9:20006 --no-wait',
    ].join('\n'),
    options: {
      ...clusterOptions('API answer'),
      wait: {
        type: 'string',
        default: '2m',
        description: 'set: how long to wait for the gateways to roll out (90s, 2m; 0: do not wait)',
      },
      'no-wait': { type: 'boolean', default: false, description: 'set: do not wait for the rollout' },
    },
  },
  async (o) => {
    const [verb, key, value, ...extra] = o._;
    const waitSeconds = o['no-wait'] ? 0 : parseWait(o.wait);
    if (verb !== 'get' && verb !== 'set')
      throw configError(`give get [KEY] or set KEY VALUE${verb ? `, not ${JSON.stringify(verb)}` : ''}`);
    if (key !== undefined && !isSettingKey(key))
      throw configError(`KEY ${JSON.stringify(key)}: not a setting (${SETTING_KEYS.join(', ')})`);
    if (verb === 'get' && (value !== undefined || extra.length > 0))
      throw configError('get takes one KEY at most');
    if (verb === 'set' && (key === undefined || value === undefined || extra.length > 0))
      throw configError('set takes KEY VALUE (a list of servers is one VALUE: ADDR,ADDR)');
    const checked =
      verb === 'set' && key && value !== undefined ? validateSetting(key, value, key) : undefined;
    for (const w of checked?.warnings ?? []) process.stderr.write(`edgemesh config: warning: ${w}\n`);

    const choice = chooseKubeconfig(o.kubeconfig, process.env);
    if (choice.kind === 'none') throw configError(choice.why);
    const { api, source } = await connect(choice, o.context);
    const ns = o.namespace;
    const where = `API server ${api.server} (from ${source})`;
    try {
      const current = await readSettings(api, ns, o.timeout * 1000);
      if (verb === 'get') {
        if (key) {
          if (current[key] === undefined)
            throw new EdgemeshError(
              ErrorCodes.UNAVAILABLE,
              `${key} is not set in ConfigMap ${ns}/${CONFIG_MAP}`,
            );
          process.stdout.write(`${current[key]}\n`);
        } else if (o.output === 'json')
          process.stdout.write(`${JSON.stringify({ namespace: ns, settings: current }, null, 2)}\n`);
        else process.stdout.write(formatSettings(current, ns));
        return 0;
      }
      if (!key || !checked) throw new Error('unreachable: set without a key');
      process.stdout.write(`${changeLine(ns, key, current[key], checked.value)}\n`);
      if (current[key] === checked.value) return 0;
      const kc = kubeConfig(choice, o.context);
      const core = kc.makeApiClient(CoreV1Api);
      const apps = kc.makeApiClient(AppsV1Api);
      const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
      await step(`patching ConfigMap ${ns}/${CONFIG_MAP}`, where, () =>
        core.patchNamespacedConfigMap(
          { name: CONFIG_MAP, namespace: ns, body: { data: { [key]: checked.value } } },
          merge,
        ),
      );
      const restarted: string[] = [];
      const now = new Date();
      for (const name of daemonSetsReading(key)) {
        const done = await step(`restarting daemonset ${ns}/${name}`, where, async () => {
          try {
            await apps.patchNamespacedDaemonSet({ name, namespace: ns, body: restartPatch(now) }, merge);
            return true;
          } catch (err) {
            if (err instanceof ApiException && err.code === 404) return false; // not this overlay
            throw err;
          }
        });
        if (done) restarted.push(name);
      }
      if (restarted.length === 0) {
        process.stdout.write(`no gateway DaemonSet in ${ns} to restart (edgemesh not installed there?)\n`);
        return 1;
      }
      process.stdout.write(
        `restarted ${restarted.map((n) => `daemonset/${n}`).join(', ')} (gateways read ${key} at start)\n`,
      );
      if (waitSeconds === 0) {
        process.stdout.write(`not waiting: kubectl -n ${ns} rollout status daemonset/${restarted[0]}\n`);
        return 0;
      }
      return (await waitForRollouts(api, ns, restarted, waitSeconds, o.timeout * 1000)) ? 0 : 1;
    } finally {
      api.close();
    }
  },
);

/** edgemesh-config's setting keys, as stored (absent keys absent). */
async function readSettings(api: ApiClient, ns: string, timeoutMs: number): Promise<Settings> {
  const data = await new CheckReader(api, timeoutMs).data('configmaps', ns, CONFIG_MAP);
  if (data instanceof Error) throw new EdgemeshError(ErrorCodes.UNAVAILABLE, data.message);
  if (data === null)
    throw new EdgemeshError(
      ErrorCodes.UNAVAILABLE,
      `ConfigMap ${ns}/${CONFIG_MAP} does not exist: install edgemesh first (edgemesh install | kubectl apply -f -), or give --namespace`,
    );
  const out: Settings = {};
  for (const k of SETTING_KEYS) if (data[k] !== undefined && data[k].trim() !== '') out[k] = data[k].trim();
  return out;
}

/** Polls each DaemonSet until rolled out or `seconds` pass, printing each new state. */
async function waitForRollouts(
  api: ApiClient,
  ns: string,
  names: string[],
  seconds: number,
  timeoutMs: number,
): Promise<boolean> {
  process.stdout.write(`waiting up to ${seconds}s for the rollout\n`);
  const deadline = Date.now() + seconds * 1000;
  const last = new Map<string, string>();
  const pending = new Set(names);
  while (pending.size > 0) {
    for (const name of [...pending]) {
      let state: { done: boolean; message: string };
      try {
        const ds = await api.getJSON(
          `/apis/apps/v1/namespaces/${encodeURIComponent(ns)}/daemonsets/${encodeURIComponent(name)}`,
          AbortSignal.timeout(timeoutMs),
        );
        state = daemonSetRollout(ds, name);
      } catch (err) {
        state = { done: false, message: `daemonset/${name}: not read: ${(err as Error).message}` };
      }
      if (last.get(name) !== state.message) process.stdout.write(`  ${state.message}\n`);
      last.set(name, state.message);
      if (state.done) pending.delete(name);
    }
    if (pending.size === 0) break;
    if (Date.now() + POLL_MS > deadline) {
      process.stdout.write(
        `not rolled out within ${seconds}s: ${[...pending].map((n) => last.get(n)).join('; ')}. The setting is applied and the rollout goes on: kubectl -n ${ns} rollout status daemonset/${[...pending][0]}; gateways on nodes that are offline are replaced when they come back (kubectl -n ${ns} get pods -o wide)\n`,
      );
      return false;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  process.stdout.write(
    'rolled out: every gateway runs with the new setting (edgemesh check tells whether they reach the tunnel-servers)\n',
  );
  return true;
}

/** @kubernetes/client-node's config for the same choice the reads use. */
function kubeConfig(
  choice: Exclude<KubeconfigChoice, { kind: 'none' }>,
  context: string | undefined,
): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (choice.kind === 'in-cluster') kc.loadFromCluster();
    else kc.loadFromFile(choice.file);
    if (context) kc.setCurrentContext(context);
  } catch (err) {
    throw configError(`${choice.source}: ${(err as Error).message}`);
  }
  return kc;
}

/** One write: what failed, where, and the API's own words (client-node errors dump headers). */
async function step<T>(what: string, where: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (!(err instanceof ApiException))
      throw new EdgemeshError(ErrorCodes.UNAVAILABLE, `${what}: ${connectionCause(err)} [${where}]`);
    let message = String(err.body);
    try {
      message = (typeof err.body === 'string' ? JSON.parse(err.body) : err.body).message ?? message;
    } catch {
      // not JSON: keep the text
    }
    const hint =
      err.code === 403 ? ' (config set needs patch on configmaps and daemonsets in the namespace)' : '';
    throw new EdgemeshError(
      ErrorCodes.UNAVAILABLE,
      `${what}: HTTP ${err.code}: ${message}${hint} [${where}]`,
    );
  }
}
