import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiFromKubeconfigFile, apiInCluster } from './kubeconfig.ts';

const dir = mkdtempSync(join(tmpdir(), 'emk-'));
let server: http.Server;
let url = '';
const seen: (string | undefined)[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    seen.push(req.headers.authorization);
    res.setHeader('content-type', 'application/json');
    res.end('{"kind":"Status"}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

function kubeconfig(name: string, user: string): string {
  const path = join(dir, name);
  writeFileSync(
    path,
    [
      'apiVersion: v1',
      'kind: Config',
      'current-context: c',
      'contexts: [{name: c, context: {cluster: k, user: u}}]',
      `clusters: [{name: k, cluster: {server: "${url}"}}]`,
      `users: [{name: u, user: ${user}}]`,
    ].join('\n'),
  );
  return path;
}

describe('apiFromKubeconfigFile', () => {
  it('sends the user token to the current cluster', async () => {
    const api = await apiFromKubeconfigFile(kubeconfig('token.yaml', '{token: abc}'));
    await api.getJSON('/api');
    expect(api.server).toBe(url);
    expect(seen.at(-1)).toBe('Bearer abc');
    api.close();
  });

  it('re-reads a tokenFile (relative to the kubeconfig) at every request', async () => {
    writeFileSync(join(dir, 'tok'), 'one\n');
    const api = await apiFromKubeconfigFile(kubeconfig('file.yaml', '{tokenFile: tok}'));
    await api.getJSON('/api');
    writeFileSync(join(dir, 'tok'), 'two\n');
    await api.getJSON('/api');
    expect(seen.slice(-2)).toEqual(['Bearer one', 'Bearer two']);
    api.close();
  });

  it('names the file and what is missing', async () => {
    const path = join(dir, 'bad.yaml');
    writeFileSync(path, 'current-context: nope\ncontexts: []\n');
    await expect(apiFromKubeconfigFile(path)).rejects.toThrow(`kubeconfig ${path}: no context named "nope"`);
    const missing = kubeconfig('cert.yaml', '{client-certificate: /nonexistent/cert.pem}');
    await expect(apiFromKubeconfigFile(missing)).rejects.toThrow(
      /client-certificate \/nonexistent\/cert.pem: ENOENT/,
    );
  });
});

describe('apiInCluster', () => {
  it('reads the service account of the pod', async () => {
    writeFileSync(join(dir, 'ca.crt'), 'not used over http');
    writeFileSync(join(dir, 'token'), 'sa-token');
    const api = apiInCluster({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' }, dir);
    expect(api.server).toBe('https://[fd00::1]:6443');
    api.close();
    expect(() => apiInCluster({}, dir)).toThrow(/KUBERNETES_SERVICE_HOST is unset/);
  });
});
