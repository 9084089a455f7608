import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StaticTokenVerifier } from './enrol.ts';

const dir = mkdtempSync(join(tmpdir(), 'enrol-'));
const file = (name: string, body: string) => {
  const p = join(dir, name);
  writeFileSync(p, body);
  return p;
};
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

describe('static bootstrap-token enrolment', () => {
  const v = StaticTokenVerifier.fromFile(file('ok.json', JSON.stringify({ 'node-a': sha('secret-a') })));

  it('accepts the node its token belongs to and nothing else', async () => {
    await expect(v.verify({ node: 'node-a', token: 'secret-a' })).resolves.toBeUndefined();
    await expect(v.verify({ node: 'node-a', token: 'secret-b' })).rejects.toThrow(
      /bad bootstrap token for node node-a/,
    );
    // A valid token does not enrol another node.
    await expect(v.verify({ node: 'node-b', token: 'secret-a' })).rejects.toThrow(
      /bad bootstrap token for node node-b/,
    );
  });

  it('refuses malformed token files with errors naming the flag', () => {
    expect(() => StaticTokenVerifier.fromFile(join(dir, 'missing.json'))).toThrow(
      /--enrol-tokens: cannot read/,
    );
    expect(() => StaticTokenVerifier.fromFile(file('arr.json', '[]'))).toThrow(/must be a JSON object/);
    expect(() => StaticTokenVerifier.fromFile(file('hash.json', '{"node-a":"xyz"}'))).toThrow(
      /sha256 hex digest/,
    );
    expect(() => StaticTokenVerifier.fromFile(file('name.json', `{"Bad_Name":"${sha('x')}"}`))).toThrow(
      /not a valid node name/,
    );
  });
});
