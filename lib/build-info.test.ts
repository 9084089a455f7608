import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseBuildInfo, readBuildInfo, shortCommit } from './build-info.ts';
import { buildInfoMetric, Registry } from './metrics.ts';

const COMMIT = '0123456789abcdef0123456789abcdef01234567';
const dir = mkdtempSync(join(tmpdir(), 'build-info-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A tree like the image's /app (with build-info.json) or a checkout (package.json only). */
function tree(files: Record<string, string>): URL {
  const root = mkdtempSync(join(dir, 'root-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(root, name), text);
  return pathToFileURL(`${root}/`);
}

describe('build info', () => {
  it('reads the image build-info.json', () => {
    const root = tree({
      'build-info.json': JSON.stringify({ version: '0.2.0', commit: COMMIT, dirty: true }),
      'package.json': '{"type":"module"}',
    });
    expect(readBuildInfo(root)).toEqual({
      version: '0.2.0',
      commit: COMMIT,
      dirty: true,
      source: 'image',
      nodeVersion: process.version,
    });
  });

  it('says unknown for the commit of a checkout, with its package.json version', () => {
    const info = readBuildInfo(tree({ 'package.json': '{"version":"0.1.0"}' }));
    expect(info).toMatchObject({ version: '0.1.0', commit: 'unknown', source: 'checkout' });
    expect(info.problem).toBeUndefined();
  });

  it('never throws on a broken file, and names the problem', () => {
    const info = readBuildInfo(tree({ 'build-info.json': '{"version":"x","commit":"y"}' }));
    expect(info).toMatchObject({ version: 'unknown', commit: 'unknown', source: 'image' });
    expect(info.problem).toMatch(/build-info\.json: version "x" is not a semantic version$/);
  });

  it('validates every field', () => {
    expect(() => parseBuildInfo('[]', 'f')).toThrow('f: not an object');
    expect(() => parseBuildInfo('{', 'f')).toThrow(/^f: not JSON/);
    expect(() => parseBuildInfo('{"version":"1.2.3","commit":"abc"}', 'f')).toThrow(
      'f: commit "abc" is neither 40 hex digits nor "unknown"',
    );
    expect(() => parseBuildInfo(`{"version":"1.2.3","commit":"${COMMIT}","dirty":"no"}`, 'f')).toThrow(
      'f: dirty must be true or false',
    );
    expect(parseBuildInfo('{"version":"1.2.3-rc.1","commit":"unknown"}', 'f')).toEqual({
      version: '1.2.3-rc.1',
      commit: 'unknown',
      dirty: false,
    });
  });

  it('shortens the commit as people read it', () => {
    expect(shortCommit({ commit: COMMIT, dirty: false })).toBe('0123456789ab');
    expect(shortCommit({ commit: COMMIT, dirty: true })).toBe('0123456789ab-dirty');
    expect(shortCommit({ commit: 'unknown', dirty: false })).toBe('unknown');
  });

  it('is the edgemesh_build_info metric, with the component label', async () => {
    const registry = new Registry();
    registry.setDefaultLabels({ component: 'gateway' });
    buildInfoMetric(registry, {
      version: '0.2.0',
      commit: COMMIT,
      dirty: true,
      source: 'image',
      nodeVersion: 'v24.21.0',
    });
    expect(await registry.metrics()).toContain(
      `edgemesh_build_info{version="0.2.0",commit="${COMMIT}-dirty",node_version="v24.21.0",component="gateway"} 1`,
    );
  });
});
