import { once } from 'node:events';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../harness/netns.ts';
import type { LabNode } from './lab.ts';
import { processLog, TunnelLab, type TunnelStatusJson } from './tunnel-fixture.ts';

// Issue 16 item 4: certificates renewed while running. Real tunnel-server processes issue
// node certificates of 15 s and their own of 12 s (--node-cert-lifetime, --server-cert-lifetime),
// so a 45 s run goes through several rotations of each while a long-lived stream between two
// gateways keeps carrying checked bytes and new streams keep opening. Then, with every first
// certificate long expired, new TLS sessions of every kind must still come up: gateways
// reconnecting to a restarted tunnel-server (their client certificate), a new gateway enrolling
// (the servers' serving certificates) and dialling an old one (its listener's certificate).
const NODE = new URL('../../node_modules/.bin/node', import.meta.url).pathname;
const BIN = new URL('./bin/', import.meta.url).pathname;
const SERVER_ARGS = [
  '--node-cert-lifetime',
  '15s',
  '--server-cert-lifetime',
  '12s',
  '--metrics-port',
  '15092',
];
const RUN_SECONDS = 45;

describe('certificates renewed while running', () => {
  let t: TunnelLab;
  let a: LabNode;
  let b: LabNode;
  let c: LabNode;

  beforeAll(async () => {
    t = await TunnelLab.create(
      [{ mapping: 'preserving', inbound: 'drop', nodes: 3, podsPerNode: 1 }],
      2,
      SERVER_ARGS,
      'emc',
    );
    [a, b, c] = t.lab.sites[0].nodes;
    // LAN only: same-site peers go direct after their first relayed stream.
    for (const node of [a, b]) await t.startNode(node, { techniques: 'lan' });
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  const status = (node: LabNode): Promise<TunnelStatusJson> => t.status(node);
  const metric = async (ns: string, port: number, name: string, labels = ''): Promise<number> => {
    const r = await t.lab.exec(ns, ['curl', '-sf', `http://127.0.0.1:${port}/metrics`]);
    const line = r.stdout
      .split('\n')
      .find((l) => l.startsWith(`${name}{`) && l.includes(labels) && !l.startsWith('#'));
    return line ? Number(line.split(' ').pop()) : 0;
  };

  it('rotates node and tunnel-server certificates under load; no stream drops; new sessions use the new ones', async () => {
    // A → B on the direct path before the load starts.
    const first = await t.send(a, b, 1000);
    expect(first.reply).toBe(`${first.sha} 1000`);
    await waitFor(async () => (await t.peerPath(a, b)) === 'direct', 20_000, 200, 'A → B direct').catch(
      async (err) => {
        throw new Error(`${err.message}\n${JSON.stringify(await t.status(a))}\n${processLog(a.name)}`);
      },
    );
    const directUpAt = (await status(a)).peers.find((p) => p.node === b.name)?.paths.direct?.upAt;
    const firstCert = { a: (await status(a)).certificate, b: (await status(b)).certificate };
    expect(firstCert.a?.serial).toBeTruthy();

    const load = t.lab.exec(
      a.ns,
      [
        NODE,
        join(BIN, 'steady.ts'),
        '--node',
        b.name,
        '--echo',
        `${b.pods[0].addr}:9001`,
        '--sink',
        `${b.pods[0].addr}:9000`,
        '--seconds',
        String(RUN_SECONDS),
      ],
      { timeoutMs: (RUN_SECONDS + 30) * 1000 },
    );
    load.catch(() => undefined); // awaited below; a failure before then must not go unhandled

    // Serials each gateway presents, sampled through the run.
    const serials = { a: new Set<string>(), b: new Set<string>() };
    const sample = async () => {
      for (const [k, node] of [
        ['a', a],
        ['b', b],
      ] as const) {
        const s = (await status(node)).certificate?.serial;
        if (s) serials[k].add(s);
      }
    };
    const sampler = setInterval(() => void sample().catch(() => undefined), 1000);

    // Once both gateways' and both servers' first certificates have expired: restart ts1 (the
    // gateways reconnect to it with their current certificate) ...
    const firstServerExpiry = Date.now() + 12_000;
    await waitFor(
      async () => {
        return (
          Date.now() >
          Math.max(firstCert.a?.notAfter ?? 0, firstCert.b?.notAfter ?? 0, firstServerExpiry) + 2000
        );
      },
      40_000,
      1000,
      'the first certificates to expire',
    );
    const old = t.servers.get(0);
    const gone = old ? once(old, 'exit') : Promise.resolve();
    t.killServer(0);
    await gone; // its listener must be gone before the new one is looked for
    await t.startServer(0, SERVER_ARGS);
    const restarted = t.servers.get(0);
    const ts1 = `${t.lab.tunnelServers[0].addr}:20007`;
    for (const node of [a, b])
      await waitFor(
        async () => (await status(node)).servers.find((s) => s.address === ts1)?.up,
        30_000, // the link's reconnect backoff reaches 10 s
        500,
        `${node.name} registered again at the restarted ts1`,
      ).catch((err) => {
        throw new Error(
          `${err.message} (ts1 exit code ${restarted?.exitCode})\n${processLog(node.name)}\n${processLog('ts1')}`,
        );
      });

    // ... and a new gateway enrols, registers at both servers and opens streams to A: first
    // relayed (TLS between C and A through ts), then direct (C dials A's listener).
    await t.startNode(c, { techniques: 'lan' });
    await waitFor(
      async () => (await status(c)).servers.every((s) => s.up),
      20_000,
      500,
      'C registered at both tunnel-servers',
    );
    const toA = await t.send(c, a, 100_000);
    expect(toA.error).toBeUndefined();
    expect(toA.reply).toBe(`${toA.sha} 100000`);
    await waitFor(async () => (await t.peerPath(c, a)) === 'direct', 20_000, 200, 'C → A direct');
    const directToA = await t.send(c, a, 100_000);
    expect(directToA.path).toBe('direct');
    expect(directToA.reply).toBe(`${directToA.sha} 100000`);

    // The load ran through all of it.
    const r = JSON.parse((await load).stdout.trim().split('\n').pop() ?? '{}');
    clearInterval(sampler);
    console.log('steady load', r, 'serials', { a: serials.a.size, b: serials.b.size });
    expect(r.path).toBe('direct');
    expect(r.longError).toBeUndefined();
    expect(r.longEchoed).toBe(r.longSent);
    expect(r.longSent).toBeGreaterThan(0);
    expect(r.shortFailed).toBe(0);
    expect(r.shortErrors).toEqual([]);
    expect(r.shortOk).toBeGreaterThan(10);
    // The session under the long stream is the one from the start: never re-established.
    expect((await status(a)).peers.find((p) => p.node === b.name)?.paths.direct?.upAt).toBe(directUpAt);

    // Rotations happened: serials changed, counted by the metrics, none failed.
    expect(serials.a.size).toBeGreaterThanOrEqual(4);
    expect(serials.b.size).toBeGreaterThanOrEqual(4);
    for (const [node, first] of [
      [a, firstCert.a],
      [b, firstCert.b],
    ] as const) {
      const ok = await metric(node.ns, 15091, 'edgemesh_gateway_certificate_renewals_total', 'result="ok"');
      const failed = await metric(
        node.ns,
        15091,
        'edgemesh_gateway_certificate_renewals_total',
        'result="error"',
      );
      const expiry = await metric(node.ns, 15091, 'edgemesh_gateway_certificate_expiry_seconds');
      console.log(node.name, { renewals: ok, failed, expiry });
      expect(ok).toBeGreaterThanOrEqual(3);
      expect(failed).toBe(0);
      expect(expiry * 1000).toBeGreaterThan(first?.notAfter ?? Number.POSITIVE_INFINITY);
    }
    // ts2 ran throughout: its own certificate rotated several times.
    const ts2 = t.lab.tunnelServers[1].ns;
    const serverRenewals = await metric(
      ts2,
      15092,
      'edgemesh_tunnel_server_certificate_renewals_total',
      'result="ok"',
    );
    console.log('ts2', { renewals: serverRenewals });
    expect(serverRenewals).toBeGreaterThanOrEqual(3);
    expect(await metric(ts2, 15092, 'edgemesh_tunnel_server_certificate_expiry_seconds')).toBeGreaterThan(
      Date.now() / 1000,
    );
  }, 150_000);
});
