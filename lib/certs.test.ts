import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { caKeyProblem, createCa } from './certs.ts';

const ecKey = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  .privateKey.export({ type: 'pkcs8', format: 'pem' })
  .toString();
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

describe('the mesh CA key', () => {
  it('RSA, PKCS#1 or PKCS#8, is accepted', () => {
    expect(caKeyProblem(rsa.export({ type: 'pkcs1', format: 'pem' }).toString())).toBeUndefined();
    expect(caKeyProblem(rsa.export({ type: 'pkcs8', format: 'pem' }).toString())).toBeUndefined();
    expect(caKeyProblem(createCa('test').keyPem)).toBeUndefined();
  });

  it('EC P-256 is refused saying RSA is required and how to get one', () => {
    expect(caKeyProblem(ecKey)).toMatch(
      /^is an EC prime256v1 key, but the mesh CA must be RSA .*node-forge.*edgemesh webhook-tls.*openssl genrsa/,
    );
  });

  it('something that is not a key says so', () => {
    expect(caKeyProblem('hello')).toMatch(/^not a readable PEM private key/);
  });
});

// The flag and file named at start, by the two commands that sign with the mesh CA key.
describe('signer and tunnel-server --ca-key with an EC key', () => {
  const bin = new URL('../bin/edgemesh', import.meta.url).pathname;
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^EDGEMESH_/.test(k)));
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'edgemesh-certs-'));
    writeFileSync(join(dir, 'ca.crt'), createCa('test').certPem);
    writeFileSync(join(dir, 'ec.key'), ecKey);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  for (const args of [['signer'], ['tunnel-server', '--signer=local', '--listen=127.0.0.1:0']]) {
    it(`${args[0]} exits 2 naming --ca-key and the file`, () => {
      const r = spawnSync(
        bin,
        [...args, `--ca-cert=${join(dir, 'ca.crt')}`, `--ca-key=${join(dir, 'ec.key')}`],
        { encoding: 'utf8', env, timeout: 30_000 },
      );
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toContain(
        `--ca-key ${join(dir, 'ec.key')}: is an EC prime256v1 key, but the mesh CA must be RSA`,
      );
      expect(r.stderr).not.toContain('ASN.1');
    });
  }
});
