import { describe, expect, it } from 'vitest';
import { createCA, issueIdentity } from '../../lib/tunnel/identity.ts';
import { certificateProblem } from './enrol.ts';

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
