import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCA, issueIdentity } from '../lib/tunnel/identity.ts';
import { NetnsLab, waitFor } from '../test/harness/netns.ts';
import { loopbackCatalog } from './test-fixtures.ts';
import { startGatewayProcess } from './testing/gateway-process.ts';

// Issue 16 item 8 against the real `edgemesh gateway` process: an enrolled peer (a valid
// node certificate from the mesh CA) opens many streams through the gateway's tunnel port to
// a pod endpoint that never reads, and keeps every stream's window full (8 MiB each: the
// kernel's socket buffers towards the pod take the first ~1 MiB of each).
//
//   pod ns 10.62.0.5 ──cbr0── node ns (gateway edge-n, tunnel :20006 on 192.168.51.1) ──eth0── lan ns
//     :8080 echo, :8081 never reads                       192.168.51.3/.4: peer nodes edge-m (hostile)
//                                                         and edge-o (honest), each known by its certificate
//
// Before: every stream pinned its whole 1 MiB window in the gateway (measured 146 → 355 MiB
// RSS, past the DaemonSet's 256Mi). Now the peer's streams share one receive budget (16 MiB):
// measured 117 → 180 MiB peak, 183 of the 200 streams reset. The gateway runs with its
// shipped V8 flags (memory depends on them).
const NODE_IP = '192.168.51.1';
const POD_IP = '10.62.0.5';
const HOSTILE = '192.168.51.3';
const HONEST = '192.168.51.4';
const MiB = 1024 * 1024;
const STREAMS = 200;
const lab = new NetnsLab('emt');
const dir = mkdtempSync(join(tmpdir(), 'emt-gw-'));
const stateDir = join(dir, 'state');
const ca = createCA();
let nodeNs: string;
let lanNs: string;
let gateway: ChildProcess;
let stderr = '';
const catalog = {
  ...loopbackCatalog([{ name: 'web-0', ip: POD_IP, node: 'edge-n', ports: [8080, 8081] }], 7),
  nodes: {
    'edge-n': { name: 'edge-n', addresses: [NODE_IP] },
    'edge-m': { name: 'edge-m', addresses: [HOSTILE] },
    'edge-o': { name: 'edge-o', addresses: [HONEST] },
  },
};
const PEER = join(new URL('.', import.meta.url).pathname, 'testing', 'hostile-peer.ts');

function identityFile(node: string): string {
  const file = join(dir, `${node}.json`);
  writeFileSync(file, JSON.stringify(issueIdentity(ca, { kind: 'node', name: node })));
  return file;
}

function vm(field: 'VmRSS' | 'VmHWM'): number {
  const status = readFileSync(`/proc/${gateway.pid}/status`, 'utf8');
  const kb = Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1]);
  return kb / 1024;
}

function peer(node: string, options: Record<string, unknown>): ChildProcess {
  const args = {
    identityFile: identityFile(node),
    gateway: { host: NODE_IP, port: 20006, node: 'edge-n' },
    ...options,
  };
  return lab.spawn(lanNs, [
    process.execPath,
    '--disable-warning=ExperimentalWarning',
    PEER,
    JSON.stringify(args),
  ]);
}

/** The first line a peer process prints (its JSON summary). */
function firstLine(child: ChildProcess, what: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr?.on('data', (c: Buffer) => {
      err += c.toString();
    });
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
    });
    child.on('exit', (code) => reject(new Error(`${what} exited ${code} before a summary: ${err}`)));
  });
}

beforeAll(async () => {
  nodeNs = await lab.add('node');
  const podNs = await lab.add('pod');
  lanNs = await lab.add('lan');
  await lab.link(
    { ns: nodeNs, ifname: 'cbr0', addr: '10.62.0.1/24' },
    { ns: podNs, ifname: 'eth0', addr: `${POD_IP}/24` },
  );
  await lab.link(
    { ns: nodeNs, ifname: 'eth0', addr: `${NODE_IP}/24` },
    { ns: lanNs, ifname: 'eth0', addr: [`${HOSTILE}/24`, `${HONEST}/24`] },
  );
  await lab.exec(podNs, ['ip', 'route', 'add', 'default', 'via', '10.62.0.1']);
  lab.spawn(podNs, ['socat', `TCP-LISTEN:8080,bind=${POD_IP},fork,reuseaddr`, 'EXEC:cat']);
  // Accepts and never reads: whatever is sent to it piles up in front of it.
  lab.spawn(podNs, [
    process.execPath,
    '-e',
    `require('node:net').createServer((s) => s.pause()).listen(8081, '${POD_IP}')`,
  ]);
  // The gateway's own identity is already in its state dir; the tunnel-server it names is
  // unreachable (no route), so only the direct port matters here.
  const gw = issueIdentity(ca, { kind: 'node', name: 'edge-n' });
  rmSync(stateDir, { recursive: true, force: true });
  mkdirSync(stateDir, { recursive: true });
  writeFileSync(join(stateDir, 'tunnel.key'), gw.keyPem, { mode: 0o600 });
  writeFileSync(join(stateDir, 'tunnel.crt'), gw.certPem);
  writeFileSync(join(dir, 'ca.crt'), ca.certPem);
  writeFileSync(join(dir, 'token'), 'unused: the certificate is valid');
  gateway = await startGatewayProcess(lab, nodeNs, {
    stateDir,
    catalog,
    listen: NODE_IP,
    onStderr: (chunk) => {
      stderr += chunk;
    },
    shippedNodeFlags: true,
    args: [
      '--tunnel-servers=203.0.113.7:20007',
      `--mesh-ca=${join(dir, 'ca.crt')}`,
      `--enroll-token-file=${join(dir, 'token')}`,
      '--tunnel-port=20006',
    ],
  });
  await waitFor(
    async () => (await lab.run(nodeNs, ['ss', '-Htln', 'sport = :20006'])).stdout.includes('20006'),
    20_000,
    100,
    `the gateway's tunnel port (stderr: ${stderr.slice(-2000)})`,
  );
}, 60_000);

afterAll(async () => {
  await lab.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe("an enrolled peer cannot pin the gateway's memory with unread streams (issue 16 item 8)", () => {
  it('keeps the gateway well inside 256Mi while the peer fills 200 windows, and an honest peer still gets through', async () => {
    const honestPeer = { mode: 'echo', target: { ip: POD_IP, port: 8080 }, bytes: 4 * MiB };
    // Warm up (first streams, TLS, JIT) so the baseline is the gateway at work, not at rest.
    expect(await firstLine(peer('edge-o', honestPeer), 'the honest peer')).toEqual({
      ok: true,
      bytes: 4 * MiB,
    });
    const before = vm('VmRSS');
    const hostile = peer('edge-m', {
      mode: 'attack',
      target: { ip: POD_IP, port: 8081 },
      streams: STREAMS,
      bytes: 8 * MiB,
    });
    const summary = await firstLine(hostile, 'the hostile peer');
    const peak = vm('VmHWM');
    // While the hostile peer's session and its streams stay open, an honest peer is served.
    const honest = await firstLine(peer('edge-o', honestPeer), 'the honest peer');
    const metrics = (
      await lab.exec(nodeNs, ['curl', '-sS', '--max-time', '5', `http://${NODE_IP}:15090/metrics`])
    ).stdout;
    console.log(
      `gateway RSS before ${before.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB, now ${vm('VmRSS').toFixed(0)} MiB; hostile peer: ${JSON.stringify(summary)}`,
    );
    expect(honest).toEqual({ ok: true, bytes: 4 * MiB });
    // Before: 200 windows of 1 MiB each stayed in the gateway (peak ≈ before + 210 MiB). The
    // budget's 16 MiB plus churn of the ~400 MB carried (heap growth up to the 64 MB floor).
    expect(peak - before).toBeLessThan(90);
    expect(peak).toBeLessThan(210);
    expect(summary.reset).toBeGreaterThan(0);
    expect(summary.resetReason).toMatch(/hold more than 16777216 bytes unread here/);
    expect(metrics).toMatch(/^edgemesh_tunnel_refused_total\{reason="budget-reset"[^}]*\} [1-9]/m);
    hostile.stdin?.end();
  }, 120_000);
});
