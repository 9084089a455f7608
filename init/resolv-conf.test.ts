import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCommand } from '../lib/cli.ts';
import { configFromFlags, initCommand } from './cli.ts';
import { parseNameservers, RESOLV_CONF_MAX_BYTES, readNameservers } from './resolv-conf.ts';

describe("the pod's nameservers from resolv.conf", () => {
  it('reads IPv4 and IPv6 nameservers in order, dropping duplicates, comments and zone indexes', () => {
    const text = [
      '# kubelet',
      'search default.svc.cluster.local svc.cluster.local',
      'nameserver 10.96.0.10',
      'nameserver   FD00:96:0::A   # upper case, spaces',
      ';nameserver 192.0.2.1',
      'nameserver 10.96.0.10',
      'nameserver fe80::1%eth0',
      'options ndots:5',
    ].join('\n');
    expect(parseNameservers(text, 'x')).toEqual([
      { family: 4, text: '10.96.0.10/32' },
      { family: 6, text: 'fd00:96::a/128' },
      { family: 6, text: 'fe80::1/128' },
    ]);
  });

  it("no nameserver line means glibc's default, 127.0.0.1", () => {
    expect(parseNameservers('search a.b\n', 'x')).toEqual([{ family: 4, text: '127.0.0.1/32' }]);
    expect(parseNameservers('', 'x')).toEqual([{ family: 4, text: '127.0.0.1/32' }]);
  });

  it.each([
    ['nameserver dns.example', '/r:2: nameserver "dns.example" is not an IPv4 or IPv6 address or CIDR'],
    ['nameserver 10.0.0.0/8', '/r:2: nameserver "10.0.0.0/8" is not an address'],
    ['nameserver', '/r:2: "nameserver" without an address'],
  ])('refuses %j naming the file and line', (line, problem) => {
    expect(() => parseNameservers(`nameserver 10.96.0.10\n${line}\n`, '/r')).toThrow(problem);
  });

  it("an unreadable or oversized file is an error naming it and the way out; a missing one is glibc's 127.0.0.1", () => {
    const dir = mkdtempSync(join(tmpdir(), 'resolv-'));
    expect(() => readNameservers(dir)).toThrow(
      new RegExp(
        `cannot read the pod's nameservers from ${dir} \\(--resolv-conf\\): EISDIR.*--capture-all-dns=true`,
      ),
    );
    expect(readNameservers('/nonexistent/resolv.conf')).toEqual([{ family: 4, text: '127.0.0.1/32' }]);
    const big = join(dir, 'big.conf');
    writeFileSync(big, `nameserver 10.96.0.10\n${'#'.repeat(RESOLV_CONF_MAX_BYTES)}\n`);
    expect(() => readNameservers(big)).toThrow(`more than ${RESOLV_CONF_MAX_BYTES}`);
  });

  it('the CLI reads it only when DNS capture is scoped, never for cleanup', () => {
    const flags = (argv: string[]) => parseCommand(initCommand.spec, ['--ipv6=false', ...argv], {});
    const missing = `--resolv-conf=${tmpdir()}`; // a directory: unreadable as a file
    expect(() => configFromFlags(flags([missing]))).toThrow("cannot read the pod's nameservers");
    expect(configFromFlags(flags([missing, '--capture-all-dns=true'])).capture.dnsServers).toEqual([]);
    expect(configFromFlags(flags([missing, '--capture-dns=false'])).capture.dnsServers).toEqual([]);
    expect(configFromFlags(flags([missing, '--cleanup'])).capture.dnsServers).toEqual([]);
    expect(() => flags(['--capture-all-dns=maybe'])).toThrow('--capture-all-dns');
  });
});
