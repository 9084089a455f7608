import { describe, expect, it } from 'vitest';
import { cleanupCapture, type InitConfig, installCapture } from './apply.ts';
import { detectBackend } from './backend.ts';
import { RecordingHost, type RunResult } from './host.ts';
import { captureOptions as baseOptions, type CaptureOptions } from './options.ts';

/** Every port-53 packet captured (the nameservers come from resolv.conf only through the CLI). */
const captureOptions = (o: Partial<CaptureOptions> = {}) => baseOptions({ captureAllDns: true, ...o });

import { installedTable, renderCleanup, renderInstall, type SavedTable } from './render.ts';
import { buildRules } from './rules.ts';

const ok = (stdout = ''): RunResult => ({ code: 0, stdout, stderr: '' });

/** iptables-save output for one nat table holding `table` (plus an unrelated rule). */
function saveText(table: SavedTable | undefined, extraRule = '-A OUTPUT -p icmp -j ACCEPT'): string {
  const chains = table?.chains.map((c) => `:${c} - [0:0]`) ?? [];
  return ['*nat', ':OUTPUT ACCEPT [0:0]', ...chains, extraRule, ...(table?.rules ?? []), 'COMMIT', ''].join(
    '\n',
  );
}

const config = (overrides: Partial<InitConfig> = {}): InitConfig => ({
  capture: captureOptions(),
  backend: 'auto',
  reservedPorts: '15000-15100',
  ...overrides,
});

/**
 * A scripted namespace: per backend, the nat table each save shows. A restore "applies" by
 * switching that backend's table to what the install would leave, unless `restoreFails`.
 */
function scriptedHost(opts: {
  tables: Partial<Record<'nft' | 'legacy', SavedTable | undefined>>;
  missing?: string[];
  systemIptables?: string;
  restoreResult?: RunResult;
  ignoreRestore?: boolean;
  sysctls?: Record<string, string>;
  sysctlWriteError?: string;
}) {
  const tables = { ...opts.tables };
  return new RecordingHost({
    sysctls: opts.sysctls ?? { 'net/ipv4/ip_local_reserved_ports': '' },
    sysctlWriteError: opts.sysctlWriteError,
    respond(command, args, stdin) {
      if (opts.missing?.some((m) => command.includes(m))) return undefined;
      if (command === 'iptables') return ok(opts.systemIptables ?? 'iptables v1.8.9 (nf_tables)\n');
      const backend = command.includes('-nft-') ? 'nft' : 'legacy';
      if (command.endsWith('-save') && args.includes('mangle')) return ok(''); // no UDP capture here
      if (command.endsWith('-save')) return ok(saveText(tables[backend]));
      if (command.endsWith('-restore')) {
        if (opts.restoreResult) return opts.restoreResult;
        if (!opts.ignoreRestore) {
          const family = command.startsWith('ip6') ? 6 : 4;
          const removing = stdin?.includes('-X EDGEMESH_OUTPUT');
          tables[backend] = removing ? undefined : installedTable(buildRules(captureOptions(), family));
        }
        return ok();
      }
      return undefined;
    },
  });
}

describe('backend detection (like Istio: prefer the backend that has rules)', () => {
  const withRules: SavedTable = { chains: [], rules: ['-A OUTPUT -j ACCEPT'] };

  it('picks nft when nft has rules, legacy when only legacy has', async () => {
    // saveText always adds one unrelated rule; an absent table shows no rules at all.
    const host = new RecordingHost({
      respond: (cmd) => ok(cmd.includes('nft') ? saveText(withRules) : ''),
    });
    expect((await detectBackend(host, [4])).name).toBe('nft');
    const legacyHost = new RecordingHost({
      respond: (cmd) => ok(cmd.includes('legacy') ? saveText(withRules) : ''),
    });
    const b = await detectBackend(legacyHost, [4, 6]);
    expect(b.name).toBe('legacy');
    expect(b.reason).toBe('rules already present (nft 0 rules, legacy 4 rules)');
    expect(legacyHost.calls.map((c) => c.command)).toEqual([
      'iptables-nft-save',
      'ip6tables-nft-save',
      'iptables-legacy-save',
      'ip6tables-legacy-save',
    ]);
  });

  it('with no rules anywhere follows the system iptables', async () => {
    for (const [version, name] of [
      ['iptables v1.8.9 (legacy)', 'legacy'],
      ['iptables v1.8.9 (nf_tables)', 'nft'],
    ]) {
      const host = new RecordingHost({ respond: (cmd) => ok(cmd === 'iptables' ? version : '') });
      const b = await detectBackend(host, [4]);
      expect(b.name).toBe(name);
      expect(b.reason).toContain(`the system iptables is ${name}`);
    }
  });

  it('uses the only backend whose binaries exist', async () => {
    const host = new RecordingHost({ respond: (cmd) => (cmd.includes('nft') ? undefined : ok()) });
    expect(await detectBackend(host, [4])).toEqual({
      name: 'legacy',
      reason: 'only usable backend (nft unusable, legacy 0 rules)',
    });
  });

  it('names the missing binaries when iptables is not installed', async () => {
    const host = new RecordingHost({ respond: () => undefined });
    await expect(detectBackend(host, [4])).rejects.toThrow(
      'no usable iptables backend (nft: iptables-nft-save not found; legacy: iptables-legacy-save not found); ' +
        'the image needs the iptables package',
    );
  });

  it('names NET_ADMIN when iptables is not permitted', async () => {
    const host = new RecordingHost({
      respond: () => ({
        code: 4,
        stdout: '',
        stderr:
          'iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n',
      }),
    });
    await expect(detectBackend(host, [4])).rejects.toThrow(
      /iptables-nft-save: permission denied .* NET_ADMIN/,
    );
  });

  it('honours a forced backend but still checks its binaries', async () => {
    const host = new RecordingHost({ respond: (cmd) => (cmd.includes('legacy') ? undefined : ok()) });
    expect((await detectBackend(host, [4], 'nft')).name).toBe('nft');
    await expect(detectBackend(host, [4], 'legacy')).rejects.toThrow('iptables-legacy-save not found');
  });
});

describe('installCapture', () => {
  it('reads, restores once with --noflush, verifies, then reserves ports', async () => {
    const host = scriptedHost({ tables: { nft: undefined, legacy: undefined } });
    const report = await installCapture(host, config());
    expect(report.backend.name).toBe('nft');
    expect(report.families).toEqual([{ family: 4, rules: 10 }]);
    expect(report.reservedPorts).toBe('15000-15100');
    const restores = host.calls.filter((c) => c.command.endsWith('-restore'));
    expect(restores).toEqual([
      {
        command: 'iptables-nft-restore',
        args: ['--noflush', '-w', '10'],
        stdin: renderInstall(buildRules(captureOptions(), 4), {
          chains: [],
          rules: ['-A OUTPUT -p icmp -j ACCEPT'],
        }),
      },
    ]);
    expect(host.calls.at(-1)).toEqual({
      command: 'sysctl',
      args: ['net/ipv4/ip_local_reserved_ports', '15000-15100'],
    });
  });

  it('installs IPv6 with ip6tables when asked', async () => {
    const host = scriptedHost({ tables: {} });
    const report = await installCapture(host, config({ capture: captureOptions({ ipv6: true }) }));
    expect(report.families.map((f) => f.family)).toEqual([4, 6]);
    expect(host.calls.filter((c) => c.command.endsWith('-restore')).map((c) => c.command)).toEqual([
      'iptables-nft-restore',
      'ip6tables-nft-restore',
    ]);
  });

  it('fails loudly when the rules are not there after restore', async () => {
    const host = scriptedHost({ tables: {}, ignoreRestore: true });
    await expect(installCapture(host, config())).rejects.toThrow(
      'IPv4 rules differ after restore (missing: hook-output, proxy-uid',
    );
  });

  it('fails with iptables-restore output when restore fails', async () => {
    const host = scriptedHost({
      tables: {},
      restoreResult: { code: 2, stdout: '', stderr: 'iptables-restore: line 5 failed\n' },
    });
    await expect(installCapture(host, config())).rejects.toThrow(
      'iptables-nft-restore failed with exit code 2 while installing the capture rules: iptables-restore: line 5 failed',
    );
  });

  it('names the binary when only the restore binary is missing', async () => {
    const host = scriptedHost({ tables: {}, missing: ['iptables-nft-restore'] });
    await expect(installCapture(host, config({ backend: 'nft' }))).rejects.toThrow(
      'iptables-nft-restore not found in PATH',
    );
  });

  it('merges with existing reserved ports and skips the write when already covered', async () => {
    const host = scriptedHost({
      tables: {},
      sysctls: { 'net/ipv4/ip_local_reserved_ports': '8000,30000-30010' },
    });
    expect((await installCapture(host, config())).reservedPorts).toBe('8000,15000-15100,30000-30010');
    const covered = scriptedHost({
      tables: {},
      sysctls: { 'net/ipv4/ip_local_reserved_ports': '14000-16000' },
      sysctlWriteError: 'EROFS',
    });
    expect((await installCapture(covered, config())).reservedPorts).toBe('14000-16000');
    expect(covered.calls.some((c) => c.command === 'sysctl')).toBe(false);
  });

  it('explains a read-only /proc/sys', async () => {
    const host = scriptedHost({ tables: {}, sysctlWriteError: 'EROFS' });
    await expect(installCapture(host, config())).rejects.toThrow(
      /ip_local_reserved_ports \(EROFS\): \/proc\/sys is read-only .* securityContext.sysctls/,
    );
    const skip = scriptedHost({ tables: {}, sysctlWriteError: 'EROFS' });
    expect((await installCapture(skip, config({ reservedPorts: '' }))).reservedPorts).toBe('');
  });
});

describe('cleanupCapture', () => {
  it('removes ours from whichever backend has them, and nothing else', async () => {
    const installed = installedTable(buildRules(captureOptions(), 4));
    const host = scriptedHost({ tables: { nft: undefined, legacy: installed } });
    expect(await cleanupCapture(host, config())).toEqual(['legacy']);
    const restores = host.calls.filter((c) => c.command.endsWith('-restore'));
    expect(restores).toHaveLength(1);
    expect(restores[0].command).toBe('iptables-legacy-restore');
    expect(restores[0].stdin).toBe(
      renderCleanup({ chains: installed.chains, rules: ['-A OUTPUT -p icmp -j ACCEPT', ...installed.rules] }),
    );
    expect(restores[0].stdin).not.toContain('icmp');
  });

  it('is a no-op when nothing of ours is present', async () => {
    const host = scriptedHost({ tables: {} });
    expect(await cleanupCapture(host, config())).toEqual([]);
    expect(host.calls.some((c) => c.command.endsWith('-restore'))).toBe(false);
  });

  it('names the missing binaries', async () => {
    const host = new RecordingHost({ respond: () => undefined });
    await expect(cleanupCapture(host, config())).rejects.toThrow(
      'none of iptables-nft-save, iptables-legacy-save found in PATH',
    );
  });
});
