/**
 * Which API server an operator command talks to, decided as kubectl decides it: `--kubeconfig`,
 * else the first existing file of `$KUBECONFIG` (kubectl merges the list; we read one file and
 * say which), else `~/.kube/config`, else the in-cluster service account. The client is the
 * gateway's own (gateway/kube: no @kubernetes/client-node load unless an exec plugin needs it).
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { configError } from '../lib/errors.ts';
import type { ApiClient } from '../lib/kube/client.ts';
import { apiFromKubeconfigFile, apiInCluster } from '../lib/kube/kubeconfig.ts';

export type KubeconfigChoice =
  | { kind: 'file'; file: string; source: string }
  | { kind: 'in-cluster'; source: string }
  | { kind: 'none'; why: string };

/** Pure: where the configuration comes from, given the flag, the environment and what exists. */
export function chooseKubeconfig(
  flag: string | undefined,
  env: NodeJS.ProcessEnv,
  exists: (file: string) => boolean = existsSync,
  home: string = homedir(),
): KubeconfigChoice {
  if (flag) return { kind: 'file', file: flag, source: '--kubeconfig' };
  const listed = (env.KUBECONFIG ?? '').split(delimiter).filter(Boolean);
  if (listed.length > 0) {
    const found = listed.find((f) => exists(f));
    if (found) return { kind: 'file', file: found, source: `$KUBECONFIG (${found})` };
  }
  const def = join(home, '.kube', 'config');
  if (exists(def)) return { kind: 'file', file: def, source: def };
  if (env.KUBERNETES_SERVICE_HOST) return { kind: 'in-cluster', source: 'in-cluster service account' };
  return {
    kind: 'none',
    why:
      listed.length > 0
        ? `no kubeconfig: none of $KUBECONFIG (${listed.join(delimiter)}) exists, nor ${def}, and not in a pod`
        : `no kubeconfig: $KUBECONFIG is unset, ${def} does not exist, and not in a pod`,
  };
}

/** The client for a choice; errors name the file or the in-cluster config, and the cause. */
export async function connect(
  choice: Exclude<KubeconfigChoice, { kind: 'none' }>,
  context: string | undefined,
): Promise<{ api: ApiClient; source: string }> {
  try {
    if (choice.kind === 'in-cluster') {
      if (context) throw new Error('--context needs a kubeconfig file');
      return { api: apiInCluster(), source: choice.source };
    }
    const api = await apiFromKubeconfigFile(choice.file, context);
    return { api, source: `${choice.source}${context ? `, context ${context}` : ''}` };
  } catch (err) {
    const message = (err as Error).message;
    throw configError(
      choice.kind === 'file' && !message.includes(choice.file)
        ? `kubeconfig ${choice.file} (from ${choice.source}): ${message}`
        : `${choice.source}: ${message}`,
    );
  }
}
