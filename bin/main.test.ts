import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';

// The real entrypoint as a user runs it: exit codes, help, and errors that name the flag.
const bin = new URL('./edgemesh', import.meta.url).pathname;
const run = (args: string[], input?: string, env: Record<string, string> = {}) =>
  spawnSync(bin, args, { input, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });

describe('edgemesh CLI', () => {
  it('lists commands, and every command has --help', () => {
    const top = run(['--help']);
    expect(top.status).toBe(0);
    const names = [
      'webhook',
      'inject',
      'webhook-tls',
      'init',
      'sidecar',
      'gateway',
      'tunnel-server',
      'signer',
      'version',
      'check',
      'status',
      'netcheck',
      'install',
      'config',
    ];
    for (const name of names) {
      expect(top.stdout).toContain(`  ${name} `);
      const help = run([name, '--help']);
      expect(help.status, `${name} --help: ${help.stderr}`).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`^Usage: edgemesh ${name} \\[options\\]`));
    }
    // Fifteen Node starts in a row: seconds each on a loaded machine.
  }, 120_000);

  it('--version and version --client print the client, from a checkout with an unknown commit', () => {
    for (const args of [['--version'], ['version', '--client']]) {
      const r = run(args);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(
        /^(Client: {2})?edgemesh \d+\.\d+\.\d+, commit unknown \(running from a checkout\), node v24\.\d+\.\d+\n$/,
      );
    }
    // No kubeconfig anywhere: the client alone, exit 0, saying why; --cluster makes it an error.
    const env = { KUBECONFIG: '/nonexistent/kubeconfig', HOME: '/nonexistent', KUBERNETES_SERVICE_HOST: '' };
    const plain = run(['version'], undefined, env);
    expect(plain.status, plain.stderr).toBe(0);
    expect(plain.stdout).toContain('(cluster versions not shown: no kubeconfig: none of $KUBECONFIG');
    const required = run(['version', '--cluster'], undefined, env);
    expect(required.status).toBe(2);
    expect(required.stderr).toContain(
      '--cluster: no kubeconfig: none of $KUBECONFIG (/nonexistent/kubeconfig) exists',
    );
  }, 30_000);

  it('fails clearly on unknown commands and bad flags', () => {
    const unknown = run(['frobnicate']);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain('unknown command "frobnicate"');
    const badPort = run(['webhook', '--port', 'eighty']);
    expect(badPort.status).toBe(2);
    expect(badPort.stderr).toContain('--port: expected an integer, got "eighty"');
    const badEnv = run(['webhook', '--tls-cert', '/nonexistent'], undefined, { EDGEMESH_PORT: '70000' });
    expect(badEnv.stderr).toContain('port (from EDGEMESH_PORT): must be <= 65535');
    const missingCert = run(['webhook', '--tls-cert', '/nonexistent/tls.crt']);
    expect(missingCert.status).toBe(2);
    expect(missingCert.stderr).toContain('--tls-cert: cannot read /nonexistent/tls.crt');
    const badMetricsHost = run(['signer', '--metrics-port', '9090', '--metrics-host', 'nope']);
    expect(badMetricsHost.status).toBe(2);
    expect(badMetricsHost.stderr).toContain('--metrics-host: "nope" is not an IP address');
    const unknownFlag = run(['inject', '--flie', 'x']);
    expect(unknownFlag.status).toBe(2);
    expect(unknownFlag.stderr).toMatch(/Unknown option '--flie'/);
  });

  it('inject reads stdin and writes injected YAML, same as the library', () => {
    const manifest = readFileSync(
      new URL('../webhook/testdata/manual/workloads.yaml', import.meta.url),
      'utf8',
    );
    const r = run(['inject', '-f', '-', '--image', 'registry.example/edgemesh:test'], manifest);
    expect(r.status, r.stderr).toBe(0);
    const docs = YAML.parseAllDocuments(r.stdout).map((d) => d.toJS());
    const deployment = docs.find((d) => d.kind === 'Deployment' && d.metadata.name === 'nginx');
    expect(deployment.spec.template.spec.initContainers.map((c: { name: string }) => c.name)).toEqual([
      'edgemesh-init',
      'edgemesh-proxy',
    ]);
    expect(deployment.spec.template.spec.initContainers[0].image).toBe('registry.example/edgemesh:test');
    expect(r.stderr).toContain('Deployment/host-agent: not injected: pod uses hostNetwork');
    const bad = run(
      ['inject', '-f', '-'],
      'kind: Pod\nmetadata: {name: x, annotations: {traffic.edgemesh.io/capture-dns: maybe}}\nspec: {containers: [{name: a}]}\n',
    );
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('traffic.edgemesh.io/capture-dns: "maybe" is not true or false');
  });
});
