import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGatewayStatus } from '../lib/gateway-status.ts';
import { createCA, issueIdentity } from '../lib/tunnel/identity.ts';
import { NetnsLab, waitFor } from '../test/harness/netns.ts';
import { loadCatalog } from './persist.ts';
import { loopbackCatalog } from './test-fixtures.ts';
import { startGatewayProcess } from './testing/gateway-process.ts';

// The real `edgemesh gateway` process on a node namespace, its API server unreachable (as
// after a restart while the cloud link is down), a pod namespace behind it. From the pod:
// the feed serves the persisted catalog, CONNECT reaches the pod's endpoint (OK local) and
// is refused for the node's own ports (the kubelet stand-in), metrics count it all, and
// SIGTERM exits cleanly.
const NODE_IP = '10.61.0.1';
const POD_IP = '10.61.0.5';
const lab = new NetnsLab('emc');
const stateDir = mkdtempSync(join(tmpdir(), 'emc-gw-netns-'));
let nodeNs: string;
let podNs: string;
let gateway: ChildProcess;
let stderr = '';
const catalog = loopbackCatalog([{ name: 'web-0', ip: POD_IP, node: 'edge-n', ports: [8080] }], 42);

beforeAll(async () => {
  nodeNs = await lab.add('node');
  podNs = await lab.add('pod');
  await lab.link(
    { ns: nodeNs, ifname: 'cbr0', addr: `${NODE_IP}/24` },
    { ns: podNs, ifname: 'eth0', addr: `${POD_IP}/24` },
  );
  await lab.exec(podNs, ['ip', 'route', 'add', 'default', 'via', NODE_IP]);
  // The pod's server (an echo) and a node-local "kubelet" on the node address.
  lab.spawn(podNs, ['socat', `TCP-LISTEN:8080,bind=${POD_IP},fork,reuseaddr`, 'EXEC:cat']);
  lab.spawn(nodeNs, [
    'socat',
    `TCP-LISTEN:10250,bind=${NODE_IP},fork,reuseaddr`,
    'EXEC:echo kubelet-secrets',
  ]);
  gateway = await startGatewayProcess(lab, nodeNs, {
    stateDir,
    catalog,
    listen: NODE_IP,
    onStderr: (chunk) => {
      stderr += chunk;
    },
  });
});

afterAll(async () => {
  await lab.cleanup();
  rmSync(stateDir, { recursive: true, force: true });
});

/** Sends `input` to the gateway from the pod namespace and returns what came back. */
async function fromPod(input: string, seconds = 2): Promise<string> {
  const r = await lab.run(podNs, [
    'sh',
    '-c',
    `printf '${input}' | timeout ${seconds} socat -t${seconds} - TCP:${NODE_IP}:15080`,
  ]);
  return r.stdout;
}

describe('edgemesh gateway (process in a node namespace, API down)', () => {
  it('serves the persisted catalog on the feed before the API answers', async () => {
    const out = await fromPod('EDGEMESH/1 FEED 0\\n', 1);
    const first = JSON.parse(out.split('\n')[0]);
    expect(first).toEqual({ type: 'snapshot', catalog });
    expect(stderr).toContain('serving the persisted catalog until the API answers');
    expect(stderr).toContain('API list/watch failed');
  });

  it('carries a CONNECT to a local pod endpoint, half-close included', async () => {
    const out = await fromPod(`EDGEMESH/1 CONNECT edge-n ${POD_IP} 8080\\nhello through the gateway\\n`);
    expect(out).toBe('OK local\nhello through the gateway\n');
  });

  it('refuses the node address (kubelet), unknown ports and bad headers, and stays up', async () => {
    expect(await fromPod(`EDGEMESH/1 CONNECT edge-n ${NODE_IP} 10250\\n`)).toBe(
      `ERR EDGEMESH_ERR_DIAL_REFUSED ${NODE_IP}:10250 is not an endpoint of a pod on node edge-n\n`,
    );
    expect(await fromPod(`EDGEMESH/1 CONNECT edge-n ${POD_IP} 22\\n`)).toMatch(
      /^ERR EDGEMESH_ERR_DIAL_REFUSED/,
    );
    expect(await fromPod('EDGEMESH/1 CONNECT other-node 10.62.0.9 80\\n')).toMatch(
      /^ERR EDGEMESH_ERR_DIAL_REFUSED/,
    );
    expect(await fromPod('SSH-2.0-OpenSSH_9.6\\r\\n')).toMatch(
      /^ERR EDGEMESH_ERR_BAD_REQUEST expected EDGEMESH\/1/,
    );
    expect(await fromPod(`EDGEMESH/1 CONNECT edge-n ${POD_IP} 8080\\nstill up\\n`)).toBe(
      'OK local\nstill up\n',
    );
    expect(stderr).toContain('request refused');
  });

  it('exposes metrics for the catalog, streams and errors', async () => {
    const r = await lab.exec(podNs, ['curl', '-sS', '--max-time', '5', `http://${NODE_IP}:15090/metrics`]);
    expect(r.stdout).toMatch(/^edgemesh_gateway_catalog_revision\{[^}]*\} 42$/m);
    expect(r.stdout).toMatch(/^edgemesh_gateway_catalog_services\{[^}]*\} 1$/m);
    expect(r.stdout).toMatch(/^edgemesh_gateway_streams_total\{path="local"[^}]*\} 2$/m);
    expect(r.stdout).toMatch(/^edgemesh_gateway_errors_total\{code="EDGEMESH_ERR_DIAL_REFUSED"[^}]*\} 3$/m);
    const ready = await lab.exec(podNs, ['curl', '-sS', '--max-time', '5', `http://${NODE_IP}:15090/ready`]);
    expect(ready.stdout).toBe(
      'ready\ncatalog: revision 42\ntunnel: off (no tunnel-servers configured: same-node streams only)\n',
    );
    const buildInfo = r.stdout.split('\n').find((l) => l.startsWith('edgemesh_build_info{'));
    expect(buildInfo).toMatch(/component="gateway"/);
    expect(buildInfo).toMatch(/version="\d+\.\d+\.\d+[^"]*",commit="unknown",node_version="v24\.[^"]+"/);
  });

  // Issue 17 item 3: `edgemesh status` reads /status on the same listener as /ready.
  it('serves /status as JSON beside /ready, on the node address and on loopback', async () => {
    const r = await lab.exec(podNs, [
      'curl',
      '-sS',
      '--max-time',
      '5',
      '-w',
      '\n%{http_code} %{content_type}',
      `http://${NODE_IP}:15090/status`,
    ]);
    const [body, meta] = [
      r.stdout.slice(0, r.stdout.lastIndexOf('\n')),
      r.stdout.slice(r.stdout.lastIndexOf('\n') + 1),
    ];
    expect(meta).toBe('200 application/json');
    const doc = parseGatewayStatus(JSON.parse(body), 'gateway /status');
    expect(doc).toMatchObject({
      node: 'edge-n',
      ready: true,
      readiness: 'ready',
      tunnel: { state: 'off', servers: [], listenPort: null },
      peers: [],
      omittedPeers: 0,
    });
    expect(Math.abs(doc.now - Date.now())).toBeLessThan(60_000);
    // Only GET: nothing else is routed there.
    const post = await lab.exec(podNs, [
      'curl',
      '-sS',
      '--max-time',
      '5',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '-X',
      'POST',
      `http://${NODE_IP}:15090/status`,
    ]);
    expect(post.stdout).toBe('404');
    // Loopback on the node answers too (for `curl` on an edge node the API server cannot reach).
    const local = await lab.exec(nodeNs, ['curl', '-sS', '--max-time', '5', 'http://127.0.0.1:15090/status']);
    expect(parseGatewayStatus(JSON.parse(local.stdout), 'loopback /status').node).toBe('edge-n');
  });

  // Issue 17 item 4: beside it, two gateways with a tunnel. One cannot reach any tunnel-server
  // (the cloud is away) and has no node certificate yet: Ready, serving its node, the cause in
  // /ready and the state metric. One has an unreadable mesh CA: not Ready, naming the file.
  it('is Ready with no tunnel-server reachable, and not Ready when its tunnel cannot start', async () => {
    const caDir = mkdtempSync(join(tmpdir(), 'emc-gw-ca-'));
    const ca = createCA();
    writeFileSync(join(caDir, 'ca.crt'), ca.certPem);
    writeFileSync(join(caDir, 'token'), 'token\n');
    const started: ChildProcess[] = [];
    const withTunnel = async (n: number, meshCa: string, enrolled = false) => {
      const dir = mkdtempSync(join(tmpdir(), `emc-gw-tunnel${n}-`));
      if (enrolled) {
        // Enrolled before the restart: its key and node certificate are in the state directory.
        const id = issueIdentity(ca, { kind: 'node', name: 'edge-n' });
        writeFileSync(join(dir, 'tunnel.key'), id.keyPem, { mode: 0o600 });
        writeFileSync(join(dir, 'tunnel.crt'), id.certPem);
      }
      started.push(
        await startGatewayProcess(lab, nodeNs, {
          stateDir: dir,
          catalog,
          listen: NODE_IP,
          onStderr: () => undefined,
          args: [
            `--port=${15080 + n}`,
            `--metrics-port=${15090 + n}`,
            `--tunnel-port=${20006 + n}`,
            // Nothing listens there: refused at once, as an unreachable cloud answers.
            '--tunnel-servers=127.0.0.1:9',
            `--mesh-ca=${meshCa}`,
            `--enroll-token-file=${join(caDir, 'token')}`,
          ],
        }),
      );
      return dir;
    };
    const dirs = [
      await withTunnel(1, join(caDir, 'ca.crt')),
      await withTunnel(2, join(caDir, 'missing.crt')),
      await withTunnel(3, join(caDir, 'ca.crt'), true),
    ];
    const get = (port: number, path: string) =>
      lab.exec(podNs, [
        'curl',
        '-sS',
        '--max-time',
        '5',
        '-w',
        '\n%{http_code}',
        `http://${NODE_IP}:${port}${path}`,
      ]);
    try {
      const offline = await waitFor(
        async () => {
          const r = await get(15091, '/ready');
          return r.stdout.includes('no tunnel-server reachable') ? r.stdout : undefined;
        },
        20_000,
        200,
        'gateway 1 reporting the unreachable tunnel-server',
      );
      expect(offline.split('\n')[0]).toBe('ready');
      // /status says the same: the tunnel not running yet, the server it tries, no peers.
      const offlineStatus = parseGatewayStatus(
        JSON.parse((await get(15091, '/status')).stdout.replace(/\n\d+$/, '')),
        'gw 1',
      );
      expect(offlineStatus).toMatchObject({
        ready: true,
        tunnel: { state: 'unreachable', servers: [] },
        peers: [],
      });
      expect(offline).toMatch(/\n200$/);
      expect(offline).toContain('127.0.0.1:9');
      expect((await get(15091, '/metrics')).stdout).toMatch(
        /^edgemesh_gateway_tunnel_state\{state="unreachable"[^}]*\} 1$/m,
      );
      const broken = await waitFor(
        async () => {
          const r = await get(15092, '/ready');
          return r.stdout.startsWith('not ready') ? r.stdout : undefined;
        },
        20_000,
        200,
        'gateway 2 not ready',
      );
      expect(broken).toMatch(/\n503$/);
      // /status answers 200 (it is a report, not a probe) and carries the same verdict.
      const brokenStatus = await get(15092, '/status');
      expect(brokenStatus.stdout).toMatch(/\n200$/);
      expect(parseGatewayStatus(JSON.parse(brokenStatus.stdout.replace(/\n\d+$/, '')), 'gw 2')).toMatchObject(
        {
          ready: false,
          readiness: broken.split('\n')[0],
          tunnel: { state: 'config' },
        },
      );
      expect(broken.split('\n')[0]).toContain(`tunnel cannot start (this node's configuration, since `);
      expect(broken).toContain(`cannot read the mesh CA certificate ${join(caDir, 'missing.crt')}`);
      expect((await get(15092, '/metrics')).stdout).toMatch(
        /^edgemesh_gateway_tunnel_state\{state="config"[^}]*\} 1$/m,
      );
      // Restarted offline after enrolling: the tunnel runs (peers from the peer book), Ready.
      const running = await waitFor(
        async () => {
          const r = await get(15093, '/ready');
          return r.stdout.includes('tunnel: running') ? r.stdout : undefined;
        },
        20_000,
        200,
        'gateway 3 running its tunnel',
      );
      expect(running).toMatch(/^ready\n/);
      expect(running).toContain('no tunnel-server reachable now (of 1)');
      const runningStatus = parseGatewayStatus(
        JSON.parse((await get(15093, '/status')).stdout.replace(/\n\d+$/, '')),
        'gw 3',
      );
      expect(runningStatus.tunnel).toMatchObject({
        state: 'running',
        listenPort: 20009,
        servers: [{ address: '127.0.0.1:9', up: false, name: null, observed: null }],
      });
      expect((await get(15093, '/metrics')).stdout).toMatch(
        /^edgemesh_gateway_tunnel_state\{state="running"[^}]*\} 1$/m,
      );
      // The broken one still serves its node: the feed answers from the persisted catalog.
      const feed = await lab.run(podNs, [
        'sh',
        '-c',
        `printf 'EDGEMESH/1 FEED 0\\n' | timeout 1 socat -t1 - TCP:${NODE_IP}:15082`,
      ]);
      expect(JSON.parse(feed.stdout.split('\n')[0]).catalog.revision).toBe(42);
    } finally {
      for (const p of started) p.kill('SIGTERM');
      for (const d of [...dirs, caDir]) rmSync(d, { recursive: true, force: true });
    }
  });

  it('exits 0 on SIGTERM and leaves a valid state file', async () => {
    const exited = new Promise<number | null>((resolve) => gateway.once('exit', (code) => resolve(code)));
    // The child is `ip netns exec`, which execs the gateway: same PID.
    process.kill(gateway.pid as number, 'SIGTERM');
    expect(await exited).toBe(0);
    expect(await loadCatalog(stateDir)).toEqual(catalog);
    expect(readFileSync(join(stateDir, 'catalog.json'), 'utf8').length).toBeGreaterThan(100);
  });
});
