/**
 * The gateway settings an operator sets in ConfigMap edgemesh-config (`edgemesh config set`,
 * `edgemesh install --tunnel-servers/--api-server-host/--api-server-port`), validated with the
 * gateway's own code: gateway/settings.ts parseSettings (what a gateway reads from the mounted
 * ConfigMap) and, for tunnel-servers, gateway/tunnel/servers.ts (what its tunnel accepts and
 * which entries it leaves out as placeholders). A value the gateway would refuse or ignore is
 * refused here, before any gateway restarts with it. Pure.
 */
import { parseSettings } from '../gateway/settings.ts';
import { parseServers, usableServers } from '../gateway/tunnel/servers.ts';
import { configError } from '../lib/errors.ts';

export const CONFIG_MAP = 'edgemesh-config';
export const SETTING_KEYS = ['tunnel-servers', 'kubernetes-service-host', 'kubernetes-service-port'] as const;
export type SettingKey = (typeof SETTING_KEYS)[number];
export type Settings = Partial<Record<SettingKey, string>>;

export const isSettingKey = (k: string): k is SettingKey => (SETTING_KEYS as readonly string[]).includes(k);

/**
 * The value as stored (tunnel-servers: entries joined by commas), or a config error naming
 * `flag` and the cause. `warnings`: entries the gateway will leave out.
 */
export function validateSetting(
  key: SettingKey,
  value: string,
  flag: string,
): { value: string; warnings: string[] } {
  const text = value.trim();
  if (text === '')
    throw configError(
      `${flag}: empty (give a value; edgemesh config unset is not offered: the manifests ship every key)`,
    );
  let parsed: ReturnType<typeof parseSettings>;
  try {
    parsed = parseSettings({ [key]: text });
  } catch (err) {
    throw configError(`${flag}: ${(err as Error).message.replace(/^settings: /, '')}`);
  }
  if (key !== 'tunnel-servers') return { value: text, warnings: [] };
  const entries = parsed.tunnelServers ?? [];
  const { servers, ignored } = usableServers(parseServers(entries, flag));
  if (servers.length === 0)
    throw configError(
      `${flag}: ${ignored.join(', ')} ${ignored.length === 1 ? 'is a placeholder' : 'are placeholders'} that never resolve${ignored.length === 1 ? 's' : ''} (reserved names: .example, .invalid, .test, .localhost): give the public HOST:PORT of the tunnel-server Service (kubectl -n NAMESPACE get service edgemesh-tunnel-server)`,
    );
  return {
    value: entries.join(','),
    warnings: ignored.map((s) => `${flag}: ${s} is a placeholder; gateways leave it out`),
  };
}
