import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { RELEASE_IMAGE } from './config.ts';
import { createCa, createServingCert } from './tls/certs.ts';

// `edgemesh webhook` and `edgemesh inject` as run: which image they inject, what they say
// about it at start, and the error when the webhook has none.
const bin = new URL('../bin/edgemesh', import.meta.url).pathname;
// No pod identity or cluster from the machine running the tests.
const env = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^EDGEMESH_|^KUBERNETES_SERVICE_/.test(k)),
);
let dir: string;
let tls: string[];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'edgemesh-webhook-cli-'));
  const serving = createServingCert(createCa(new Date()), ['localhost'], new Date(), ['127.0.0.1']);
  writeFileSync(join(dir, 'tls.crt'), serving.certPem);
  writeFileSync(join(dir, 'tls.key'), serving.keyPem);
  tls = [`--tls-cert=${join(dir, 'tls.crt')}`, `--tls-key=${join(dir, 'tls.key')}`, '--host=127.0.0.1'];
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

/** Starts the webhook; resolves with its stderr once it listens or exits. */
async function startWebhook(args: string[], extraEnv: Record<string, string> = {}) {
  const child = spawn(bin, ['webhook', ...tls, `--port=${await freePort()}`, ...args], {
    env: { ...env, ...extraEnv },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  return new Promise<{ log: string; code: number | null }>((resolve) => {
    child.stderr.on('data', (d) => {
      log += d;
      if (log.includes('webhook listening')) {
        child.kill('SIGTERM');
        resolve({ log, code: null });
      }
    });
    child.on('exit', (code) => resolve({ log, code }));
  });
}

const injectedLine = (log: string) =>
  log
    .split('\n')
    .filter((l) => l.includes('injecting this image'))
    .map((l) => JSON.parse(l) as { image: string; from: string });

describe('edgemesh webhook: the injected image', () => {
  it('injection.image in the config file is used and logged at start', async () => {
    writeFileSync(join(dir, 'webhook.yaml'), 'injection:\n  image: registry.example/edgemesh:cfg\n');
    const { log } = await startWebhook([`--config=${join(dir, 'webhook.yaml')}`], {
      // Ignored: an explicit image needs no Pod.
      EDGEMESH_POD_NAME: 'edgemesh-webhook-abc',
      EDGEMESH_POD_NAMESPACE: 'edgemesh-system',
    });
    expect(injectedLine(log)).toEqual([
      expect.objectContaining({
        image: 'registry.example/edgemesh:cfg',
        from: `${join(dir, 'webhook.yaml')} injection.image`,
      }),
    ]);
  });

  it('--image (or EDGEMESH_IMAGE) wins over injection.image', async () => {
    writeFileSync(join(dir, 'webhook.yaml'), 'injection:\n  image: registry.example/edgemesh:cfg\n');
    const { log } = await startWebhook([`--config=${join(dir, 'webhook.yaml')}`], {
      EDGEMESH_IMAGE: 'registry.example/edgemesh:env',
    });
    expect(injectedLine(log)).toEqual([
      expect.objectContaining({ image: 'registry.example/edgemesh:env', from: '--image' }),
    ]);
  });

  it('with no image and no Pod to read it from, exits 2 naming injection.image and the cause', async () => {
    writeFileSync(join(dir, 'webhook.yaml'), 'injection:\n  logLevel: debug\n');
    const { log, code } = await startWebhook([`--config=${join(dir, 'webhook.yaml')}`]);
    expect(code).toBe(2);
    expect(log).toContain('EDGEMESH_ERR_CONFIG: no image to inject: injection.image is not set');
    expect(log).toContain('--pod-name and --pod-namespace');
    const outside = await startWebhook([], {
      EDGEMESH_POD_NAME: 'edgemesh-webhook-abc',
      EDGEMESH_POD_NAMESPACE: 'edgemesh-system',
    });
    expect(outside.code).toBe(2);
    expect(outside.log).toContain('KUBERNETES_SERVICE_HOST is not set');
  });

  it('a malformed injection.image fails before anything else, naming the key', async () => {
    writeFileSync(join(dir, 'webhook.yaml'), 'injection:\n  image:\n');
    const { log, code } = await startWebhook([
      `--config=${join(dir, 'webhook.yaml')}`,
      '--tls-cert=/nonexistent',
    ]);
    expect(code).toBe(2);
    expect(log).toContain('injection.image: must be a non-empty image reference');
  });
});

describe('edgemesh webhook: what it tells an operator', () => {
  it('a missing serving certificate names the flag, the file and the command that makes it', async () => {
    const { log, code } = await startWebhook(['--tls-cert=/nonexistent/tls.crt', '--image=nginx']);
    expect(code).toBe(2);
    expect(log).toContain('--tls-cert: cannot read /nonexistent/tls.crt');
    expect(log).toContain('run edgemesh webhook-tls');
    expect(log).not.toContain('scripts/');
  });

  it('webhook and inject help name the shipped ConfigMap', () => {
    for (const command of ['webhook', 'inject']) {
      const help = spawnSync(bin, [command, '--help'], { encoding: 'utf8', env });
      expect(help.stdout).toContain('ConfigMap edgemesh-config, key webhook.yaml');
      expect(help.stdout).not.toContain('edgemesh-injector');
    }
  });
});

describe('edgemesh inject: the injected image', () => {
  const pod =
    'kind: Pod\nmetadata: {name: p, namespace: default}\nspec: {containers: [{name: a, image: nginx}]}\n';
  const inject = (args: string[]) =>
    spawnSync(bin, ['inject', '-f', '-', ...args], { input: pod, encoding: 'utf8', env, timeout: 30_000 });

  it('keeps the release image as its default and says so; --image and injection.image still win', () => {
    const plain = inject([]);
    expect(plain.status, plain.stderr).toBe(0);
    expect(plain.stdout).toContain(`image: ${RELEASE_IMAGE}`);
    expect(plain.stderr).toContain(`edgemesh inject: image ${RELEASE_IMAGE} (the release default;`);
    writeFileSync(join(dir, 'inject.yaml'), 'injection:\n  image: registry.example/edgemesh:cfg\n');
    const cfg = inject([`--config=${join(dir, 'inject.yaml')}`]);
    expect(cfg.stdout).toContain('image: registry.example/edgemesh:cfg');
    expect(cfg.stdout).not.toContain(RELEASE_IMAGE);
    const flag = inject([`--config=${join(dir, 'inject.yaml')}`, '--image=registry.example/edgemesh:flag']);
    expect(flag.stdout).toContain('image: registry.example/edgemesh:flag');
    expect(flag.stderr).toContain('edgemesh inject: image registry.example/edgemesh:flag (--image)');
    const bad = inject(['--image=not an image']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--image: "not an image" is not an image reference');
  });
});

describe('edgemesh inject and uninject as users type them', () => {
  const run = (args: string[], input?: string) =>
    spawnSync(bin, args, { input, encoding: 'utf8', env, timeout: 30_000 });
  const docs = (text: string) =>
    YAML.parseAllDocuments(text)
      .map((d) => d.toJS())
      .filter((v) => v !== null);
  const pod = (name: string) =>
    `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}, namespace: demo}\nspec: {containers: [{name: a, image: nginx}]}\n`;
  const config = new URL('../manifests/base/config.yaml', import.meta.url).pathname;

  it('takes files, directories (*.yaml, *.yml, *.json below) and - together, and says what it did to each', () => {
    const tree = join(dir, 'tree');
    mkdirSync(join(tree, 'sub'), { recursive: true });
    writeFileSync(join(tree, 'a.yaml'), pod('a'));
    writeFileSync(join(tree, 'sub', 'b.yml'), pod('b'));
    writeFileSync(join(tree, 'sub', 'c.json'), JSON.stringify(YAML.parse(pod('c'))));
    writeFileSync(join(tree, 'notes.txt'), 'not a manifest');
    writeFileSync(join(dir, 'svc.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {name: s}\n');
    const r = run(['inject', tree, '-f', join(dir, 'svc.yaml'), '-'], pod('stdin'));
    expect(r.status, r.stderr).toBe(0);
    // -f paths first, then the arguments, each in order.
    expect(docs(r.stdout).map((d) => `${d.kind}/${d.metadata.name}`)).toEqual([
      'Service/s',
      'Pod/a',
      'Pod/b',
      'Pod/c',
      'Pod/stdin',
    ]);
    expect(r.stdout).not.toMatch(/[&*]a\d/);
    expect(r.stderr).toContain(`edgemesh inject: ${join(tree, 'sub', 'b.yml')}: Pod/b: injected`);
    expect(r.stderr).toContain(
      `edgemesh inject: ${join(dir, 'svc.yaml')}: Service/s: passed through unchanged`,
    );
    expect(r.stderr).toContain('edgemesh inject: -: Pod/stdin: injected');
    expect(r.stderr).not.toContain('notes.txt');
  });

  it('--config takes the shipped ConfigMap; partial overrides keep the other defaults', () => {
    const shipped = run(['inject', '--config', config, '-'], pod('p'));
    expect(shipped.status, shipped.stderr).toBe(0);
    // The ConfigMap's webhook.yaml also holds the webhook's port: not an error for inject.
    const tuned = readFileSync(config, 'utf8').replace(
      'limits: { memory: 128Mi }',
      'limits: { memory: 256Mi }',
    );
    writeFileSync(join(dir, 'config.yaml'), tuned);
    const fromConfigMap = docs(
      run(['inject', '--config', join(dir, 'config.yaml'), '-'], pod('p')).stdout,
    )[0];
    const proxy = fromConfigMap.spec.initContainers[1];
    expect(proxy.resources).toEqual({
      requests: { cpu: '10m', memory: '32Mi' },
      limits: { memory: '256Mi' },
    });
    writeFileSync(
      join(dir, 'partial.yaml'),
      'injection:\n  sidecarResources: {limits: {memory: 200Mi, cpu: null}}\n',
    );
    const partial = run(['inject', '--config', join(dir, 'partial.yaml'), '-'], pod('p'));
    expect(partial.status, partial.stderr).toBe(0);
    expect(docs(partial.stdout)[0].spec.initContainers[1].resources).toEqual({
      requests: { cpu: '10m', memory: '32Mi' },
      limits: { memory: '200Mi' },
    });
    writeFileSync(join(dir, 'typo.yaml'), 'injection:\n  sidecarResources: {limit: {memory: 200Mi}}\n');
    const typo = run(['inject', '--config', join(dir, 'typo.yaml'), '-'], pod('p'));
    expect(typo.status).toBe(2);
    expect(typo.stderr).toContain('sidecarResources: unknown key "limit"');
  });

  it('uninject gives back what inject was given', () => {
    const input = readFileSync(new URL('./testdata/manual/workloads.yaml', import.meta.url), 'utf8');
    const injected = run(['inject', '-q', '-'], input);
    expect(injected.status, injected.stderr).toBe(0);
    expect(injected.stderr).toBe('');
    const back = run(['uninject', '-'], injected.stdout);
    expect(back.status, back.stderr).toBe(0);
    expect(docs(back.stdout)).toEqual(docs(input));
    expect(back.stderr).toContain('edgemesh uninject: Deployment/nginx: uninjected');
  });

  it('names the path when it cannot read one, and wants at least one', () => {
    const missing = run(['inject', join(dir, 'nope.yaml')]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain(`cannot read ${join(dir, 'nope.yaml')}`);
    mkdirSync(join(dir, 'empty'), { recursive: true });
    const empty = run(['uninject', join(dir, 'empty')]);
    expect(empty.status).toBe(2);
    expect(empty.stderr).toContain('no *.yaml, *.yml or *.json files');
    const none = run(['inject']);
    expect(none.status).toBe(2);
    expect(none.stderr).toContain("or '-' for standard input");
  });
});
