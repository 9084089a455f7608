import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EDGEMESH_BIN, NetnsLab, waitFor } from '../test/harness/netns.ts';
import { cases } from './testing/cases.ts';

/**
 * `edgemesh init` (the real CLI) in real network namespaces, with both iptables backends.
 *
 *   pod ns                                        net ns ("the internet")
 *   eth0 10.60.0.2/24  fd00:60::2/64  ── veth ──  eth0 10.60.0.1/24  fd00:60::1/64
 *   :15001 HTTP "proxy"                           lo 198.51.100.10, 203.0.113.10,
 *   :15053 DNS 127.0.0.1/::1 → 192.0.2.153           2001:db8::10, 2001:db8::11: HTTP "direct" :80 :8080
 *   :8081  HTTP "local"                           lo 198.51.100.53, 2001:db8::53: DNS → 192.0.2.1
 *                                                 lo 203.0.113.53, 2001:db8::153: the user's own
 *                                                    DNS server (dnsmasq): only.user.example → 192.0.2.77
 *   resolv.conf: nameserver 198.51.100.53, 2001:db8::53, 127.0.0.53 (DNS is captured only to these)
 *
 * An HTTP answer names the listener and the address it was reached on, so "proxy" means the
 * connection was redirected to :15001, "direct <dst>" that it reached the real destination.
 */
const node = new URL('../node_modules/.bin/node', import.meta.url).pathname;
const servers = new URL('./testing/servers.ts', import.meta.url).pathname;

const APP = { uid: 1000, gid: 1000 };
const SIDECAR = { uid: 1337, gid: 1337 };
const SIDECAR_DNS = '192.0.2.153';
const OUTSIDE_DNS = '192.0.2.1';
/** The user's own DNS server (a UDP Service in a cluster): not one of the pod's nameservers. */
const USER_DNS = { v4: '203.0.113.53', v6: '2001:db8::153', name: 'only.user.example', answer: '192.0.2.77' };

/**
 * The pod's resolv.conf, as kubelet would write it. World-readable: one test runs init as the
 * app's uid to see it refused for lack of NET_ADMIN, not for this file.
 */
const RESOLV_CONF = (() => {
  const dir = mkdtempSync(join(tmpdir(), 'emi-resolv-'));
  chmodSync(dir, 0o755);
  const file = join(dir, 'resolv.conf');
  writeFileSync(
    file,
    'search default.svc.cluster.local\nnameserver 198.51.100.53\nnameserver 2001:db8::53\nnameserver 127.0.0.53\noptions ndots:5\n',
  );
  chmodSync(file, 0o644);
  return file;
})();
const RESOLV_FLAG = `--resolv-conf=${RESOLV_CONF}`;
afterAll(() => rmSync(dirname(RESOLV_CONF), { recursive: true, force: true }));

interface Pod {
  lab: NetnsLab;
  pod: string;
  net: string;
}

async function startServers(lab: NetnsLab, ns: string, spec: object): Promise<void> {
  const child = lab.spawn(ns, [node, servers, JSON.stringify(spec)]);
  let out = '';
  child.stdout?.on('data', (b: Buffer) => {
    out += b.toString();
  });
  child.stderr?.on('data', (b: Buffer) => {
    out += b.toString();
  });
  await waitFor(() => out.includes('ready') || child.exitCode !== null, 15_000, 50, `servers in ${ns}`);
  if (!out.includes('ready')) throw new Error(`servers in ${ns} failed: ${out}`);
}

async function makePod(lab: NetnsLab, name: string): Promise<Pod> {
  const pod = await lab.add(`${name}p`);
  const net = await lab.add(`${name}n`);
  await lab.link(
    { ns: pod, ifname: 'eth0', addr: ['10.60.0.2/24', 'fd00:60::2/64'] },
    { ns: net, ifname: 'eth0', addr: ['10.60.0.1/24', 'fd00:60::1/64'] },
  );
  await lab.exec(pod, ['ip', 'route', 'add', 'default', 'via', '10.60.0.1']);
  await lab.exec(pod, ['ip', '-6', 'route', 'add', 'default', 'via', 'fd00:60::1']);
  for (const addr of ['198.51.100.10/32', '198.51.100.53/32', '203.0.113.10/32', `${USER_DNS.v4}/32`]) {
    await lab.exec(net, ['ip', 'addr', 'add', addr, 'dev', 'lo']);
  }
  for (const addr of ['2001:db8::10/128', '2001:db8::11/128', '2001:db8::53/128', `${USER_DNS.v6}/128`]) {
    await lab.exec(net, ['ip', 'addr', 'add', addr, 'dev', 'lo', 'nodad']);
  }
  await startServers(lab, net, {
    http: [80, 8080],
    label: 'direct',
    dns: ['198.51.100.53:53', '[2001:db8::53]:53'],
    answer: OUTSIDE_DNS,
  });
  await startServers(lab, pod, {
    http: [15001],
    httpHosts: ['127.0.0.1', '::1'],
    originalDst: true,
    label: 'proxy',
    dns: ['127.0.0.1:15053', '[::1]:15053'],
    answer: SIDECAR_DNS,
  });
  await startServers(lab, pod, { http: [8081], label: 'local' });
  // The user's own DNS server: a real one, knowing a name no other server here knows and
  // refusing everything else (no upstream).
  lab.spawn(net, [
    'dnsmasq',
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--pid-file=',
    '--no-resolv',
    '--no-hosts',
    '--bind-interfaces',
    '--user=root',
    `--listen-address=${USER_DNS.v4}`,
    `--listen-address=${USER_DNS.v6}`,
    `--address=/${USER_DNS.name}/${USER_DNS.answer}`,
  ]);
  return { lab, pod, net };
}

async function init(p: Pod, args: string[], as?: { uid: number; gid: number }) {
  const resolv = args.some((a) => a.startsWith('--resolv-conf')) ? [] : [RESOLV_FLAG];
  return p.lab.run(p.pod, [EDGEMESH_BIN, 'init', ...resolv, ...args], { ...as, timeoutMs: 60_000 });
}

async function initOk(p: Pod, args: string[]): Promise<string> {
  const r = await init(p, args);
  expect(r.code, `edgemesh init ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

async function curl(p: Pod, url: string, as: { uid: number; gid: number }): Promise<string> {
  const r = await p.lab.run(p.pod, ['curl', '-sS', '-g', '--max-time', '5', url], as);
  return r.code === 0 ? r.stdout.trim() : `curl failed (${r.code}): ${r.stderr.trim()}`;
}

async function dig(
  p: Pod,
  server: string,
  tcp: boolean,
  as: { uid: number; gid: number },
  name = 'example.com',
): Promise<string> {
  const args = ['dig', '+short', '+time=3', '+tries=1', ...(tcp ? ['+tcp'] : []), `@${server}`, name, 'A'];
  const r = await p.lab.run(p.pod, args, as);
  return r.code === 0 ? r.stdout.trim() : `dig failed (${r.code}): ${r.stdout.trim()} ${r.stderr.trim()}`;
}

/** iptables-save of the nat table without timestamps and counters, for comparing runs. */
async function natRules(p: Pod, backend: string, family: 4 | 6): Promise<string> {
  const bin = `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}-save`;
  const { stdout } = await p.lab.exec(p.pod, [bin, '-t', 'nat']);
  return stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');
}

/** Everything UDP capture touches: both mangle tables, the policy rules and table 133. */
async function udpState(p: Pod, backend: string): Promise<string> {
  const parts: string[] = [];
  for (const family of [4, 6] as const) {
    const bin = `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}-save`;
    const save = (await p.lab.exec(p.pod, [bin, '-t', 'mangle'])).stdout;
    parts.push(
      save
        .split('\n')
        .filter((l) => !l.startsWith('#'))
        .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
        .join('\n'),
      (await p.lab.run(p.pod, ['ip', `-${family}`, 'rule', 'show'])).stdout,
      (await p.lab.run(p.pod, ['ip', `-${family}`, 'route', 'show', 'table', '133'])).stdout,
    );
  }
  return parts.join('\n');
}

const edgemeshLines = (save: string) => save.split('\n').filter((l) => /edgemesh|EDGEMESH/.test(l));

for (const backend of ['nft', 'legacy'] as const) {
  describe(`capture with the ${backend} backend`, () => {
    const lab = new NetnsLab('emi');
    let p: Pod;
    const flag = `--iptables-backend=${backend}`;
    let firstInstall: { v4: string; v6: string };

    beforeAll(async () => {
      p = await makePod(lab, backend.slice(0, 3));
      // Something already reserved must survive the merge.
      await lab.exec(p.pod, ['sh', '-c', 'echo 8000 > /proc/sys/net/ipv4/ip_local_reserved_ports']);
    });
    afterAll(() => lab.cleanup());

    it('without rules, the app reaches the outside directly (the lab itself works)', async () => {
      expect(await curl(p, 'http://198.51.100.10/', APP)).toBe('direct 198.51.100.10:80');
      expect(await curl(p, 'http://[2001:db8::10]/', APP)).toBe('direct [2001:db8::10]:80');
      expect(await dig(p, '198.51.100.53', false, APP)).toBe(OUTSIDE_DNS);
    });

    it('installs with defaults (IPv6 auto-detected from the pod address) and says which backend', async () => {
      const out = await initOk(p, [flag]);
      expect(out).toContain(`capture installed with iptables backend ${backend}`);
      // DNS rules per nameserver: IPv4 198.51.100.53 and 127.0.0.53, IPv6 2001:db8::53.
      expect(out).toContain('IPv4 12 rules, IPv6 10 rules');
      expect(out).toContain('DNS captured to 198.51.100.53, 2001:db8::53, 127.0.0.53');
      firstInstall = { v4: await natRules(p, backend, 4), v6: await natRules(p, backend, 6) };
      expect(edgemeshLines(firstInstall.v4)).toHaveLength(14); // 2 chains + 12 rules
      expect(edgemeshLines(firstInstall.v6)).toHaveLength(12);
      const other = backend === 'nft' ? 'legacy' : 'nft';
      expect(edgemeshLines(await natRules(p, other, 4))).toEqual([]);
    });

    it('app TCP to outside addresses (IPv4 and IPv6) lands on :15001 with the original destination', async () => {
      expect(await curl(p, 'http://198.51.100.10/', APP)).toBe('proxy 127.0.0.1:15001 for 198.51.100.10:80');
      expect(await curl(p, 'http://203.0.113.10:8080/', APP)).toBe(
        'proxy 127.0.0.1:15001 for 203.0.113.10:8080',
      );
      expect(await curl(p, 'http://[2001:db8::10]/', APP)).toBe('proxy [::1]:15001 for [2001:db8::10]:80');
    });

    it('app DNS over UDP and TCP, IPv4 and IPv6, lands on :15053 — also to a loopback resolver', async () => {
      for (const server of ['198.51.100.53', '2001:db8::53', '127.0.0.53']) {
        expect(await dig(p, server, false, APP), `udp @${server}`).toBe(SIDECAR_DNS);
        expect(await dig(p, server, true, APP), `tcp @${server}`).toBe(SIDECAR_DNS);
      }
    });

    it("DNS to another address (the user's own DNS server) reaches that server, over UDP; its TCP is TCP", async () => {
      // Before the scoping, the sidecar's DNS answered these: SIDECAR_DNS, or nothing for the name.
      for (const server of [USER_DNS.v4, USER_DNS.v6]) {
        expect(await dig(p, server, false, APP, USER_DNS.name), `udp @${server}`).toBe(USER_DNS.answer);
      }
      // TCP to it is an ordinary outbound connection: the TCP capture takes it to :15001.
      expect(await curl(p, `http://${USER_DNS.v4}:53/`, APP)).toBe(
        `proxy 127.0.0.1:15001 for ${USER_DNS.v4}:53`,
      );
      expect(await curl(p, `http://[${USER_DNS.v6}]:53/`, APP)).toBe(
        `proxy [::1]:15001 for [${USER_DNS.v6}]:53`,
      );
    });

    it('--capture-all-dns=true captures DNS to every address again (the old behaviour)', async () => {
      await initOk(p, [flag, '--capture-all-dns=true']);
      expect(await dig(p, USER_DNS.v4, false, APP, USER_DNS.name)).toBe(SIDECAR_DNS);
      expect(await dig(p, USER_DNS.v6, true, APP, USER_DNS.name)).toBe(SIDECAR_DNS);
      await initOk(p, [flag]);
      expect(await natRules(p, backend, 4)).toBe(firstInstall.v4);
    });

    it('the sidecar (uid 1337, and gid 1337 alone) goes straight out, DNS included', async () => {
      expect(await curl(p, 'http://198.51.100.10/', SIDECAR)).toBe('direct 198.51.100.10:80');
      expect(await curl(p, 'http://[2001:db8::10]/', SIDECAR)).toBe('direct [2001:db8::10]:80');
      expect(await curl(p, 'http://198.51.100.10/', { uid: 1001, gid: 1337 })).toBe(
        'direct 198.51.100.10:80',
      );
      for (const tcp of [false, true]) {
        expect(await dig(p, '198.51.100.53', tcp, SIDECAR)).toBe(OUTSIDE_DNS);
        expect(await dig(p, '2001:db8::53', tcp, SIDECAR)).toBe(OUTSIDE_DNS);
      }
    });

    it('loopback and the pod talking to its own address stay local', async () => {
      expect(await curl(p, 'http://127.0.0.1:8081/', APP)).toBe('local 127.0.0.1:8081');
      expect(await curl(p, 'http://[::1]:8081/', APP)).toBe('local [::1]:8081');
      expect(await curl(p, 'http://10.60.0.2:8081/', APP)).toBe('local 10.60.0.2:8081');
    });

    it('reserves 15000-15100, keeping what was reserved before', async () => {
      const { stdout } = await lab.exec(p.pod, ['cat', '/proc/sys/net/ipv4/ip_local_reserved_ports']);
      expect(stdout.trim()).toBe('8000,15000-15100');
    });

    it('running it again leaves an identical ruleset', async () => {
      await initOk(p, [flag]);
      await initOk(p, []); // auto-detection now finds our rules in this backend
      expect(await natRules(p, backend, 4)).toBe(firstInstall.v4);
      expect(await natRules(p, backend, 6)).toBe(firstInstall.v6);
    });

    it('excluded ports and CIDRs go straight out, the rest is still captured', async () => {
      await initOk(p, [
        flag,
        '--exclude-outbound-ports=8080',
        '--exclude-outbound-ip-ranges=203.0.113.0/24, 2001:db8::10/128',
      ]);
      expect(await curl(p, 'http://198.51.100.10:8080/', APP)).toBe('direct 198.51.100.10:8080');
      expect(await curl(p, 'http://203.0.113.10/', APP)).toBe('direct 203.0.113.10:80');
      expect(await curl(p, 'http://[2001:db8::10]/', APP)).toBe('direct [2001:db8::10]:80');
      expect(await curl(p, 'http://[2001:db8::11]:8080/', APP)).toBe('direct [2001:db8::11]:8080');
      expect(await curl(p, 'http://198.51.100.10/', APP)).toBe('proxy 127.0.0.1:15001 for 198.51.100.10:80');
      expect(await curl(p, 'http://[2001:db8::11]/', APP)).toBe('proxy [::1]:15001 for [2001:db8::11]:80');
      expect(await dig(p, '198.51.100.53', false, APP)).toBe(SIDECAR_DNS);
    });

    it('include ranges: only those are captured', async () => {
      await initOk(p, [flag, '--include-outbound-ip-ranges=203.0.113.0/24,2001:db8::11']);
      expect(await curl(p, 'http://203.0.113.10/', APP)).toBe('proxy 127.0.0.1:15001 for 203.0.113.10:80');
      expect(await curl(p, 'http://[2001:db8::11]/', APP)).toBe('proxy [::1]:15001 for [2001:db8::11]:80');
      expect(await curl(p, 'http://198.51.100.10/', APP)).toBe('direct 198.51.100.10:80');
      expect(await curl(p, 'http://[2001:db8::10]/', APP)).toBe('direct [2001:db8::10]:80');
    });

    it('--capture-dns=false lets DNS out while TCP is still captured', async () => {
      await initOk(p, [flag, '--capture-dns=false']);
      for (const tcp of [false, true]) {
        expect(await dig(p, '198.51.100.53', tcp, APP)).toBe(OUTSIDE_DNS);
        expect(await dig(p, '2001:db8::53', tcp, APP)).toBe(OUTSIDE_DNS);
      }
      expect(await curl(p, 'http://198.51.100.10/', APP)).toBe('proxy 127.0.0.1:15001 for 198.51.100.10:80');
    });

    it('--cleanup removes every edgemesh chain and rule, and traffic flows directly again', async () => {
      // A foreign rule in nat OUTPUT must survive our cleanup.
      const iptables = `iptables-${backend}`;
      await lab.exec(p.pod, [iptables, '-t', 'nat', '-A', 'OUTPUT', '-p', 'icmp', '-j', 'ACCEPT']);
      const out = await initOk(p, ['--cleanup', '--ipv6=false']); // IPv6 rules go too
      expect(out).toContain(`removed the capture rules (iptables backend ${backend})`);
      const v4 = await natRules(p, backend, 4);
      expect(edgemeshLines(v4)).toEqual([]);
      expect(edgemeshLines(await natRules(p, backend, 6))).toEqual([]);
      expect(v4).toContain('-A OUTPUT -p icmp -j ACCEPT');
      expect(await curl(p, 'http://198.51.100.10/', APP)).toBe('direct 198.51.100.10:80');
      expect(await dig(p, '198.51.100.53', true, APP)).toBe(OUTSIDE_DNS);
      expect(await initOk(p, ['--cleanup'])).toContain('no edgemesh rules were present');
      await lab.exec(p.pod, [iptables, '-t', 'nat', '-D', 'OUTPUT', '-p', 'icmp', '-j', 'ACCEPT']);
    });

    it('replaces a stale ruleset from an older run with exactly the current one', async () => {
      const stale = [
        '*nat',
        ':EDGEMESH_OUTPUT - [0:0]',
        ':EDGEMESH_OLD - [0:0]',
        '-A OUTPUT -p tcp -j EDGEMESH_OLD',
        '-A OUTPUT -m comment --comment edgemesh/hook-output -j EDGEMESH_OUTPUT',
        '-A EDGEMESH_OUTPUT -p tcp -m comment --comment edgemesh/capture-tcp -j EDGEMESH_OLD',
        '-A EDGEMESH_OLD -p tcp -j REDIRECT --to-ports 15999',
        'COMMIT',
        '',
      ].join('\n');
      await lab.exec(p.pod, [`iptables-${backend}-restore`, '--noflush'], { input: stale });
      await initOk(p, [flag]);
      expect(await natRules(p, backend, 4)).toBe(firstInstall.v4);
      expect(await curl(p, 'http://198.51.100.10/', APP)).toBe('proxy 127.0.0.1:15001 for 198.51.100.10:80');
    });
  });
}

describe('every golden case on real iptables', () => {
  const lab = new NetnsLab('emi');
  afterAll(() => lab.cleanup());

  for (const backend of ['nft', 'legacy'] as const) {
    it(`${backend}: each installs, re-runs to an identical ruleset, and cleans up to nothing`, async () => {
      const ns = await lab.add(`g${backend.slice(0, 3)}`);
      const p = { lab, pod: ns, net: '' };
      const before = { v4: await natRules(p, backend, 4), v6: await natRules(p, backend, 6) };
      const udpBefore = await udpState(p, backend);
      for (const c of cases.filter((c) => !c.argv.includes('--cleanup'))) {
        const args = [...c.argv, `--iptables-backend=${backend}`, '--reserved-ports='];
        await initOk(p, args);
        const first = { v4: await natRules(p, backend, 4), v6: await natRules(p, backend, 6) };
        const rules = c.argv.includes('--ipv6=true') ? [first.v4, first.v6] : [first.v4];
        for (const save of rules) expect(edgemeshLines(save).length, c.name).toBeGreaterThan(4);
        const udpFirst = await udpState(p, backend);
        if (c.argv.includes('--capture-udp=true')) {
          expect(edgemeshLines(udpFirst).length, c.name).toBeGreaterThan(10);
          expect(udpFirst, c.name).toMatch(/fwmark 0x539 lookup 133[\s\S]*fwmark 0x539 lookup 133/); // v4 + v6
        } else {
          expect(udpFirst, c.name).toBe(udpBefore);
        }
        await initOk(p, args);
        expect(await natRules(p, backend, 4), c.name).toBe(first.v4);
        expect(await natRules(p, backend, 6), c.name).toBe(first.v6);
        expect(await udpState(p, backend), c.name).toBe(udpFirst); // one copy of the ip rule
        await initOk(p, ['--cleanup', `--iptables-backend=${backend}`]);
        expect(await natRules(p, backend, 4), c.name).toBe(before.v4);
        expect(await natRules(p, backend, 6), c.name).toBe(before.v6);
        expect(await udpState(p, backend), c.name).toBe(udpBefore);
      }
    }, 360_000); // 16 cases × (install, re-run, cleanup, saves): ~2 min per backend on a loaded 2-core machine
  }
});

describe('backend auto-detection and refusals', () => {
  const lab = new NetnsLab('emi');
  let p: Pod;
  beforeAll(async () => {
    p = await makePod(lab, 'aut');
  });
  afterAll(() => lab.cleanup());

  it('with no rules anywhere, uses the system iptables', async () => {
    const { stdout: version } = await lab.exec(p.pod, ['iptables', '--version']);
    const system = version.includes('nf_tables') ? 'nft' : 'legacy';
    const out = await initOk(p, []);
    expect(out).toContain(`iptables backend ${system} (no rules yet; the system iptables is ${system}`);
    await initOk(p, ['--cleanup']);
  });

  it('prefers the backend that already has rules (legacy, then nft)', async () => {
    // legacy has a rule, nft none → legacy
    await lab.exec(p.pod, ['iptables-legacy', '-A', 'INPUT', '-p', 'icmp', '-j', 'ACCEPT']);
    let out = await initOk(p, []);
    expect(out).toMatch(
      /iptables backend legacy \(rules already present \(nft 0 rules, legacy \d+ rules\)\)/,
    );
    expect(edgemeshLines(await natRules(p, 'legacy', 4)).length).toBeGreaterThan(0);
    expect(edgemeshLines(await natRules(p, 'nft', 4))).toEqual([]);
    await initOk(p, ['--cleanup']);
    await lab.exec(p.pod, ['iptables-legacy', '-D', 'INPUT', '-p', 'icmp', '-j', 'ACCEPT']);
    // nft has a rule → nft, even though legacy tables exist (empty)
    await lab.exec(p.pod, ['iptables-nft', '-A', 'INPUT', '-p', 'icmp', '-j', 'ACCEPT']);
    out = await initOk(p, []);
    expect(out).toMatch(/iptables backend nft \(rules already present \(nft \d+ rules, legacy 0 rules\)\)/);
    expect(edgemeshLines(await natRules(p, 'nft', 4)).length).toBeGreaterThan(0);
    await initOk(p, ['--cleanup']);
  });

  it('--ipv6=auto installs no ip6tables rules in a pod without a global IPv6 address', async () => {
    const v4only = await lab.add('v4p');
    const peer = await lab.add('v4n');
    await lab.link(
      { ns: v4only, ifname: 'eth0', addr: '10.61.0.2/24' },
      { ns: peer, ifname: 'eth0', addr: '10.61.0.1/24' },
    );
    const pod4 = { lab, pod: v4only, net: '' };
    const out = await initOk(pod4, ['--iptables-backend=nft']);
    expect(out).toContain('IPv4 12 rules; reserved');
    expect(edgemeshLines(await natRules(pod4, 'nft', 4))).toHaveLength(14);
    expect(edgemeshLines(await natRules(pod4, 'nft', 6))).toEqual([]);
  });

  it('without NET_ADMIN it exits non-zero naming the capability, installing nothing', async () => {
    const r = await init(p, [], APP);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('EDGEMESH_ERR_IPTABLES');
    expect(r.stderr).toContain('needs the NET_ADMIN capability');
    expect(edgemeshLines(await natRules(p, 'nft', 4))).toEqual([]);
  });

  it('without iptables binaries it exits non-zero naming them', async () => {
    // Straight execFile to see whether the process exited by itself (a leftover timer once
    // kept it alive for 30 s after printing the error; the harness would hide that).
    const r = await new Promise<{ code: number | null; signal: string | null; stderr: string }>((resolve) => {
      execFile(
        'ip',
        ['netns', 'exec', p.pod, 'env', 'PATH=/usr/bin:/bin', EDGEMESH_BIN, 'init', RESOLV_FLAG],
        { timeout: 10_000, encoding: 'utf8' },
        (err, _stdout, stderr) => {
          const e = err as (Error & { code?: number; signal?: string }) | null;
          resolve({ code: e ? (e.code ?? null) : 0, signal: e?.signal ?? null, stderr });
        },
      );
    });
    expect(r.signal).toBe(null);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('iptables-nft-save not found');
    expect(r.stderr).toContain('iptables-legacy-save not found');
    expect(r.stderr).toContain('the image needs the iptables package');
  });

  it('with a read-only /proc/sys it names the sysctl and how to set it', async () => {
    await lab.exec(p.pod, ['sh', '-c', 'echo > /proc/sys/net/ipv4/ip_local_reserved_ports']);
    const r = await p.lab.run(p.pod, [
      'unshare',
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      `mount --bind -o ro /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec ${EDGEMESH_BIN} init ${RESOLV_FLAG}`,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      'cannot reserve ports 15000-15100 in net.ipv4.ip_local_reserved_ports (EROFS)',
    );
    await initOk(p, ['--cleanup']);
  });

  it('works with a read-only /run (readOnlyRootFilesystem) on the legacy backend', async () => {
    await initOk(p, ['--cleanup']);
    const r = await p.lab.run(p.pod, [
      'unshare',
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      `mount -t tmpfs -o ro tmpfs /run && exec ${EDGEMESH_BIN} init --iptables-backend=legacy ${RESOLV_FLAG}`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('iptables-legacy locks XTABLES_LOCKFILE instead');
    expect(edgemeshLines(await natRules(p, 'legacy', 4))).toHaveLength(14);
    await initOk(p, ['--cleanup']);
  });

  it('a bad flag value exits 2 naming the flag, before touching iptables', async () => {
    await initOk(p, ['--cleanup']);
    const r = await init(p, ['--exclude-outbound-ip-ranges=10.0.0.0/8,nonsense']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--exclude-outbound-ip-ranges: "nonsense" is not an IP address or CIDR');
    expect(edgemeshLines(await natRules(p, 'nft', 4))).toEqual([]);
  });
});

describe('UDP capture (--capture-udp, TPROXY)', () => {
  const lab = new NetnsLab('emi');
  let p: Pod;
  let heard = '';
  const listener = new URL('./testing/udp-origdst.py', import.meta.url).pathname;

  beforeAll(async () => {
    p = await makePod(lab, 'udp');
    // The sidecar's transparent UDP socket; root here for IP_TRANSPARENT (CAP_NET_ADMIN).
    const child = lab.spawn(p.pod, ['python3', listener, '15006']);
    child.stdout?.on('data', (b: Buffer) => {
      heard += b.toString();
    });
    child.stderr?.on('data', (b: Buffer) => {
      heard += b.toString();
    });
    await waitFor(() => heard.includes('ready') || child.exitCode !== null, 15_000, 50, 'udp listener');
    if (!heard.includes('ready')) throw new Error(`udp listener failed: ${heard}`);
  });
  afterAll(() => lab.cleanup());

  const send = (dst: string, text: string, as: { uid: number; gid: number }) =>
    lab.run(p.pod, ['sh', '-c', `echo ${text} | socat -u - ${dst}`], as);
  // A whole line: the listener's output may come in pieces, and a test reads the line's end.
  const heardLine = (text: string) => new RegExp(`got ${text} [^\n]*\n`).test(heard);
  const arrived = (text: string) => waitFor(() => heardLine(text), 5_000, 20, text);
  /**
   * UDP may drop a datagram (an IPv6 address still tentative right after setup drops what is
   * sent from it): sent again every 250 ms, at most 20 times, until the listener reports it.
   */
  const sendUntilHeard = async (dst: string, text: string, as: { uid: number; gid: number }) => {
    for (let i = 0; i < 20 && !heardLine(text); i++) {
      await send(dst, text, as);
      await waitFor(() => heardLine(text), 250, 20, text).catch(() => undefined);
    }
    await arrived(text);
  };

  it('app UDP to a ClusterIP:port (IPv4 and IPv6) reaches :15006 with the original destination', async () => {
    await initOk(p, [
      '--capture-udp=true',
      '--ipv6=true',
      '--exclude-outbound-ports=5432',
      '--reserved-ports=',
    ]);
    await sendUntilHeard('UDP4-SENDTO:10.96.0.10:5353', 'app-v4', APP);
    expect(heard).toMatch(/got app-v4 from 10\.60\.0\.2:\d+ origdst 10\.96\.0\.10:5353\n/);
    await sendUntilHeard('UDP6-SENDTO:[fd00:96::10]:5353', 'app-v6', APP);
    expect(heard).toMatch(/got app-v6 from \[fd00:60::2\]:\d+ origdst \[fd00:96::10\]:5353\n/);
  });

  it("the sidecar's own UDP (uid 1337) and excluded ports are not captured", async () => {
    // Sent first, then a captured datagram as a barrier: captured ones would have arrived before it.
    await send('UDP4-SENDTO:10.96.0.10:5353', 'sidecar-own', SIDECAR);
    await send('UDP4-SENDTO:10.96.0.10:5432', 'excluded-port', APP);
    await sendUntilHeard('UDP4-SENDTO:10.96.0.10:5353', 'barrier', APP);
    expect(heard).not.toContain('got sidecar-own');
    expect(heard).not.toContain('got excluded-port');
  });

  it("DNS to the pod's nameservers is still the nat table's: app UDP 53 reaches the sidecar DNS, not :15006", async () => {
    expect(await dig(p, '198.51.100.53', false, APP)).toBe(SIDECAR_DNS);
    expect(await dig(p, '2001:db8::53', false, APP)).toBe(SIDECAR_DNS);
    expect(heard).not.toMatch(/origdst [^ ]*:53\n/);
  });

  it('DNS to any other address is a UDP flow like any other: it reaches :15006 with its destination', async () => {
    await sendUntilHeard(`UDP4-SENDTO:${USER_DNS.v4}:53`, 'user-dns-v4', APP);
    expect(heard).toMatch(
      new RegExp(`got user-dns-v4 from [^ ]+ origdst ${USER_DNS.v4.replaceAll('.', '\\.')}:53\n`),
    );
    await sendUntilHeard(`UDP6-SENDTO:[${USER_DNS.v6}]:53`, 'user-dns-v6', APP);
    expect(heard).toMatch(/got user-dns-v6 from [^ ]+ origdst \[2001:db8::153\]:53\n/);
  });

  it('cleanup leaves no mangle rule, ip rule or table-133 route', async () => {
    await initOk(p, ['--cleanup']);
    const left = await udpState(p, 'nft');
    expect(edgemeshLines(left)).toEqual([]);
    expect(left).not.toContain('lookup 133');
    expect(left).not.toContain('local default dev lo');
    expect(edgemeshLines(await udpState(p, 'legacy'))).toEqual([]);
  });
});
