import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiErrorText, connectionCause } from './bootstrap.ts';
import { createCa, createServingCert } from './certs.ts';

// `edgemesh webhook-tls` as an operator meets its failures: every error names the API server,
// where its address came from, and the cause (not "fetch failed").
const bin = new URL('../../bin/edgemesh', import.meta.url).pathname;
const env = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^EDGEMESH_|^KUBERNETES_SERVICE_|^KUBECONFIG$/.test(k)),
);
let dir: string;
let api: Server;
let apiUrl: string;
/** What the stand-in API server answers: a Status with this code. */
let answer = { code: 401, message: 'Unauthorized' };

function kubeconfig(name: string, server: string): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'u', user: { token: 'stale' } }],
      contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'ctx',
    }),
  );
  return file;
}

/** Runs webhook-tls to its end; its exit code and stderr. */
function webhookTls(args: string[], home = dir): Promise<{ code: number | null; stderr: string }> {
  // HOME: no ~/.kube/config of the machine running the tests.
  const child = spawn(bin, ['webhook-tls', ...args], {
    env: { ...env, HOME: home },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    }),
  );
}

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgemesh-webhook-tls-'));
  const tls = createServingCert(createCa(new Date()), ['localhost'], new Date(), ['127.0.0.1']);
  api = createHttpsServer({ cert: tls.certPem, key: tls.keyPem }, (req, res) => {
    req.resume();
    res.writeHead(answer.code, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({ kind: 'Status', status: 'Failure', code: answer.code, message: answer.message }),
    );
  });
  await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
  apiUrl = `https://127.0.0.1:${(api.address() as { port: number }).port}`;
});
afterAll(async () => {
  await new Promise((r) => api.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('edgemesh webhook-tls: errors name the server and the cause', () => {
  it('an API server that refuses connections', async () => {
    const url = `https://127.0.0.1:${await closedPort()}`;
    const file = kubeconfig('refused.json', url);
    const { code, stderr } = await webhookTls([`--kubeconfig=${file}`]);
    expect(code).not.toBe(0);
    expect(stderr).toContain('connection refused (ECONNREFUSED)');
    expect(stderr).toContain(`API server ${url} from --kubeconfig ${file}, context ctx`);
    expect(stderr).not.toContain('fetch failed');
  });

  it('401 and 403 with the API message', async () => {
    const file = kubeconfig('api.json', apiUrl);
    answer = { code: 401, message: 'Unauthorized' };
    const refused = await webhookTls([`--kubeconfig=${file}`]);
    expect(refused.stderr).toContain('HTTP 401: the API server refused the credentials');
    expect(refused.stderr).toContain(`API server ${apiUrl}`);
    answer = {
      code: 403,
      message: 'secrets "edgemesh-webhook-tls" is forbidden: User "dev" cannot get resource "secrets"',
    };
    const forbidden = await webhookTls([`--kubeconfig=${file}`]);
    expect(forbidden.stderr).toContain(
      'HTTP 403: forbidden: secrets "edgemesh-webhook-tls" is forbidden: User "dev" cannot get',
    );
    expect(forbidden.stderr).toContain(`API server ${apiUrl}`);
  });

  it('no kubeconfig, an unreadable one, an unknown context: config errors (exit 2)', async () => {
    const none = await webhookTls([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('no kubeconfig: --kubeconfig not given, KUBECONFIG unset');
    const missing = await webhookTls([`--kubeconfig=${join(dir, 'nope.yaml')}`]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(
      `cannot load the kubeconfig from --kubeconfig ${join(dir, 'nope.yaml')}`,
    );
    const file = kubeconfig('ctx.json', apiUrl);
    const context = await webhookTls([`--kubeconfig=${file}`, '--context=prod']);
    expect(context.code).toBe(2);
    expect(context.stderr).toContain('--context: "prod" is not in the kubeconfig');
  });
});

describe('webhook-tls: the cause, as text', () => {
  it('names DNS and the API refusals', () => {
    const dns = Object.assign(new Error('getaddrinfo ENOTFOUND api.example'), { code: 'ENOTFOUND' });
    expect(connectionCause(new TypeError('fetch failed', { cause: dns }))).toBe(
      'cannot connect: host name not resolved (ENOTFOUND)',
    );
    expect(apiErrorText(401, '{"message":"Unauthorized"}')).toMatch(/^HTTP 401: the API server refused/);
    expect(apiErrorText(404, { message: 'namespaces "edgemesh-system" not found' })).toContain(
      'apply the manifests first',
    );
    expect(apiErrorText(500, 'not json')).toBe('HTTP 500: not json');
  });
});
