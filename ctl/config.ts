/**
 * `edgemesh config get|set`: the pure parts. Which DaemonSets a setting restarts, the
 * `kubectl rollout restart` patch, what a DaemonSet's status says about its rollout (as
 * `kubectl rollout status` judges it), and the text printed. The API calls are in config-cli.ts.
 *
 * Why a restart at all: a gateway reads edgemesh-config's keys once at start (files of a
 * mounted ConfigMap volume, gateway/settings.ts: a kubelet cut off from the API can still
 * restart it), so a changed setting reaches it only through a new pod.
 */
import { configError } from '../lib/errors.ts';
import { SETTING_KEYS, type SettingKey, type Settings } from './settings.ts';

export const GATEWAY_DAEMONSET = 'edgemesh-gateway';
/** The KubeEdge overlay's edge-mode gateways; they mount tunnel-servers only (no API address). */
export const EDGE_GATEWAY_DAEMONSET = 'edgemesh-gateway-edge';
export const RESTARTED_AT = 'kubectl.kubernetes.io/restartedAt';

/** The DaemonSets whose pods read `key` (the edge ones mount only tunnel-servers). */
export function daemonSetsReading(key: SettingKey): string[] {
  return key === 'tunnel-servers' ? [GATEWAY_DAEMONSET, EDGE_GATEWAY_DAEMONSET] : [GATEWAY_DAEMONSET];
}

/** What `kubectl rollout restart` sends: a new pod-template annotation, so every pod is replaced. */
export function restartPatch(now: Date): Record<string, unknown> {
  return { spec: { template: { metadata: { annotations: { [RESTARTED_AT]: now.toISOString() } } } } };
}

/** `--wait` as seconds: 90, 90s, 2m, 0 (no wait). */
export function parseWait(text: string): number {
  const m = /^(\d{1,5})(s|m)?$/.exec(text.trim());
  if (!m) throw configError(`--wait: ${JSON.stringify(text)} is not a duration (90s, 2m, 0)`);
  const seconds = Number(m[1]) * (m[2] === 'm' ? 60 : 1);
  if (seconds > 3600) throw configError(`--wait: ${text} is longer than 60m`);
  return seconds;
}

type Loose = Record<string, unknown>;
const isRecord = (v: unknown): v is Loose => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** A DaemonSet's rollout, judged as `kubectl rollout status` does. Pure. */
export function daemonSetRollout(ds: unknown, name: string): { done: boolean; message: string } {
  const d = isRecord(ds) ? ds : {};
  const meta = isRecord(d.metadata) ? d.metadata : {};
  const spec = isRecord(d.spec) ? d.spec : {};
  const status = isRecord(d.status) ? d.status : {};
  const strategy = isRecord(spec.updateStrategy) ? spec.updateStrategy.type : undefined;
  if (strategy !== undefined && strategy !== 'RollingUpdate')
    return {
      done: true,
      message: `daemonset/${name}: updateStrategy ${String(strategy)}: pods are replaced when deleted`,
    };
  if (num(meta.generation) > num(status.observedGeneration))
    return { done: false, message: `daemonset/${name}: waiting for the controller to see the change` };
  const desired = num(status.desiredNumberScheduled);
  const updated = num(status.updatedNumberScheduled);
  const available = num(status.numberAvailable);
  if (updated < desired)
    return { done: false, message: `daemonset/${name}: ${updated} of ${desired} pods updated` };
  if (available < desired)
    return { done: false, message: `daemonset/${name}: ${available} of ${desired} updated pods available` };
  return { done: true, message: `daemonset/${name}: ${desired} of ${desired} pods updated and available` };
}

/** `config get`'s text: one line per key, what an absent key means. Pure. */
export function formatSettings(settings: Settings, namespace: string): string {
  const absent: Record<SettingKey, string> = {
    'tunnel-servers': '(not set: gateways carry same-node streams only)',
    'kubernetes-service-host': '(not set: gateways use the in-cluster address the kubelet gives)',
    'kubernetes-service-port': '(not set)',
  };
  const width = Math.max(...SETTING_KEYS.map((k) => k.length)) + 2;
  const rows = SETTING_KEYS.map((k) => `${k.padEnd(width)}${settings[k] ?? absent[k]}`);
  return `# ConfigMap ${namespace}/edgemesh-config\n${rows.join('\n')}\n`;
}

/** The one line saying what `config set` changed. Pure. */
export function changeLine(
  namespace: string,
  key: SettingKey,
  before: string | undefined,
  after: string,
): string {
  const where = `ConfigMap ${namespace}/edgemesh-config ${key}`;
  if (before === after) return `${where} is already ${after}: unchanged`;
  return `${where}: ${before === undefined ? '(not set)' : before} -> ${after}`;
}
