/**
 * The UDP data path end to end (docs/udp.md): `edgemesh init --capture-udp=true` (the real
 * CLI, real iptables TPROXY rules and policy route), the real sidecar with `--capture-udp`
 * run as the webhook runs it (uid 0, gid 1337, only NET_ADMIN), a real client (python3, a
 * connected UDP socket: the kernel drops any reply not from the address it sent to) as an
 * app uid in the pod, and real UDP backends in a second namespace.
 *
 *   pod ns  eth0 10.61.0.2/24 fd00:61::2/64 ── veth ── srv ns eth0 10.61.0.1 fd00:61::1
 *     client (uid 1000)  ─▶ 10.96.61.10:7000 / [fd00:96::61:10]:7000    lo: echo backends :7000
 *     sidecar :15006 (TPROXY)                                              10.62.0.11, 10.62.0.12
 *                                                                          fd00:62::11, fd00:62::12
 *                                                                          198.51.100.20 (not a service)
 * A backend answers "<its address> <payload>".
 */

import { chmod, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Catalog, Endpoint, ServiceEntry } from '../lib/catalog/types.ts';
import { EDGEMESH_BIN, NetnsLab, waitFor } from '../test/harness/netns.ts';
import { type AppReply, sidecarMetric, startUdpSidecar, UdpApp } from './testing/udp-pod.ts';

const NODE = process.execPath;
const APP = { uid: 1000, gid: 1000 };
const PORT = 7000;
const VIP4 = '10.96.61.10';
const VIP6 = 'fd00:96::61:10';
const VIP_REMOTE = '10.96.61.11';
const VIP_EMPTY = '10.96.61.12';
const B4 = ['10.62.0.11', '10.62.0.12'];
const B6 = ['fd00:62::11', 'fd00:62::12'];
const OUTSIDE = '198.51.100.20';

const ECHO = `
const dgram = require('node:dgram');
const addrs = JSON.parse(process.argv[1]);
let bound = 0;
for (const a of addrs) {
  const s = dgram.createSocket(a.includes(':') ? 'udp6' : 'udp4');
  s.on('message', (m, r) => s.send(a + ' ' + m, r.port, r.address));
  s.bind(${PORT}, a, () => { if (++bound === addrs.length) console.log('ready'); });
}`;

const endpoint = (ip: string, nodeName = 'node-a'): Endpoint => ({
  ip,
  ready: true,
  serving: true,
  terminating: false,
  nodeName,
  ports: [{ name: '', port: PORT, protocol: 'UDP' }],
});

function service(name: string, clusterIPs: string[], endpoints: Endpoint[]): [string, ServiceEntry] {
  return [
    `demo/${name}`,
    {
      service: {
        namespace: 'demo',
        name,
        type: 'ClusterIP',
        clusterIPs,
        headless: false,
        ports: [{ name: '', port: PORT, protocol: 'UDP' }],
        sessionAffinity: { type: 'None' },
        lbPolicy: 'round-robin',
        publishNotReadyAddresses: false,
      },
      endpoints,
    },
  ];
}

function catalog(revision: number, echo4: string[]): Catalog {
  return {
    format: 1,
    revision,
    clusterDomain: 'cluster.local',
    services: Object.fromEntries([
      service(
        'echo4',
        [VIP4],
        echo4.map((ip) => endpoint(ip)),
      ),
      service(
        'echo6',
        [VIP6],
        B6.map((ip) => endpoint(ip)),
      ),
      service('remote', [VIP_REMOTE], [endpoint('10.62.0.99', 'node-b')]),
      service('empty', [VIP_EMPTY], []),
    ]),
    pods: {},
    nodes: {},
  };
}

let lab: NetnsLab;
let pod: string;
let dir: string;
let catalogFile: string;
let app: UdpApp;
let sidecarLog: string[] = [];

async function writeCatalog(c: Catalog): Promise<void> {
  const tmp = `${catalogFile}.tmp`;
  await writeFile(tmp, JSON.stringify(c));
  await rename(tmp, catalogFile);
}

/** One datagram (resent up to `tries` times until a reply comes) on the app's flow `flow`. */
const send = (flow: string, ip: string, data: string, opts: { tries?: number; wait?: number } = {}) =>
  app.send({ flow, ip, port: PORT, data, ...opts });

const metric = (name: string, label = '') => sidecarMetric(lab, pod, name, label);

const backendOf = (r: AppReply) => r.data?.split(' ')[0];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emu-'));
  await chmod(dir, 0o755);
  catalogFile = join(dir, 'catalog.json');
  await writeCatalog(catalog(1, B4));
  lab = new NetnsLab('emu');
  pod = await lab.add('pod');
  const srv = await lab.add('srv');
  await lab.link(
    { ns: pod, ifname: 'eth0', addr: ['10.61.0.2/24', 'fd00:61::2/64'] },
    { ns: srv, ifname: 'eth0', addr: ['10.61.0.1/24', 'fd00:61::1/64'] },
  );
  // No duplicate address detection: a tentative IPv6 address drops the first datagrams.
  for (const [ns, addr] of [
    [pod, 'fd00:61::2/64'],
    [srv, 'fd00:61::1/64'],
  ])
    await lab.exec(ns, ['ip', '-6', 'addr', 'change', addr, 'dev', 'eth0', 'nodad']);
  await lab.exec(pod, ['ip', 'route', 'add', 'default', 'via', '10.61.0.1']);
  await lab.exec(pod, ['ip', '-6', 'route', 'add', 'default', 'via', 'fd00:61::1']);
  for (const a of [...B4, OUTSIDE]) await lab.exec(srv, ['ip', 'addr', 'add', `${a}/32`, 'dev', 'lo']);
  for (const a of B6) await lab.exec(srv, ['ip', 'addr', 'add', `${a}/128`, 'dev', 'lo', 'nodad']);

  const echo = lab.spawn(srv, [NODE, '-e', ECHO, JSON.stringify([...B4, ...B6, OUTSIDE])]);
  let echoOut = '';
  echo.stdout?.on('data', (d: Buffer) => {
    echoOut += d;
  });
  await waitFor(() => echoOut.includes('ready'), 10_000, 20, 'echo backends');

  const init = await lab.run(
    pod,
    [EDGEMESH_BIN, 'init', '--capture-udp=true', '--capture-dns=false', '--ipv6=true'],
    { timeoutMs: 60_000 },
  );
  expect(init.code, init.stderr).toBe(0);

  // As injected: uid 0, gid 1337 (exempt from the capture), only the webhook's capabilities.
  sidecarLog = (
    await startUdpSidecar(lab, pod, [
      '--catalog-file',
      catalogFile,
      '--node-name',
      'node-a',
      '--upstream',
      '10.61.0.1',
      '--capture-udp',
      'true',
      '--udp-idle-timeout-seconds',
      '2',
    ])
  ).log;
  app = new UdpApp(lab, pod, APP);
}, 120_000);

afterAll(async () => {
  await lab?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('UDP to a ClusterIP through the sidecar', () => {
  it('answers IPv4 from the ClusterIP:port, each flow on one backend, flows round-robin', async () => {
    const got: Record<string, string[]> = {};
    for (let round = 0; round < 3; round++) {
      for (let f = 0; f < 4; f++) {
        const r = await send(`v4-${f}`, VIP4, `hello ${round}`);
        expect(r.error, sidecarLog.join('')).toBeUndefined();
        expect(r.from).toBe(VIP4);
        expect(r.port).toBe(PORT);
        expect(r.data).toMatch(new RegExp(` hello ${round}$`));
        got[r.flow] = [...(got[r.flow] ?? []), backendOf(r) as string];
      }
    }
    // Every datagram of a flow reached the same backend; the four flows split 2/2.
    for (const backends of Object.values(got)) expect(new Set(backends).size).toBe(1);
    const perBackend = Object.values(got).map((b) => b[0]);
    expect(perBackend.filter((b) => b === B4[0]).length).toBe(2);
    expect(perBackend.filter((b) => b === B4[1]).length).toBe(2);
    // Counted both ways, most of them by the addon's thread (known flows never enter JS).
    expect(await metric('edgemesh_udp_datagrams_total', 'direction="out"')).toBeGreaterThanOrEqual(12);
    expect(await metric('edgemesh_udp_datagrams_total', 'direction="reply"')).toBeGreaterThanOrEqual(12);
  });

  it('answers IPv6 from the ClusterIP:port, flows balanced', async () => {
    const seen: string[] = [];
    for (let f = 0; f < 4; f++) {
      const r = await send(`v6-${f}`, VIP6, 'hi6');
      expect(r.error, sidecarLog.join('')).toBeUndefined();
      expect(r.from).toBe(VIP6);
      expect(r.port).toBe(PORT);
      seen.push(backendOf(r) as string);
    }
    expect(seen.filter((b) => b === B6[0]).length).toBe(2);
    expect(seen.filter((b) => b === B6[1]).length).toBe(2);
  });

  it('passes a destination that is no service through to itself', async () => {
    const r = await send('outside', OUTSIDE, 'direct?');
    expect(r.from).toBe(OUTSIDE);
    expect(r.data).toBe(`${OUTSIDE} direct?`);
  });

  it('drops and counts datagrams to a service with only remote endpoints, or none', async () => {
    const remote = await send('remote', VIP_REMOTE, 'x', { tries: 1, wait: 0.3 });
    expect(remote.error).toBe('timeout');
    const empty = await send('empty', VIP_EMPTY, 'x', { tries: 1, wait: 0.3 });
    expect(empty.error).toBe('timeout');
    expect(await metric('edgemesh_udp_datagrams_dropped_total', 'reason="remote-endpoint"')).toBe(1);
    expect(await metric('edgemesh_udp_datagrams_dropped_total', 'reason="no-endpoint"')).toBe(1);
  });

  it('moves a flow whose endpoint left the ready set, keeping the app socket and the source', async () => {
    const first = await send('move', VIP4, 'before');
    const flows = await metric('edgemesh_udp_flows_total', 'route="service"');
    const gone = backendOf(first) as string;
    const stays = B4.find((b) => b !== gone) as string;
    await writeCatalog(catalog(2, [stays]));
    await waitFor(
      async () => backendOf(await send('move', VIP4, 'after')) === stays,
      10_000,
      100,
      'flow moved to the remaining endpoint',
    );
    const after = await send('move', VIP4, 'after');
    expect(after.from).toBe(VIP4);
    expect(after.local).toBe(first.local);
    // The same flow, re-picked (its upstream socket re-connected), not a new one.
    expect(await metric('edgemesh_udp_flows_total', 'route="service"')).toBe(flows);
    await writeCatalog(catalog(3, B4));
  });

  it('ends idle flows (2 s here) and starts a new one on the next datagram', async () => {
    await waitFor(
      async () => (await metric('edgemesh_udp_active_flows')) === 0,
      15_000,
      250,
      'flows expired',
    );
    const started = await metric('edgemesh_udp_flows_total', 'route="service"');
    const r = await send('v4-0', VIP4, 'again');
    expect(r.from).toBe(VIP4);
    expect(await metric('edgemesh_udp_flows_total', 'route="service"')).toBe(started + 1);
    expect(await metric('edgemesh_udp_active_flows')).toBe(1);
  });
});
