import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { createConnection, createServer, isIP, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { createLogger } from '../../lib/log.ts';
import { createPki, issueCert, kubeconfigYaml, type Pki } from './pki.ts';
import { ManagedProcess } from './process.ts';

const execFileP = promisify(execFile);
const log = createLogger('test-cluster');

const BUILD_SCRIPT = new URL('./build-k8s.sh', import.meta.url).pathname;
// The control plane's four and the nodes' two (RealNode): one build compiles their shared packages once.
const BINARIES = [
  'kube-apiserver',
  'kube-controller-manager',
  'kube-scheduler',
  'kubectl',
  'kubelet',
  'kube-proxy',
];

export interface ControlPlaneOptions {
  /** Network namespace to run in (the "cloud"); absent: the root namespace's loopback. */
  netns?: string;
  /** The API server's address inside `netns` (what lab hosts dial); required with netns. */
  address?: string;
  /** Service ClusterIP range (default 10.96.0.0/16). */
  serviceCidr?: string;
  /** etcd binary (default: EDGEMESH_ETCD, else Debian's /usr/bin/etcd). */
  etcd?: string;
  /** Where the Kubernetes binaries are (default: built/cached by build-k8s.sh). */
  binDir?: string;
}

/**
 * etcd, kube-apiserver, kube-controller-manager and kube-scheduler as real processes, with
 * a fresh CA, TLS everywhere the API is served, service-account signing keys, Node+RBAC
 * authorization and the admission webhooks on. Data lives in a temp dir removed by stop().
 *
 * With a network namespace the control plane listens inside it (lab hosts dial
 * `server`). The test process, which stays in the root namespace, reaches the same API
 * server through a Unix socket (files cross namespaces, packets do not): a socat in the
 * namespace relays the socket to the API server's port and a loopback listener here relays
 * to the socket. TLS still ends at the API server, so `localKubeconfig` verifies the same
 * serving cert. No route or link to the root namespace is made.
 */
export class ControlPlane {
  readonly dataDir: string;
  readonly netns: string | undefined;
  readonly binDir: string;
  readonly pki: Pki;
  /** API server URL for processes inside the lab (the namespace), and its kubeconfig. */
  readonly server: string;
  readonly kubeconfig: string;
  /** API server URL and kubeconfig for this (root-namespace) process. */
  localServer = '';
  readonly localKubeconfig: string;
  readonly serviceCidr: string;
  readonly #processes: ManagedProcess[] = [];
  #bridge: Server | undefined;
  readonly #bridged = new Set<Socket>();
  #apiserver: ManagedProcess | undefined;
  #apiserverArgs: string[] = [];
  #stopped = false;

  private constructor(dataDir: string, binDir: string, pki: Pki, opts: ControlPlaneOptions, server: string) {
    this.dataDir = dataDir;
    this.binDir = binDir;
    this.pki = pki;
    this.netns = opts.netns;
    this.server = server;
    this.serviceCidr = opts.serviceCidr ?? '10.96.0.0/16';
    this.kubeconfig = join(dataDir, 'admin.kubeconfig');
    this.localKubeconfig = join(dataDir, 'admin-local.kubeconfig');
  }

  static async start(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
    if (opts.netns && !opts.address) throw new Error('ControlPlane: address is required with netns');
    if (opts.address !== undefined && !isIP(opts.address)) {
      throw new Error(`ControlPlane: address ${JSON.stringify(opts.address)} is not an IP address`);
    }
    const binDir = opts.binDir ?? (await ensureKubernetesBinaries());
    const dataDir = await mkdtemp(join(tmpdir(), 'edgemesh-k8s-'));
    const address = opts.address ?? '127.0.0.1';
    const serviceCidr = opts.serviceCidr ?? '10.96.0.0/16';
    // In a private namespace the usual ports are ours; on the shared loopback pick free ones.
    const ports = opts.netns
      ? { etcdClient: 2379, etcdPeer: 2380, apiserver: 6443 }
      : { etcdClient: await freePort(), etcdPeer: await freePort(), apiserver: await freePort() };
    const pki = await createPki(dataDir, {
      ips: [...new Set([address, '127.0.0.1', firstServiceIp(serviceCidr)])],
      dnsNames: [
        'localhost',
        'kubernetes',
        'kubernetes.default',
        'kubernetes.default.svc',
        'kubernetes.default.svc.cluster.local',
      ],
    });
    const cp = new ControlPlane(dataDir, binDir, pki, opts, `https://${address}:${ports.apiserver}`);
    try {
      await cp.#run(opts, address, ports);
    } catch (err) {
      await cp.stop();
      throw err;
    }
    return cp;
  }

  async #run(
    opts: ControlPlaneOptions,
    address: string,
    ports: { etcdClient: number; etcdPeer: number; apiserver: number },
  ) {
    const started = Date.now();
    const inside = `https://127.0.0.1:${ports.apiserver}`;
    const write = async (name: string, server: string, pair: { cert: string; key: string }, user: string) => {
      const path = join(this.dataDir, name);
      await writeFile(path, await kubeconfigYaml(server, this.pki.caCert, pair, user), { mode: 0o600 });
      return path;
    };
    await write('admin.kubeconfig', this.server, this.pki.admin, 'admin');
    const kcmConfig = await write('controller-manager.kubeconfig', inside, this.pki.controllerManager, 'kcm');
    const schedConfig = await write('scheduler.kubeconfig', inside, this.pki.scheduler, 'scheduler');

    const etcdUrl = `http://127.0.0.1:${ports.etcdClient}`;
    const etcd = this.#spawn('etcd', opts.etcd ?? process.env.EDGEMESH_ETCD ?? 'etcd', [
      '--name=edgemesh-test',
      `--data-dir=${join(this.dataDir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${ports.etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${ports.etcdPeer}`,
      `--initial-cluster=edgemesh-test=http://127.0.0.1:${ports.etcdPeer}`,
      '--unsafe-no-fsync',
      '--log-level=warn',
    ]);
    await this.#waitFor(etcd, 'etcd', 30_000, () =>
      this.#curl(`${etcdUrl}/health`).then((b) => b.includes('true')),
    );

    const pki = this.pki;
    // The API server's client identity towards kubelets (kubectl exec/logs/port-forward):
    // system:masters, so a kubelet's webhook authorizer (SubjectAccessReview) allows it.
    const kubeletClient = await issueCert(
      this.dataDir,
      { cert: pki.caCert, key: pki.caKey },
      'apiserver-kubelet-client',
      '/O=system:masters/CN=kube-apiserver-kubelet-client',
      'clientAuth',
    );
    this.#apiserverArgs = [
      `--etcd-servers=${etcdUrl}`,
      `--bind-address=${opts.netns ? '0.0.0.0' : '127.0.0.1'}`,
      `--advertise-address=${address}`,
      `--secure-port=${ports.apiserver}`,
      `--tls-cert-file=${pki.apiserver.cert}`,
      `--tls-private-key-file=${pki.apiserver.key}`,
      `--client-ca-file=${pki.caCert}`,
      `--service-account-issuer=https://kubernetes.default.svc.cluster.local`,
      `--service-account-key-file=${pki.saPub}`,
      `--service-account-signing-key-file=${pki.saKey}`,
      `--service-cluster-ip-range=${this.serviceCidr}`,
      // Request-header auth for aggregated APIs; also what the components' own
      // delegated authentication expects to find in extension-apiserver-authentication.
      `--requestheader-client-ca-file=${pki.caCert}`,
      '--requestheader-allowed-names=front-proxy-client',
      '--requestheader-username-headers=X-Remote-User',
      '--requestheader-group-headers=X-Remote-Group',
      '--requestheader-extra-headers-prefix=X-Remote-Extra-',
      `--proxy-client-cert-file=${pki.frontProxyClient.cert}`,
      `--proxy-client-key-file=${pki.frontProxyClient.key}`,
      `--kubelet-client-certificate=${kubeletClient.cert}`,
      `--kubelet-client-key=${kubeletClient.key}`,
      // Nodes are named, not resolvable: dial the kubelet at the address it reports.
      '--kubelet-preferred-address-types=InternalIP',
      '--authorization-mode=Node,RBAC',
      '--enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ServiceAccount',
      '--allow-privileged=true',
      '--profiling=false',
      '--v=1',
    ];
    const apiserver = this.#spawnApiServer();
    if (this.netns) this.localServer = await this.#bridgeToNamespace(ports.apiserver);
    else this.localServer = this.server;
    await writeFile(
      this.localKubeconfig,
      await kubeconfigYaml(this.localServer, pki.caCert, pki.admin, 'admin'),
      {
        mode: 0o600,
      },
    );
    await this.#waitFor(
      apiserver,
      'kube-apiserver /readyz',
      120_000,
      async () => (await this.#get('/readyz')) === 'ok',
    );

    const kcm = this.#spawn('kube-controller-manager', join(this.binDir, 'kube-controller-manager'), [
      `--kubeconfig=${kcmConfig}`,
      `--authentication-kubeconfig=${kcmConfig}`,
      `--authorization-kubeconfig=${kcmConfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${opts.netns ? 10257 : 0}`,
      `--service-account-private-key-file=${pki.saKey}`,
      `--root-ca-file=${pki.caCert}`,
      `--cluster-signing-cert-file=${pki.caCert}`,
      `--cluster-signing-key-file=${pki.caKey}`,
      `--service-cluster-ip-range=${this.serviceCidr}`,
      '--use-service-account-credentials=true',
      '--allocate-node-cidrs=false',
      '--leader-elect=false',
      '--profiling=false',
      '--v=1',
    ]);
    const scheduler = this.#spawn('kube-scheduler', join(this.binDir, 'kube-scheduler'), [
      `--kubeconfig=${schedConfig}`,
      `--authentication-kubeconfig=${schedConfig}`,
      `--authorization-kubeconfig=${schedConfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${opts.netns ? 10259 : 0}`,
      '--leader-elect=false',
      '--profiling=false',
      '--v=1',
    ]);
    // The service-account controller creating "default" proves the controller-manager is
    // connected and authorized; the scheduler proves itself when pods get bound.
    await this.#waitFor(kcm, 'kube-controller-manager (default ServiceAccount)', 60_000, async () =>
      (await this.#get('/api/v1/namespaces/default/serviceaccounts/default')).includes(
        '"kind":"ServiceAccount"',
      ),
    );
    if (!scheduler.running) throw new Error(`kube-scheduler exited: ${await tail(scheduler.logFile)}`);
    log.info({ ms: Date.now() - started, server: this.server, dataDir: this.dataDir }, 'control plane ready');
  }

  /**
   * Stops the API server alone (etcd, controllers and scheduler keep running): an API
   * outage. By default it is killed outright, as in a crash; `graceMs` lets it drain.
   */
  async stopApiServer(graceMs = 0): Promise<void> {
    await this.#apiserver?.stop(graceMs);
  }

  /** Starts the API server again with the same flags and data; resolves once /readyz is ok. */
  async startApiServer(): Promise<void> {
    if (this.#apiserver?.running) return;
    const apiserver = this.#spawnApiServer();
    await this.#waitFor(
      apiserver,
      'kube-apiserver /readyz',
      120_000,
      async () => (await this.#get('/readyz')) === 'ok',
    );
  }

  #spawnApiServer(): ManagedProcess {
    this.#apiserver = this.#spawn('kube-apiserver', join(this.binDir, 'kube-apiserver'), this.#apiserverArgs);
    return this.#apiserver;
  }

  /**
   * A KubeConfig for this process acting as the kubelet of `nodeName`: a client cert for
   * `system:node:<name>` in `system:nodes`, so the Node authorizer and NodeRestriction
   * admission apply to it exactly as to a real kubelet.
   */
  async nodeKubeConfig(nodeName: string): Promise<KubeConfig> {
    checkNodeName(nodeName);
    const pair = await issueCert(
      this.dataDir,
      { cert: this.pki.caCert, key: this.pki.caKey },
      `node-${nodeName}`,
      `/O=system:nodes/CN=system:node:${nodeName}`,
      'clientAuth',
    );
    const kc = new KubeConfig();
    kc.loadFromString(
      await kubeconfigYaml(this.localServer, this.pki.caCert, pair, `system:node:${nodeName}`),
    );
    return kc;
  }

  /**
   * A kubeconfig file for a component inside the lab (dials `server`): a kubelet as
   * `system:node:<name>` in `system:nodes`, or kube-proxy as `system:kube-proxy` (the
   * bootstrap binding gives it system:node-proxier). Returns the file's path.
   */
  async componentKubeconfig(who: { node: string } | 'kube-proxy'): Promise<string> {
    const [name, subject, user] =
      who === 'kube-proxy'
        ? ['kube-proxy', '/CN=system:kube-proxy', 'system:kube-proxy']
        : [
            `kubelet-${checkNodeName(who.node)}`,
            `/O=system:nodes/CN=system:node:${who.node}`,
            `system:node:${who.node}`,
          ];
    const pair = await issueCert(
      this.dataDir,
      { cert: this.pki.caCert, key: this.pki.caKey },
      name,
      subject,
      'clientAuth',
    );
    const path = join(this.dataDir, `${name}.kubeconfig`);
    await writeFile(path, await kubeconfigYaml(this.server, this.pki.caCert, pair, user), { mode: 0o600 });
    return path;
  }

  /** A client-node KubeConfig for this process (admin). */
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromFile(this.localKubeconfig);
    return kc;
  }

  /** Runs kubectl as admin (inside the namespace when there is one); throws with stderr on failure. */
  async kubectl(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
    const argv = [join(this.binDir, 'kubectl'), `--kubeconfig=${this.kubeconfig}`, ...args];
    const full = this.netns ? ['ip', 'netns', 'exec', this.netns, ...argv] : argv;
    return new Promise((resolve, reject) => {
      const child = spawn(full[0] as string, full.slice(1), {
        stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (d) => {
        stdout += d;
      });
      child.stderr?.on('data', (d) => {
        stderr += d;
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
      child.on('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve(stdout);
        else reject(new Error(`kubectl ${args.join(' ')} exited ${code}: ${`${stdout}\n${stderr}`.trim()}`));
      });
      child.on('error', reject);
      // kubectl may exit before reading all of stdin (a failed apply): not our error.
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(opts.input);
    });
  }

  /** Stops the components (newest first) by PID and removes the data dir. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const p of this.#processes.splice(0).reverse()) await p.stop(10_000);
    for (const s of this.#bridged) s.destroy();
    await new Promise<void>((resolve) => (this.#bridge ? this.#bridge.close(() => resolve()) : resolve()));
    if (process.env.EDGEMESH_KEEP_CLUSTER_DATA)
      log.info({ dataDir: this.dataDir }, 'kept control-plane data');
    else await rm(this.dataDir, { recursive: true, force: true });
  }

  /** PIDs of the running components, by name (for tests and diagnostics). */
  get pids(): Record<string, number | undefined> {
    return Object.fromEntries(this.#processes.map((p) => [p.name, p.running ? p.pid : undefined]));
  }

  #spawn(name: string, binary: string, args: string[]): ManagedProcess {
    const p = new ManagedProcess(name, [binary, ...args], {
      netns: this.netns,
      logFile: join(this.dataDir, `${name}.log`),
      cwd: this.dataDir,
    });
    this.#processes.push(p);
    return p;
  }

  async #bridgeToNamespace(apiserverPort: number): Promise<string> {
    const socket = join(this.dataDir, 'apiserver.sock');
    this.#spawn('socket-relay', 'socat', [
      `UNIX-LISTEN:${socket},fork,mode=600`,
      `TCP:127.0.0.1:${apiserverPort}`,
    ]);
    const bridge = createServer((conn) => {
      const upstream = createConnection(socket);
      // Tracked so stop() can end them: an upgraded stream (kubectl exec) never closes by
      // itself, and Server.close() waits for every connection.
      for (const s of [conn, upstream]) {
        this.#bridged.add(s);
        s.once('close', () => this.#bridged.delete(s));
      }
      conn.pipe(upstream).pipe(conn);
      conn.on('error', () => upstream.destroy());
      upstream.on('error', () => conn.destroy());
    });
    this.#bridge = bridge;
    await new Promise<void>((resolve, reject) => {
      bridge.once('error', reject);
      bridge.listen(0, '127.0.0.1', () => resolve());
    });
    const addr = bridge.address();
    if (!addr || typeof addr === 'string') throw new Error('bridge has no port');
    return `https://127.0.0.1:${addr.port}`;
  }

  /** GET on the API server as admin, from this process; resolves with the body. */
  #get(path: string): Promise<string> {
    const url = new URL(path, this.localServer);
    return Promise.all([
      readFile(this.pki.caCert),
      readFile(this.pki.admin.cert),
      readFile(this.pki.admin.key),
    ]).then(
      ([ca, cert, key]) =>
        new Promise((resolve, reject) => {
          const req = request(url, { ca, cert, key, timeout: 5_000 }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (d) => {
              body += d;
            });
            res.on('end', () => resolve(body));
          });
          req.on('timeout', () => req.destroy(new Error('timeout')));
          req.on('error', reject);
          req.end();
        }),
    );
  }

  async #curl(url: string): Promise<string> {
    const argv = ['curl', '-sS', '--max-time', '2', url];
    const full = this.netns ? ['ip', 'netns', 'exec', this.netns, ...argv] : argv;
    return (await execFileP(full[0] as string, full.slice(1), { timeout: 5_000 })).stdout;
  }

  async #waitFor(
    proc: ManagedProcess,
    what: string,
    timeoutMs: number,
    ready: () => Promise<boolean>,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!proc.running)
        throw new Error(`${proc.name} exited (${proc.exitCode}) before ${what}: ${await tail(proc.logFile)}`);
      if (await ready().catch(() => false)) return;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${await tail(proc.logFile)}`);
  }
}

/**
 * Runs build-k8s.sh (a no-op when the binaries are cached), passing its progress through
 * to stderr, and returns the bin dir.
 */
export async function ensureKubernetesBinaries(): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [BUILD_SCRIPT, ...BINARIES], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const dir = out.trim().split('\n').pop();
      if (code === 0 && dir) resolve(dir);
      else reject(new Error(`build-k8s.sh exited ${code}`));
    });
  });
}

function checkNodeName(name: string): string {
  if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(name)) throw new Error(`bad node name ${name}`);
  return name;
}

function firstServiceIp(cidr: string): string {
  const [base] = cidr.split('/');
  const octets = (base ?? '').split('.').map(Number);
  if (octets.length !== 4 || octets.some((o) => !(o >= 0 && o <= 255)))
    throw new Error(`bad service CIDR ${cidr}`);
  octets[3] = (octets[3] ?? 0) + 1;
  return octets.join('.');
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const addr = srv.address();
  await new Promise((r) => srv.close(r));
  if (!addr || typeof addr === 'string') throw new Error('no port');
  return addr.port;
}

async function tail(file: string, lines = 25): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return `\n--- ${file} (last ${lines} lines) ---\n${text.trim().split('\n').slice(-lines).join('\n')}`;
}
