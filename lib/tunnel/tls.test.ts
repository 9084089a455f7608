import { duplexPair } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../errors.ts';
import { createCA, createCsr, generateKeyPem, identityOfCert, issueIdentity, signCsr } from './identity.ts';
import { acceptTls, connectTls } from './tls.ts';

const ca = createCA();
const nodeA = issueIdentity(ca, { kind: 'node', name: 'node-a' });
const nodeB = issueIdentity(ca, { kind: 'node', name: 'node-b' });
const nodeC = issueIdentity(ca, { kind: 'node', name: 'node-c' });
// Same node name, but from a CA the mesh never trusted.
const forger = createCA('edgemesh mesh CA');
const forgedB = { ...issueIdentity(forger, { kind: 'node', name: 'node-b' }), caPem: ca.certPem };

function handshake(
  client: typeof nodeA,
  clientExpects: string,
  server: typeof nodeA,
  serverExpects?: string,
) {
  const [a, b] = duplexPair();
  const c = connectTls({
    identity: client,
    expect: { kind: 'node', name: clientExpects },
    socket: a,
    timeoutMs: 1500,
  });
  const s = acceptTls({
    identity: server,
    expect: { kind: 'node', ...(serverExpects ? { name: serverExpects } : {}) },
    socket: b,
    timeoutMs: 1500,
  });
  return Promise.allSettled([c, s]);
}

describe('per-node identity over TLS 1.3', () => {
  it('CA-signed node certificates authenticate both ways and name their node', async () => {
    const [c, s] = await handshake(nodeA, 'node-b', nodeB, 'node-a');
    expect(c.status).toBe('fulfilled');
    expect(s.status).toBe('fulfilled');
    if (c.status === 'fulfilled' && s.status === 'fulfilled') {
      expect(c.value.peer).toEqual({ kind: 'node', name: 'node-b' });
      expect(s.value.peer).toEqual({ kind: 'node', name: 'node-a' });
      expect(c.value.socket.getProtocol()).toBe('TLSv1.3');
      // AES-128-GCM (AES-NI), not AES-256 or ChaCha20: the cheapest per byte here.
      expect(c.value.socket.getCipher().name).toBe('TLS_AES_128_GCM_SHA256');
      expect(s.value.socket.getCipher().name).toBe('TLS_AES_128_GCM_SHA256');
      c.value.socket.destroy();
      s.value.socket.destroy();
    }
  });

  it('a forged certificate (right name, foreign CA) fails the handshake', async () => {
    const [c, s] = await handshake(nodeA, 'node-b', forgedB);
    expect(c.status).toBe('rejected');
    expect(s.status).toBe('rejected');
  });

  it('a forged client certificate is refused by the accepting side', async () => {
    const [, s] = await handshake(forgedB, 'node-a', nodeA);
    expect(s.status).toBe('rejected');
    if (s.status === 'rejected') expect(String(s.reason.message)).toMatch(/not signed by the mesh CA/);
  });

  it('a valid certificate for another node is refused by identity', async () => {
    // node-c holds a genuine mesh certificate but answers where node-b was expected.
    const [c] = await handshake(nodeA, 'node-b', nodeC);
    expect(c.status).toBe('rejected');
    if (c.status === 'rejected') {
      expect(c.reason.code).toBe(ErrorCodes.TUNNEL_AUTH);
      expect(c.reason.message).toMatch(/peer is node\/node-c, expected node\/node-b/);
    }
  });

  it('a tunnel-server certificate cannot pose as a node', async () => {
    const server = issueIdentity(ca, { kind: 'tunnel-server', name: 'node-b' });
    const [c] = await handshake(nodeA, 'node-b', server);
    expect(c.status).toBe('rejected');
  });

  it('signing names only the verified identity, never what the CSR asked for', () => {
    const key = generateKeyPem();
    const csr = createCsr(key, { kind: 'node', name: 'node-x' });
    const cert = signCsr(ca, csr, { kind: 'node', name: 'node-y' });
    expect(identityOfCert(cert)).toEqual({ kind: 'node', name: 'node-y' });
    expect(() => signCsr(ca, 'garbage', { kind: 'node', name: 'node-y' })).toThrow(/not a valid PEM/);
    expect(() => signCsr(ca, csr, { kind: 'node', name: 'Not_A_Name' })).toThrow(/not a valid node name/);
  });
});
