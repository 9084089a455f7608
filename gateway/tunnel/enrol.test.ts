import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import { silentLogger } from '../../lib/log.ts';
import { createCA, generateKeyPem, issueIdentity } from '../../lib/tunnel/identity.ts';
import { certificateProblem, renewIdentity } from './enrol.ts';

const DAY = 86_400_000;
const ca = createCA();
const other = createCA();

describe('node certificate kept at start, or enrolled again', () => {
  const { certPem } = issueIdentity(ca, { kind: 'node', name: 'node-a' });
  const now = Date.now();

  it('keeps a fresh certificate for this node from the mesh CA', () => {
    expect(certificateProblem(certPem, 'node-a', ca.certPem, now)).toBeUndefined();
  });

  it('says why it does not keep one', () => {
    expect(certificateProblem(certPem, 'node-b', ca.certPem, now)).toBe('names node/node-a, not node/node-b');
    expect(certificateProblem(certPem, 'node-a', other.certPem, now)).toBe('is not signed by the mesh CA');
    expect(certificateProblem(certPem, 'node-a', ca.certPem, now + 61 * DAY)).toMatch(
      /^is due for renewal \(two thirds of its life passed; expires /,
    );
    expect(certificateProblem(certPem, 'node-a', ca.certPem, now + 91 * DAY)).toMatch(/^is expired at /);
    expect(certificateProblem('garbage', 'node-a', ca.certPem, now)).toMatch(/^is not a PEM certificate/);
    const server = issueIdentity(ca, { kind: 'tunnel-server', name: 'node-a' });
    expect(certificateProblem(server.certPem, 'node-a', ca.certPem, now)).toBe(
      'names tunnel-server/node-a, not node/node-a',
    );
  });
});

describe('renewal errors name the file and the cause', () => {
  const dir = mkdtempSync(join(tmpdir(), 'enrol-'));
  const opts = {
    nodeName: 'node-a',
    stateDir: dir,
    caPem: ca.certPem,
    // Never dialled: each case fails before a connection is made.
    servers: [{ host: '192.0.2.1', port: 20007 }],
    token: async () => 'token',
    log: silentLogger,
  };

  it('a missing key file', async () => {
    await expect(renewIdentity(opts)).rejects.toThrow(
      `cannot read the node key ${join(dir, 'tunnel.key')}: ENOENT`,
    );
  });

  it('an unreadable token file stops at once (no tunnel-server is tried)', async () => {
    writeFileSync(join(dir, 'tunnel.key'), generateKeyPem());
    const token = async (): Promise<string> => {
      throw new EdgemeshError(ErrorCodes.CONFIG, 'cannot read the enrolment token /run/token: EACCES');
    };
    await expect(renewIdentity({ ...opts, token })).rejects.toThrow(
      'cannot read the enrolment token /run/token: EACCES',
    );
    rmSync(dir, { recursive: true, force: true });
  });
});
