import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EDGEMESH_BIN, NetnsLab, waitFor } from '../../test/harness/netns.ts';
import { proxyUser } from '../testing/lab.ts';
import { fixtureCatalog } from './testing/fixture.ts';
import { encodeQuery } from './testing/testutil.ts';

// The DNS server as a real process (uid 1337, as in a pod) in a network namespace, queried
// by dig and by a raw client, forwarding to dnsmasq (Debian) in a second namespace that
// plays the pod's original resolver for example.test.
//
//   pod ns: edgemesh DNS on 127.0.0.1/::1 :15053 (+ :15054/:15055 for failover cases)
//     eth0 10.53.0.2, fd00:53::2 ── up ns: eth0 10.53.0.1, fd00:53::1, dnsmasq :53
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const NODE = join(ROOT, 'node_modules/.bin/node');
const MAIN = join(ROOT, 'sidecar/dns/main.ts');
const RAW = join(ROOT, 'sidecar/dns/testing/rawclient.ts');
// uid/gid 1337 as in a pod, unless this checkout is unreadable for that user (see proxyUser).
let sidecarUser = { uid: 1337, gid: 1337 };
const Z = 'cluster.local';

let lab: NetnsLab;
let pod = '';
let up = '';
let app = '';
let dir = '';
let etcDir = '';
let appEtcDir = '';
let server: ChildProcess;

function startServer(port: number, extra: string[]): ChildProcess {
  const child = lab.spawn(
    pod,
    [NODE, MAIN, '--catalog-file', join(dir, 'catalog.json'), '--port', String(port), ...extra],
    { ...sidecarUser, env: { ...process.env, EDGEMESH_LOG_LEVEL: 'warn' } },
  );
  child.stderr?.on('data', (d: Buffer) => process.stderr.write(`[dns:${port}] ${d}`));
  return child;
}

interface DigResult {
  status: string;
  flags: string[];
  answer: string[];
  authority: string[];
  additional: string[];
  edns?: string;
  raw: string;
}

/** dig in the pod namespace; records normalised to "NAME TYPE DATA" (TTL dropped). */
async function dig(args: string[], server = '127.0.0.1', port = 15053): Promise<DigResult> {
  const r = await lab.run(pod, [
    'dig',
    `@${server}`,
    '-p',
    String(port),
    '+tries=1',
    '+time=3',
    '+noall',
    '+comments',
    '+answer',
    '+authority',
    '+additional',
    ...args,
  ]);
  const raw = r.stdout;
  const section = (title: string) => {
    const m = new RegExp(`;; ${title} SECTION:\\n([\\s\\S]*?)(?:\\n\\n|$)`).exec(raw);
    if (!m) return [];
    return m[1]
      .split('\n')
      .filter((l) => l.trim() !== '' && !l.startsWith(';'))
      .map((l) => {
        const [name, , , type, ...data] = l.split(/\s+/);
        return `${name} ${type} ${data.join(' ')}`;
      });
  };
  return {
    status: /status: (\w+)/.exec(raw)?.[1] ?? `no answer (exit ${r.code}): ${raw}${r.stderr}`,
    flags: (/;; flags: ([a-z ]*);/.exec(raw)?.[1] ?? '').trim().split(/\s+/),
    answer: section('ANSWER').sort(),
    authority: section('AUTHORITY'),
    additional: section('ADDITIONAL'),
    edns: /; EDNS: ([^\n]*)/.exec(raw)?.[1],
    raw,
  };
}

async function raw<T>(command: object): Promise<T> {
  const r = await lab.exec(pod, [NODE, RAW, JSON.stringify(command)], { timeoutMs: 120_000 });
  return JSON.parse(r.stdout) as T;
}

async function metric(port: number, line: RegExp): Promise<number> {
  const r = await lab.exec(pod, ['curl', '-s', `http://127.0.0.1:${port}/metrics`]);
  const m = r.stdout.split('\n').find((l) => line.test(l));
  return m ? Number(m.split(' ').pop()) : 0;
}

/** How many times dnsmasq was asked `name` (its query log). */
function upstreamAsked(name: string): number {
  const log = readFileSync(join(dir, 'dnsmasq.log'), 'utf8');
  return log.split('\n').filter((l) => l.includes(`] ${name} from`)).length;
}

const SOA_ZONE = `${Z}. SOA ns.dns.${Z}. hostmaster.${Z}. 42 7200 1800 86400 5`;

beforeAll(async () => {
  lab = new NetnsLab('emd');
  pod = await lab.add('pod');
  sidecarUser = await proxyUser(lab, pod);
  up = await lab.add('up');
  await lab.link(
    { ns: pod, ifname: 'eth0', addr: ['10.53.0.2/24', 'fd00:53::2/64'] },
    { ns: up, ifname: 'eth0', addr: ['10.53.0.1/24', 'fd00:53::1/64'] },
  );
  // A second pod for the capture test: `edgemesh init` rules there would also catch the other tests' traffic.
  app = await lab.add('app');
  await lab.link(
    { ns: app, ifname: 'eth0', addr: ['10.55.0.2/24', 'fd00:55::2/64'] },
    { ns: up, ifname: 'eth1', addr: ['10.55.0.1/24', 'fd00:55::1/64'] },
  );
  dir = mkdtempSync(join(tmpdir(), 'emd-'));
  chmodSync(dir, 0o755);
  // The pod's resolv.conf as the kubelet writes it (ip netns exec mounts /etc/netns/<ns>/).
  etcDir = `/etc/netns/${pod}`;
  mkdirSync(etcDir, { recursive: true });
  writeFileSync(
    join(etcDir, 'resolv.conf'),
    `nameserver 10.53.0.1\nsearch default.svc.${Z} svc.${Z} ${Z} corp.example\noptions ndots:5\n`,
  );
  // The app pod's resolv.conf points at its original resolver; the init rules capture it.
  appEtcDir = `/etc/netns/${app}`;
  mkdirSync(appEtcDir, { recursive: true });
  writeFileSync(
    join(appEtcDir, 'resolv.conf'),
    `nameserver 10.55.0.1\nnameserver fd00:55::1\nsearch default.svc.${Z} svc.${Z} ${Z}\noptions ndots:5\n`,
  );
  writeFileSync(
    join(dir, 'hosts'),
    Array.from({ length: 100 }, (_, i) => `198.51.100.${i + 1} big.example.test\n`).join(''),
  );
  lab.spawn(up, [
    'dnsmasq',
    '--keep-in-foreground',
    '--no-resolv',
    '--no-hosts',
    '--bind-interfaces',
    '--listen-address=10.53.0.1,fd00:53::1,10.55.0.1,fd00:55::1',
    '--user=root',
    `--pid-file=${join(dir, 'dnsmasq.pid')}`,
    `--addn-hosts=${join(dir, 'hosts')}`,
    '--host-record=www.example.test,198.51.100.10',
    '--host-record=cached.example.test,198.51.100.11',
    '--auth-server=ns.example.test,eth0,eth1',
    '--auth-zone=example.test',
    '--auth-ttl=30',
    '--auth-soa=1,hostmaster.example.test,1200,120,1209600',
    '--log-queries',
    `--log-facility=${join(dir, 'dnsmasq.log')}`,
  ]);
  // No catalog yet: the server must answer SERVFAIL for cluster names until one arrives.
  server = startServer(15053, [
    '--upstream',
    '10.53.0.1',
    '--search',
    `default.svc.${Z},svc.${Z},${Z},corp.example`,
    '--metrics-port',
    '15020',
  ]);
  // Failover: a dead upstream first, then dnsmasq over IPv6. And one with only a dead upstream.
  startServer(15054, [
    '--upstream',
    '10.53.0.9,[fd00:53::1]:53',
    '--upstream-timeout-ms',
    '300',
    '--tcp-idle-ms',
    '500',
  ]);
  startServer(15055, [
    '--upstream',
    '10.53.0.9',
    '--upstream-timeout-ms',
    '1000',
    '--max-in-flight',
    '1',
    '--metrics-port',
    '15022',
  ]);
  await waitFor(
    async () => (await dig([`web.default.svc.${Z}`])).status === 'SERVFAIL',
    20_000,
    200,
    'DNS server',
  );
  await waitFor(
    async () => (await lab.run(up, ['dig', '@10.53.0.1', 'www.example.test'])).stdout.includes('NOERROR'),
    10_000,
    200,
    'dnsmasq',
  );
});

afterAll(async () => {
  await lab?.cleanup();
  if (etcDir) rmSync(etcDir, { recursive: true, force: true });
  if (appEtcDir) rmSync(appEtcDir, { recursive: true, force: true });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('DNS server in a pod namespace', () => {
  it('answers SERVFAIL for cluster names until the catalog syncs, then answers from it', async () => {
    expect((await dig([`web.default.svc.${Z}`])).status).toBe('SERVFAIL');
    writeFileSync(join(dir, 'catalog.json'), JSON.stringify(fixtureCatalog()));
    chmodSync(join(dir, 'catalog.json'), 0o644);
    await waitFor(
      async () => (await dig([`web.default.svc.${Z}`])).status === 'NOERROR',
      10_000,
      100,
      'catalog',
    );
    for (const port of [15054, 15055]) {
      await waitFor(
        async () => (await dig([`web.default.svc.${Z}`], '127.0.0.1', port)).status === 'NOERROR',
      );
    }
  });

  interface Case {
    what: string;
    args: string[];
    status: string;
    answer?: string[];
    authority?: string[];
    additionalIncludes?: string[];
    flags?: string[];
    noFlags?: string[];
  }
  const cases: Case[] = [
    {
      what: 'ClusterIP A, letter case of the question preserved',
      args: ['WeB.Default.SVC.cluster.local', 'A'],
      status: 'NOERROR',
      answer: ['WeB.Default.SVC.cluster.local. A 10.96.0.10'],
      flags: ['qr', 'aa', 'rd', 'ra'],
    },
    {
      what: 'ClusterIP A with +norecurse',
      args: ['+norecurse', `kubernetes.default.svc.${Z}`],
      status: 'NOERROR',
      answer: [`kubernetes.default.svc.${Z}. A 10.96.0.1`],
      noFlags: ['rd'],
    },
    {
      what: 'dual-stack ClusterIP AAAA',
      args: [`web.default.svc.${Z}`, 'AAAA'],
      status: 'NOERROR',
      answer: [`web.default.svc.${Z}. AAAA fd00:10:96::a`],
    },
    {
      what: 'headless: one A per ready endpoint',
      args: [`db.default.svc.${Z}`],
      status: 'NOERROR',
      answer: ['10.244.1.5', '10.244.2.6', '10.244.2.7'].map((ip) => `db.default.svc.${Z}. A ${ip}`),
    },
    {
      what: 'headless endpoint hostname',
      args: [`db-0.db.default.svc.${Z}`],
      status: 'NOERROR',
      answer: [`db-0.db.default.svc.${Z}. A 10.244.1.5`],
    },
    {
      what: 'headless endpoint without hostname: dashed IP',
      args: [`10-244-2-7.db.default.svc.${Z}`],
      status: 'NOERROR',
      answer: [`10-244-2-7.db.default.svc.${Z}. A 10.244.2.7`],
    },
    {
      what: 'not-ready endpoint hostname is NXDOMAIN',
      args: [`db-3.db.default.svc.${Z}`],
      status: 'NXDOMAIN',
      authority: [SOA_ZONE],
    },
    {
      what: 'headless service with no ready endpoint is NXDOMAIN',
      args: [`idle.default.svc.${Z}`],
      status: 'NXDOMAIN',
      authority: [SOA_ZONE],
    },
    {
      what: 'publishNotReadyAddresses publishes not-ready endpoints',
      args: [`warmup.default.svc.${Z}`],
      status: 'NOERROR',
      answer: [`warmup.default.svc.${Z}. A 10.244.5.2`],
    },
    {
      what: 'SRV for a ClusterIP named port',
      args: [`_http._tcp.web.default.svc.${Z}`, 'SRV'],
      status: 'NOERROR',
      answer: [`_http._tcp.web.default.svc.${Z}. SRV 0 100 80 web.default.svc.${Z}.`],
    },
    {
      what: 'SRV for a headless named port, with glue',
      args: [`_pg._tcp.db.default.svc.${Z}`, 'SRV'],
      status: 'NOERROR',
      answer: ['db-0', 'db-1', '10-244-2-7']
        .map((h) => `_pg._tcp.db.default.svc.${Z}. SRV 0 100 5432 ${h}.db.default.svc.${Z}.`)
        .sort(),
      additionalIncludes: [`db-0.db.default.svc.${Z}. A 10.244.1.5`],
    },
    {
      what: 'PTR for a ClusterIP (in-addr.arpa)',
      args: ['-x', '10.96.0.10'],
      status: 'NOERROR',
      answer: [`10.0.96.10.in-addr.arpa. PTR web.default.svc.${Z}.`],
    },
    {
      what: 'PTR for an IPv6 ClusterIP (ip6.arpa nibbles)',
      args: ['-x', 'fd00:10:96::a'],
      status: 'NOERROR',
      answer: [
        `a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa. PTR web.default.svc.${Z}.`,
      ],
    },
    {
      what: 'PTR for a headless endpoint',
      args: ['-x', '10.244.1.5'],
      status: 'NOERROR',
      answer: [`5.1.244.10.in-addr.arpa. PTR db-0.db.default.svc.${Z}.`],
    },
    {
      what: 'ExternalName CNAME',
      args: [`ext.default.svc.${Z}`, 'CNAME'],
      status: 'NOERROR',
      answer: [`ext.default.svc.${Z}. CNAME www.example.test.`],
    },
    {
      what: 'ExternalName A: CNAME plus the target resolved upstream',
      args: [`ext.default.svc.${Z}`, 'A'],
      status: 'NOERROR',
      answer: [`ext.default.svc.${Z}. CNAME www.example.test.`, 'www.example.test. A 198.51.100.10'],
    },
    {
      what: 'ExternalName to a cluster name: CNAME plus the local answer',
      args: [`alias.default.svc.${Z}`, 'A'],
      status: 'NOERROR',
      answer: [`alias.default.svc.${Z}. CNAME web.default.svc.${Z}.`, `web.default.svc.${Z}. A 10.96.0.10`],
    },
    {
      what: 'dns-version TXT',
      args: [`dns-version.${Z}`, 'TXT'],
      status: 'NOERROR',
      answer: [`dns-version.${Z}. TXT "1.1.0"`],
    },
    {
      what: 'wrong type: NODATA with SOA',
      args: [`web.default.svc.${Z}`, 'TXT'],
      status: 'NOERROR',
      answer: [],
      authority: [SOA_ZONE],
    },
    {
      what: 'empty non-terminal <ns>.svc: NODATA with SOA',
      args: [`default.svc.${Z}`, 'A'],
      status: 'NOERROR',
      answer: [],
      authority: [SOA_ZONE],
    },
    {
      what: 'missing name: NXDOMAIN with SOA',
      args: [`nope.default.svc.${Z}`],
      status: 'NXDOMAIN',
      authority: [SOA_ZONE],
    },
    {
      what: 'search-path expansion inside the zone: NXDOMAIN',
      args: [`web.default.svc.${Z}.default.svc.${Z}`],
      status: 'NXDOMAIN',
      authority: [SOA_ZONE],
    },
    {
      what: 'search-path expansion under a non-cluster search domain: NXDOMAIN locally',
      args: [`web.default.svc.${Z}.corp.example`],
      status: 'NXDOMAIN',
      answer: [],
    },
    {
      what: 'pod A record (verified against the catalog)',
      args: [`10-244-1-5.default.pod.${Z}`],
      status: 'NOERROR',
      answer: [`10-244-1-5.default.pod.${Z}. A 10.244.1.5`],
    },
    {
      what: 'external name forwarded upstream',
      args: ['www.example.test'],
      status: 'NOERROR',
      answer: ['www.example.test. A 198.51.100.10'],
      flags: ['ra'],
      noFlags: ['tc'],
    },
    {
      what: 'external NXDOMAIN forwarded with its SOA',
      args: ['nope.example.test'],
      status: 'NXDOMAIN',
      authority: ['example.test. SOA ns.example.test. hostmaster.example.test. 1 1200 120 1209600 30'],
    },
  ];

  for (const [transport, server, extra] of [
    ['udp', '127.0.0.1', []],
    ['tcp', '127.0.0.1', ['+tcp']],
    ['udp6', '::1', []],
    ['tcp6', '::1', ['+tcp']],
  ] as const) {
    it(`answers every rule over ${transport} (dig @${server})`, async () => {
      for (const c of cases) {
        const r = await dig([...extra, ...c.args], server);
        const where = `${c.what} (${transport}): ${r.raw}`;
        expect(r.status, where).toBe(c.status);
        if (c.answer) expect(r.answer, where).toEqual(c.answer);
        if (c.authority) expect(r.authority, where).toEqual(c.authority);
        for (const a of c.additionalIncludes ?? []) expect(r.additional, where).toContain(a);
        for (const f of c.flags ?? []) expect(r.flags, where).toContain(f);
        for (const f of c.noFlags ?? []) expect(r.flags, where).not.toContain(f);
      }
    });
  }

  it('answers ndots:5 search-path expansions without asking the upstream', async () => {
    const before = upstreamAsked(`web.default.svc.${Z}.corp.example`);
    // dig +search walks the pod's resolv.conf search list like glibc does with ndots:5.
    const r = await lab.exec(pod, [
      'dig',
      '@127.0.0.1',
      '-p',
      '15053',
      '+search',
      '+showsearch',
      '+ndots=5',
      `web.default.svc.${Z}`,
    ]);
    const statuses = [...r.stdout.matchAll(/status: (\w+)/g)].map((m) => m[1]);
    expect(statuses).toEqual(['NXDOMAIN', 'NXDOMAIN', 'NXDOMAIN', 'NXDOMAIN', 'NOERROR']);
    expect(r.stdout).toContain(`web.default.svc.${Z}.corp.example.`);
    expect(upstreamAsked(`web.default.svc.${Z}.corp.example`)).toBe(before);
    // A short name resolves through the first search domain.
    const short = await lab.exec(pod, ['dig', '@127.0.0.1', '-p', '15053', '+search', '+short', 'web']);
    expect(short.stdout.trim()).toBe('10.96.0.10');
  });

  it('truncates UDP answers over 512 bytes without EDNS0, and dig retries over TCP', async () => {
    const tc = await dig(['+noedns', '+ignore', `big.default.svc.${Z}`]);
    expect(tc.flags).toContain('tc');
    expect(tc.answer).toEqual([]);
    const retried = await lab.exec(pod, [
      'dig',
      '@127.0.0.1',
      '-p',
      '15053',
      '+noedns',
      `big.default.svc.${Z}`,
    ]);
    expect(retried.stdout).toContain('Truncated, retrying in TCP mode');
    expect(retried.stdout).toContain('ANSWER: 40,');
    const edns = await dig(['+bufsize=1232', `big.default.svc.${Z}`]);
    expect(edns.flags).not.toContain('tc');
    expect(edns.answer).toHaveLength(40);
  });

  it('honours and echoes EDNS0; BADVERS for an unknown EDNS version', async () => {
    const r = await dig(['+bufsize=4096', `web.default.svc.${Z}`]);
    expect(r.edns).toMatch(/version: 0, flags:; udp: 1232/);
    const noEdns = await dig(['+noedns', `web.default.svc.${Z}`]);
    expect(noEdns.edns).toBeUndefined();
    const badvers = await dig(['+edns=1', '+noednsnegotiation', `web.default.svc.${Z}`]);
    expect(badvers.status).toBe('BADVERS');
  });

  it('retries a truncated upstream answer over TCP and truncates it again for small UDP clients', async () => {
    const tcpBefore = await metric(15020, /^edgemesh_dns_upstream_events_total\{event="tcp"/);
    const full = await dig(['+tcp', 'big.example.test']);
    expect(full.answer).toHaveLength(100);
    expect(await metric(15020, /^edgemesh_dns_upstream_events_total\{event="tcp"/)).toBe(tcpBefore + 1);
    const small = await dig(['+ignore', '+bufsize=1232', 'big.example.test']);
    expect(small.flags).toContain('tc');
    // Served from the cache: the upstream was asked once over UDP and once over TCP.
    expect(upstreamAsked('big.example.test')).toBe(2);
  });

  it('caches upstream answers and negative answers (RFC 2308)', async () => {
    for (let i = 0; i < 3; i++) {
      expect((await dig(['cached.example.test'])).answer).toEqual(['cached.example.test. A 198.51.100.11']);
      expect((await dig(['missing.example.test'])).status).toBe('NXDOMAIN');
    }
    expect(upstreamAsked('cached.example.test')).toBe(1);
    expect(upstreamAsked('missing.example.test')).toBe(1);
    expect(
      await metric(15020, /^edgemesh_dns_queries_total\{qtype="A",rcode="NXDOMAIN",source="cache"/),
    ).toBeGreaterThanOrEqual(2);
  });

  it('fails over to the next upstream (IPv6) on a timeout, and answers SERVFAIL when none answers', async () => {
    const r = await dig(['www.example.test'], '127.0.0.1', 15054);
    expect(r.answer).toEqual(['www.example.test. A 198.51.100.10']);
    const dead = await dig(['+time=6', 'www.example.test'], '127.0.0.1', 15055);
    expect(dead.status).toBe('SERVFAIL');
    // Cluster names never depend on the upstream.
    expect((await dig([`web.default.svc.${Z}`], '127.0.0.1', 15055)).status).toBe('NOERROR');
  });

  it('bounds upstream queries in flight: past the bound a question fails at once', async () => {
    const busyBefore = await metric(15022, /^edgemesh_dns_upstream_events_total\{event="busy"/);
    const [first, second] = await Promise.all([
      // Two attempts of 1 s each keep the one slot busy long enough for the second dig to arrive.
      dig(['+time=6', 'one.example.test'], '127.0.0.1', 15055),
      dig(['+time=6', 'two.example.test'], '127.0.0.1', 15055),
    ]);
    expect([first.status, second.status]).toEqual(['SERVFAIL', 'SERVFAIL']);
    expect(await metric(15022, /^edgemesh_dns_upstream_events_total\{event="busy"/)).toBe(busyBefore + 1);
    expect(
      await metric(15022, /^edgemesh_dns_upstream_events_total\{event="timeout"/),
    ).toBeGreaterThanOrEqual(2);
  });

  it('sends upstream queries from rotating random source ports and closes retired sockets', async () => {
    let captured = '';
    const tcpdump = lab.spawn(up, [
      'tcpdump',
      '-n',
      '-l',
      '-i',
      'eth0',
      'udp and dst port 53 and src host 10.53.0.2',
    ]);
    tcpdump.stdout?.on('data', (d: Buffer) => {
      captured += d.toString();
    });
    await waitFor(
      async () => (await lab.run(up, ['pgrep', '-x', 'tcpdump'])).code === 0,
      5000,
      50,
      'tcpdump',
    );
    await new Promise((r) => setTimeout(r, 500)); // tcpdump attaches after it starts
    const queries = Array.from({ length: 600 }, (_, i) =>
      encodeQuery({ name: `rot${i}.example.test`, type: 'A', id: i }).toString('hex'),
    );
    const answers = await raw<(string | null)[]>({
      mode: 'udp-exchange',
      host: '127.0.0.1',
      port: 15053,
      timeoutMs: 2000,
      packets: queries,
    });
    expect(answers.filter((a) => a !== null)).toHaveLength(600);
    await waitFor(() => (captured.match(/ > 10\.53\.0\.1\.53:/g) ?? []).length >= 600, 5000, 50, 'capture');
    const ports = new Set(
      [...captured.matchAll(/IP 10\.53\.0\.2\.(\d+) > 10\.53\.0\.1\.53:/g)].map((m) => m[1]),
    );
    // 600 queries over 4 sockets, each replaced after 64 queries: well over 5 different ports.
    expect(ports.size).toBeGreaterThanOrEqual(5);
    // Retired sockets are closed: listeners (UDP+TCP on two addresses), metrics, pool, a few spares.
    const fds = await lab.exec(pod, ['sh', '-c', `ls -l /proc/${server.pid}/fd | grep -c socket`]);
    expect(Number(fds.stdout.trim())).toBeLessThanOrEqual(16);
  });

  it('ignores forged upstream replies (other port, wrong ID, other question) and takes the real one', async () => {
    const attacker = lab.spawn(up, [
      NODE,
      RAW,
      JSON.stringify({
        mode: 'spoofing-upstream',
        host: '10.53.0.1',
        port: 5300,
        spoofPort: 5301,
        seconds: 90,
      }),
    ]);
    let report = '';
    attacker.stdout?.on('data', (d: Buffer) => {
      report += d.toString();
    });
    const victim = startServer(15056, ['--upstream', '10.53.0.1:5300']);
    await waitFor(
      async () => (await dig([`web.default.svc.${Z}`], '127.0.0.1', 15056)).status === 'NOERROR',
      20_000,
      200,
      'server :15056',
    );
    for (const name of ['a.spoof.test', 'b.spoof.test', 'c.spoof.test']) {
      expect((await dig([name], '127.0.0.1', 15056)).answer).toEqual([`${name}. A 198.51.100.99`]);
    }
    // The forger was still running, so every forged reply was sent ahead of the real one.
    expect(attacker.exitCode, report).toBeNull();
    victim.kill('SIGKILL');
    attacker.kill('SIGKILL');
  });

  it('follows catalog changes', async () => {
    const catalog = fixtureCatalog();
    delete catalog.services['default/web'];
    catalog.revision = 43;
    writeFileSync(join(dir, 'catalog.json'), JSON.stringify(catalog));
    await waitFor(
      async () => (await dig([`web.default.svc.${Z}`])).status === 'NXDOMAIN',
      10_000,
      100,
      'web removed',
    );
    writeFileSync(join(dir, 'catalog.json'), JSON.stringify(fixtureCatalog()));
    await waitFor(
      async () => (await dig([`web.default.svc.${Z}`])).status === 'NOERROR',
      10_000,
      100,
      'web back',
    );
  });

  const hex = (b: Buffer) => b.toString('hex');
  const header = (id: number, flags: number, qd: number, an: number, ns: number, ar: number) => {
    const b = Buffer.alloc(12);
    [id, flags, qd, an, ns, ar].forEach((v, i) => {
      b.writeUInt16BE(v, i * 2);
    });
    return b;
  };
  const valid = encodeQuery({ name: `web.default.svc.${Z}`, type: 'A', id: 99 });
  const question = valid.subarray(12);

  it('rejects malformed packets with FORMERR/NOTIMP or drops them, and keeps answering', async () => {
    const packets: [string, Buffer, number | null][] = [
      ['12 bytes claiming 65535 questions', header(1, 0x0100, 65535, 0, 0, 0), 1],
      ['11 bytes', Buffer.alloc(11, 0xff), null],
      ['a response (QR set)', Buffer.concat([header(2, 0x8000, 1, 0, 0, 0), question]), null],
      ['opcode STATUS', Buffer.concat([header(3, 2 << 11, 1, 0, 0, 0), question]), 4],
      ['two questions', Buffer.concat([header(4, 0, 2, 0, 0, 0), question, question]), 1],
      ['65535 answers claimed', Buffer.concat([header(5, 0, 1, 65535, 0, 0), question]), 1],
      [
        'label of 64 bytes',
        Buffer.concat([
          header(6, 0, 1, 0, 0, 0),
          Buffer.from([64]),
          Buffer.alloc(64, 0x61),
          Buffer.from([0, 0, 1, 0, 1]),
        ]),
        1,
      ],
      [
        'compression pointer in the question',
        Buffer.concat([header(7, 0, 1, 0, 0, 0), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]),
        1,
      ],
      [
        'question without type/class',
        Buffer.concat([header(8, 0, 1, 0, 0, 0), question.subarray(0, question.length - 4)]),
        1,
      ],
      [
        'additional record that is not OPT',
        Buffer.concat([header(9, 0, 1, 0, 0, 1), question, question.subarray(0, 10)]),
        1,
      ],
      ['2000-byte packet', Buffer.concat([header(10, 0, 1, 0, 0, 0), Buffer.alloc(1988)]), 1],
      ['trailing garbage', Buffer.concat([valid, Buffer.from('junk')]), 1],
      ['valid query afterwards', valid, 0],
    ];
    const answers = await raw<(string | null)[]>({
      mode: 'udp-exchange',
      host: '127.0.0.1',
      port: 15053,
      timeoutMs: 500,
      packets: packets.map(([, p]) => hex(p)),
    });
    packets.forEach(([what, p, rcode], i) => {
      const a = answers[i];
      if (rcode === null) {
        expect(a, what).toBeNull();
        return;
      }
      expect(a, what).not.toBeNull();
      const b = Buffer.from(a!, 'hex');
      expect(b.readUInt16BE(0), what).toBe(p.readUInt16BE(0));
      expect(b[2] & 0x80, what).toBe(0x80);
      expect(b[3] & 0xf, what).toBe(rcode);
    });
  });

  it('serves several pipelined TCP queries per connection, split writes, and drops bad framing', async () => {
    const framed = (q: Buffer) => Buffer.concat([Buffer.from([q.length >> 8, q.length & 0xff]), q]);
    const qs = [1, 2, 3].map((id) =>
      encodeQuery({ name: `db-${id - 1}.db.default.svc.${Z}`, type: 'A', id }),
    );
    const pipelined = await raw<{ answers: string[] }>({
      mode: 'tcp-exchange',
      host: '::1',
      port: 15053,
      timeoutMs: 3000,
      chunks: [hex(Buffer.concat(qs.map(framed)))],
      expect: 3,
    });
    expect(pipelined.answers.map((a) => Buffer.from(a, 'hex').readUInt16BE(0)).sort()).toEqual([1, 2, 3]);
    const whole = framed(valid);
    const split = await raw<{ answers: string[] }>({
      mode: 'tcp-exchange',
      host: '127.0.0.1',
      port: 15053,
      timeoutMs: 3000,
      chunks: [hex(whole.subarray(0, 1)), hex(whole.subarray(1, 9)), hex(whole.subarray(9))],
      expect: 1,
    });
    expect(split.answers).toHaveLength(1);
    const bad = await raw<{ closedByServer: boolean }>({
      mode: 'tcp-exchange',
      host: '127.0.0.1',
      port: 15053,
      timeoutMs: 3000,
      chunks: ['0005aabbccddee'],
      expect: 0,
    });
    expect(bad.closedByServer).toBe(true);
  });

  it('closes idle TCP connections', async () => {
    const idle = await raw<{ closedByServer: boolean }>({
      mode: 'tcp-exchange',
      host: '127.0.0.1',
      port: 15054,
      timeoutMs: 10_000,
      chunks: [],
      expect: 0,
    });
    expect(idle.closedByServer).toBe(true);
    // A query trickled a byte every 200 ms gets no more time than an idle connection.
    const q = encodeQuery({ name: `web.default.svc.${Z}`, type: 'A', id: 5 });
    const framed = Buffer.concat([Buffer.from([0, q.length]), q]);
    const slow = await raw<{ closedByServer: boolean; answers: string[] }>({
      mode: 'tcp-exchange',
      host: '127.0.0.1',
      port: 15054,
      timeoutMs: 10_000,
      chunks: [...framed].map((b) => Buffer.from([b]).toString('hex')),
      delayMs: 200,
      expect: 1,
    });
    expect(slow).toMatchObject({ closedByServer: true, answers: [] });
  });

  it('survives a fuzz stream over UDP and TCP (bounded count), answering a probe after every batch', async () => {
    const udp = await raw<{ sent: number; probes: number; probeFailures: number }>({
      mode: 'udp-fuzz',
      host: '127.0.0.1',
      port: 15053,
      seed: 20261121,
      count: 20_000,
      batch: 200,
    });
    expect(udp).toMatchObject({ sent: 20_000, probes: 100, probeFailures: 0 });
    const tcp = await raw<{ probeAnswered: boolean }>({
      mode: 'tcp-fuzz',
      host: '::1',
      port: 15053,
      seed: 7,
      connections: 40,
    });
    expect(tcp.probeAnswered).toBe(true);
    expect(server.exitCode).toBeNull();
    expect(await metric(15020, /^edgemesh_dns_rejected_total\{reason="internal"/)).toBe(0);
  });

  it('answers an app whose DNS is captured by the `edgemesh init` rules (UDP/TCP, IPv4/IPv6)', async () => {
    // The pod's resolv.conf names 10.55.0.1 and fd00:55::1 (the init captures DNS only to the
    // pod's nameservers); the init rules send port 53 to :15053 on the
    // loopback, where the server listens on 127.0.0.1/::1; its own queries (uid 1337) pass.
    const child = lab.spawn(
      app,
      [NODE, MAIN, '--catalog-file', join(dir, 'catalog.json'), '--upstream', '10.55.0.1'],
      { ...sidecarUser, env: { ...process.env, EDGEMESH_LOG_LEVEL: 'warn' } },
    );
    child.stderr?.on('data', (d: Buffer) => process.stderr.write(`[dns:app] ${d}`));
    const appDig = (args: string[]) =>
      lab.run(app, ['dig', '+short', '+time=3', '+tries=1', ...args], { uid: 1000, gid: 1000 });
    await waitFor(
      async () =>
        (await appDig(['@127.0.0.1', '-p', '15053', `web.default.svc.${Z}`])).stdout.trim() === '10.96.0.10',
      15_000,
      100,
      'app DNS server',
    );
    // Before the rules the app reaches dnsmasq directly, which knows no cluster names.
    expect((await appDig(['@10.55.0.1', `web.default.svc.${Z}`])).stdout.trim()).toBe('');
    const init = await lab.run(app, [EDGEMESH_BIN, 'init'], { timeoutMs: 60_000 });
    expect(init.code, init.stderr).toBe(0);
    for (const server of ['10.55.0.1', 'fd00:55::1']) {
      for (const tcp of [[], ['+tcp']]) {
        const where = `@${server} ${tcp.join('')}`;
        expect((await appDig([`@${server}`, ...tcp, `web.default.svc.${Z}`])).stdout.trim(), where).toBe(
          '10.96.0.10',
        );
        expect(
          (await appDig([`@${server}`, ...tcp, `web.default.svc.${Z}`, 'AAAA'])).stdout.trim(),
          where,
        ).toBe('fd00:10:96::a');
        // Forwarded by the sidecar (uid 1337, not captured) to the real resolver.
        expect((await appDig([`@${server}`, ...tcp, 'www.example.test'])).stdout.trim(), where).toBe(
          '198.51.100.10',
        );
      }
    }
    // glibc itself (getaddrinfo via getent), with the pod's search path and ndots:5: a short
    // name, an ExternalName (glibc does not chase a bare CNAME: the appended A is what works)
    // and an outside name all resolve through the captured port 53.
    const getent = async (name: string) =>
      (await lab.run(app, ['getent', 'ahostsv4', name], { uid: 1000, gid: 1000 })).stdout.split(/\s+/)[0];
    expect(await getent('web')).toBe('10.96.0.10');
    expect(await getent('db-0.db')).toBe('10.244.1.5');
    expect(await getent(`ext.default.svc.${Z}`)).toBe('198.51.100.10');
    expect(await getent('www.example.test')).toBe('198.51.100.10');
  });
});
