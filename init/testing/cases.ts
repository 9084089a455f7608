/**
 * Each case is the argv of `edgemesh init`, in the annotation syntax the webhook passes
 * on; its golden file is exactly what `edgemesh init --dry-run <argv>` prints.
 */
export const cases: { name: string; argv: string[] }[] = [
  { name: 'defaults', argv: ['--ipv6=false'] },
  { name: 'ipv6', argv: ['--ipv6=true'] },
  {
    name: 'exclusions',
    argv: [
      '--ipv6=true',
      '--exclude-outbound-ports=5432, 6379,5432',
      '--exclude-outbound-ip-ranges=10.96.0.0/12,169.254.169.254, fd00:10::7/64',
    ],
  },
  { name: 'dns-off', argv: ['--ipv6=true', '--capture-dns=false'] },
  {
    name: 'include-ranges',
    argv: ['--ipv6=true', '--include-outbound-ip-ranges=10.0.0.0/8,192.168.0.0/16,fd00::/8'],
  },
  { name: 'include-ipv4-only', argv: ['--ipv6=true', '--include-outbound-ip-ranges=10.0.0.0/8'] },
  { name: 'include-none', argv: ['--ipv6=false', '--include-outbound-ip-ranges='] },
  {
    name: 'custom-ids-ports',
    argv: ['--ipv6=false', '--proxy-uid=2000', '--proxy-gid=3000', '--proxy-port=16001', '--dns-port=16053'],
  },
  // UDP capture (off in every case above, so their goldens have no mangle table).
  { name: 'udp', argv: ['--ipv6=true', '--capture-udp=true'] },
  {
    name: 'udp-exclusions',
    argv: [
      '--ipv6=true',
      '--capture-udp=true',
      '--udp-port=16006',
      '--exclude-outbound-ports=5432',
      '--exclude-outbound-ip-ranges=10.96.0.0/12,fd00:10::/64',
      '--include-outbound-ip-ranges=10.0.0.0/8,192.168.0.0/16',
      '--capture-dns=false',
    ],
  },
  { name: 'cleanup-defaults', argv: ['--ipv6=false', '--cleanup'] },
  { name: 'cleanup-ipv6', argv: ['--ipv6=true', '--cleanup'] },
  { name: 'cleanup-udp', argv: ['--ipv6=true', '--capture-udp=true', '--cleanup'] },
];
