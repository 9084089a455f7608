import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parseCommand } from '../lib/cli.ts';
import { EDGEMESH_BIN } from '../test/harness/netns.ts';
import { configFromFlags, dryRunText, initCommand } from './cli.ts';
import { captureOptions } from './options.ts';
import { installedSlugs, installedTable, parseSave, renderCleanup, renderInstall } from './render.ts';
import {
  buildRules,
  buildUdpRules,
  UDP_OUTPUT_CHAIN,
  UDP_PREROUTING_CHAIN,
  udpPolicyRoute,
} from './rules.ts';
import { cases } from './testing/cases.ts';
import { expectGolden, unusedGoldens } from './testing/golden.ts';

const testdata = new URL('./testdata/', import.meta.url).pathname;
/** Defaults with the nameservers a dual-stack pod's resolv.conf would give. */
const clusterDns = captureOptions({
  dnsServers: [
    { family: 4, text: '10.96.0.10/32' },
    { family: 6, text: 'fd00:96::a/128' },
  ],
});

function dryRun(argv: string[]): string {
  const flags = parseCommand(initCommand.spec, argv, {});
  return dryRunText(configFromFlags(flags), flags.cleanup);
}

describe('rendered rules (golden)', () => {
  for (const c of cases) {
    it(c.name, () => expectGolden(testdata, c.name, dryRun(c.argv)));
  }

  it('reconciles a table left by an older run in one transaction', () => {
    const stale = parseSave(
      [
        '*nat',
        ':PREROUTING ACCEPT [0:0]',
        ':OUTPUT ACCEPT [0:0]',
        ':EDGEMESH_OUTPUT - [0:0]',
        ':EDGEMESH_OLD - [0:0]',
        ':KUBE-SOMETHING - [0:0]',
        '-A OUTPUT -j KUBE-SOMETHING',
        '-A OUTPUT -m comment --comment "edgemesh/hook-output" -j EDGEMESH_OUTPUT',
        '-A OUTPUT -p tcp -j EDGEMESH_OLD',
        '-A EDGEMESH_OUTPUT -p tcp -m comment --comment "edgemesh/capture-tcp" -j EDGEMESH_OLD',
        'COMMIT',
      ].join('\n'),
    );
    expectGolden(testdata, 'reconcile-stale', renderInstall(buildRules(clusterDns, 4), stale));
  });

  it('has no golden file without a case', () => {
    expect(unusedGoldens(testdata, [...cases.map((c) => c.name), 'reconcile-stale'])).toEqual([]);
  });

  it('matches what the real CLI prints with --dry-run', async () => {
    for (const c of cases.filter((x) => ['exclusions', 'udp'].includes(x.name))) {
      const { stdout } = await promisify(execFile)(EDGEMESH_BIN, ['init', '--dry-run', ...c.argv], {
        env: { PATH: process.env.PATH },
      });
      expect(stdout).toBe(dryRun(c.argv));
    }
  });
});

describe('ruleset invariants', () => {
  const variants = [
    captureOptions(),
    clusterDns,
    captureOptions({ captureAllDns: true }),
    captureOptions({ captureDns: false, includeOutboundRanges: [] }),
    captureOptions({
      excludeOutboundPorts: [1, 65535],
      excludeOutboundRanges: [
        { family: 4, text: '10.0.0.0/8' },
        { family: 6, text: 'fd00::/8' },
      ],
      includeOutboundRanges: [{ family: 6, text: '2001:db8::/32' }],
    }),
  ];
  for (const [i, options] of variants.entries()) {
    for (const family of [4, 6] as const) {
      it(`variant ${i} IPv${family}: owned chains, unique slugs, hooks only into built-ins`, () => {
        const rs = buildRules(options, family);
        const slugs = rs.rules.map((r) => r.slug);
        expect(new Set(slugs).size).toBe(slugs.length);
        for (const r of rs.rules) {
          expect(r.slug).toMatch(/^[a-z0-9][a-z0-9.:/-]*$/);
          if (!rs.chains.includes(r.chain)) {
            expect(r.chain).toBe('OUTPUT');
            expect(rs.chains).toContain(r.target[1]);
          }
        }
        // Cleanup derived from the installed state removes every chain and hook it created.
        const installed = installedTable(rs);
        expect(installedSlugs(installed)).toEqual(slugs);
        const cleanup = renderCleanup(installed) ?? '';
        for (const chain of rs.chains) expect(cleanup).toContain(`-X ${chain}\n`);
        const hooks = rs.rules.filter((r) => !rs.chains.includes(r.chain));
        expect(cleanup.split('\n').filter((l) => l.startsWith('-D ')).length).toBe(hooks.length);
        expect(renderCleanup(parseSave('*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j ACCEPT\nCOMMIT\n'))).toBe(
          undefined,
        );
      });
    }
  }

  it.each([
    ['all DNS', captureOptions({ captureAllDns: true }), ['dns-udp', 'dns-tcp']],
    ["the pod's nameservers", clusterDns, ['dns-udp-10.96.0.10', 'dns-tcp-10.96.0.10']],
  ])(
    '%s: the uid/gid RETURN comes before DNS capture, and DNS before the loopback RETURN',
    (_, options, dns) => {
      const slugs = buildRules(options, 4).rules.map((r) => r.slug);
      const at = (s: string) => slugs.indexOf(s);
      const [udp, tcp] = dns.map(at);
      expect(udp).toBeGreaterThan(-1);
      expect(tcp).toBeGreaterThan(-1);
      expect(at('proxy-uid')).toBeLessThan(udp);
      expect(at('proxy-gid')).toBeLessThan(tcp);
      expect(udp).toBeLessThan(at('loopback-interface'));
      expect(tcp).toBeLessThan(at('loopback-destination'));
      expect(at('loopback-destination')).toBeLessThan(at('capture-tcp'));
    },
  );

  it("scoped DNS: rules match only the family's own nameservers; a family without one has no DNS rule", () => {
    const v4 = buildRules(clusterDns, 4).rules.filter((r) => r.match.includes('53'));
    expect(v4.map((r) => r.match.join(' '))).toEqual([
      '-d 10.96.0.10/32 -p udp --dport 53',
      '-d 10.96.0.10/32 -p tcp --dport 53',
    ]);
    const v6Only = captureOptions({ dnsServers: [{ family: 6, text: 'fd00:96::a/128' }] });
    expect(buildRules(v6Only, 4).rules.filter((r) => r.match.includes('53'))).toEqual([]);
    // UDP capture: only DNS to the nameservers stays the nat table's; other port-53 datagrams
    // are marked like any UDP.
    const udp = buildUdpRules({ ...clusterDns, captureUdp: true }, 6).rules.filter((r) =>
      r.match.includes('53'),
    );
    expect(udp.map((r) => `${r.slug} ${r.target.join(' ')}`)).toEqual(['udp-dns-fd00:96::a -j RETURN']);
  });
});

describe('UDP ruleset invariants (--capture-udp)', () => {
  const options = captureOptions({
    captureUdp: true,
    excludeOutboundPorts: [5432],
    excludeOutboundRanges: [{ family: 4, text: '10.96.0.0/12' }],
  });
  for (const family of [4, 6] as const) {
    it(`IPv${family}: mangle only, hooks into OUTPUT and PREROUTING, cleanup derived`, () => {
      const rs = buildUdpRules(options, family);
      expect(rs.table).toBe('mangle');
      const slugs = rs.rules.map((r) => r.slug);
      expect(new Set(slugs).size).toBe(slugs.length);
      // Slugs never collide with the nat ruleset's, so one table's check cannot count the other's.
      const natSlugs = new Set(buildRules(options, family).rules.map((r) => r.slug));
      expect(slugs.filter((s) => natSlugs.has(s))).toEqual([]);
      const hooks = rs.rules.filter((r) => !rs.chains.includes(r.chain));
      expect(hooks.map((r) => [r.chain, r.target[1]])).toEqual([
        ['OUTPUT', UDP_OUTPUT_CHAIN],
        ['PREROUTING', UDP_PREROUTING_CHAIN],
      ]);
      const at = (s: string) => slugs.indexOf(s);
      for (const before of ['udp-proxy-uid', 'udp-proxy-gid', 'udp-dns', 'udp-exclude-port-5432']) {
        expect(at(before)).toBeLessThan(at('udp-mark'));
      }
      const cleanup = renderCleanup(installedTable(rs), 'mangle') ?? '';
      expect(cleanup.startsWith('*mangle\n')).toBe(true);
      expect(cleanup.split('\n').filter((l) => l.startsWith('-D ')).length).toBe(2);
      expect(udpPolicyRoute(family).route).toContain(family === 4 ? '0.0.0.0/0' : '::/0');
    });
  }

  it('is off by default: the default options have no UDP capture', () => {
    expect(captureOptions().captureUdp).toBe(false);
  });
});

describe('parseSave', () => {
  it('reads user chains and rules of the first table only, ignoring comments', () => {
    const t = parseSave(
      '# Warning: iptables-legacy tables present\n*nat\n:OUTPUT ACCEPT [3:180]\n:EDGEMESH_OUTPUT - [0:0]\n' +
        '-A OUTPUT -m comment --comment "edgemesh/hook-output" -j EDGEMESH_OUTPUT\nCOMMIT\n' +
        '*filter\n:X - [0:0]\n-A X -j DROP\nCOMMIT\n',
    );
    expect(t).toEqual({
      chains: ['EDGEMESH_OUTPUT'],
      rules: ['-A OUTPUT -m comment --comment "edgemesh/hook-output" -j EDGEMESH_OUTPUT'],
    });
    expect(installedSlugs(t)).toEqual(['hook-output']);
    expect(parseSave('')).toEqual({ chains: [], rules: [] });
  });
});
