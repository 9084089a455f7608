import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { ENTRYPOINT } from '../../scripts/images/edgemesh.ts';
import { GATEWAY_NODE_FLAGS } from './node-flags.ts';

describe('gateway node flags', () => {
  it('the DaemonSet runs the gateway with them, through the image entrypoint', () => {
    const docs = YAML.parseAllDocuments(
      readFileSync(new URL('../../manifests/base/gateway.yaml', import.meta.url), 'utf8'),
    ).map((d) => d.toJS());
    const ds = docs.find((d) => d?.kind === 'DaemonSet');
    const container = ds.spec.template.spec.containers.find((c: { name: string }) => c.name === 'gateway');
    const [node, main] = ENTRYPOINT;
    expect(container.command).toEqual([node, ...GATEWAY_NODE_FLAGS, main]);
    expect(readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8')).toContain(
      `ENTRYPOINT [${ENTRYPOINT.map((a) => JSON.stringify(a)).join(', ')}]`,
    );
    expect(container.args[0]).toBe('gateway');
  });

  it('node accepts them', () => {
    const r = spawnSync(process.execPath, [...GATEWAY_NODE_FLAGS, '-e', ''], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
