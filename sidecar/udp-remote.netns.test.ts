/**
 * UDP to a Service whose endpoint is on another node (docs/udp.md "Across nodes"): the real
 * `edgemesh init --capture-udp=true` rules, the real sidecar with `--capture-udp` and
 * `--gateway`, a python app with a connected socket, and the real gateway code: two
 * `startGateway`s (node-a serving the pod on 10.61.0.1:15080, node-b owning the endpoint)
 * in one process in the srv namespace, joined by the in-process tunnel
 * (gateway/testing/two-gateways.ts; the TLS tunnel's datagram streams are
 * test/natlab/udp-tunnel.netns.test.ts's). The gateway process is
 * killed and started again mid-flow: the app's flow continues on the same source port.
 *
 *   pod ns 10.61.0.2 ── veth ── srv ns 10.61.0.1
 *     app (uid 1000) ─▶ 10.96.61.11:7000               gateways node-a :15080, node-b
 *     sidecar :15006 ─DGRAM node-b 10.62.0.99 7000─▶    ─▶ UDP echo 10.62.0.99:7000 (lo)
 *
 * EDGEMESH_TEST_UDP_SANITIZE=1: the sidecar loads the UDP addon built with ASan + UBSan
 * (`EDGEMESH_NATIVE_SANITIZE=1 sh sidecar/native/build.sh`); a report aborts it and the
 * last check fails on any report file.
 */

import { type ChildProcess, execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Catalog } from '../lib/catalog/types.ts';
import { EDGEMESH_BIN, NetnsLab, waitFor } from '../test/harness/netns.ts';
import { sidecarMetric, startUdpSidecar, UdpApp } from './testing/udp-pod.ts';

const NODE = process.execPath;
const APP = { uid: 1000, gid: 1000 };
const PORT = 7000;
const VIP = '10.96.61.11';
const POD_IP = '10.61.0.2';
const REMOTE = '10.62.0.99';
const ROOT = resolve(import.meta.dirname, '..');
const SANITIZE = process.env.EDGEMESH_TEST_UDP_SANITIZE === '1';
const sanitizerReports = () => join(dir, 'sanitizer');
/** The sidecar's environment under the sanitizers (the runtime preloaded: node is not built with it). */
function sanitizerEnv(): NodeJS.ProcessEnv {
  if (!SANITIZE) return process.env;
  return {
    ...process.env,
    EDGEMESH_UDP_ADDON: join(ROOT, 'sidecar/native/build/udp-sanitized.node'),
    LD_PRELOAD: execFileSync('gcc', ['-print-file-name=libasan.so']).toString().trim(),
    ASAN_OPTIONS: `detect_leaks=0:malloc_context_size=8:halt_on_error=1:log_path=${sanitizerReports()}/asan`,
    UBSAN_OPTIONS: `halt_on_error=1:print_stacktrace=1:log_path=${sanitizerReports()}/ubsan`,
  };
}

const ECHO = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => s.send('${REMOTE} ' + m, r.port, r.address));
s.bind(${PORT}, '${REMOTE}', () => console.log('ready'));`;

function catalog(): Catalog {
  return {
    format: 1,
    revision: 1,
    clusterDomain: 'cluster.local',
    services: {
      'demo/remote': {
        service: {
          namespace: 'demo',
          name: 'remote',
          type: 'ClusterIP',
          clusterIPs: [VIP],
          headless: false,
          ports: [{ name: '', port: PORT, protocol: 'UDP' }],
          sessionAffinity: { type: 'None' },
          lbPolicy: 'round-robin',
          publishNotReadyAddresses: false,
        },
        endpoints: [
          {
            ip: REMOTE,
            ready: true,
            serving: true,
            terminating: false,
            nodeName: 'node-b',
            ports: [{ name: '', port: PORT, protocol: 'UDP' }],
          },
        ],
      },
    },
    // The gateways' admission (the app's pod on node-a) and far-end rule (the endpoint's pod on node-b).
    pods: {
      [POD_IP]: { ip: POD_IP, namespace: 'demo', name: 'app', nodeName: 'node-a' },
      [REMOTE]: { ip: REMOTE, namespace: 'demo', name: 'udp-echo', nodeName: 'node-b' },
    },
    nodes: {},
  };
}

let lab: NetnsLab;
let pod: string;
let srv: string;
let dir: string;
let app: UdpApp;
let gateways: ChildProcess | undefined;
let sidecarLog: string[] = [];

async function startGateways(): Promise<void> {
  let out = '';
  let err = '';
  const gw = lab.spawn(srv, [
    NODE,
    join(ROOT, 'gateway/testing/two-gateways.ts'),
    '10.61.0.1',
    join(dir, 'catalog.json'),
    join(dir, 'state'),
  ]);
  gw.stdout?.on('data', (d: Buffer) => {
    out += d;
  });
  gw.stderr?.on('data', (d: Buffer) => {
    err += d;
  });
  await waitFor(
    () => {
      if (gw.exitCode !== null) throw new Error(`gateways exited ${gw.exitCode}: ${err}`);
      return out.includes('ready');
    },
    30_000,
    20,
    'gateways',
  );
  gateways = gw;
}

async function stopGateways(): Promise<void> {
  const gw = gateways;
  if (!gw || gw.exitCode !== null) return;
  const exited = new Promise((r) => gw.once('exit', r));
  gw.kill('SIGKILL'); // by its pid: a crash, no goodbye to the sidecar
  await exited;
}

/** One datagram (or a burst) on the app's flow to the ClusterIP; a burst's replies carry the echo's prefix. */
const send = (flow: string, data: string, opts: { tries?: number; wait?: number; burst?: number[] } = {}) =>
  app.send({ flow, ip: VIP, port: PORT, data, prefix: `${REMOTE} `, ...opts }, 30_000);

const metric = (name: string, label = '') => sidecarMetric(lab, pod, name, label);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emur-'));
  await mkdir(sanitizerReports());
  await chmod(sanitizerReports(), 0o777);
  await chmod(dir, 0o755);
  await writeFile(join(dir, 'catalog.json'), JSON.stringify(catalog()));
  lab = new NetnsLab('emur');
  pod = await lab.add('pod');
  srv = await lab.add('srv');
  await lab.link(
    { ns: pod, ifname: 'eth0', addr: ['10.61.0.2/24'] },
    { ns: srv, ifname: 'eth0', addr: ['10.61.0.1/24'] },
  );
  await lab.exec(pod, ['ip', 'route', 'add', 'default', 'via', '10.61.0.1']);
  await lab.exec(srv, ['ip', 'addr', 'add', `${REMOTE}/32`, 'dev', 'lo']);
  await lab.exec(srv, ['ip', 'link', 'set', 'lo', 'up']);

  const echo = lab.spawn(srv, [NODE, '-e', ECHO]);
  let echoOut = '';
  echo.stdout?.on('data', (d: Buffer) => {
    echoOut += d;
  });
  await waitFor(() => echoOut.includes('ready'), 10_000, 20, 'echo backend');
  await startGateways();

  const init = await lab.run(pod, [EDGEMESH_BIN, 'init', '--capture-udp=true', '--capture-dns=false'], {
    timeoutMs: 60_000,
  });
  expect(init.code, init.stderr).toBe(0);

  sidecarLog = (
    await startUdpSidecar(
      lab,
      pod,
      [
        '--catalog-file',
        join(dir, 'catalog.json'),
        '--node-name',
        'node-a',
        '--gateway',
        '10.61.0.1:15080',
        '--upstream',
        '10.61.0.1',
        '--capture-udp',
        'true',
      ],
      sanitizerEnv(),
    )
  ).log;
  app = new UdpApp(lab, pod, APP);
}, 120_000);

afterAll(async () => {
  await stopGateways();
  await lab?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('UDP to a ClusterIP whose endpoint is on another node', () => {
  it('goes through the gateway and the reply comes from the ClusterIP:port', async () => {
    const r = await send('flow', 'one');
    expect(r.error, sidecarLog.join('')).toBeUndefined();
    expect(r.data).toBe(`${REMOTE} one`);
    expect(r.from).toBe(VIP);
    expect(r.port).toBe(PORT);
    for (const word of ['two', 'three']) expect((await send('flow', word)).data).toBe(`${REMOTE} ${word}`);
    expect(await metric('edgemesh_udp_flows_total', 'route="gateway"')).toBe(1);
    expect(await metric('edgemesh_udp_datagrams_dropped_total', 'reason="remote-endpoint"')).toBe(0);
    expect(await metric('edgemesh_udp_datagrams_total', 'direction="reply"')).toBeGreaterThanOrEqual(3);
  });

  it('carries a burst of small and large datagrams whole both ways (framing split across reads)', async () => {
    // Up to 60,000 bytes: the sidecar frames a burst per flow in one writev and deframes the
    // replies, whose frames TCP delivers split at arbitrary points.
    const sizes = [1, 60_000, 2, 30_000, 1_400, 0, 20_000, 9_000, 3, 25_000, 500, 7];
    const r = await send('flow', '', { burst: sizes });
    expect(r.burst, sidecarLog.join('')).toBe(sizes.length);
    expect(await metric('edgemesh_udp_flows_total', 'route="gateway"')).toBe(1);
  });

  it('continues the same flow (same app source port) across a gateway restart', async () => {
    const before = await send('flow', 'before');
    expect(before.data).toBe(`${REMOTE} before`);
    await stopGateways();
    await startGateways();
    // The first datagram after the restart may find the old connection not yet seen as
    // broken: the app resends, as a UDP app does.
    const after = await send('flow', 'after', { tries: 20, wait: 0.5 });
    expect(after.error, sidecarLog.join('')).toBeUndefined();
    expect(after.data).toBe(`${REMOTE} after`);
    expect(after.from).toBe(VIP);
    expect(after.local).toBe(before.local);
    // One flow all along: the sidecar reopened its gateway connection, it made no new flow.
    expect(await metric('edgemesh_udp_flows_total', 'route="gateway"')).toBe(1);
    expect(sidecarLog.join('')).toMatch(/udp gateway flow reopened/);
    // This build's addon carries the flow itself (JS only opens the connections).
    expect(sidecarLog.join('')).toMatch(
      /"carrier":"addon"[^\n]*udp gateway flow reopened|udp gateway flow reopened[^\n]*"carrier":"addon"/,
    );
  });

  it.runIf(SANITIZE)('left no ASan/UBSan report (EDGEMESH_TEST_UDP_SANITIZE=1)', async () => {
    const files = await readdir(sanitizerReports());
    const reports = await Promise.all(files.map((f) => readFile(join(sanitizerReports(), f), 'utf8')));
    expect(reports.join('\n')).toBe('');
    expect(sidecarLog.join('')).toMatch(/"carrier":"addon"/); // the sanitized build carried the flow
  });
});
