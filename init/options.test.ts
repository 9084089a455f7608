import { describe, expect, it } from 'vitest';
import { parseCommand } from '../lib/cli.ts';
import { EdgemeshError } from '../lib/errors.ts';
import { TRAFFIC_OPTIONS } from '../lib/traffic.ts';
import { parseCidr } from './cidr.ts';
import { configFromFlags, initCommand } from './cli.ts';
import {
  hasGlobalIpv6,
  parseBooleanText,
  parseCidrList,
  parseIncludeRanges,
  parsePortList,
  problemOf,
} from './options.ts';
import { isReserved, withReserved } from './reserved-ports.ts';

describe('annotation value parsers', () => {
  it('parses port lists with spaces and duplicates; an empty item is refused like the webhook does', () => {
    expect(parsePortList(' 80 , 443,8080,80 ')).toEqual([80, 443, 8080]);
    expect(parsePortList('')).toEqual([]);
    expect(() => parsePortList('80,,443')).toThrow('has an empty item');
  });

  it.each(['0', '65536', 'http', '80-90', '-1', '8o', '1e3'])('rejects port %j', (bad) => {
    expect(() => parsePortList(`80,${bad}`)).toThrow(`"${bad}" is not a port (1-65535)`);
  });

  it.each([
    ['10.1.2.3/8', '10.0.0.0/8'],
    ['192.168.1.7', '192.168.1.7/32'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['2001:DB8:0:0:1::5/64', '2001:db8::/64'],
    ['fd00::1', 'fd00::1/128'],
    ['::/0', '::/0'],
    ['::ffff:1.2.3.4/128', '::ffff:102:304/128'],
    ['2001:db8:0:1:0:0:0:1/128', '2001:db8:0:1::1/128'],
    ['1:0:0:2:0:0:0:3/128', '1:0:0:2::3/128'],
  ])('canonicalises CIDR %s → %s', (input, text) => {
    expect(parseCidr(input)).toEqual({ family: input.includes(':') ? 6 : 4, text });
  });

  it.each([
    ['10.0.0.0/33', 'has a prefix length outside 0-32'],
    ['fd00::/129', 'has a prefix length outside 0-128'],
    ['10.0.0.0/', 'has a prefix length outside 0-32'],
    ['10.0.0.0/-1', 'has a prefix length outside 0-32'],
    ['10.0.0.0/8/8', 'is not an IP address or CIDR'],
    ['300.1.1.1/8', 'is not an IP address or CIDR'],
    ['fe80::1%eth0', 'is not an IP address or CIDR'],
    ['example.com', 'is not an IP address or CIDR'],
  ])('rejects CIDR %s', (bad, problem) => {
    expect(() => parseCidrList(`10.0.0.0/8,${bad}`)).toThrow(problem);
  });

  it('include ranges: * alone means all, empty means none, * cannot be mixed', () => {
    expect(parseIncludeRanges('*')).toBe('*');
    expect(parseIncludeRanges(' * ')).toBe('*');
    expect(parseIncludeRanges('')).toEqual([]);
    expect(parseIncludeRanges('10.0.0.0/8,fd00::/8')).toHaveLength(2);
    expect(() => parseIncludeRanges('*,10.0.0.0/8')).toThrow('"*" is not an IP address or CIDR');
    expect(() => parseCidrList('*')).toThrow('"*" is not an IP address or CIDR');
  });

  it('capture-dns takes the annotation values true/false only', () => {
    expect(parseBooleanText('TRUE')).toBe(true);
    expect(parseBooleanText('false')).toBe(false);
    expect(() => parseBooleanText('yes')).toThrow('"yes" is not true or false');
  });

  it('detects a global IPv6 address from /proc/net/if_inet6 (not lo, not link-local)', () => {
    const lo = '00000000000000000000000000000001 01 80 10 80       lo\n';
    const linkLocal = 'fe80000000000000a8bbccfffe000001 02 40 20 80     eth0\n';
    const ula = 'fd000000000000000000000000000002 02 40 00 80     eth0\n';
    expect(hasGlobalIpv6(lo + linkLocal)).toBe(false);
    expect(hasGlobalIpv6(lo + linkLocal + ula)).toBe(true);
    expect(hasGlobalIpv6('')).toBe(false);
  });
});

describe('edgemesh init flags', () => {
  const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
    configFromFlags(parseCommand(initCommand.spec, argv, env));

  it('defaults: capture everything, DNS on, uid/gid 1337, 15001/15053, reserve 15000-15100', () => {
    const c = parse(['--ipv6=false']);
    expect(c.capture).toMatchObject({
      proxyUid: 1337,
      proxyGid: 1337,
      proxyPort: 15001,
      dnsPort: 15053,
      captureDns: true,
      includeOutboundRanges: '*',
      ipv6: false,
    });
    expect(c.reservedPorts).toBe('15000-15100');
    expect(c.backend).toBe('auto');
  });

  it('takes the same values from EDGEMESH_* variables (how a pod spec may pass them)', () => {
    const c = parse([], {
      EDGEMESH_CAPTURE_DNS: 'false',
      EDGEMESH_IPV6: 'true',
      EDGEMESH_EXCLUDE_OUTBOUND_PORTS: '22',
    });
    expect(c.capture.captureDns).toBe(false);
    expect(c.capture.ipv6).toBe(true);
    expect(c.capture.excludeOutboundPorts).toEqual([22]);
  });

  it.each([
    [['--exclude-outbound-ports=80,99999'], '--exclude-outbound-ports: "99999" is not a port'],
    [
      ['--exclude-outbound-ip-ranges=10.0.0.0/40'],
      '--exclude-outbound-ip-ranges: "10.0.0.0/40" has a prefix',
    ],
    [['--include-outbound-ip-ranges=*,10.0.0.0/8'], '--include-outbound-ip-ranges: "*" is not an IP address'],
    [['--capture-dns=maybe'], '--capture-dns: "maybe" is not true or false'],
    [['--capture-dns'], "Option '--capture-dns <value>' argument missing"],
    [['--proxy-uid=-1'], '--proxy-uid: must be >= 0'],
    [['--proxy-port=70000'], '--proxy-port: must be <= 65535'],
    [['--dns-port=abc'], '--dns-port: expected an integer'],
    [['--ipv6=maybe'], '--ipv6: must be one of auto, true, false'],
    [['--iptables-backend=ebpf'], '--iptables-backend: must be one of auto, nft, legacy'],
    [['--reserved-ports=15100-15000'], '--reserved-ports: "15100-15000" is not a port'],
    [['--proxy-port=15053'], '--proxy-port and --dns-port must differ'],
    [['--no-such-flag'], "Unknown option '--no-such-flag'"],
  ])('rejects %j with an error naming the flag', (argv, message) => {
    let caught: unknown;
    try {
      parse(argv);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(EdgemeshError);
    expect((caught as EdgemeshError).code).toBe('EDGEMESH_ERR_CONFIG');
    expect((caught as Error).message).toContain(message);
  });
});

describe('ip_local_reserved_ports merge', () => {
  it.each([
    ['', '15000-15100', '15000-15100'],
    ['8000,30000-30010', '15000-15100', '8000,15000-15100,30000-30010'],
    ['14990-15010,15090-15200', '15000-15100', '14990-15200'],
    ['14999', '15000-15100', '14999-15100'],
    ['15101', '15000-15100', '15000-15101'],
    ['15000-15100', '15000-15100', '15000-15100'],
  ])('%j + %j → %j', (existing, wanted, merged) => {
    expect(withReserved(existing, wanted)).toBe(merged);
  });

  it('knows when the range is already covered', () => {
    expect(isReserved('10000-20000', '15000-15100')).toBe(true);
    expect(isReserved('15000-15050,15051-15100', '15000-15100')).toBe(true);
    expect(isReserved('15000-15050', '15000-15100')).toBe(false);
    expect(isReserved('', '15000-15100')).toBe(false);
  });

  it('rejects a malformed kernel value instead of writing garbage', () => {
    expect(() => withReserved('80,abc', '15000')).toThrow('"abc" is not a port');
  });
});

describe('same syntax as the webhook (lib/traffic.ts)', () => {
  const values = [
    '',
    '*',
    ' * ',
    '80',
    '80,443',
    '80,,443',
    '0',
    '10.0.0.0/8',
    '10.1.2.3/8, fd00::1',
    'fe80::1%eth0',
    '10.0.0.0/33',
    '*,10.0.0.0/8',
    'true',
    'FALSE',
    'yes',
  ];
  it.each(TRAFFIC_OPTIONS.map((o) => [o.flag, o] as const))(
    '--%s accepts exactly what the webhook admits',
    (flag, option) => {
      for (const value of values) {
        const webhook = problemOf(() => option.parse(value)) === undefined;
        const init =
          problemOf(() => parseCommand(initCommand.spec, [`--${flag}=${value}`], {})) === undefined;
        expect(init, `--${flag}=${JSON.stringify(value)}`).toBe(webhook);
      }
    },
  );
});
