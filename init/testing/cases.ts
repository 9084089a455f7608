/**
 * Each case is the argv of `edgemesh init`, in the annotation syntax the webhook passes
 * on; its golden file is exactly what `edgemesh init --dry-run <argv>` prints.
 */
const resolv = (file: string) => `--resolv-conf=${new URL(`../testdata/${file}`, import.meta.url).pathname}`;
/** The IPv4 cluster DNS of kubelet's ClusterFirst: 10.96.0.10. */
const cluster = resolv('resolv-cluster.conf');
/** 10.96.0.10, fd00:96::a, 192.168.1.1 (and a duplicate). */
const dual = resolv('resolv-dual.conf');

export const cases: { name: string; argv: string[] }[] = [
  { name: 'defaults', argv: ['--ipv6=false', cluster] },
  { name: 'ipv6', argv: ['--ipv6=true', dual] },
  {
    name: 'exclusions',
    argv: [
      '--ipv6=true',
      cluster,
      '--exclude-outbound-ports=5432, 6379,5432',
      '--exclude-outbound-ip-ranges=10.96.0.0/12,169.254.169.254, fd00:10::7/64',
    ],
  },
  { name: 'dns-off', argv: ['--ipv6=true', '--capture-dns=false'] },
  // The behaviour before DNS capture was scoped to the nameservers: every port-53 packet.
  { name: 'dns-all', argv: ['--ipv6=true', '--capture-all-dns=true'] },
  // No nameserver line: the app's resolver queries 127.0.0.1, so that is what is captured.
  { name: 'dns-no-nameserver', argv: ['--ipv6=true', resolv('resolv-empty.conf')] },
  {
    name: 'include-ranges',
    argv: ['--ipv6=true', dual, '--include-outbound-ip-ranges=10.0.0.0/8,192.168.0.0/16,fd00::/8'],
  },
  { name: 'include-ipv4-only', argv: ['--ipv6=true', cluster, '--include-outbound-ip-ranges=10.0.0.0/8'] },
  { name: 'include-none', argv: ['--ipv6=false', cluster, '--include-outbound-ip-ranges='] },
  {
    name: 'custom-ids-ports',
    argv: [
      '--ipv6=false',
      cluster,
      '--proxy-uid=2000',
      '--proxy-gid=3000',
      '--proxy-port=16001',
      '--dns-port=16053',
    ],
  },
  // UDP capture (off in every case above, so their goldens have no mangle table).
  { name: 'udp', argv: ['--ipv6=true', dual, '--capture-udp=true'] },
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
  { name: 'udp-dns-all', argv: ['--ipv6=true', '--capture-udp=true', '--capture-all-dns=true'] },
  { name: 'cleanup-defaults', argv: ['--ipv6=false', '--cleanup'] },
  { name: 'cleanup-ipv6', argv: ['--ipv6=true', '--cleanup'] },
  { name: 'cleanup-udp', argv: ['--ipv6=true', '--capture-udp=true', '--cleanup'] },
];
