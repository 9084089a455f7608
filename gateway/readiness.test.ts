import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import { silentLogger } from '../lib/log.ts';
import { createCA } from '../lib/tunnel/identity.ts';
import { readinessAnswer } from './readiness.ts';
import { enrolmentFailure } from './tunnel/enrol.ts';
import { GatewayTunnel, placeholderServers, startFailureKind, usableServers } from './tunnel/start.ts';

// Issue 17 item 4: a gateway whose tunnel cannot start because of its own setup is not Ready
// and says why; one that only cannot reach a tunnel-server now stays Ready (offline edge).

describe('readinessAnswer', () => {
  it('is ready with a catalog and no tunnel, and says the tunnel is off', () => {
    expect(readinessAnswer({ synced: true, revision: 42, tunnel: undefined })).toEqual({
      status: 200,
      body: 'ready\ncatalog: revision 42\ntunnel: off (no tunnel-servers configured: same-node streams only)\n',
    });
  });

  it('stays ready while no tunnel-server is reachable, and says so', () => {
    const r = readinessAnswer({
      synced: true,
      revision: 7,
      tunnel: { state: 'unreachable', ready: true, detail: 'tunnel: no tunnel-server reachable since X' },
    });
    expect(r).toEqual({
      status: 200,
      body: 'ready\ncatalog: revision 7\ntunnel: no tunnel-server reachable since X\n',
    });
  });

  it('is not ready when the tunnel cannot start, naming the cause first', () => {
    const detail = 'tunnel cannot start (this node’s configuration): cannot read the mesh CA certificate /x';
    const r = readinessAnswer({
      synced: true,
      revision: 7,
      tunnel: { state: 'config', ready: false, detail },
    });
    expect(r.status).toBe(503);
    expect(r.body).toBe(`not ready: ${detail}\ncatalog: revision 7\n${detail}\n`);
  });

  it('is not ready without a catalog, and lists every problem', () => {
    const detail = 'tunnel cannot start (refused by the tunnel-server): revoked';
    const r = readinessAnswer({
      synced: false,
      revision: undefined,
      tunnel: { state: 'refused', ready: false, detail },
    });
    expect(r.status).toBe(503);
    expect(r.body.split('\n')[0]).toBe(`not ready: no catalog yet; ${detail}`);
    expect(r.body).toContain('catalog: none yet');
  });
});

describe('why a tunnel did not start', () => {
  it('tells configuration and refusals from an unreachable cloud', () => {
    expect(startFailureKind(new EdgemeshError(ErrorCodes.CONFIG, 'cannot read the mesh CA'))).toBe('config');
    expect(startFailureKind(Object.assign(new Error('listen'), { code: 'EADDRINUSE' }))).toBe('config');
    expect(startFailureKind(Object.assign(new Error('mkdir'), { code: 'EACCES' }))).toBe('config');
    expect(startFailureKind(new EdgemeshError(ErrorCodes.TUNNEL_AUTH, 'enrolment refused'))).toBe('refused');
    expect(startFailureKind(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'none reachable'))).toBe('unreachable');
    expect(startFailureKind(Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }))).toBe(
      'unreachable',
    );
    expect(startFailureKind(Object.assign(new Error('dns'), { code: 'EAI_AGAIN' }))).toBe('unreachable');
  });

  it('makes one enrolment error per round: refused if any server refused, else unavailable', () => {
    const refused = new EdgemeshError(ErrorCodes.TUNNEL_AUTH, 'enrolment refused: node b1 is revoked');
    const down = Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:20006'), { code: 'ECONNREFUSED' });
    const badCert = Object.assign(new Error('unable to verify the first certificate'), {
      code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    });
    const a = enrolmentFailure([
      { server: 'cloud1:20006', err: down },
      { server: 'cloud2:20006', err: refused },
    ]);
    expect(a.code).toBe(ErrorCodes.TUNNEL_AUTH);
    expect(a.message).toBe(
      'enrolment refused by cloud2:20006: EDGEMESH_ERR_TUNNEL_AUTH: enrolment refused: node b1 is revoked',
    );
    expect(enrolmentFailure([{ server: 'cloud1:20006', err: badCert }]).code).toBe(ErrorCodes.TUNNEL_AUTH);
    const b = enrolmentFailure([{ server: 'cloud1:20006', err: down }]);
    expect(b.code).toBe(ErrorCodes.UNAVAILABLE);
    expect(b.message).toBe(
      'no tunnel-server reachable for enrolment: cloud1:20006: connect ECONNREFUSED 10.0.0.1:20006',
    );
    // A server that answers "not now" (its API or signer away) is not a refusal.
    const busy = new EdgemeshError(ErrorCodes.UNAVAILABLE, 'signer unavailable');
    expect(enrolmentFailure([{ server: 'cloud1:20006', err: busy }]).code).toBe(ErrorCodes.UNAVAILABLE);
  });

  it('knows the shipped placeholder and reserved names', () => {
    expect(
      placeholderServers([
        { host: 'tunnel.edgemesh.example', port: 20006 },
        { host: '203.0.113.7', port: 20006 },
        { host: 'relay.invalid', port: 1 },
        { host: 'tunnel.example.com', port: 20006 },
      ]),
    ).toEqual(['tunnel.edgemesh.example:20006', 'relay.invalid:1']);
  });

  it('leaves placeholders out and keeps the real addresses', () => {
    const real = { host: '203.0.113.7', port: 20006 };
    expect(usableServers([{ host: 'tunnel.edgemesh.example', port: 20006 }, real])).toEqual({
      servers: [real],
      ignored: ['tunnel.edgemesh.example:20006'],
    });
    expect(usableServers([{ host: 'tunnel.edgemesh.example', port: 20006 }]).servers).toEqual([]);
  });
});

describe('GatewayTunnel readiness (no network: these fail before any dial)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gw-ready-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const ca = createCA();
  writeFileSync(join(dir, 'ca.crt'), ca.certPem);
  writeFileSync(join(dir, 'garbage.crt'), 'not a certificate\n');
  writeFileSync(join(dir, 'token'), 'token\n');

  const tunnelWith = (caFile: string, servers: string[]) =>
    new GatewayTunnel({
      nodeName: 'edge-1',
      stateDir: join(dir, `state-${Math.random().toString(16).slice(2)}`),
      caFile,
      tokenFile: join(dir, 'token'),
      servers,
      lanAddresses: [],
      dialTarget: async () => {
        throw new Error('not used');
      },
      log: silentLogger,
    });

  async function settled(t: GatewayTunnel) {
    for (let i = 0; i < 200 && t.readiness().state === 'starting'; i++)
      await new Promise((r) => setTimeout(r, 10));
    return t.readiness();
  }

  it('an unreadable mesh CA: not ready, naming the file and the cause', async () => {
    const t = tunnelWith(join(dir, 'missing.crt'), ['203.0.113.7:20006']);
    const r = await settled(t);
    await t.close();
    expect(r.state).toBe('config');
    expect(r.ready).toBe(false);
    expect(r.detail).toMatch(
      /^tunnel cannot start \(this node's configuration, since .+\): EDGEMESH_ERR_CONFIG: cannot read the mesh CA certificate .*missing\.crt: ENOENT/,
    );
  });

  it('a mesh CA that is not a certificate: not ready', async () => {
    const t = tunnelWith(join(dir, 'garbage.crt'), ['203.0.113.7:20006']);
    const r = await settled(t);
    await t.close();
    expect(r.ready).toBe(false);
    expect(r.detail).toContain(
      `the mesh CA certificate ${join(dir, 'garbage.crt')} is not a PEM certificate`,
    );
  });

  it('the placeholder tunnel-servers setting: not ready, saying what to set', async () => {
    const t = tunnelWith(join(dir, 'ca.crt'), ['tunnel.edgemesh.example:20006']);
    const r = await settled(t);
    await t.close();
    expect(r.state).toBe('config');
    expect(r.detail).toContain(
      'the tunnel-servers setting holds tunnel.edgemesh.example:20006, a name that never resolves',
    );
  });
});
