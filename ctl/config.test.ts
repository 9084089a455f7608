import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  changeLine,
  daemonSetRollout,
  daemonSetsReading,
  formatSettings,
  parseWait,
  restartPatch,
} from './config.ts';
import { validateSetting } from './settings.ts';

// `edgemesh config get|set` (issue 17 item 4: the tunnel-servers setting applied without a
// manual DaemonSet restart): values judged by the gateway's own code, the rollout judged as
// kubectl does, and the command against a stand-in API server that records what it was sent.

describe('validateSetting: what a gateway would refuse is refused first', () => {
  it('tunnel-servers: HOST:PORT entries, stored comma separated; placeholders refused or warned', () => {
    expect(validateSetting('tunnel-servers', ' 198.51.100.7:20006  [2001:db8::1]:20006 ', 'x')).toEqual({
      value: '198.51.100.7:20006,[2001:db8::1]:20006',
      warnings: [],
    });
    expect(() => validateSetting('tunnel-servers', '198.51.100.7', 'tunnel-servers')).toThrow(
      'tunnel-servers: "198.51.100.7" is not HOST:PORT',
    );
    expect(() =>
      validateSetting('tunnel-servers', 'tunnel.edgemesh.example:20006', 'tunnel-servers'),
    ).toThrow(/tunnel-servers: tunnel.edgemesh.example:20006 is a placeholder that never resolves/);
    expect(
      validateSetting('tunnel-servers', '198.51.100.7:20006,ts.test:1', '--tunnel-servers').warnings,
    ).toEqual(['--tunnel-servers: ts.test:1 is a placeholder; gateways leave it out']);
  });

  it('kubernetes-service-host/-port: the gateway settings parser, naming the flag', () => {
    expect(validateSetting('kubernetes-service-port', '6443', 'p').value).toBe('6443');
    expect(() => validateSetting('kubernetes-service-port', '70000', '--api-server-port')).toThrow(
      '--api-server-port: kubernetes-service-port "70000" is not 1..65535',
    );
    expect(() => validateSetting('kubernetes-service-host', 'a b', '--api-server-host')).toThrow(
      /--api-server-host: kubernetes-service-host "a b" is not a host/,
    );
    expect(() => validateSetting('kubernetes-service-host', '  ', 'kubernetes-service-host')).toThrow(
      /kubernetes-service-host: empty/,
    );
  });
});

describe('the rollout, as kubectl rollout status judges it', () => {
  const ds = (generation: number, status: Record<string, number>) => ({
    metadata: { generation },
    spec: { updateStrategy: { type: 'RollingUpdate' } },
    status,
  });
  it('waits for the controller, then every pod updated, then available', () => {
    expect(daemonSetRollout(ds(3, { observedGeneration: 2 }), 'g')).toEqual({
      done: false,
      message: 'daemonset/g: waiting for the controller to see the change',
    });
    expect(
      daemonSetRollout(
        ds(3, { observedGeneration: 3, desiredNumberScheduled: 3, updatedNumberScheduled: 1 }),
        'g',
      ),
    ).toEqual({ done: false, message: 'daemonset/g: 1 of 3 pods updated' });
    expect(
      daemonSetRollout(
        ds(3, {
          observedGeneration: 3,
          desiredNumberScheduled: 3,
          updatedNumberScheduled: 3,
          numberAvailable: 2,
        }),
        'g',
      ),
    ).toEqual({ done: false, message: 'daemonset/g: 2 of 3 updated pods available' });
    expect(
      daemonSetRollout(
        ds(3, {
          observedGeneration: 3,
          desiredNumberScheduled: 3,
          updatedNumberScheduled: 3,
          numberAvailable: 3,
        }),
        'g',
      ).done,
    ).toBe(true);
  });

  it('restarts what reads the key, with the annotation kubectl uses', () => {
    expect(daemonSetsReading('tunnel-servers')).toEqual(['edgemesh-gateway', 'edgemesh-gateway-edge']);
    expect(daemonSetsReading('kubernetes-service-host')).toEqual(['edgemesh-gateway']);
    expect(restartPatch(new Date(Date.UTC(2026, 11, 6)))).toEqual({
      spec: {
        template: {
          metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': '2026-12-06T00:00:00.000Z' } },
        },
      },
    });
  });

  it('--wait takes 90, 90s, 2m and 0; nothing else', () => {
    expect([parseWait('90'), parseWait('90s'), parseWait('2m'), parseWait('0')]).toEqual([90, 90, 120, 0]);
    expect(() => parseWait('2h')).toThrow('--wait: "2h" is not a duration');
    expect(() => parseWait('61m')).toThrow('--wait: 61m is longer than 60m');
  });

  it('says what changed', () => {
    expect(changeLine('ns', 'tunnel-servers', 'tunnel.edgemesh.example:20006', '198.51.100.7:20006')).toBe(
      'ConfigMap ns/edgemesh-config tunnel-servers: tunnel.edgemesh.example:20006 -> 198.51.100.7:20006',
    );
    expect(changeLine('ns', 'kubernetes-service-port', undefined, '6443')).toBe(
      'ConfigMap ns/edgemesh-config kubernetes-service-port: (not set) -> 6443',
    );
    expect(formatSettings({ 'tunnel-servers': '198.51.100.7:20006' }, 'ns')).toBe(
      [
        '# ConfigMap ns/edgemesh-config',
        'tunnel-servers           198.51.100.7:20006',
        'kubernetes-service-host  (not set: gateways use the in-cluster address the kubelet gives)',
        'kubernetes-service-port  (not set)',
        '',
      ].join('\n'),
    );
  });
});

describe('edgemesh config against a stand-in API server', () => {
  let dir: string;
  let api: Server;
  let kubeconfig: string;
  /** What the stand-in holds and was sent. */
  const state = {
    data: { 'tunnel-servers': 'tunnel.edgemesh.example:20006', 'webhook.yaml': 'port: 9443\n' } as Record<
      string,
      string
    >,
    generation: 1,
    gets: 0,
    requests: [] as string[],
    patches: [] as { path: string; type: string; body: unknown }[],
  };
  const CM = '/api/v1/namespaces/edgemesh-system/configmaps/edgemesh-config';
  const DS = '/apis/apps/v1/namespaces/edgemesh-system/daemonsets/edgemesh-gateway';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edgemesh-config-'));
    api = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        const path = (req.url ?? '').split('?')[0];
        state.requests.push(`${req.method} ${path}`);
        const json = (code: number, v: unknown) => {
          res.writeHead(code, { 'content-type': 'application/json' });
          res.end(JSON.stringify(v));
        };
        if (req.method === 'PATCH') {
          state.patches.push({ path, type: String(req.headers['content-type']), body: JSON.parse(body) });
          if (path === CM) {
            Object.assign(state.data, (JSON.parse(body) as { data: Record<string, string> }).data);
            return json(200, { data: state.data });
          }
          if (path === DS) {
            state.generation++;
            return json(200, {});
          }
        }
        if (req.method === 'GET' && path === CM) return json(200, { data: state.data });
        if (req.method === 'GET' && path === DS) {
          // Rolled out on the second look: the command must poll, not take the first answer.
          const n = ++state.gets;
          return json(200, {
            metadata: { generation: state.generation },
            spec: { updateStrategy: { type: 'RollingUpdate' } },
            status: {
              observedGeneration: state.generation,
              desiredNumberScheduled: 2,
              updatedNumberScheduled: n >= 2 ? 2 : 1,
              numberAvailable: n >= 2 ? 2 : 1,
            },
          });
        }
        json(404, { kind: 'Status', message: `${path} not found`, reason: 'NotFound', code: 404 });
      });
    });
    await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
    const server = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
    kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        // client-node refuses plain HTTP unless TLS verification is "skipped".
        clusters: [{ name: 'c', cluster: { server, 'insecure-skip-tls-verify': true } }],
        users: [{ name: 'u', user: { token: 't' } }],
        contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
        'current-context': 'ctx',
      }),
    );
  });
  afterAll(() => {
    api?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const bin = new URL('../bin/edgemesh', import.meta.url).pathname;
  const run = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(bin, ['config', ...args, '--kubeconfig', kubeconfig], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, KUBERNETES_SERVICE_HOST: '' },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });

  it('set patches the ConfigMap, restarts the gateways, waits for the rollout; get reads it back', async () => {
    const r = await run(['set', 'tunnel-servers', '198.51.100.7:20006', '--wait', '30s']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(
      [
        'ConfigMap edgemesh-system/edgemesh-config tunnel-servers: tunnel.edgemesh.example:20006 -> 198.51.100.7:20006',
        'restarted daemonset/edgemesh-gateway (gateways read tunnel-servers at start)',
        'waiting up to 30s for the rollout',
        '  daemonset/edgemesh-gateway: 1 of 2 pods updated',
        '  daemonset/edgemesh-gateway: 2 of 2 pods updated and available',
        'rolled out: every gateway runs with the new setting (edgemesh check tells whether they reach the tunnel-servers)',
        '',
      ].join('\n'),
    );
    expect(state.patches.map((p) => `${p.path} ${p.type}`)).toEqual([
      `${CM} application/merge-patch+json`,
      `${DS} application/merge-patch+json`,
      '/apis/apps/v1/namespaces/edgemesh-system/daemonsets/edgemesh-gateway-edge application/merge-patch+json',
    ]);
    expect(state.patches[0].body).toEqual({ data: { 'tunnel-servers': '198.51.100.7:20006' } });
    expect(state.data['webhook.yaml']).toBe('port: 9443\n');

    const get = await run(['get', 'tunnel-servers']);
    expect(get).toMatchObject({ code: 0, stdout: '198.51.100.7:20006\n' });
    // The same value again: nothing patched, nothing restarted.
    const before = state.patches.length;
    const again = await run(['set', 'tunnel-servers', '198.51.100.7:20006']);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('is already 198.51.100.7:20006: unchanged');
    expect(state.patches.length).toBe(before);
  }, 90_000);

  it('refuses a value the gateway would refuse before touching the cluster', async () => {
    const before = state.requests.length;
    const r = await run(['set', 'tunnel-servers', 'tunnel.edgemesh.example:20006']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('tunnel-servers: tunnel.edgemesh.example:20006 is a placeholder');
    const k = await run(['set', 'tunnels', 'x']);
    expect(k.code).toBe(2);
    expect(k.stderr).toContain(
      'KEY "tunnels": not a setting (tunnel-servers, kubernetes-service-host, kubernetes-service-port)',
    );
    expect(state.requests.length).toBe(before);
  }, 60_000);
});
