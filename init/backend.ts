import { EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import type { Host, RunResult } from './host.ts';
import type { Family } from './rules.ts';

/**
 * Which iptables backend to drive. Both write the same kernel hooks, but rules written by
 * one are invisible to the other's save/restore, so we must use the one the pod's network
 * namespace is already using. Like Istio: count the rules each backend's save shows and
 * prefer nft if it has any, else legacy if it has any, else whatever `iptables` in PATH is.
 */
export type BackendName = 'nft' | 'legacy';
export type BackendChoice = BackendName | 'auto';

export interface Backend {
  readonly name: BackendName;
  /** Why this backend was chosen, for the log line that says which one was used. */
  readonly reason: string;
}

export function saveBinary(backend: BackendName, family: Family): string {
  return `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}-save`;
}

export function restoreBinary(backend: BackendName, family: Family): string {
  return `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}-restore`;
}

const PERMISSION = /permission denied|operation not permitted|must be root/i;

export const isPermissionProblem = (r: RunResult): boolean => PERMISSION.test(r.stderr + r.stdout);

export const iptablesError = (message: string): EdgemeshError =>
  new EdgemeshError(ErrorCodes.IPTABLES, message);

/**
 * Turns a failed iptables call into the error the pod's log should show: a missing binary
 * is named, a permission problem names the capability; anything else quotes iptables.
 */
export function failure(command: string, r: RunResult, doing: string): EdgemeshError {
  if (r.notFound) {
    return iptablesError(
      `${command} not found in PATH: the image needs the iptables package (${doing}); ` +
        'refusing to start the pod without traffic capture',
    );
  }
  const detail = (r.stderr || r.stdout).trim().split('\n').slice(0, 5).join('; ');
  if (PERMISSION.test(detail)) {
    return iptablesError(
      `${command}: permission denied (${detail}): edgemesh init needs the NET_ADMIN capability ` +
        '(and NET_RAW) in the pod network namespace; add them to the init container securityContext',
    );
  }
  const hint = /lock file/.test(detail) ? ' (set XTABLES_LOCKFILE to a writable path)' : '';
  return iptablesError(`${command} failed with exit code ${r.code} while ${doing}: ${detail}${hint}`);
}

/** Number of rules (`-A` lines) in a save dump. */
export function countRules(saveOutput: string): number {
  return saveOutput.split('\n').filter((l) => l.startsWith('-A ')).length;
}

interface Probe {
  name: BackendName;
  rules: number;
  /** Why it cannot be used; undefined when usable. */
  unusable?: string;
}

async function probe(host: Host, name: BackendName, families: readonly Family[]): Promise<Probe> {
  let rules = 0;
  for (const family of families) {
    const command = saveBinary(name, family);
    const r = await host.run(command, []);
    if (r.notFound) return { name, rules, unusable: `${command} not found` };
    if (r.code !== 0) {
      const err = failure(command, r, 'reading the current rules');
      // A permission problem is the same for both backends: report it at once.
      if (isPermissionProblem(r)) throw err;
      return { name, rules, unusable: err.message };
    }
    rules += countRules(r.stdout);
  }
  return { name, rules };
}

export async function detectBackend(
  host: Host,
  families: readonly Family[],
  choice: BackendChoice = 'auto',
): Promise<Backend> {
  const names: BackendName[] = choice === 'auto' ? ['nft', 'legacy'] : [choice];
  const probes: Probe[] = [];
  for (const name of names) probes.push(await probe(host, name, families));
  const usable = probes.filter((p) => p.unusable === undefined);
  if (usable.length === 0) {
    const why = probes.map((p) => `${p.name}: ${p.unusable}`).join('; ');
    throw iptablesError(
      `no usable iptables backend (${why}); the image needs the iptables package and the pod ` +
        'must not start without traffic capture',
    );
  }
  if (choice !== 'auto') return { name: choice, reason: 'chosen with --iptables-backend' };

  const counts = probes.map((p) => `${p.name} ${p.unusable ? 'unusable' : `${p.rules} rules`}`).join(', ');
  const withRules = usable.find((p) => p.rules > 0); // nft first, as Istio prefers it
  if (withRules) return { name: withRules.name, reason: `rules already present (${counts})` };
  if (usable.length === 1) return { name: usable[0].name, reason: `only usable backend (${counts})` };

  const version = await host.run('iptables', ['--version']);
  const system: BackendName | undefined = /nf_tables/.test(version.stdout)
    ? 'nft'
    : /legacy/.test(version.stdout)
      ? 'legacy'
      : undefined;
  if (system) return { name: system, reason: `no rules yet; the system iptables is ${system} (${counts})` };
  return { name: 'nft', reason: `no rules yet and no system default; nft preferred (${counts})` };
}
