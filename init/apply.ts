import { EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import { type Logger, silentLogger } from '../lib/log.ts';
import {
  type Backend,
  type BackendChoice,
  type BackendName,
  detectBackend,
  failure,
  iptablesError,
  isPermissionProblem,
  restoreBinary,
  saveBinary,
} from './backend.ts';
import type { Host } from './host.ts';
import type { CaptureOptions } from './options.ts';
import { installedSlugs, parseSave, renderCleanup, renderInstall, type SavedTable } from './render.ts';
import { isReserved, withReserved } from './reserved-ports.ts';
import { buildRules, type Family } from './rules.ts';

export interface InitConfig {
  readonly capture: CaptureOptions;
  readonly backend: BackendChoice;
  /** Ports to keep out of the ephemeral range, kernel syntax; '' = leave the sysctl alone. */
  readonly reservedPorts: string;
}

export interface InstallReport {
  readonly backend: Backend;
  readonly families: readonly { family: Family; rules: number }[];
  /** The sysctl's value afterwards ('' when not managed). */
  readonly reservedPorts: string;
}

const RESERVED_PORTS_KEY = 'net/ipv4/ip_local_reserved_ports';
const families = (capture: CaptureOptions): Family[] => (capture.ipv6 ? [4, 6] : [4]);

async function readTable(host: Host, backend: BackendName, family: Family): Promise<SavedTable> {
  const command = saveBinary(backend, family);
  const r = await host.run(command, ['-t', 'nat']);
  if (r.code !== 0) throw failure(command, r, 'reading the nat table');
  return parseSave(r.stdout);
}

async function restore(host: Host, backend: BackendName, family: Family, text: string, doing: string) {
  const command = restoreBinary(backend, family);
  // --noflush: touch only what the text names; -w: wait for the legacy xtables lock.
  const r = await host.run(command, ['--noflush', '-w', '10'], text);
  if (r.code !== 0) throw failure(command, r, doing);
}

/**
 * Installs the capture rules in the current network namespace so that exactly one copy is
 * present afterwards (re-running is a no-op on the ruleset), then checks iptables-save
 * shows every rule, then reserves the sidecar's ports.
 */
export async function installCapture(
  host: Host,
  config: InitConfig,
  log: Logger = silentLogger,
): Promise<InstallReport> {
  const fams = families(config.capture);
  const backend = await detectBackend(host, fams, config.backend);
  log.info({ backend: backend.name, reason: backend.reason }, `using iptables backend ${backend.name}`);

  const installed: { family: Family; rules: number }[] = [];
  for (const family of fams) {
    const ruleset = buildRules(config.capture, family);
    const current = await readTable(host, backend.name, family);
    await restore(
      host,
      backend.name,
      family,
      renderInstall(ruleset, current),
      'installing the capture rules',
    );

    const after = installedSlugs(await readTable(host, backend.name, family));
    const wanted = ruleset.rules.map((r) => r.slug);
    const missing = wanted.filter((s) => !after.includes(s));
    if (missing.length > 0 || after.length !== wanted.length) {
      throw iptablesError(
        `IPv${family} rules differ after restore (missing: ${missing.join(', ') || 'none'}; ` +
          `${after.length} edgemesh rules present, ${wanted.length} expected)`,
      );
    }
    installed.push({ family, rules: wanted.length });
    log.info({ family, rules: wanted.length }, `installed IPv${family} capture rules`);
  }

  const reservedPorts = config.reservedPorts ? await reservePorts(host, config.reservedPorts, log) : '';
  return { backend, families: installed, reservedPorts };
}

/**
 * Removes every chain and rule of ours, in every backend that has some (a pod may have been
 * set up by an older version with the other backend). Returns the backends cleaned.
 */
export async function cleanupCapture(
  host: Host,
  config: InitConfig,
  log: Logger = silentLogger,
): Promise<BackendName[]> {
  const candidates: BackendName[] = config.backend === 'auto' ? ['nft', 'legacy'] : [config.backend];
  const cleaned: BackendName[] = [];
  const notFound: string[] = [];
  for (const backend of candidates) {
    let touched = false;
    // Both families whatever --ipv6 says: IPv6 rules from an earlier run must not survive.
    for (const family of [4, 6] as const) {
      const command = saveBinary(backend, family);
      const r = await host.run(command, ['-t', 'nat']);
      if (r.notFound) {
        if (family === 4) notFound.push(command);
        continue;
      }
      if (r.code !== 0) {
        const err = failure(command, r, 'reading the nat table');
        if (isPermissionProblem(r)) throw err;
        log.warn({ backend, family, error: err.message }, 'skipping a backend that cannot be read');
        continue;
      }
      const text = renderCleanup(parseSave(r.stdout));
      if (text === undefined) continue;
      await restore(host, backend, family, text, 'removing the capture rules');
      const left = parseSave((await host.run(command, ['-t', 'nat'])).stdout);
      if (renderCleanup(left) !== undefined) {
        throw iptablesError(`${command}: edgemesh rules are still present after cleanup`);
      }
      touched = true;
      log.info({ backend, family }, `removed IPv${family} capture rules`);
    }
    if (touched) cleaned.push(backend);
  }
  if (notFound.length === candidates.length) {
    throw iptablesError(`none of ${notFound.join(', ')} found in PATH: the image needs the iptables package`);
  }
  return cleaned;
}

async function reservePorts(host: Host, wanted: string, log: Logger): Promise<string> {
  const existing = await host.sysctl(RESERVED_PORTS_KEY).catch(() => '');
  if (isReserved(existing, wanted)) return existing;
  const value = withReserved(existing, wanted);
  try {
    await host.sysctl(RESERVED_PORTS_KEY, value);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new EdgemeshError(
      ErrorCodes.IPTABLES,
      `cannot reserve ports ${wanted} in net.ipv4.ip_local_reserved_ports (${code}): ` +
        (code === 'EROFS'
          ? '/proc/sys is read-only in this container; set the sysctl in the pod securityContext.sysctls'
          : 'writing it needs the NET_ADMIN capability in the pod network namespace') +
        ', or pass --reserved-ports= to skip',
    );
  }
  log.info({ before: existing, after: value }, 'reserved the sidecar ports');
  return value;
}
