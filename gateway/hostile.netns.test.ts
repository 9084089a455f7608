import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetnsLab, waitFor } from '../test/harness/netns.ts';
import { loopbackCatalog } from './test-fixtures.ts';
import { startGatewayProcess } from './testing/gateway-process.ts';

// Issue 16 items 1 and 6 against the real `edgemesh gateway` process in a node namespace:
//
//   pod ns 10.61.0.5 ──cbr0── node ns (gateway on 192.168.50.1:15080) ──eth0── lan ns
//                                                                  192.168.50.2 (a LAN host)
//                                                                  192.168.50.3 (node edge-m)
//
// The catalog (persisted; the API is unreachable) lists 10.61.0.5 as a pod on this node.
// A LAN host and another node are refused for FEED and CONNECT; the pod and the node itself
// are admitted. Then slowloris from the pod: the header deadline holds against a byte a
// second, and one source gets at most 64 header-less connections.
const NODE_IP = '192.168.50.1';
const POD_IP = '10.61.0.5';
const LAN_HOST = '192.168.50.2';
const OTHER_NODE = '192.168.50.3';
const lab = new NetnsLab('emh');
const stateDir = mkdtempSync(join(tmpdir(), 'emh-gw-'));
let nodeNs: string;
let podNs: string;
let lanNs: string;
let gateway: ChildProcess;
let stderr = '';
const base = loopbackCatalog([{ name: 'web-0', ip: POD_IP, node: 'edge-n', ports: [8080] }], 7);
const catalog = {
  ...base,
  nodes: {
    'edge-n': { name: 'edge-n', addresses: [NODE_IP] },
    'edge-m': { name: 'edge-m', addresses: [OTHER_NODE] },
  },
};

beforeAll(async () => {
  nodeNs = await lab.add('node');
  podNs = await lab.add('pod');
  lanNs = await lab.add('lan');
  await lab.link(
    { ns: nodeNs, ifname: 'cbr0', addr: '10.61.0.1/24' },
    { ns: podNs, ifname: 'eth0', addr: `${POD_IP}/24` },
  );
  await lab.link(
    { ns: nodeNs, ifname: 'eth0', addr: `${NODE_IP}/24` },
    { ns: lanNs, ifname: 'eth0', addr: [`${LAN_HOST}/24`, `${OTHER_NODE}/24`] },
  );
  await lab.exec(podNs, ['ip', 'route', 'add', 'default', 'via', '10.61.0.1']);
  lab.spawn(podNs, ['socat', `TCP-LISTEN:8080,bind=${POD_IP},fork,reuseaddr`, 'EXEC:cat']);
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

/** Sends `input` to the gateway from namespace `ns` (from address `bind`) and returns the answer. */
async function send(
  ns: string,
  input: string,
  opts: { bind?: string; seconds?: number } = {},
): Promise<string> {
  const seconds = opts.seconds ?? 2;
  const bind = opts.bind ? `,bind=${opts.bind}` : '';
  const r = await lab.run(ns, [
    'sh',
    '-c',
    `printf '${input}' | timeout ${seconds} socat -t${seconds} - TCP:${NODE_IP}:15080${bind}`,
  ]);
  return r.stdout;
}

async function metrics(): Promise<string> {
  const r = await lab.exec(nodeNs, ['curl', '-sS', '--max-time', '5', `http://${NODE_IP}:15090/metrics`]);
  return r.stdout;
}

const FEED = 'EDGEMESH/1 FEED 0\\n';
const CONNECT = `EDGEMESH/1 CONNECT edge-n ${POD_IP} 8080\\nhello\\n`;

describe('gateway sidecar port: only this node may use it (issue 16 item 1)', () => {
  it('serves the pod on this node: FEED and CONNECT', async () => {
    const feed = await send(podNs, FEED, { seconds: 1 });
    expect(JSON.parse(feed.split('\n')[0]).type).toBe('snapshot');
    expect(await send(podNs, CONNECT)).toBe('OK local\nhello\n');
  });

  it('serves the node itself (--allow-node-local defaults to true)', async () => {
    expect(await send(nodeNs, CONNECT)).toBe('OK local\nhello\n');
  });

  it('refuses a host on the edge LAN, after holding it for a catalog update', async () => {
    const refusal = `ERR EDGEMESH_ERR_DIAL_REFUSED source ${LAN_HOST} is not a pod on node edge-n\n`;
    // Before: the whole catalog, and a stream into the node's pods.
    expect(await send(lanNs, FEED, { bind: LAN_HOST, seconds: 6 })).toBe(refusal);
    expect(await send(lanNs, CONNECT, { bind: LAN_HOST, seconds: 6 })).toBe(refusal);
  });

  it('refuses another node at once', async () => {
    const refusal = `ERR EDGEMESH_ERR_DIAL_REFUSED source ${OTHER_NODE} is node edge-m, not a pod on edge-n\n`;
    expect(await send(lanNs, FEED, { bind: OTHER_NODE })).toBe(refusal);
    expect(await send(lanNs, CONNECT, { bind: OTHER_NODE })).toBe(refusal);
  });

  it('serves /metrics and /ready only on the node address and loopback, not on every interface (issue 16 item 10)', async () => {
    // Before: 0.0.0.0, so every interface of the node answered, the pod bridge's included.
    const onBridge = await lab.run(podNs, ['curl', '-sS', '--max-time', '3', 'http://10.61.0.1:15090/ready']);
    expect(onBridge.code).not.toBe(0);
    expect(onBridge.stderr).toMatch(/Connection refused|Failed to connect/);
    const onLoopback = await lab.exec(nodeNs, [
      'curl',
      '-sS',
      '--max-time',
      '3',
      'http://127.0.0.1:15090/ready',
    ]);
    expect(onLoopback.stdout).toMatch(/^ready\n/);
  });

  it('counts the refusals and logs the source', async () => {
    expect(await metrics()).toMatch(/^edgemesh_gateway_refused_total\{reason="not-a-local-pod"[^}]*\} 4$/m);
    expect(stderr).toContain(LAN_HOST);
    expect(stderr).toContain('connection refused');
  });
});

// A client in the pod namespace: `n` connections that each send one header byte (never a
// newline) every `gapMs`, at most `bytes` of them; prints per connection the reply and how
// many bytes it had sent when the gateway closed it. Bounded by `bytes` × `gapMs` + 5 s.
const SLOW_CLIENT = `
const net = require('node:net');
const [host, n, gapMs, bytes] = process.argv.slice(1);
const results = [];
let done = 0;
for (let i = 0; i < Number(n); i++) {
  const s = net.connect({ host, port: 15080 });
  const r = { reply: '', sent: 0 };
  results.push(r);
  const t = setInterval(() => {
    if (r.sent >= Number(bytes)) return clearInterval(t);
    s.write('E');
    r.sent++;
  }, Number(gapMs));
  s.on('data', (c) => (r.reply += c));
  s.on('error', () => {});
  s.on('close', () => {
    clearInterval(t);
    if (++done === Number(n)) finish();
  });
}
const cap = setTimeout(() => finish(), Number(bytes) * Number(gapMs) + 5000);
function finish() {
  clearTimeout(cap);
  console.log(JSON.stringify(results));
  process.exit(0);
}
`;

describe('gateway slowloris (issue 16 item 6)', () => {
  it('closes trickled headers at the absolute deadline, caps header-less connections per source, serves others meanwhile', async () => {
    // 80 connections, a byte every 0.5 s for up to 15 s: a per-byte timeout never fires.
    const flood = lab.exec(podNs, [process.execPath, '-e', SLOW_CLIENT, NODE_IP, '80', '500', '30'], {
      timeoutMs: 40_000,
    });
    // While the pod's slots are full, the node (another source) is still served.
    await waitFor(
      async () => {
        const m = await metrics();
        return /header-limit"[^}]*\} 16$/m.test(m);
      },
      10_000,
      100,
      `the per-source limit to hit (gateway exit ${gateway.exitCode} ${gateway.signalCode}, stderr: ${stderr.slice(-3000)})`,
    );
    expect(await send(nodeNs, CONNECT)).toBe('OK local\nhello\n');
    const results: Array<{ reply: string; sent: number }> = JSON.parse((await flood).stdout);
    const timedOut = results.filter((r) => r.reply === 'ERR EDGEMESH_ERR_BAD_REQUEST no header in time\n');
    const limited = results.filter(
      (r) =>
        r.reply === `ERR EDGEMESH_ERR_UNAVAILABLE too many connections from ${POD_IP} without a header\n`,
    );
    expect(timedOut.length).toBe(64);
    expect(limited.length).toBe(16);
    // Cut at the deadline, not after the client stopped sending (it would have sent 30).
    for (const r of timedOut) expect(r.sent).toBeLessThan(30);
    // The pod is served again once its connections are gone.
    expect(await send(podNs, CONNECT)).toBe('OK local\nhello\n');
    expect(await metrics()).toMatch(/^edgemesh_gateway_refused_total\{reason="header-limit"[^}]*\} 16$/m);
  }, 60_000);
});
