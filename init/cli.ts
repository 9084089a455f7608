import { readFileSync } from 'node:fs';
import { type CommandSpec, defineCommand, type ParsedOptions } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { createLogger } from '../lib/log.ts';
import { POD_CONTRACT } from '../lib/pod-contract.ts';
import { cleanupCapture, type InitConfig, installCapture } from './apply.ts';
import type { BackendChoice } from './backend.ts';
import { ensureXtablesLock, realHost } from './host.ts';
import {
  type CaptureOptions,
  captureOptions,
  hasGlobalIpv6,
  parseBooleanText,
  parseCidrList,
  parseIncludeRanges,
  parsePortList,
  problemOf,
} from './options.ts';
import { installedTable, renderCleanup, renderInstall } from './render.ts';
import { parsePortRanges } from './reserved-ports.ts';
import { readNameservers } from './resolv-conf.ts';
import { buildRules, buildUdpRules, type Family, udpPolicyRoute } from './rules.ts';

const spec = {
  name: 'init',
  summary:
    "Installs the pod's traffic-capture rules (run as the first init container, with NET_ADMIN): " +
    "outbound TCP to the sidecar proxy, DNS (UDP and TCP 53) to the pod's nameservers to the sidecar DNS server; the " +
    "sidecar's own traffic (its uid/gid) goes out untouched.",
  details: [
    'The traffic options take the values of the pod annotations traffic.edgemesh.io/* unchanged.',
    'Examples:',
    '  edgemesh init --dry-run',
    '  edgemesh init --exclude-outbound-ports=5432,6379 --exclude-outbound-ip-ranges=10.96.0.1/32',
    '  edgemesh init --include-outbound-ip-ranges=10.0.0.0/8,fd00::/8 --capture-dns=false',
    '  edgemesh init --cleanup',
  ].join('\n'),
  options: {
    'dry-run': { type: 'boolean', description: 'print the iptables-restore input instead of applying it' },
    cleanup: {
      type: 'boolean',
      description: 'remove every edgemesh chain and rule (with --dry-run: print how)',
    },
    'exclude-outbound-ports': {
      type: 'string',
      default: '',
      description: 'comma-separated TCP ports that go straight out',
      validate: (v: string) => problemOf(() => parsePortList(v)),
    },
    'exclude-outbound-ip-ranges': {
      type: 'string',
      default: '',
      description: 'comma-separated CIDRs (IPv4/IPv6) whose TCP goes straight out',
      validate: (v: string) => problemOf(() => parseCidrList(v)),
    },
    'include-outbound-ip-ranges': {
      type: 'string',
      default: '*',
      description: 'comma-separated CIDRs whose TCP is captured, * for all, empty for none',
      validate: (v: string) => problemOf(() => parseIncludeRanges(v)),
    },
    'capture-dns': {
      type: 'string',
      default: 'true',
      description: 'send DNS (UDP and TCP port 53) to the sidecar: true or false',
      validate: (v: string) => problemOf(() => parseBooleanText(v)),
    },
    'capture-all-dns': {
      type: 'string',
      default: 'false',
      description:
        "with --capture-dns, capture DNS to every address, not only to the pod's nameservers (--resolv-conf): true or false",
      validate: (v: string) => problemOf(() => parseBooleanText(v)),
    },
    'resolv-conf': {
      type: 'string',
      default: '/etc/resolv.conf',
      description:
        "the pod's resolv.conf (kubelet mounts the same file in every container): DNS is captured to its nameservers",
      validate: (v: string) => (v.trim() === '' ? 'must name a file' : undefined),
    },
    'capture-udp': {
      type: 'string',
      default: 'false',
      description:
        'send outbound UDP (not DNS) to the sidecar with TPROXY and a policy route: true or false (docs/udp.md)',
      validate: (v: string) => problemOf(() => parseBooleanText(v)),
    },
    'proxy-uid': {
      type: 'integer',
      default: POD_CONTRACT.proxyUid,
      min: 0,
      max: 4294967294,
      description: "the sidecar's uid",
    },
    'proxy-gid': {
      type: 'integer',
      default: POD_CONTRACT.proxyGid,
      min: 0,
      max: 4294967294,
      description: "the sidecar's gid",
    },
    'proxy-port': {
      type: 'integer',
      default: POD_CONTRACT.proxyPort,
      min: 1,
      max: 65535,
      description: 'sidecar outbound TCP port',
    },
    'dns-port': {
      type: 'integer',
      default: POD_CONTRACT.dnsPort,
      min: 1,
      max: 65535,
      description: 'sidecar DNS port',
    },
    'udp-port': {
      type: 'integer',
      default: POD_CONTRACT.udpPort,
      min: 1,
      max: 65535,
      description: 'sidecar transparent UDP port (with --capture-udp)',
    },
    ipv6: {
      type: 'string',
      default: 'auto',
      choices: ['auto', 'true', 'false'],
      description: 'also install ip6tables rules; auto = when the pod has a global IPv6 address',
    },
    'iptables-backend': {
      type: 'string',
      default: 'auto',
      choices: ['auto', 'nft', 'legacy'],
      description: 'auto = the one that already has rules, else the system iptables',
    },
    'reserved-ports': {
      type: 'string',
      default: '15000-15100',
      description: 'ports to add to net.ipv4.ip_local_reserved_ports (never ephemeral); empty to skip',
      validate: (v: string) => problemOf(() => parsePortRanges(v)),
    },
    config: { type: 'string', description: 'JSON/YAML file with any of these options' },
  },
} as const satisfies CommandSpec;

type InitFlags = ParsedOptions<typeof spec>;

function ipv6Enabled(flag: string): boolean {
  if (flag !== 'auto') return flag === 'true';
  try {
    return hasGlobalIpv6(readFileSync('/proc/net/if_inet6', 'utf8'));
  } catch {
    return false; // IPv6 disabled in this kernel or namespace
  }
}

/** Flags (already checked one by one by their validators) → one frozen config. */
export function configFromFlags(flags: InitFlags): InitConfig {
  if (flags['proxy-port'] === flags['dns-port']) {
    throw configError(`--proxy-port and --dns-port must differ (both ${flags['proxy-port']})`);
  }
  // UDP 15053 is the DNS server's; a TPROXY socket there would take the DNS port's datagrams.
  if (flags['udp-port'] === flags['dns-port']) {
    throw configError(`--udp-port and --dns-port must differ (both ${flags['udp-port']})`);
  }
  const captureDns = parseBooleanText(flags['capture-dns']);
  const captureAllDns = parseBooleanText(flags['capture-all-dns']);
  // Read only when the rules need it: cleanup removes by ownership marks, not by address.
  const dnsServers =
    captureDns && !captureAllDns && !flags.cleanup ? readNameservers(flags['resolv-conf']) : [];
  const capture: CaptureOptions = captureOptions({
    proxyUid: flags['proxy-uid'],
    proxyGid: flags['proxy-gid'],
    proxyPort: flags['proxy-port'],
    dnsPort: flags['dns-port'],
    captureDns,
    captureAllDns,
    dnsServers,
    captureUdp: parseBooleanText(flags['capture-udp']),
    udpPort: flags['udp-port'],
    excludeOutboundPorts: parsePortList(flags['exclude-outbound-ports']),
    excludeOutboundRanges: parseCidrList(flags['exclude-outbound-ip-ranges']),
    includeOutboundRanges: parseIncludeRanges(flags['include-outbound-ip-ranges']),
    ipv6: ipv6Enabled(flags.ipv6),
  });
  return Object.freeze({
    capture,
    backend: flags['iptables-backend'] as BackendChoice,
    reservedPorts: flags['reserved-ports'].trim(),
  });
}

/** What --dry-run prints: the restore input per family, as a fresh install would apply it. */
export function dryRunText(config: InitConfig, cleanup = false): string {
  const fams: Family[] = config.capture.ipv6 ? [4, 6] : [4];
  return fams
    .map((family) => {
      const ruleset = buildRules(config.capture, family);
      const tool = family === 4 ? 'iptables-restore' : 'ip6tables-restore';
      const text = cleanup ? renderCleanup(installedTable(ruleset)) : renderInstall(ruleset);
      return `# IPv${family}: ${tool} --noflush\n${text}${config.capture.captureUdp ? udpDryRun(config, family, cleanup) : ''}`;
    })
    .join('');
}

/** The UDP capture part of --dry-run: the mangle table's restore input, then the ip commands. */
function udpDryRun(config: InitConfig, family: Family, cleanup: boolean): string {
  const ruleset = buildUdpRules(config.capture, family);
  const text = cleanup ? renderCleanup(installedTable(ruleset), 'mangle') : renderInstall(ruleset);
  const pr = udpPolicyRoute(family);
  const ip = cleanup
    ? [`ip -${family} rule del ${pr.rule.join(' ')}`, `ip -${family} route del ${pr.route.join(' ')}`]
    : [`ip -${family} rule add ${pr.rule.join(' ')}`, `ip -${family} route replace ${pr.route.join(' ')}`];
  return `${text}# IPv${family}: policy route\n${ip.join('\n')}\n`;
}

/** What the install line says about DNS: which addresses it is captured to. */
function dnsScope(capture: CaptureOptions): string {
  if (!capture.captureDns) return 'DNS not captured';
  if (capture.captureAllDns) return 'DNS to every address captured';
  const fams = capture.ipv6 ? [4, 6] : [4];
  const servers = capture.dnsServers
    .filter((c) => fams.includes(c.family))
    .map((c) => c.text.replace(/\/\d+$/, ''));
  return `DNS captured to ${servers.join(', ') || 'no nameserver of these families'}`;
}

export const initCommand = defineCommand(spec, async (flags) => {
  const config = configFromFlags(flags);
  if (flags['dry-run']) {
    process.stdout.write(dryRunText(config, flags.cleanup));
    return 0;
  }
  const log = createLogger('init');
  const lock = ensureXtablesLock();
  if (lock) log.info({ lock }, '/run is not writable: iptables-legacy locks XTABLES_LOCKFILE instead');
  if (flags.cleanup) {
    const cleaned = await cleanupCapture(realHost, config, log);
    process.stdout.write(
      cleaned.length > 0
        ? `edgemesh init: removed the capture rules (iptables backend ${cleaned.join(' and ')})\n`
        : 'edgemesh init: no edgemesh rules were present\n',
    );
    return 0;
  }
  const report = await installCapture(realHost, config, log);
  const rules = report.families.map((f) => `IPv${f.family} ${f.rules} rules`).join(', ');
  process.stdout.write(
    `edgemesh init: capture installed with iptables backend ${report.backend.name} ` +
      `(${report.backend.reason}); ${rules}; reserved ports ${report.reservedPorts || 'not managed'}; ` +
      `${dnsScope(config.capture)}\n`,
  );
  return 0;
});
