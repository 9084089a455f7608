import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificatesV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import forge from 'node-forge';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { loadOrEnrol, renewIdentity } from '../gateway/tunnel/enrol.ts';
import { silentLogger } from '../lib/log.ts';
import { KubernetesCsrClient, SIGNER_NAMES } from '../lib/tunnel/csr-api.ts';
import { createCA, createCsr, generateKeyPem, identityOfCert } from '../lib/tunnel/identity.ts';
import { ControlPlane } from '../test/cluster/control-plane.ts';
import { EDGEMESH_BIN, waitFor } from '../test/harness/netns.ts';
import { REVOKED_ANNOTATION } from './signer.ts';

// Issue 16 item 9 against a real API server, with the real signer and tunnel-server
// processes under the shipped RBAC (manifests/base: tunnel-server.yaml, signer.yaml), each
// with its own service account's token: the tunnel-server holds no CA key and gets every
// certificate (the nodes' and its own, renewed while running) through
// CertificateSigningRequests the signer checks.
const namespace = 'edgemesh-system';
const dir = mkdtempSync(join(tmpdir(), 'emsigner-'));
const ca = createCA();
writeFileSync(join(dir, 'ca.crt'), ca.certPem);
writeFileSync(join(dir, 'ca.key'), ca.keyPem, { mode: 0o600 });
const tokens: Record<string, string> = { 'node-a': 'tok-a', 'node-b': 'tok-b', 'node-ghost': 'tok-ghost' };
writeFileSync(
  join(dir, 'tokens.json'),
  JSON.stringify(
    Object.fromEntries(
      Object.entries(tokens).map(([n, t]) => [n, createHash('sha256').update(t).digest('hex')]),
    ),
  ),
);

let cp: ControlPlane;
let admin: KubeConfig;
let tsKc: KubeConfig;
const children: ChildProcess[] = [];
let tsPort = 0;
let tsLog = '';
let signerLog = '';
let signerProcess: ChildProcess;
let tsKubeconfigFile = '';

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const p = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return p;
}

/** A kubeconfig file that authenticates as `namespace:account` with a TokenRequest token. */
async function serviceAccountKubeconfig(account: string): Promise<string> {
  const core = admin.makeApiClient(CoreV1Api);
  const r = await core.createNamespacedServiceAccountToken({
    name: account,
    namespace,
    body: { spec: { audiences: [], expirationSeconds: 3600 } },
  });
  const file = join(dir, `${account}.kubeconfig`);
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name: 'c',
        cluster: {
          server: cp.localServer,
          'certificate-authority-data': readFileSync(cp.pki.caCert).toString('base64'),
        },
      },
    ],
    users: [{ name: account, user: { token: r.status?.token } }],
    contexts: [{ name: 'c', context: { cluster: 'c', user: account } }],
    'current-context': 'c',
  };
  writeFileSync(file, YAML.stringify(doc), { mode: 0o600 });
  return file;
}

function start(args: string[], onLog: (s: string) => void): ChildProcess {
  const child = spawn(EDGEMESH_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr?.on('data', (d) => onLog(String(d)));
  child.on('exit', (code, signal) => onLog(`\n[exited ${code ?? signal}]\n`));
  children.push(child);
  return child;
}

const enrolOpts = (node: string) => ({
  nodeName: node,
  stateDir: join(dir, 'state', node),
  caPem: ca.certPem,
  servers: [{ host: '127.0.0.1', port: tsPort }],
  token: async () => tokens[node],
  log: silentLogger,
  timeoutMs: 25_000,
});

async function pendingEdgemeshCsrs(): Promise<string[]> {
  const api = admin.makeApiClient(CertificatesV1Api);
  const list = await api.listCertificateSigningRequest();
  return list.items
    .filter((c) => Object.values(SIGNER_NAMES).includes(c.spec.signerName))
    .map((c) => c.metadata?.name ?? '');
}

beforeAll(async () => {
  cp = await ControlPlane.start();
  admin = cp.kubeConfig();
  const core = admin.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  // The shipped RBAC, as kustomize would apply it (service accounts, roles, bindings).
  const rbac = ['tunnel-server.yaml', 'signer.yaml']
    .flatMap((f) =>
      YAML.parseAllDocuments(readFileSync(new URL(`../manifests/base/${f}`, import.meta.url), 'utf8')).map(
        (d) => d.toJS() as { kind: string },
      ),
    )
    .filter((o) => /^(ServiceAccount|ClusterRole|ClusterRoleBinding|Role|RoleBinding)$/.test(o.kind));
  await cp.kubectl(['apply', '-f', '-'], { input: rbac.map((o) => YAML.stringify(o)).join('---\n') });
  for (const name of ['node-a', 'node-b']) await core.createNode({ body: { metadata: { name } } });

  const signerKubeconfig = await serviceAccountKubeconfig('edgemesh-signer');
  const tsKubeconfig = await serviceAccountKubeconfig('edgemesh-tunnel-server');
  tsKubeconfigFile = tsKubeconfig;
  tsKc = new KubeConfig();
  tsKc.loadFromFile(tsKubeconfig);

  signerProcess = start(
    [
      'signer',
      `--kubeconfig=${signerKubeconfig}`,
      `--ca-cert=${join(dir, 'ca.crt')}`,
      `--ca-key=${join(dir, 'ca.key')}`,
      '--requester=edgemesh-system:edgemesh-tunnel-server',
      '--max-cert-lifetime=1h',
      '--interval-ms=200',
    ],
    (s) => {
      signerLog += s;
    },
  );
  await waitFor(() => signerLog.includes('signer ready'), 60_000, 100, `signer start: ${signerLog}`);
  tsPort = await freePort();
  start(
    [
      'tunnel-server',
      `--listen=127.0.0.1:${tsPort}`,
      '--name=ts1',
      '--signer=kubernetes',
      `--kubeconfig=${tsKubeconfig}`,
      `--ca-cert=${join(dir, 'ca.crt')}`,
      // Never read with --signer=kubernetes: a file that does not exist proves it.
      `--ca-key=${join(dir, 'no-such.key')}`,
      `--enrol-tokens=${join(dir, 'tokens.json')}`,
      '--node-cert-lifetime=20m',
      '--server-cert-lifetime=15s',
    ],
    (s) => {
      tsLog += s;
    },
  );
  await waitFor(() => tsLog.includes('tunnel-server ready'), 60_000, 100, `tunnel-server start: ${tsLog}`);
}, 30 * 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await cp?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('signing through the Kubernetes CSR API (real API server, signer, tunnel-server)', () => {
  it('enrols a node through a CSR the signer approved and signed; the CSR object is removed', async () => {
    const id = await loadOrEnrol(enrolOpts('node-a'));
    const cert = new X509Certificate(id.certPem);
    expect(cert.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(identityOfCert(id.certPem)).toEqual({ kind: 'node', name: 'node-a' });
    expect(cert.subjectAltName).toBe('URI:edgemesh://node/node-a');
    // expirationSeconds = --node-cert-lifetime (20 min), within the signer's 1 h.
    const life = Date.parse(cert.validTo) - Date.now();
    expect(life).toBeGreaterThan(18 * 60_000);
    expect(life).toBeLessThan(21 * 60_000);
    expect(signerLog).toMatch(
      /CertificateSigningRequest signed.*edgemesh:\/\/node\/node-a|edgemesh:\/\/node\/node-a.*signed/,
    );
    await waitFor(async () => (await pendingEdgemeshCsrs()).length === 0, 10_000, 200, 'CSR objects left');
  });

  it("renews the tunnel-server's own certificate through the signer while it runs", async () => {
    // 15 s certificates, renewed at ~2/3: two renewals within ~30 s, each a signed CSR.
    await waitFor(
      () => (tsLog.match(/certificate renewed/g) ?? []).length >= 2,
      60_000,
      200,
      `tunnel-server renewals: ${tsLog}`,
    );
    expect(tsLog).toContain('signed by the edgemesh signer, through the Kubernetes CSR API');
    expect(signerLog).toContain('edgemesh://tunnel-server/ts1');
    // And gateways still enrol (they verify the renewed serving certificate against the mesh CA).
    rmSync(join(dir, 'state', 'node-b'), { recursive: true, force: true });
    const id = await loadOrEnrol(enrolOpts('node-b'));
    expect(identityOfCert(id.certPem)).toEqual({ kind: 'node', name: 'node-b' });
  }, 90_000);

  it('does not sign a node that does not exist, even with a valid enrolment token', async () => {
    await expect(loadOrEnrol(enrolOpts('node-ghost'))).rejects.toThrow(/node node-ghost does not exist/);
  });

  it('denies CSRs from another requester, with SANs, or with more than a common name', async () => {
    // Another requester (the admin here; a gateway or a stolen pod token alike).
    const asAdmin = new KubernetesCsrClient(admin, { timeoutMs: 10_000 });
    const key = generateKeyPem();
    await expect(
      asAdmin.request(
        createCsr(key, { kind: 'node', name: 'node-a' }),
        { kind: 'node', name: 'node-a' },
        3600,
      ),
    ).rejects.toThrow(
      /requested by .*admin.*only system:serviceaccount:edgemesh-system:edgemesh-tunnel-server/,
    );
    const asTs = new KubernetesCsrClient(tsKc, { timeoutMs: 10_000 });
    // The tunnel-server itself asking for a SAN (e.g. a DNS name or a second identity).
    const k = forge.pki.privateKeyFromPem(key);
    const withSan = forge.pki.createCertificationRequest();
    withSan.publicKey = forge.pki.setRsaPublicKey(k.n, k.e);
    withSan.setSubject([{ name: 'commonName', value: 'node-a' }]);
    withSan.setAttributes([
      {
        name: 'extensionRequest',
        extensions: [
          { name: 'subjectAltName', altNames: [{ type: 6, value: 'edgemesh://tunnel-server/x' }] },
        ],
      },
    ]);
    withSan.sign(k, forge.md.sha256.create());
    await expect(
      asTs.request(forge.pki.certificationRequestToPem(withSan), { kind: 'node', name: 'node-a' }, 3600),
    ).rejects.toThrow(/asks for extensions/);
    const withOrg = forge.pki.createCertificationRequest();
    withOrg.publicKey = forge.pki.setRsaPublicKey(k.n, k.e);
    withOrg.setSubject([
      { name: 'commonName', value: 'node-a' },
      { name: 'organizationName', value: 'system:masters' },
    ]);
    withOrg.sign(k, forge.md.sha256.create());
    await expect(
      asTs.request(forge.pki.certificationRequestToPem(withOrg), { kind: 'node', name: 'node-a' }, 3600),
    ).rejects.toThrow(/common name only/);
    // The tunnel-server's account cannot approve or sign its own CSRs (no signers permission).
    const certs = tsKc.makeApiClient(CertificatesV1Api);
    const name = 'self-approve';
    await certs.createCertificateSigningRequest({
      body: {
        metadata: { name },
        spec: {
          signerName: 'edgemesh.io/node',
          request: Buffer.from(createCsr(key, { kind: 'node', name: 'node-a' })).toString('base64'),
          usages: ['client auth'],
        },
      },
    });
    // Whatever the signer decides, the tunnel-server's own approval is refused by RBAC.
    const csr = await certs.readCertificateSigningRequest({ name });
    csr.status = { conditions: [{ type: 'Approved', status: 'True', reason: 'Self', message: 'self' }] };
    await expect(certs.replaceCertificateSigningRequestApproval({ name, body: csr })).rejects.toThrow(
      /403|forbidden/i,
    );
  });

  it('a revoked node can neither enrol nor renew', async () => {
    const core = admin.makeApiClient(CoreV1Api);
    await core.patchNode({
      name: 'node-a',
      body: [{ op: 'add', path: `/metadata/annotations`, value: { [REVOKED_ANNOTATION]: 'stolen laptop' } }],
    });
    await expect(renewIdentity(enrolOpts('node-a'))).rejects.toThrow(
      /node node-a is revoked \(edgemesh.io\/revoked: stolen laptop\)/,
    );
    rmSync(join(dir, 'state', 'node-a'), { recursive: true, force: true });
    await expect(loadOrEnrol(enrolOpts('node-a'))).rejects.toThrow(/revoked/);
    expect(tsLog).toMatch(/enrolment refused/);
  });

  it('a tunnel-server that starts while the signer is away waits for it instead of exiting', async () => {
    signerProcess.kill('SIGSTOP');
    let log = '';
    const port = await freePort();
    const ts2 = start(
      [
        'tunnel-server',
        `--listen=127.0.0.1:${port}`,
        '--name=ts2',
        '--signer=kubernetes',
        `--kubeconfig=${tsKubeconfigFile}`,
        `--ca-cert=${join(dir, 'ca.crt')}`,
      ],
      (s) => {
        log += s;
      },
    );
    try {
      await waitFor(() => log.includes('no serving certificate yet'), 60_000, 200, `ts2 retry: ${log}`);
      expect(ts2.exitCode).toBeNull();
    } finally {
      signerProcess.kill('SIGCONT');
    }
    await waitFor(() => log.includes('tunnel-server ready'), 90_000, 200, `ts2 start: ${log}`);
  }, 180_000);
});
