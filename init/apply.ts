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
import { buildRules, buildUdpRules, type Family, type Ruleset, udpPolicyRoute } from './rules.ts';

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

async function readTable(
  host: Host,
  backend: BackendName,
  family: Family,
  table: Ruleset['table'] = 'nat',
): Promise<SavedTable> {
  const command = saveBinary(backend, family);
  const r = await host.run(command, ['-t', table]);
  if (r.code !== 0) throw failure(command, r, `reading the ${table} table`);
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
    let rules = await installRuleset(host, backend.name, buildRules(config.capture, family));
    if (config.capture.captureUdp) {
      rules += await installRuleset(host, backend.name, buildUdpRules(config.capture, family));
      await installPolicyRoute(host, family);
    }
    installed.push({ family, rules });
    log.info({ family, rules }, `installed IPv${family} capture rules`);
  }

  const reservedPorts = config.reservedPorts ? await reservePorts(host, config.reservedPorts, log) : '';
  return { backend, families: installed, reservedPorts };
}

/** Installs one table's ruleset (replacing any earlier copy) and checks save shows it all. */
async function installRuleset(host: Host, backend: BackendName, ruleset: Ruleset): Promise<number> {
  const { family, table } = ruleset;
  // Messages for the nat table read as they always have; the mangle table is named.
  const which = table === 'nat' ? '' : `${table} `;
  const current = await readTable(host, backend, family, table);
  await restore(
    host,
    backend,
    family,
    renderInstall(ruleset, current),
    `installing the ${which}capture rules`,
  );
  const after = installedSlugs(await readTable(host, backend, family, table));
  const wanted = ruleset.rules.map((r) => r.slug);
  const missing = wanted.filter((s) => !after.includes(s));
  if (missing.length > 0 || after.length !== wanted.length) {
    throw iptablesError(
      `IPv${family} ${which}rules differ after restore (missing: ${missing.join(', ') || 'none'}; ` +
        `${after.length} edgemesh rules present, ${wanted.length} expected)`,
    );
  }
  return wanted.length;
}

/** Bound on `ip rule del` repeats: duplicates only come from earlier runs, a handful at most. */
const MAX_RULE_DELETES = 16;

/**
 * Removes every copy of our policy rule (ip rule add does not deduplicate) and our route.
 * Returns whether anything was there. A missing `ip` binary means nothing of ours can be.
 */
async function removePolicyRoute(host: Host, family: Family): Promise<boolean> {
  const pr = udpPolicyRoute(family);
  const fam = `-${family}`;
  let removed = false;
  for (let i = 0; i < MAX_RULE_DELETES; i++) {
    const r = await host.run('ip', [fam, 'rule', 'del', ...pr.rule]);
    if (r.code !== 0) break;
    removed = true;
  }
  const route = await host.run('ip', [fam, 'route', 'del', ...pr.route]);
  return removed || route.code === 0;
}

async function installPolicyRoute(host: Host, family: Family): Promise<void> {
  const pr = udpPolicyRoute(family);
  const fam = `-${family}`;
  await removePolicyRoute(host, family);
  for (const args of [
    [fam, 'rule', 'add', ...pr.rule],
    [fam, 'route', 'replace', ...pr.route],
  ]) {
    const r = await host.run('ip', args);
    if (r.code !== 0) {
      const detail = (r.stderr || r.stdout).trim().split('\n')[0];
      throw iptablesError(
        r.notFound
          ? 'ip not found in PATH: UDP capture needs the iproute2 package for its policy route'
          : `ip ${args.join(' ')} failed with exit code ${r.code}: ${detail}`,
      );
    }
  }
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
      // The mangle table (UDP capture) whatever --capture-udp says: an earlier run may have had it.
      touched = (await cleanupTable(host, backend, family, 'mangle', log)) || touched;
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
  for (const family of [4, 6] as const) {
    if (await removePolicyRoute(host, family))
      log.info({ family }, `removed the IPv${family} UDP policy route`);
  }
  if (notFound.length === candidates.length) {
    throw iptablesError(`none of ${notFound.join(', ')} found in PATH: the image needs the iptables package`);
  }
  return cleaned;
}

/** Cleanup of one extra table (mangle): true when something of ours was removed. */
async function cleanupTable(
  host: Host,
  backend: BackendName,
  family: Family,
  table: 'mangle',
  log: Logger,
): Promise<boolean> {
  const command = saveBinary(backend, family);
  const r = await host.run(command, ['-t', table]);
  if (r.code !== 0) {
    log.warn({ backend, family, table }, `cannot read the ${table} table; skipping it`);
    return false;
  }
  const text = renderCleanup(parseSave(r.stdout), table);
  if (text === undefined) return false;
  await restore(host, backend, family, text, `removing the ${table} capture rules`);
  const left = parseSave((await host.run(command, ['-t', table])).stdout);
  if (renderCleanup(left, table) !== undefined) {
    throw iptablesError(`${command}: edgemesh ${table} rules are still present after cleanup`);
  }
  log.info({ backend, family, table }, `removed IPv${family} ${table} capture rules`);
  return true;
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
