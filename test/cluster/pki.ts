import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/**
 * The test cluster's PKI, made with the openssl CLI (EC P-256 keys: a full set takes well
 * under a second). One CA signs everything: the API server's serving cert, the client
 * certs of the admin and of each control-plane component (identity = CN, groups = O, as
 * the API server's x509 authenticator reads them), and CSRs approved through the
 * certificates API (the controller-manager signs with the same CA).
 */
export interface Pki {
  dir: string;
  caCert: string;
  caKey: string;
  /** Service-account token signing key pair. */
  saKey: string;
  saPub: string;
  apiserver: CertPair;
  admin: CertPair;
  controllerManager: CertPair;
  scheduler: CertPair;
  /** The API server's client identity towards aggregated API servers (front proxy). */
  frontProxyClient: CertPair;
}

export interface CertPair {
  cert: string;
  key: string;
}

const CURVE = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
const DAYS = ['-days', '30'];

export async function createPki(dir: string, apiserver: { ips: string[]; dnsNames: string[] }): Promise<Pki> {
  const caCert = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  await openssl([
    'req',
    '-x509',
    ...CURVE,
    ...DAYS,
    '-keyout',
    caKey,
    '-out',
    caCert,
    '-subj',
    '/CN=edgemesh-test-cluster-ca',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
  ]);
  const issue = (name: string, subject: string, usage: 'serverAuth' | 'clientAuth', san?: string) =>
    issueCert(dir, { cert: caCert, key: caKey }, name, subject, usage, san);
  const san = [...apiserver.ips.map((ip) => `IP:${ip}`), ...apiserver.dnsNames.map((n) => `DNS:${n}`)].join(
    ',',
  );
  const saKey = join(dir, 'sa.key');
  const saPub = join(dir, 'sa.pub');
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', saKey]);
  await openssl(['pkey', '-in', saKey, '-pubout', '-out', saPub]);
  return {
    dir,
    caCert,
    caKey,
    saKey,
    saPub,
    apiserver: await issue('apiserver', '/CN=kube-apiserver', 'serverAuth', san),
    admin: await issue('admin', '/O=system:masters/CN=kubernetes-admin', 'clientAuth'),
    controllerManager: await issue('controller-manager', '/CN=system:kube-controller-manager', 'clientAuth'),
    scheduler: await issue('scheduler', '/CN=system:kube-scheduler', 'clientAuth'),
    frontProxyClient: await issue('front-proxy-client', '/CN=front-proxy-client', 'clientAuth'),
  };
}

/**
 * A key and certificate `<dir>/<name>.{key,crt}` signed by `ca`: `subject` is an openssl
 * subject such as "/O=system:nodes/CN=system:node:node-a", `san` an openssl
 * subjectAltName value.
 */
export async function issueCert(
  dir: string,
  ca: CertPair,
  name: string,
  subject: string,
  usage: 'serverAuth' | 'clientAuth',
  san?: string,
): Promise<CertPair> {
  const pair = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  await openssl([
    'req',
    '-x509',
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    ...CURVE,
    ...DAYS,
    '-keyout',
    pair.key,
    '-out',
    pair.cert,
    '-subj',
    subject,
    '-addext',
    'basicConstraints=critical,CA:FALSE',
    '-addext',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    '-addext',
    `extendedKeyUsage=${usage}`,
    ...(san ? ['-addext', `subjectAltName=${san}`] : []),
  ]);
  return pair;
}

/** A kubeconfig with everything inlined, so the file alone is enough to connect. */
export async function kubeconfigYaml(
  server: string,
  caCert: string,
  client: CertPair,
  user: string,
): Promise<string> {
  const b64 = async (path: string) => (await readFile(path)).toString('base64');
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: edgemesh-test',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority-data: ${await b64(caCert)}`,
    'users:',
    `- name: ${user}`,
    '  user:',
    `    client-certificate-data: ${await b64(client.cert)}`,
    `    client-key-data: ${await b64(client.key)}`,
    'contexts:',
    '- name: edgemesh-test',
    '  context:',
    '    cluster: edgemesh-test',
    `    user: ${user}`,
    'current-context: edgemesh-test',
    '',
  ].join('\n');
}

async function openssl(args: string[]): Promise<void> {
  try {
    await execFileP('openssl', args, { timeout: 30_000 });
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`openssl ${args[0]} failed: ${e.stderr ?? String(err)}`);
  }
}
