import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseSettings, readSettingsDir } from './settings.ts';

describe('gateway settings from the ConfigMap volume', () => {
  it('reads the keys present, splitting the tunnel-server list', () => {
    expect(
      parseSettings({
        'tunnel-servers': ' 198.51.100.200:20006, tunnel.example:20006\n',
        'kubernetes-service-host': '198.51.100.11\n',
        'kubernetes-service-port': '6443',
      }),
    ).toEqual({
      tunnelServers: ['198.51.100.200:20006', 'tunnel.example:20006'],
      kubernetesServiceHost: '198.51.100.11',
      kubernetesServicePort: '6443',
    });
    expect(parseSettings({})).toEqual({});
    expect(parseSettings({ 'tunnel-servers': '  \n' })).toEqual({});
  });

  it('refuses values that are not a host or a port, naming the key', () => {
    expect(() => parseSettings({ 'kubernetes-service-host': 'a b' })).toThrow(/kubernetes-service-host/);
    expect(() => parseSettings({ 'kubernetes-service-port': '70000' })).toThrow(/kubernetes-service-port/);
  });

  it('takes a mounted directory: missing files are absent keys, an unreadable one is named', () => {
    const dir = mkdtempSync(join(tmpdir(), 'settings-'));
    try {
      writeFileSync(join(dir, 'tunnel-servers'), '198.51.100.200:20006');
      writeFileSync(join(dir, 'webhook.yaml'), 'port: 9443'); // other keys of the ConfigMap: ignored
      expect(readSettingsDir(dir)).toEqual({ tunnelServers: ['198.51.100.200:20006'] });
      rmSync(join(dir, 'tunnel-servers'));
      writeFileSync(join(dir, 'kubernetes-service-port'), 'x'.repeat(70_000));
      expect(() => readSettingsDir(dir)).toThrow(/kubernetes-service-port.*larger than/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
