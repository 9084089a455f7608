import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type CommandSpec, parseCommand } from './cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'edgemesh-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const spec = {
  name: 'demo',
  summary: 'a command',
  sections: ['injection'],
  configMapKey: 'webhook.yaml',
  configIgnores: ['port'],
  options: {
    file: { type: 'list', short: 'f', default: [], description: 'files' },
    config: { type: 'string', description: 'config file' },
    level: { type: 'string', description: 'a setting' },
  },
} as const satisfies CommandSpec;

const configMap = (name: string, body: string) =>
  `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ${name}}\ndata:\n  webhook.yaml: |\n${body
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n')}\n`;

describe('parseCommand', () => {
  it('a list flag may be repeated and comma-separated', () => {
    expect(parseCommand(spec, ['-f', 'a.yaml', '--file=b.yaml,c.yaml'], {}).file).toEqual([
      'a.yaml',
      'b.yaml',
      'c.yaml',
    ]);
  });

  it('--config may be a ConfigMap manifest, alone or among others: its data key is read', () => {
    const file = join(dir, 'install.yaml');
    writeFileSync(
      file,
      `apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n${configMap('other', 'level: no')}---\n${configMap(
        'edgemesh-config',
        'port: 9443\nlevel: debug\ninjection: {logLevel: warn}',
      )}`,
    );
    const o = parseCommand(spec, [`--config=${file}`], {});
    expect(o.level).toBe('debug');
    expect(o.sections).toEqual({ injection: { logLevel: 'warn' } });
  });

  it('says which ConfigMap key it wanted, and refuses manifests for a command without one', () => {
    const file = join(dir, 'cm.yaml');
    writeFileSync(file, 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {other: x}\n');
    expect(() => parseCommand(spec, [`--config=${file}`], {})).toThrow(
      `--config: ${file} holds no ConfigMap with data key webhook.yaml`,
    );
    const { configMapKey: _k, ...bare } = spec;
    expect(() => parseCommand(bare, [`--config=${file}`], {})).toThrow(
      "holds Kubernetes manifests; 'edgemesh demo' reads a mapping of option names to values",
    );
    writeFileSync(join(dir, 'bad.yaml'), configMap('edgemesh-config', 'level: [unclosed'));
    expect(() => parseCommand(spec, [`--config=${join(dir, 'bad.yaml')}`], {})).toThrow(
      /ConfigMap edgemesh-config data.webhook.yaml is not valid YAML/,
    );
  });
});
