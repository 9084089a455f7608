import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../harness/netns.ts';
import type { LabNode } from './lab.ts';
import { processLog, TUNNEL_PORT, TunnelLab } from './tunnel-fixture.ts';

// The tunnel-server on its own: relay limits per node (a bandwidth limit slows, never cuts;
// a session limit refuses with a clear error) and junk from the internet not hurting it.
// Three sites behind symmetric NAT, so every pair can only use the relay.
describe('tunnel-server limits and hostile input', () => {
  let t: TunnelLab;
  let a: LabNode;
  let b: LabNode;
  let c: LabNode;

  beforeAll(async () => {
    t = await TunnelLab.create(
      [
        { mapping: 'random', inbound: 'drop', nodes: 1, podsPerNode: 1 },
        { mapping: 'random', inbound: 'drop', nodes: 1, podsPerNode: 1 },
        { mapping: 'random', inbound: 'reject', nodes: 1, podsPerNode: 1 },
      ],
      1,
      ['--relay-max-sessions', '1', '--relay-bytes-per-second', String(8 * 1024 * 1024)],
    );
    [a, b, c] = t.lab.sites.map((s) => s.nodes[0]);
    // Relay only: the symmetric NATs defeat punching anyway; skipping it keeps the test short.
    for (const node of [a, b, c]) await t.startNode(node, { techniques: 'lan' });
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  it('a bandwidth limit slows a long transfer but never cuts it', async () => {
    const bytes = 24 * 1024 * 1024; // three seconds' worth at the limit
    const r = await t.send(a, b, bytes, 120_000);
    expect(r.path).toBe('relay');
    expect(r.reply).toBe(`${r.sha} ${bytes}`);
  });

  it('the per-node session limit refuses a second relay with a clear error', async () => {
    // a already relays to b (one session): c cannot get a relay to a.
    const r = await t.send(c, a, 1000);
    expect(r.error).toMatch(
      /^ERR EDGEMESH_ERR_UNAVAILABLE no path to node node1-1: .*relay limit of 1 per node reached/,
    );
    // ... while the existing relay keeps working.
    const again = await t.send(a, b, 1000);
    expect(again.reply).toBe(`${again.sha} 1000`);
  });

  it('junk on the public port (raw, TLS-looking, oversized) leaves the server serving', async () => {
    const server = `${t.lab.tunnelServers[0].addr}:${TUNNEL_PORT}`;
    const ns = t.lab.sites[0].natNs; // any host on the internet side
    for (const junk of [
      "printf 'GET / HTTP/1.1\\r\\n\\r\\n'",
      "printf 'EMT1 RELAY 00000000000000000000000000000000\\n'",
      "printf '\\026\\003\\001\\000\\005hello'",
      'head -c 100000 /dev/zero',
    ]) {
      await t.lab.run(ns, ['sh', '-c', `${junk} | socat -T2 - TCP:${server}`]);
    }
    // UDP junk at the STUN port gets no answer (no amplification).
    const udp = await t.lab.run(ns, [
      'sh',
      '-c',
      `printf 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | socat -T1 - UDP:${server}`,
    ]);
    expect(udp.stdout).toBe('');
    const r = await t.send(a, b, 1000);
    expect(r.reply).toBe(`${r.sha} 1000`);
  });

  it('a restarted gateway keeps its own key and certificate (no re-enrolment) and is reached again', async () => {
    const keyFile = join(t.dir, b.name, 'tunnel.key');
    const certFile = join(t.dir, b.name, 'tunnel.crt');
    const [key, cert] = [readFileSync(keyFile, 'utf8'), readFileSync(certFile, 'utf8')];
    expect(processLog(b.name)).toMatch(/enrolled with the mesh CA/);
    const old = t.nodes.get(b.name);
    if (old?.pid) process.kill(old.pid, 'SIGKILL');
    // Restarted with a token that would be refused: only the stored identity can get it in.
    await t.startNode(b, { token: 'revoked-bootstrap-token' });
    expect(processLog(b.name)).not.toMatch(/enrolled with the mesh CA/);
    expect(readFileSync(keyFile, 'utf8')).toBe(key);
    expect(readFileSync(certFile, 'utf8')).toBe(cert);
    // Reached again once it has registered with its stored certificate. The first attempt may
    // race the peer's relay failover, which began when the old session died (before the
    // restarted gateway registered again); a sidecar retries likewise.
    let r: Awaited<ReturnType<typeof t.send>> = {} as Awaited<ReturnType<typeof t.send>>;
    await waitFor(
      async () => {
        r = await t.send(a, b, 100_000);
        return r.path !== undefined;
      },
      30_000,
      500,
      `${b.name} reached through the tunnel after its restart`,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; last answer ${JSON.stringify(r)}`);
    });
    expect(r.path).toBe('relay');
    expect(r.reply).toBe(`${r.sha} 100000`);
  });
});
