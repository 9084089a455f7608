import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ControlPlane } from '../cluster/control-plane.ts';
import { NodeAgent, type TestNode } from '../cluster/node-agent.ts';
import { ManagedProcess } from '../cluster/process.ts';
import { EDGEMESH_BIN, waitFor } from '../harness/netns.ts';
import { NatLab, type SiteSpec } from '../natlab/lab.ts';

const execFileP = promisify(execFile);

/** The kustomization the cluster applies (local overlay; harness-run workloads scaled away). */
export const MANIFESTS = new URL('./manifests', import.meta.url).pathname;
export const WEBHOOK_PORT = 9443;
export const TUNNEL_PORT = 20006;
/** The gateway's /metrics and /ready port (its default). */
export const GATEWAY_METRICS_PORT = 15090;
const CUT_CHAIN = 'EDGEMESH_CUT';

export interface EdgeClusterOptions {
  /** NetnsLab prefix (≤ 4 chars); every namespace name starts with it plus a random tag. */
  prefix?: string;
  /** Default: site 1 (A) port-preserving NAT dropping unsolicited inbound, one node; site 2 (B)
   * port-preserving NAT answering it with RST/ICMP (as a plain Linux router does), two nodes. */
  sites?: SiteSpec[];
  /** Where step-by-step progress goes (default: stderr). */
  progress?: (line: string) => void;
}

/** A node as planned: the lab host it runs on, its site and its gateway's state dir. */
interface PlannedNode extends TestNode {
  site: number;
  stateDir: string;
}

/** A node of the cluster, with the gateway running in its namespace. */
export interface ClusterNode extends PlannedNode {
  gateway: ManagedProcess;
}

/**
 * "Edge cluster in a box": the NAT lab's small internet with a cloud host running a real
 * control plane (etcd, kube-apiserver, controller-manager, scheduler; TLS, RBAC, webhooks),
 * edgemesh's manifests applied to it, the TLS bootstrap run against it, the webhook serving
 * it by URL, a tunnel-server on another public host, and nodes on site LANs behind NAT
 * routers registered and run by the test node agent, each with a gateway process in its
 * namespace (its host network) using the edgemesh-gateway ServiceAccount.
 *
 *   public 198.51.100.0/24: cloud .11 (API server :6443, webhook 127.0.0.1:9443)
 *                           tunnel .12 (tunnel-server :20006)
 *   site k: ISP hop → NAT router 203.0.113.<64+4k+2> → LAN 192.168.k.0/24
 *           node<k>-<i> 192.168.k.<10+i>, pods 10.k.i.0/24 on its bridge
 *
 * The test process and the node agent stay in the root namespace and talk to the API
 * server over the control plane's Unix-socket bridge; only the cluster's own hosts use
 * the lab network. `stop()` ends every process by PID and deletes every namespace, also
 * after a failed start.
 */
export class EdgeCluster {
  readonly lab: NatLab;
  readonly workDir: string;
  readonly nodes: ClusterNode[] = [];
  readonly #progress: (line: string) => void;
  readonly #processes: ManagedProcess[] = [];
  readonly #started = Date.now();
  cp: ControlPlane | undefined;
  agent: NodeAgent | undefined;
  webhook: ManagedProcess | undefined;
  tunnelServer: ManagedProcess | undefined;
  /** Per-node enrolment token files for the tunnel-server, and the mesh CA certificate. */
  readonly enrolTokens: Record<string, string> = {};
  meshCa: string | undefined;
  #cut = false;
  #tunnelServerArgv: string[] = [];
  #gatewayKubeconfigFile = '';

  private constructor(lab: NatLab, workDir: string, progress: (line: string) => void) {
    this.lab = lab;
    this.workDir = workDir;
    this.#progress = progress;
  }

  static async start(opts: EdgeClusterOptions = {}): Promise<EdgeCluster> {
    const progress = opts.progress ?? ((line: string) => process.stderr.write(`${line}\n`));
    const sites = opts.sites ?? [
      { mapping: 'preserving', inbound: 'drop', nodes: 1 },
      { mapping: 'preserving', inbound: 'reject', nodes: 2 },
    ];
    progress('edge-cluster: building the NAT lab (public segment, ISP hops, NAT routers, site LANs)');
    const lab = await NatLab.create({ prefix: opts.prefix ?? 'eme', sites, tunnelServers: 2 });
    const workDir = await mkdtemp(join(tmpdir(), 'edgemesh-edge-cluster-'));
    const cluster = new EdgeCluster(lab, workDir, progress);
    try {
      await cluster.#start();
    } catch (err) {
      cluster.step(`start failed: ${(err as Error).message}; cleaning up`);
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  /** The cloud host (control plane + webhook). */
  get cloud() {
    return this.lab.tunnelServers[0] as { ns: string; addr: string };
  }

  /** The public host running the tunnel-server. */
  get tunnelHost() {
    return this.lab.tunnelServers[1] as { ns: string; addr: string };
  }

  get controlPlane(): ControlPlane {
    if (!this.cp) throw new Error('edge cluster: control plane not started');
    return this.cp;
  }

  /** Prints one progress line with the time since start. */
  step(what: string): void {
    const s = ((Date.now() - this.#started) / 1000).toFixed(1).padStart(6);
    this.#progress(`edge-cluster [${s}s] ${what}`);
  }

  async #start(): Promise<void> {
    this.step('starting the control plane in the cloud namespace (builds Kubernetes on first use)');
    this.cp = await ControlPlane.start({ netns: this.cloud.ns, address: this.cloud.addr });
    this.step(`control plane ready at ${this.cp.server}`);

    this.step(`applying manifests (${MANIFESTS})`);
    await this.kubectl(['apply', '--validate=strict', '-k', MANIFESTS]);
    this.step('TLS bootstrap: edgemesh webhook-tls against the API server');
    const tls = await execFileP(EDGEMESH_BIN, ['webhook-tls', '--ip-san=127.0.0.1'], {
      env: { ...process.env, KUBECONFIG: this.cp.localKubeconfig },
      timeout: 60_000,
    });
    this.step(`webhook-tls: ${tls.stdout.trim()}`);
    await this.#startWebhook();

    const testNodes: PlannedNode[] = [];
    for (const site of this.lab.sites) {
      for (const [i, node] of site.nodes.entries()) {
        const stateDir = join(this.workDir, `gateway-${node.name}`);
        testNodes.push({
          name: node.name,
          netns: node.ns,
          address: node.addr,
          podCidr: `10.${site.index}.${i + 1}.0/24`,
          labels: { 'topology.kubernetes.io/zone': `site-${site.index}` },
          site: site.index,
          stateDir,
        });
      }
    }
    await this.#startTunnelServer(testNodes.map((n) => n.name));
    this.step(`registering nodes ${testNodes.map((n) => `${n.name} (${n.address})`).join(', ')}`);
    this.agent = await NodeAgent.start({
      kubeConfig: this.cp.kubeConfig(),
      nodes: testNodes,
      netnsPrefix: this.lab.netns.tag,
    });
    await waitFor(
      async () => {
        const nodes = JSON.parse(await this.kubectl(['get', 'nodes', '-o', 'json'])).items as {
          spec: { taints?: unknown[] };
        }[];
        return nodes.length === testNodes.length && nodes.every((n) => !n.spec.taints?.length);
      },
      60_000,
      500,
      'all nodes Ready and untainted',
    );
    this.#gatewayKubeconfigFile = await this.#gatewayKubeconfig();
    for (const node of testNodes) {
      await mkdir(node.stateDir, { recursive: true });
      this.nodes.push({ ...node, gateway: this.#startGateway(node) });
    }
    for (const node of this.nodes) await this.#gatewayReady(node);
    this.step(`gateways ready on ${this.nodes.map((n) => n.name).join(', ')}`);
    if (this.meshCa) {
      // Each gateway enrols with the tunnel-server (bootstrap token → node certificate).
      for (const node of this.nodes) {
        await this.#whileRunning(
          node.gateway,
          () =>
            stat(join(node.stateDir, 'tunnel.crt')).then(
              () => true,
              () => false,
            ),
          60_000,
          250,
          `gateway on ${node.name} enrolled with the tunnel-server`,
        );
      }
      this.step('gateways enrolled with the tunnel-server (node certificates from the mesh CA)');
    }
    this.step(`edge cluster up (kubeconfig for this machine: ${this.cp.localKubeconfig})`);
  }

  async #startWebhook(): Promise<void> {
    const json = async (args: string[]) => JSON.parse(await this.kubectl([...args, '-o', 'json']));
    const secret = await json(['-n', 'edgemesh-system', 'get', 'secret', 'edgemesh-webhook-tls']);
    const dir = join(this.workDir, 'webhook');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'tls.crt'), Buffer.from(secret.data['tls.crt'], 'base64'));
    await writeFile(join(dir, 'tls.key'), Buffer.from(secret.data['tls.key'], 'base64'), { mode: 0o600 });
    const config = await json(['-n', 'edgemesh-system', 'get', 'configmap', 'edgemesh-config']);
    await writeFile(join(dir, 'webhook.yaml'), config.data['webhook.yaml']);
    this.step(`starting the webhook in the cloud namespace on 127.0.0.1:${WEBHOOK_PORT} (URL clientConfig)`);
    this.webhook = this.#spawn('webhook', this.cloud.ns, [
      EDGEMESH_BIN,
      'webhook',
      '--host=127.0.0.1',
      `--port=${WEBHOOK_PORT}`,
      `--tls-cert=${join(dir, 'tls.crt')}`,
      `--tls-key=${join(dir, 'tls.key')}`,
      `--config=${join(dir, 'webhook.yaml')}`,
    ]);
    await this.#whileRunning(
      this.webhook,
      () => this.#answers(this.cloud.ns, `https://127.0.0.1:${WEBHOOK_PORT}/readyz`),
      30_000,
      200,
      'webhook /readyz',
    );
    this.step('webhook ready');
  }

  /**
   * The tunnel-server on its public host, with a fresh mesh CA and static per-node
   * enrolment tokens (the TokenReview mode would need a gateway pod for each token: here
   * the gateways are processes). The mesh CA is the one `edgemesh webhook-tls` stored in
   * the cluster, as the tunnel-server Deployment would mount it.
   */
  async #startTunnelServer(nodeNames: string[]): Promise<void> {
    const dir = join(this.workDir, 'mesh-ca');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const secret = JSON.parse(
      await this.kubectl(['-n', 'edgemesh-system', 'get', 'secret', 'edgemesh-mesh-ca', '-o', 'json']),
    ) as { data: Record<string, string> };
    const ca = {
      certPem: Buffer.from(secret.data['ca.crt'] ?? '', 'base64').toString(),
      keyPem: Buffer.from(secret.data['ca.key'] ?? '', 'base64').toString(),
    };
    if (!ca.certPem || !ca.keyPem)
      throw new Error('Secret edgemesh-mesh-ca lacks ca.crt/ca.key (edgemesh webhook-tls makes it)');
    this.step('mesh CA: from the Secret edgemesh-mesh-ca');
    await writeFile(join(dir, 'ca.crt'), ca.certPem);
    await writeFile(join(dir, 'ca.key'), ca.keyPem, { mode: 0o600 });
    const hashes: Record<string, string> = {};
    for (const node of nodeNames) {
      const token = randomBytes(24).toString('hex');
      this.enrolTokens[node] = join(dir, `${node}.token`);
      await writeFile(this.enrolTokens[node], token, { mode: 0o600 });
      hashes[node] = createHash('sha256').update(token).digest('hex');
    }
    await writeFile(join(dir, 'enrol-tokens.json'), JSON.stringify(hashes), { mode: 0o600 });
    this.meshCa = join(dir, 'ca.crt');
    this.step(`starting the tunnel-server on ${this.tunnelHost.addr}:${TUNNEL_PORT}`);
    this.#tunnelServerArgv = [
      EDGEMESH_BIN,
      'tunnel-server',
      `--listen=0.0.0.0:${TUNNEL_PORT}`,
      '--name=tunnel-1',
      `--server-ip=${this.tunnelHost.addr}`,
      `--ca-cert=${join(dir, 'ca.crt')}`,
      `--ca-key=${join(dir, 'ca.key')}`,
      `--enrol-tokens=${join(dir, 'enrol-tokens.json')}`,
    ];
    await this.#spawnTunnelServer();
    this.step('tunnel-server ready');
  }

  async #spawnTunnelServer(): Promise<void> {
    this.tunnelServer = this.#spawn('tunnel-server', this.tunnelHost.ns, this.#tunnelServerArgv);
    await this.#whileRunning(
      this.tunnelServer,
      async () => {
        const r = await this.lab.run(this.tunnelHost.ns, ['ss', '-Hltn', `sport = :${TUNNEL_PORT}`]);
        return r.stdout.includes(`:${TUNNEL_PORT}`);
      },
      30_000,
      200,
      'tunnel-server listening',
    );
  }

  /** A kubeconfig for the edgemesh-gateway ServiceAccount (token from the TokenRequest API). */
  async #gatewayKubeconfig(): Promise<string> {
    const cp = this.controlPlane;
    const token = (
      await this.kubectl(['-n', 'edgemesh-system', 'create', 'token', 'edgemesh-gateway', '--duration=48h'])
    ).trim();
    const ca = (await readFile(cp.pki.caCert)).toString('base64');
    const path = join(this.workDir, 'gateway.kubeconfig');
    await writeFile(
      path,
      [
        'apiVersion: v1',
        'kind: Config',
        `clusters: [{name: edge, cluster: {server: "${cp.server}", certificate-authority-data: ${ca}}}]`,
        `users: [{name: edgemesh-gateway, user: {token: ${token}}}]`,
        'contexts: [{name: edge, context: {cluster: edge, user: edgemesh-gateway, namespace: edgemesh-system}}]',
        'current-context: edge',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    return path;
  }

  /** Waits for a gateway's /ready (it has a catalog: from the API, or persisted on disk). */
  async #gatewayReady(node: ClusterNode): Promise<void> {
    await this.#whileRunning(
      node.gateway,
      () => this.#answers(node.netns, `http://127.0.0.1:${GATEWAY_METRICS_PORT}/ready`),
      60_000,
      250,
      `gateway on ${node.name} ready (has a catalog)`,
    );
  }

  /** Restarts a node's gateway (SIGTERM, then the same command); resolves once it is ready. */
  async restartGateway(nodeName: string): Promise<void> {
    const node = this.node(nodeName);
    await node.gateway.stop(10_000);
    this.#processes.splice(this.#processes.indexOf(node.gateway), 1);
    node.gateway = this.#startGateway(node);
    await this.#gatewayReady(node);
    this.step(`gateway on ${nodeName} restarted and ready`);
  }

  #startGateway(node: PlannedNode): ManagedProcess {
    const tunnel =
      this.meshCa && this.enrolTokens[node.name]
        ? [
            `--tunnel-servers=${this.tunnelHost.addr}:${TUNNEL_PORT}`,
            `--mesh-ca=${this.meshCa}`,
            `--enroll-token-file=${this.enrolTokens[node.name]}`,
          ]
        : [];
    this.step(
      `starting the gateway on ${node.name} (listen ${node.address}:15080${tunnel.length ? `, tunnel via ${this.tunnelHost.addr}:${TUNNEL_PORT}` : ', no tunnel'})`,
    );
    return this.#spawn(`gateway-${node.name}`, node.netns, [
      EDGEMESH_BIN,
      'gateway',
      `--node-name=${node.name}`,
      `--kubeconfig=${this.#gatewayKubeconfigFile}`,
      `--state-dir=${node.stateDir}`,
      `--listen=${node.address}`,
      ...tunnel,
    ]);
  }

  /** waitFor `ready`, with the end of `proc`'s log in the error if it has exited meanwhile. */
  #whileRunning(
    proc: ManagedProcess,
    ready: () => Promise<boolean>,
    timeoutMs: number,
    intervalMs: number,
    what: string,
  ): Promise<boolean> {
    return waitFor(
      async () => {
        if (!proc.running) throw new Error(`${proc.name} exited: ${await tail(proc.logFile)}`);
        return ready();
      },
      timeoutMs,
      intervalMs,
      what,
    );
  }

  /** True when `url` answers 2xx within 2 s from inside `netns` (our own CAs: not verified). */
  async #answers(netns: string, url: string): Promise<boolean> {
    const r = await this.lab.run(netns, ['curl', '-skf', '--max-time', '2', url]);
    return r.code === 0;
  }

  #spawn(name: string, netns: string, argv: string[]): ManagedProcess {
    const p = new ManagedProcess(name, argv, {
      netns,
      logFile: join(this.workDir, `${name}.log`),
      env: { ...process.env, EDGEMESH_LOG_LEVEL: process.env.EDGEMESH_LOG_LEVEL ?? 'info' } as Record<
        string,
        string
      >,
    });
    this.#processes.push(p);
    return p;
  }

  /** kubectl as admin (runs in the cloud namespace); throws with its output on failure. */
  kubectl(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
    return this.controlPlane.kubectl(args, opts);
  }

  node(name: string): ClusterNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`edge cluster: no node ${name}`);
    return n;
  }

  /** A gateway's Prometheus text (from its node's namespace). */
  async gatewayMetrics(nodeName: string): Promise<string> {
    const node = this.node(nodeName);
    return (
      await this.lab.exec(node.netns, [
        'curl',
        '-sf',
        '--max-time',
        '3',
        `http://127.0.0.1:${GATEWAY_METRICS_PORT}/metrics`,
      ])
    ).stdout;
  }

  /**
   * Cuts the cloud off: the core router drops everything to and from the cloud host and the
   * tunnel-server host, as when a site's uplink to the cloud fails. Established connections
   * see silence, not resets. (The node agent keeps its own API link: it stands in for the
   * kubelet and is not part of the mesh under test.)
   */
  async cutCloud(): Promise<void> {
    const core = this.lab.coreNs;
    const ipt = (args: string[]) => this.lab.exec(core, ['iptables', '-w', ...args]);
    if (this.#cut) return;
    await ipt(['-N', CUT_CHAIN]).catch(() => undefined);
    await ipt(['-F', CUT_CHAIN]);
    for (const host of [this.cloud.addr, this.tunnelHost.addr]) {
      await ipt(['-A', CUT_CHAIN, '-d', host, '-j', 'DROP']);
      await ipt(['-A', CUT_CHAIN, '-s', host, '-j', 'DROP']);
    }
    await ipt(['-I', 'FORWARD', '-j', CUT_CHAIN]);
    this.#cut = true;
    this.step('cloud cut off (API server and tunnel-server unreachable from the sites)');
  }

  async restoreCloud(): Promise<void> {
    if (!this.#cut) return;
    await this.lab.exec(this.lab.coreNs, ['iptables', '-w', '-D', 'FORWARD', '-j', CUT_CHAIN]);
    this.#cut = false;
    this.step('cloud link restored');
  }

  /** Kills the API server and the tunnel-server outright (a crash, not a drain). */
  async crashCloud(): Promise<void> {
    await this.controlPlane.stopApiServer(0);
    if (this.tunnelServer) {
      this.#processes.splice(this.#processes.indexOf(this.tunnelServer), 1);
      await this.tunnelServer.stop(0);
    }
    this.step('API server and tunnel-server killed');
  }

  /** Starts both again (same flags, same data, same mesh CA); resolves once they serve. */
  async recoverCloud(): Promise<void> {
    await this.controlPlane.startApiServer();
    if (this.#tunnelServerArgv.length > 0) await this.#spawnTunnelServer();
    this.step('API server and tunnel-server back');
  }

  /** What `scripts/demo` records to tear the cluster down from another process. */
  describe(): { tag: string; dirs: string[]; pids: number[]; kubeconfig: string; kubectl: string } {
    const cp = this.controlPlane;
    const pids = [...this.#processes.map((p) => p.pid), ...Object.values(cp.pids)].filter(
      (p): p is number => typeof p === 'number',
    );
    return {
      tag: this.lab.netns.tag,
      dirs: [this.workDir, cp.dataDir, ...(this.agent ? [this.agent.dataDir] : [])],
      pids,
      kubeconfig: cp.localKubeconfig,
      kubectl: join(cp.binDir, 'kubectl'),
    };
  }

  /** Stops everything this cluster started (by PID) and deletes its namespaces. Safe to call twice. */
  async stop(): Promise<void> {
    this.step('stopping: node agent (pods), gateways, tunnel-server, webhook, control plane, lab');
    await this.restoreCloud().catch(() => undefined);
    await this.agent?.stop().catch((err) => this.step(`node agent stop: ${err}`));
    for (const p of this.#processes.splice(0).reverse()) await p.stop(5_000);
    await this.cp?.stop().catch((err) => this.step(`control plane stop: ${err}`));
    await this.lab.cleanup();
    if (!process.env.EDGEMESH_KEEP_CLUSTER_DATA) await rm(this.workDir, { recursive: true, force: true });
    this.step('stopped');
  }
}

async function tail(file: string, lines = 20): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return `\n--- ${file} ---\n${text.trim().split('\n').slice(-lines).join('\n')}`;
}
