/**
 * Both L4 engines of the proxy (proxy.ts: `native`, the addon in sidecar/native, and `node`,
 * the fallback) against the same lab and checks: many concurrent connections each carrying
 * its own bytes (no mix-up while fds are reused), a connect that times out moving to the next
 * endpoint, a reset when nothing answers. proxy.netns.test.ts runs everything else on the
 * default engine (native).
 */
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EDGEMESH_BIN } from '../test/harness/netns.ts';
import {
  BACKENDS,
  GATEWAY,
  labCatalog,
  NODE,
  type ProxyLab,
  REMOTE,
  setUpProxyLab,
  startReady,
  startSidecar,
  TCP_PORT,
  VIP,
} from './testing/lab.ts';

const CLIENT = new URL('./testing/client.ts', import.meta.url).pathname;
const GATEWAY_PEER = new URL('./testing/gateway-peer.ts', import.meta.url).pathname;
/** An address that swallows SYNs (DROP): a connect to it can only time out. */
const BLACKHOLE = '10.20.0.15';
const VIP_BLACKHOLE = '10.96.0.24';
/** Gateways that answer every request with fixed text: the reply line and stream bytes in one write, or garbage. */
const COALESCING_GATEWAY_PORT = 15081;
const MALFORMED_GATEWAY_PORT = 15082;
/** A service whose first endpoint lives on a node the lab's gateway refuses (node-z), its second on node-b. */
const VIP_REFUSED_HOP = '10.96.0.25';
let l: ProxyLab;
let dir: string;

async function client(args: string[], timeoutMs = 30_000): Promise<string> {
  return (await l.lab.exec(l.pod, [NODE, CLIENT, ...args], { timeoutMs })).stdout;
}

/** Raw TCP to port 7 of `host` through the proxy (the lab client's `tcp`): one result per connection. */
async function tcp(host: string, count = 1, send = ''): Promise<{ data?: string; error?: string }[]> {
  const out = await client(['tcp', '--host', host, '--port', '7', '--count', String(count), '--send', send]);
  return out
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line));
}

const greeting = (r: { data?: string }) => /^hello from (\S+)\n/.exec(r.data ?? '')?.[1];

async function metric(name: string): Promise<number> {
  const r = await l.lab.run(l.pod, ['curl', '-sS', '-m', '5', 'http://127.0.0.1:15020/metrics']);
  const line = r.stdout.split('\n').find((x) => x.startsWith(name));
  return line ? Number(line.split(' ').pop()) : 0;
}

/**
 * The engines under test. `native+sanitizers` is the same engine built with ASan and UBSan
 * (sidecar/native/build.sh, EDGEMESH_NATIVE_SANITIZE=1), driven by the same tests: a memory
 * or undefined-behaviour error aborts the sidecar and leaves a report in `reports`.
 */
interface Variant {
  name: string;
  engine: 'native' | 'node';
  env: () => Record<string, string>;
}
const SANITIZED_ADDON = new URL('./native/build/l4-sanitized.node', import.meta.url).pathname;
const sanitizerReports = () => join(dir, 'sanitizer');
const VARIANTS: Variant[] = [
  { name: 'native', engine: 'native', env: () => ({}) },
  { name: 'node', engine: 'node', env: () => ({}) },
  {
    name: 'native+sanitizers',
    engine: 'native',
    env: () => ({
      EDGEMESH_L4_ADDON: SANITIZED_ADDON,
      // An ASan addon in an uninstrumented node: the runtime must be loaded first.
      LD_PRELOAD: execFileSync('gcc', ['-print-file-name=libasan.so']).toString().trim(),
      // Node itself leaks at exit by design; reports go to files the last test reads.
      ASAN_OPTIONS: `detect_leaks=0:malloc_context_size=8:halt_on_error=1:log_path=${sanitizerReports()}/asan`,
      UBSAN_OPTIONS: `halt_on_error=1:print_stacktrace=1:log_path=${sanitizerReports()}/ubsan`,
    }),
  },
];
let variant: Variant = VARIANTS[0];

/** A fresh sidecar on the current variant (its log starts empty); `command`: what runs it (e.g. under prlimit). */
async function restartSidecar(extra: string[] = [], command?: string[]): Promise<void> {
  await stopSidecar();
  l.sidecarLog.length = 0;
  l.sidecar = await startSidecar(
    l,
    join(dir, 'catalog.json'),
    ['--proxy-engine', variant.engine, ...extra],
    variant.env(),
    command,
  );
}

async function stopSidecar(): Promise<void> {
  const sidecar = l.sidecar;
  if (sidecar && sidecar.exitCode === null && sidecar.signalCode === null) {
    const exited = new Promise((resolve) => sidecar.once('exit', resolve));
    sidecar.kill('SIGKILL');
    await exited;
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'empe-'));
  await chmod(dir, 0o755); // the sidecar runs as uid 1337 and must read the catalog
  await mkdir(sanitizerReports());
  await chmod(sanitizerReports(), 0o777); // ... and write its sanitizer reports here
  execFileSync('sh', [new URL('./native/build.sh', import.meta.url).pathname], {
    env: { ...process.env, EDGEMESH_NATIVE_SANITIZE: '1' },
  });
  const catalogFile = join(dir, 'catalog.json');
  l = await setUpProxyLab('empe', { catalogFile, sidecar: false });
  await l.lab.exec(l.srv, ['ip', 'addr', 'add', `${BLACKHOLE}/32`, 'dev', 'lo']);
  await l.lab.exec(l.srv, ['iptables', '-A', 'INPUT', '-d', BLACKHOLE, '-j', 'DROP']);
  const catalog = labCatalog();
  const entry = structuredClone(catalog.services['default/flaky-tcp']);
  entry.service.name = 'blackhole';
  entry.service.clusterIPs = [VIP_BLACKHOLE];
  entry.endpoints = [
    { ...entry.endpoints[0], ip: BLACKHOLE },
    { ...entry.endpoints[1], ip: BACKENDS[2] },
  ];
  catalog.services['default/blackhole'] = entry;
  const hop = structuredClone(catalog.services['default/remote']);
  hop.service.name = 'refused-hop';
  hop.service.clusterIPs = [VIP_REFUSED_HOP];
  hop.endpoints = [{ ...hop.endpoints[0], ip: '10.20.0.41', nodeName: 'node-z' }, hop.endpoints[0]];
  catalog.services['default/refused-hop'] = hop;
  for (const [port, reply] of [
    [COALESCING_GATEWAY_PORT, 'OK relay\nhello coalesced\n'],
    [MALFORMED_GATEWAY_PORT, 'NOT A REPLY\n'],
  ] as const) {
    await startReady(l.lab, l.srv, [
      NODE,
      GATEWAY_PEER,
      '--host',
      GATEWAY,
      '--port',
      String(port),
      '--raw-reply',
      JSON.stringify(reply),
    ]);
  }
  await writeFile(catalogFile, JSON.stringify(catalog));
});

afterAll(async () => {
  await l?.lab.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe.each(VARIANTS)('the $name engine', (v) => {
  const engine = v.engine;
  beforeAll(() => {
    variant = v;
    return restartSidecar();
  });

  afterAll(() => stopSidecar());

  it('is the engine the sidecar runs', () => {
    const line = l.sidecarLog
      .join('')
      .split('\n')
      .find((x) => x.includes('"proxy listening"'));
    expect(JSON.parse(line ?? '{}').engine).toBe(engine);
  });

  it('carries 400 connections, 64 at a time, each its own 64 KiB both ways, byte-exact', async () => {
    const out = JSON.parse(
      await client(
        [
          'echo',
          '--host',
          VIP.echo,
          '--port',
          '7',
          '--bytes',
          String(64 << 10),
          '--count',
          '400',
          '--parallel',
          '64',
        ],
        60_000,
      ),
    );
    expect(out).toMatchObject({ ok: true, failed: 0, bytes: 400 * (64 << 10) });
  });

  it('moves to the next endpoint when a connect times out (--connect-timeout-ms 1000)', async () => {
    const before = await metric('edgemesh_proxy_connect_failures_total{via="pod"');
    expect((await tcp(VIP_BLACKHOLE, 4)).map(greeting)).toEqual(Array(4).fill(BACKENDS[2]));
    // The first pick that hit the blackhole timed out (then the balancer ejects it for a while).
    expect((await metric('edgemesh_proxy_connect_failures_total{via="pod"')) - before).toBe(1);
  });

  it('reaches an endpoint on another node through the gateway, half-close carried', async () => {
    const before = l.gatewayRequests.length;
    const [r] = await tcp(VIP.remote, 1, 'via gateway');
    expect(r.data).toBe(`hello from ${REMOTE}\nvia gatewaybye 11\n`);
    expect(l.gatewayRequests.slice(before).map((x) => JSON.parse(x))).toEqual([
      { kind: 'connect', node: 'node-b', ip: REMOTE, port: TCP_PORT },
    ]);
  });

  it('moves to the next endpoint when the gateway refuses one', async () => {
    const before = await metric('edgemesh_proxy_connect_failures_total{via="gateway"');
    expect((await tcp(VIP_REFUSED_HOP, 4)).map(greeting)).toEqual(Array(4).fill(REMOTE));
    // The refused endpoint was tried once, then ejected for a while.
    expect((await metric('edgemesh_proxy_connect_failures_total{via="gateway"')) - before).toBe(1);
  });

  it('takes a gateway reply that came in one read with the first stream bytes; refuses a malformed one', async () => {
    await restartSidecar(['--gateway', `${GATEWAY}:${COALESCING_GATEWAY_PORT}`]);
    const [coalesced] = await tcp(VIP.remote);
    expect(coalesced.data).toBe('hello coalesced\n');
    await restartSidecar(['--gateway', `${GATEWAY}:${MALFORMED_GATEWAY_PORT}`]);
    const [malformed] = await tcp(VIP.remote);
    expect(malformed.error).toMatch(/ECONNRESET/);
    expect(l.sidecarLog.join('')).toContain('bad gateway reply: malformed gateway reply');
    await restartSidecar();
  });

  it('resets the client when no endpoint answers', async () => {
    const [r] = await tcp(VIP.dead);
    expect(r.error).toMatch(/ECONNRESET/);
  });

  it('survives running out of file descriptors and serves again once they are back', async () => {
    // 100 fds: ~35 taken at start, then 64 clients at a time need two each.
    await restartSidecar([], ['prlimit', '--nofile=100:100', EDGEMESH_BIN]);
    const churn = JSON.parse(
      await client(['churn', '--host', VIP.echo, '--port', '7', '--count', '2000'], 90_000),
    );
    expect(churn.done + churn.errors).toBe(2000); // every connection ended: nothing stalled
    if (engine === 'native') {
      // The engine stops accepting at its fd budget: clients wait in the backlog, none is reset.
      expect(l.sidecarLog.join('')).toContain('proxy paused accepting');
      expect(churn.errors).toBe(0);
    }
    expect(l.sidecar?.exitCode).toBeNull();
    const [after] = await tcp(VIP.echo);
    expect(after.data).toMatch(/^hello from /);
  });

  it.runIf(v.name === 'native+sanitizers')(
    'ran all of the above without an ASan or UBSan report',
    async () => {
      const files = await readdir(sanitizerReports());
      const reports = await Promise.all(files.map((f) => readFile(join(sanitizerReports(), f), 'utf8')));
      expect(reports.join('\n---\n')).toBe('');
      expect(l.sidecar?.exitCode).toBeNull();
    },
  );
});
