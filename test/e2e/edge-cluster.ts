import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { apiFromKubeConfig } from '../../lib/kube/client.ts';
import { lastLine } from '../../manifests/testing/build-tool.ts';
import { ControlPlane } from '../cluster/control-plane.ts';
import { buildImages } from '../cluster/oci-images.ts';
import { ManagedProcess } from '../cluster/process.ts';
import { RealNode } from '../cluster/real-node.ts';
import { EDGEMESH_BIN, exitResult, waitFor } from '../harness/netns.ts';
import { MetaServer } from '../metaserver/metaserver.ts';
import { type LabSite, NatLab, type SiteSpec } from '../natlab/lab.ts';

const execFileP = promisify(execFile);

/** The shipped manifests, applied through an overlay that changes only the image. */
export const SHIPPED_MANIFESTS = new URL('../../manifests', import.meta.url).pathname;
export type InstallPath = 'edgemesh' | 'kustomize' | 'helm';
export const SHIPPED_CHART = new URL('../../charts/edgemesh', import.meta.url).pathname;
const HELM_BUILD_SCRIPT = new URL('../cluster/build-helm.sh', import.meta.url).pathname;
export const TUNNEL_PORT = 20006;
/** The gateway's /metrics and /ready port (its default). */
export const GATEWAY_METRICS_PORT = 15090;
/**
 * The tunnel-server Service's public address. The lab's core router routes it to the cloud
 * node, where kube-proxy's load-balancer rules take it to the pod: what MetalLB in BGP mode
 * or a cloud load balancer does. The test writes it into the Service's status, as their
 * controllers do.
 */
export const TUNNEL_LB_IP = '198.51.100.200';
const CUT_CHAIN = 'EDGEMESH_CUT';
/** edgecore's metaServer address on an edge node (KubeEdge's default). */
export const EDGE_API_PORT = 10550;
/** The collections a KubeEdge metaServer caches for edgemesh (what its gateway watches). */
const METASERVER_RESOURCES = ['/api/v1/services', '/api/v1/endpoints', '/api/v1/pods'];

/**
 * What the edge nodes' gateways read (KubeEdge mode, docs/kubeedge.md):
 * - undefined: the cloud API server (the base manifests; nodes with API access);
 * - 'kubectl-proxy': a real `kubectl proxy` on 127.0.0.1:10550 of each edge node, as that
 *   node's identity (system:node:<name>) — what a node may see through the Node authorizer,
 *   plus core/v1 Endpoints, granted as cloudcore's own role has them;
 * - 'metaserver': the metaServer stand-in (test/metaserver) per edge node, caching what
 *   cloudcore sends and answering from its cache while the site is cut off.
 */
export type EdgeApi = 'kubectl-proxy' | 'metaserver';
const SYSTEM_NS = 'edgemesh-system';

export interface EdgeClusterOptions {
  /** NetnsLab prefix (≤ 4 chars); every namespace name starts with it plus a random tag. */
  prefix?: string;
  /** Default: site 1 (A) port-preserving NAT dropping unsolicited inbound, one node; site 2 (B)
   * port-preserving NAT answering it with RST/ICMP (as a plain Linux router does), two nodes. */
  sites?: SiteSpec[];
  /** Where step-by-step progress goes (default: stderr). */
  progress?: (line: string) => void;
  /** KubeEdge mode: the edge API the edge nodes' gateways use (default: none, the cloud API). */
  edgeApi?: EdgeApi;
  /**
   * How edgemesh goes in, each as the README says: `edgemesh install | kubectl apply -f -` then
   * `edgemesh config set tunnel-servers` ('edgemesh'), `kubectl apply -k` of an overlay then
   * `edgemesh webhook-tls` (default), or `helm install` of charts/edgemesh ('helm').
   */
  install?: InstallPath;
}

/** A node of the cluster: its lab host and the real kubelet + containerd on it. */
export interface ClusterNode {
  name: string;
  /** 0 for the cloud node, else the site's number. */
  site: number;
  netns: string;
  address: string;
  podCidr: string;
  real: RealNode;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * "Edge cluster in a box": the NAT lab's small internet with real Kubernetes nodes.
 *
 *   public 198.51.100.0/24: cloud .11 — control plane (API server :6443) and the cloud node
 *                           (kubelet + containerd + kube-proxy): webhook and tunnel-server pods
 *                           .200 — the tunnel-server Service's load-balancer address (→ cloud)
 *   site k: ISP hop → NAT router 203.0.113.<64+4k+2> → LAN 192.168.k.0/24
 *           node<k>-<i> 192.168.k.<10+i>: kubelet + containerd (no kube-proxy: the mesh
 *           replaces it), pods 10.k.i.0/24 on its CNI bridge
 *
 * edgemesh is deployed as a user would: `kubectl apply -k` of the shipped manifests through
 * an overlay that only sets the image (built from this checkout and imported into every
 * node's containerd), the README's ConfigMap edits (tunnel-server address; the API server's
 * address for nodes without kube-proxy), `edgemesh webhook-tls`. The webhook (2 replicas)
 * and the tunnel-server run as pods on the cloud node, a gateway pod on every node.
 *
 * The API server reaches edge kubelets (kubectl exec/logs) through a port forward of :10250
 * on each NAT router, as KubeEdge's cloudstream tunnel stands in for it on real edge sites;
 * nothing else enters a site unsolicited. The test process stays in the root namespace and
 * talks to the API server over the control plane's Unix-socket bridge. `stop()` ends every
 * process by PID, unmounts, removes cgroups and deletes every namespace, also after a
 * failed start.
 */
export class EdgeCluster {
  readonly lab: NatLab;
  readonly workDir: string;
  /** Edge nodes (sites ≥ 1). */
  readonly nodes: ClusterNode[] = [];
  cloudNode: ClusterNode | undefined;
  images: Awaited<ReturnType<typeof buildImages>> | undefined;
  readonly #progress: (line: string) => void;
  readonly #started = Date.now();
  cp: ControlPlane | undefined;
  readonly edgeApi: EdgeApi | undefined;
  readonly install: InstallPath;
  /** The helm binary (test/cluster/build-helm.sh) when installed with Helm. */
  helmBin: string | undefined;
  readonly #edgeApiProcesses: ManagedProcess[] = [];
  readonly #metaServers: MetaServer[] = [];
  /** The overlay applied with `kubectl apply -k` (the shipped manifests, our image). */
  readonly overlayDir: string;
  #cut = false;

  private constructor(
    lab: NatLab,
    workDir: string,
    progress: (line: string) => void,
    edgeApi: EdgeApi | undefined,
    install: InstallPath,
  ) {
    this.lab = lab;
    this.edgeApi = edgeApi;
    this.install = install;
    this.workDir = workDir;
    this.#progress = progress;
    this.overlayDir = join(workDir, 'overlay');
  }

  static async start(opts: EdgeClusterOptions = {}): Promise<EdgeCluster> {
    const progress = opts.progress ?? ((line: string) => process.stderr.write(`${line}\n`));
    const sites = opts.sites ?? [
      { mapping: 'preserving', inbound: 'drop', nodes: 1 },
      { mapping: 'preserving', inbound: 'reject', nodes: 2 },
    ];
    progress('edge-cluster: building the NAT lab (public segment, ISP hops, NAT routers, site LANs)');
    const lab = await NatLab.create({ prefix: opts.prefix ?? 'eme', sites, tunnelServers: 1 });
    const workDir = await mkdtemp(join(tmpdir(), 'edgemesh-edge-cluster-'));
    const cluster = new EdgeCluster(lab, workDir, progress, opts.edgeApi, opts.install ?? 'kustomize');
    try {
      await cluster.#start();
    } catch (err) {
      cluster.step(`start failed: ${(err as Error).message}; cleaning up`);
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  /** The cloud host (control plane + cloud node). */
  get cloud(): { ns: string; addr: string } {
    return this.lab.tunnelServers[0] as { ns: string; addr: string };
  }

  get controlPlane(): ControlPlane {
    if (!this.cp) throw new Error('edge cluster: control plane not started');
    return this.cp;
  }

  /** Every node, the cloud node first. */
  get allNodes(): ClusterNode[] {
    return [...(this.cloudNode ? [this.cloudNode] : []), ...this.nodes];
  }

  /** Prints one progress line with the time since start. */
  step(what: string): void {
    const s = ((Date.now() - this.#started) / 1000).toFixed(1).padStart(6);
    this.#progress(`edge-cluster [${s}s] ${what}`);
  }

  async #start(): Promise<void> {
    this.step('building the images (edgemesh from this checkout, pause, nginx, client)');
    this.images = await buildImages();
    this.step(`images: ${[this.images.edgemesh, this.images.nginx, this.images.client].join(', ')}`);
    this.step('starting the control plane in the cloud namespace (builds Kubernetes on first use)');
    this.cp = await ControlPlane.start({ netns: this.cloud.ns, address: this.cloud.addr });
    this.step(`control plane ready at ${this.cp.server}`);

    const tag = this.lab.netns.tag;
    const planned: Omit<ClusterNode, 'real'>[] = [
      { name: 'cloud', site: 0, netns: this.cloud.ns, address: this.cloud.addr, podCidr: '10.100.0.0/24' },
    ];
    for (const site of this.lab.sites) {
      for (const [i, node] of site.nodes.entries()) {
        const podCidr = `10.${site.index}.${i + 1}.0/24`;
        await this.lab.routeToNode(node, podCidr);
        await this.#forwardKubeletPort(site, i + 1, node.addr);
        planned.push({ name: node.name, site: site.index, netns: node.ns, address: node.addr, podCidr });
      }
    }
    // Nodes start one after another: each import and kubelet start is CPU-bound here.
    for (const n of planned) {
      this.step(`node ${n.name}: containerd, images, kubelet${n.site === 0 ? ', kube-proxy' : ''}`);
      const real = await RealNode.start(
        this.controlPlane,
        {
          name: n.name,
          netns: n.netns,
          address: n.address,
          podCidr: n.podCidr,
          kubeProxy: n.site === 0,
          clusterCidr: '10.0.0.0/8',
          labels: n.site === 0 ? undefined : { 'topology.kubernetes.io/zone': `site-${n.site}` },
          images: this.images.tars,
        },
        tag,
      );
      const node = { ...n, real };
      if (n.site === 0) this.cloudNode = node;
      else this.nodes.push(node);
      this.step(`node ${n.name} Ready`);
    }
    // What keadm/cloudcore puts on a KubeEdge edge node (a kubelet may not set node-role labels).
    for (const n of this.nodes) {
      await this.kubectl(['label', 'node', n.name, 'node-role.kubernetes.io/edge=', '--overwrite']);
    }

    const overlay = this.overlayDir;
    await mkdir(overlay, { recursive: true });
    const [imageName, imageTag] = splitRef(this.images.edgemesh);
    await writeFile(
      join(overlay, 'kustomization.yaml'),
      [
        'apiVersion: kustomize.config.k8s.io/v1beta1',
        'kind: Kustomization',
        // kustomize takes only relative paths to other kustomizations.
        `resources: [${relative(overlay, this.edgeApi ? join(SHIPPED_MANIFESTS, 'overlays/kubeedge') : SHIPPED_MANIFESTS)}]`,
        `images: [{ name: ghcr.io/edgemesh/edgemesh, newName: ${imageName}, newTag: "${imageTag}" }]`,
        '',
      ].join('\n'),
    );
    if (this.edgeApi) await this.#startEdgeApis(this.edgeApi);
    if (this.install === 'edgemesh') await this.#installWithEdgemesh(imageName, imageTag);
    else await this.#installWithManifests(overlay, imageName, imageTag);

    this.step('waiting for the webhook, tunnel-server and gateway pods');
    for (const [kind, name] of [
      ['deployment', 'edgemesh-webhook'],
      ['deployment', 'edgemesh-tunnel-server'],
      ['daemonset', 'edgemesh-gateway'],
      ...(this.edgeApi ? ([['daemonset', 'edgemesh-gateway-edge']] as const) : []),
    ] as const) {
      await this.kubectl(['-n', SYSTEM_NS, 'rollout', 'status', `${kind}/${name}`, '--timeout=240s'], {
        timeoutMs: 250_000,
      }).catch(async (err: Error) => {
        throw new Error(`${err.message}\n${await this.#describeSystemPods()}`);
      });
    }
    this.step(
      'edgemesh pods Running: webhook ×2 and tunnel-server on the cloud node, a gateway on every node',
    );
    for (const node of this.allNodes) await this.gatewayReady(node.name);
    // Ready does not wait for the tunnel-server (an edge node restarted offline must still
    // serve its pods), so cross-site tests would race the gateways' registration there.
    const linking = Date.now();
    for (const node of this.allNodes) await this.tunnelLinked(node.name);
    this.step(`every gateway registered at the tunnel-server (${Date.now() - linking} ms after Ready)`);
    this.step(`edge cluster up (kubeconfig for this machine: ${this.controlPlane.localKubeconfig})`);
  }

  /** README "Deploying", step 2 and 3: `edgemesh install | kubectl apply -f -`, then `config set`. */
  async #installWithEdgemesh(imageName: string, imageTag: string): Promise<void> {
    this.step(
      `edgemesh install | kubectl apply -f - (image ${imageName}:${imageTag}${this.edgeApi ? ', --kubeedge' : ''})`,
    );
    const rendered = await this.edgemesh([
      'install',
      '--image',
      `${imageName}:${imageTag}`,
      '--api-server-host',
      this.cloud.addr,
      '--api-server-port',
      '6443',
      ...(this.edgeApi ? ['--kubeedge'] : []),
    ]);
    await this.kubectl(['apply', '--validate=strict', '-f', '-'], { input: rendered.stdout });
    this.step(`install: ${rendered.stderr.trim().split('\n').join('; ')}`);
    // Step 3: the tunnel-server's public address, set once it has one; the gateways restart.
    await this.#publishTunnelServer();
    const set = await this.edgemesh(
      ['config', 'set', 'tunnel-servers', `${TUNNEL_LB_IP}:${TUNNEL_PORT}`],
      200_000,
    );
    this.step(`config set: ${set.stdout.trim().split('\n').pop()}`);
  }

  /** `kubectl apply -k` of the overlay (or `helm install`), the settings patch and `edgemesh webhook-tls`. */
  async #installWithManifests(overlay: string, imageName: string, imageTag: string): Promise<void> {
    if (this.install === 'helm') {
      // README "With Helm": the chart's values instead of the overlay (and the tunnel-servers patch).
      this.step(
        `helm install charts/edgemesh (image ${imageName}:${imageTag}${this.edgeApi ? ', kubeedge.enabled' : ''})`,
      );
      await this.helm([
        'install',
        'edgemesh',
        SHIPPED_CHART,
        '-n',
        SYSTEM_NS,
        '--create-namespace',
        '--set',
        `image.repository=${imageName}`,
        '--set',
        `image.tag=${imageTag}`,
        '--set',
        `tunnelServers=${TUNNEL_LB_IP}:${TUNNEL_PORT}`,
        ...(this.edgeApi ? ['--set', 'kubeedge.enabled=true'] : []),
      ]);
    } else {
      this.step(
        `kubectl apply -k (the shipped manifests${this.edgeApi ? ', KubeEdge overlay' : ''}, image ${imageName}:${imageTag})`,
      );
      await this.kubectl(['apply', '--validate=strict', '-k', overlay]);
    }
    this.step('ConfigMap edgemesh-config: tunnel-server and API server addresses for the edge nodes');
    await this.kubectl([
      '-n',
      SYSTEM_NS,
      'patch',
      'configmap',
      'edgemesh-config',
      '--type=merge',
      '-p',
      JSON.stringify({
        data: {
          'tunnel-servers': `${TUNNEL_LB_IP}:${TUNNEL_PORT}`,
          'kubernetes-service-host': this.cloud.addr,
          'kubernetes-service-port': '6443',
        },
      }),
    ]);
    this.step('TLS bootstrap: edgemesh webhook-tls against the API server');
    const tls = await this.edgemesh(['webhook-tls']);
    this.step(`webhook-tls: ${tls.stdout.trim()}`);
    // Gateway pods created before the ConfigMap edit carry the old addresses.
    await this.kubectl(['-n', SYSTEM_NS, 'rollout', 'restart', 'daemonset/edgemesh-gateway']);
    if (this.edgeApi)
      await this.kubectl(['-n', SYSTEM_NS, 'rollout', 'restart', 'daemonset/edgemesh-gateway-edge']);
    await this.#publishTunnelServer();
  }

  /** The edgemesh CLI against this cluster (asynchronously: the API forwarder lives in this process). */
  async edgemesh(args: string[], timeoutMs = 60_000): Promise<{ stdout: string; stderr: string }> {
    return execFileP(EDGEMESH_BIN, args, {
      env: { ...process.env, KUBECONFIG: this.controlPlane.localKubeconfig },
      timeout: timeoutMs,
      maxBuffer: 16 << 20,
    }).catch((err: Error & { stdout?: string; stderr?: string }) => {
      throw new Error(
        `edgemesh ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}\n${err.stdout ?? ''}`,
      );
    });
  }

  /** An edge API on 127.0.0.1:10550 of every edge node (see EdgeApi). */
  async #startEdgeApis(kind: EdgeApi): Promise<void> {
    if (kind === 'kubectl-proxy') {
      // cloudcore's ClusterRole has get/list/watch on endpoints; the Node authorizer gives a
      // node none. KubeEdge's edge API answers with cloudcore's rights: so does this one.
      await this.kubectl(['apply', '-f', '-'], {
        input: JSON.stringify({
          apiVersion: 'v1',
          kind: 'List',
          items: [
            {
              apiVersion: 'rbac.authorization.k8s.io/v1',
              kind: 'ClusterRole',
              metadata: { name: 'e2e-cloudcore-endpoints' },
              rules: [{ apiGroups: [''], resources: ['endpoints'], verbs: ['get', 'list', 'watch'] }],
            },
            {
              apiVersion: 'rbac.authorization.k8s.io/v1',
              kind: 'ClusterRoleBinding',
              metadata: { name: 'e2e-cloudcore-endpoints' },
              roleRef: {
                apiGroup: 'rbac.authorization.k8s.io',
                kind: 'ClusterRole',
                name: 'e2e-cloudcore-endpoints',
              },
              subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'system:nodes' }],
            },
          ],
        }),
      });
    }
    for (const node of this.nodes) {
      if (kind === 'kubectl-proxy') {
        const kubeconfig = await this.controlPlane.componentKubeconfig({ node: node.name });
        this.#edgeApiProcesses.push(
          new ManagedProcess(
            `kubectl-proxy-${node.name}`,
            [
              join(this.controlPlane.binDir, 'kubectl'),
              'proxy',
              `--kubeconfig=${kubeconfig}`,
              '--address=127.0.0.1',
              `--port=${EDGE_API_PORT}`,
            ],
            { netns: node.netns, logFile: join(this.workDir, `kubectl-proxy-${node.name}.log`) },
          ),
        );
      } else {
        // The stand-in runs in this process (its cloud link is the test's own, cut by
        // setConnected with the site); a relay in the node's namespace serves its socket
        // on 127.0.0.1:10550 there.
        const socket = join(this.workDir, `metaserver-${node.name}.sock`);
        this.#metaServers.push(
          await MetaServer.start({
            upstream: apiFromKubeConfig(this.controlPlane.kubeConfig()),
            resources: METASERVER_RESOURCES,
            path: socket,
          }),
        );
        this.#edgeApiProcesses.push(
          new ManagedProcess(
            `metaserver-relay-${node.name}`,
            ['socat', `TCP-LISTEN:${EDGE_API_PORT},bind=127.0.0.1,reuseaddr,fork`, `UNIX-CONNECT:${socket}`],
            { netns: node.netns, logFile: join(this.workDir, `metaserver-relay-${node.name}.log`) },
          ),
        );
      }
      await waitFor(
        () => this.#answers(node.netns, `http://127.0.0.1:${EDGE_API_PORT}/api/v1/services?limit=1`),
        30_000,
        200,
        `edge API (${kind}) on ${node.name}`,
      );
    }
    this.step(`edge API (${kind}) on 127.0.0.1:${EDGE_API_PORT} of every edge node`);
  }

  /**
   * The API server dials a kubelet at its InternalIP (192.168.k.x, behind the site's NAT):
   * in the cloud namespace that address's :10250 is sent to the NAT router's public
   * address, port 10250+10k+i, which the router forwards to the node — for the cloud host
   * only, and for that port only.
   */
  async #forwardKubeletPort(site: LabSite, i: number, nodeAddr: string) {
    const publicPort = 10250 + 10 * site.index + i;
    await this.lab.exec(this.cloud.ns, [
      'iptables',
      '-w',
      '-t',
      'nat',
      '-A',
      'OUTPUT',
      '-d',
      nodeAddr,
      '-p',
      'tcp',
      '--dport',
      '10250',
      '-j',
      'DNAT',
      '--to-destination',
      `${site.publicAddr}:${publicPort}`,
    ]);
    await this.lab.forwardPort(site, { publicPort, to: nodeAddr, port: 10250, from: this.cloud.addr });
  }

  /** The load balancer: route the Service's address to the cloud node and report it in its status. */
  async #publishTunnelServer(): Promise<void> {
    await this.lab.exec(this.lab.coreNs, [
      'ip',
      'route',
      'replace',
      `${TUNNEL_LB_IP}/32`,
      'via',
      this.cloud.addr,
    ]);
    await this.kubectl([
      '-n',
      SYSTEM_NS,
      'patch',
      'service',
      'edgemesh-tunnel-server',
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({ status: { loadBalancer: { ingress: [{ ip: TUNNEL_LB_IP }] } } }),
    ]);
    this.step(
      `tunnel-server Service published at ${TUNNEL_LB_IP}:${TUNNEL_PORT} (load balancer → cloud node)`,
    );
  }

  async #describeSystemPods(): Promise<string> {
    const pods = await this.kubectl(['-n', SYSTEM_NS, 'get', 'pods', '-o', 'wide']).catch((e) => String(e));
    const events = await this.kubectl(['-n', SYSTEM_NS, 'get', 'events', '--sort-by=.lastTimestamp']).catch(
      (e) => String(e),
    );
    return `${pods}\n${events.split('\n').slice(-25).join('\n')}`;
  }

  /** Waits for a node's gateway /ready (it has a catalog: from the API, or persisted on disk). */
  async gatewayReady(nodeName: string, timeoutMs = 90_000): Promise<void> {
    const node = this.node(nodeName);
    await waitFor(
      () => this.#answers(node.netns, `http://127.0.0.1:${GATEWAY_METRICS_PORT}/ready`),
      timeoutMs,
      250,
      `gateway on ${nodeName} ready (has a catalog)`,
    );
  }

  /** Waits until a node's gateway has at least one tunnel-server link up (its metrics say so). */
  async tunnelLinked(nodeName: string, timeoutMs = 120_000): Promise<void> {
    await waitFor(
      async () =>
        Number(
          /^edgemesh_gateway_tunnel_servers_up(?:\{[^}]*\})? (\d+)/m.exec(
            await this.gatewayMetrics(nodeName).catch(() => ''),
          )?.[1] ?? 0,
        ) >= 1,
      timeoutMs,
      500,
      `gateway on ${nodeName} registered at a tunnel-server`,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}\n${await this.#gatewayDiagnostics(nodeName)}`);
    });
  }

  /**
   * Kills a node's gateway container (SIGKILL to its task, through the node's containerd: no
   * API needed) and waits until the kubelet has restarted it and it is ready again.
   */
  async restartGateway(nodeName: string): Promise<void> {
    const node = this.node(nodeName);
    const before = await this.containerId(nodeName, { namespace: SYSTEM_NS, container: 'gateway' });
    await node.real.ctr(['tasks', 'kill', '-s', 'SIGKILL', before]);
    await waitFor(
      async () => {
        const id = await this.containerId(nodeName, { namespace: SYSTEM_NS, container: 'gateway' }).catch(
          () => undefined,
        );
        return id !== undefined && id !== before && (await node.real.tasks()).has(id);
      },
      60_000,
      250,
      `kubelet restarting the gateway container on ${nodeName}`,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}\n${await this.#gatewayDiagnostics(nodeName)}`);
    });
    await this.gatewayReady(nodeName);
    this.step(`gateway on ${nodeName} killed, restarted by the kubelet and ready`);
  }

  /**
   * The id of a running container on a node, found by the labels the CRI puts on it
   * (pod namespace, pod name, container name), through that node's containerd.
   */
  /**
   * Kills a pod's sandbox (its pause process) through the node's containerd, as a crash or
   * an OOM of the sandbox would: the kubelet makes a new one, with a new IP from the CNI, even
   * while the API server is out of reach. Returns the pod's IP before and after (read in the
   * pod's network namespace, not from the API).
   */
  async restartSandbox(
    nodeName: string,
    where: { namespace: string; pod: string; container: string },
    timeoutMs = 120_000,
  ): Promise<{ before: string; after: string }> {
    const node = this.node(nodeName);
    const podIp = async () =>
      /inet (\d+\.\d+\.\d+\.\d+)\//.exec(
        await this.inPodNetns(nodeName, where, ['ip', '-4', '-o', 'addr', 'show', 'eth0']),
      )?.[1];
    const before = await podIp();
    if (!before) throw new Error(`no IPv4 address in ${where.namespace}/${where.pod} on ${nodeName}`);
    const filters = [
      `labels."io.kubernetes.pod.namespace"==${where.namespace}`,
      `labels."io.kubernetes.pod.name"==${where.pod}`,
      `labels."io.cri-containerd.kind"==sandbox`,
    ].join(',');
    const running = await node.real.tasks();
    const sandboxes = (await node.real.ctr(['containers', 'ls', '-q', filters]))
      .split('\n')
      .filter((id) => id && running.has(id));
    if (sandboxes.length !== 1)
      throw new Error(
        `expected one running sandbox of ${where.namespace}/${where.pod}, found ${sandboxes.length}`,
      );
    await node.real.ctr(['tasks', 'kill', '-s', 'SIGKILL', sandboxes[0] as string]);
    let after: string | undefined;
    await waitFor(
      async () => {
        after = await podIp().catch(() => undefined);
        return after !== undefined && after !== before;
      },
      timeoutMs,
      500,
      `the kubelet on ${nodeName} giving ${where.namespace}/${where.pod} a new sandbox`,
    );
    this.step(
      `${where.namespace}/${where.pod} on ${nodeName}: sandbox killed, back at ${after} (was ${before})`,
    );
    return { before, after: after as string };
  }

  /** What the node's kubelet said about the gateway, and the gateway's last log lines (read from the node's files). */
  async #gatewayDiagnostics(nodeName: string): Promise<string> {
    const dir = this.node(nodeName).real.dir;
    const sh = (cmd: string) =>
      execFileP('sh', ['-c', cmd], { timeout: 10_000, maxBuffer: 4 * 1024 * 1024 }).then(
        (r) => r.stdout,
        (e: Error) => `(${e.message})`,
      );
    const kubelet = await sh(`grep -i gateway ${dir}/kubelet.log | tail -n 15`);
    const logs = await sh(
      `for f in $(ls -t ${dir}/pod-logs/${SYSTEM_NS}_*gateway*/gateway/*.log 2>/dev/null | head -n 2); do echo "== $f"; tail -n 20 "$f"; done`,
    );
    return `kubelet on ${nodeName}:\n${kubelet}\ngateway logs:\n${logs}`;
  }

  async containerId(
    nodeName: string,
    where: { namespace: string; pod?: string; container: string },
  ): Promise<string> {
    const node = this.node(nodeName);
    const filters = [
      `labels."io.kubernetes.pod.namespace"==${where.namespace}`,
      `labels."io.kubernetes.container.name"==${where.container}`,
      ...(where.pod ? [`labels."io.kubernetes.pod.name"==${where.pod}`] : []),
    ].join(',');
    const ids = (await node.real.ctr(['containers', 'ls', '-q', filters])).split('\n').filter(Boolean);
    const running = await node.real.tasks();
    const id = ids.find((i) => running.has(i));
    if (!id)
      throw new Error(
        `no running container ${where.container} of ${where.namespace}/${where.pod ?? '*'} on ${nodeName}`,
      );
    return id;
  }

  /** `kubectl exec` into a pod's container (through the API server and the node's kubelet). */
  async exec(
    namespace: string,
    pod: string,
    container: string,
    argv: string[],
    timeoutMs = 30_000,
  ): Promise<ExecResult> {
    return exitResult(
      this.kubectl(['-n', namespace, 'exec', pod, '-c', container, '--', ...argv], { timeoutMs }).then(
        (stdout) => ({ stdout, stderr: '' }),
      ),
    ).then((r) => (r.code === 0 ? r : { ...r, stderr: r.stderr.replace(/^kubectl .*? exited \d+: /, '') }));
  }

  /**
   * Runs argv in a pod's container straight through its node's containerd (`ctr tasks
   * exec`, as `crictl exec` does): works while the cloud, and so the API server, is cut off.
   */
  async execDirect(
    nodeName: string,
    where: { namespace: string; pod: string; container: string },
    argv: string[],
    timeoutMs = 30_000,
  ): Promise<ExecResult> {
    const node = this.node(nodeName);
    const id = await this.containerId(nodeName, where);
    const execId = `e2e-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    return exitResult(
      execFileP(
        'ctr',
        ['-a', node.real.socket, '-n', 'k8s.io', 'tasks', 'exec', '--exec-id', execId, id, ...argv],
        {
          timeout: timeoutMs,
          maxBuffer: 16 * 1024 * 1024,
        },
      ),
    );
  }

  /** Runs argv (a host tool) in a pod's network namespace, entered through one of its containers' PID. */
  async inPodNetns(
    nodeName: string,
    where: { namespace: string; pod: string; container: string },
    argv: string[],
  ) {
    const node = this.node(nodeName);
    const id = await this.containerId(nodeName, where);
    const pid = (await node.real.tasks()).get(id);
    return (await execFileP('nsenter', [`--target=${pid}`, '--net', '--', ...argv], { timeout: 30_000 }))
      .stdout;
  }

  /** kubectl as admin (runs in the cloud namespace); throws with its output on failure. */
  kubectl(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
    return this.controlPlane.kubectl(args, opts);
  }

  /** Runs the helm binary against the cluster (asynchronously: the API forwarder lives in this process). */
  async helm(args: string[], timeoutMs = 180_000): Promise<string> {
    if (!this.helmBin) this.helmBin = await lastLine(HELM_BUILD_SCRIPT, []);
    const { stdout } = await execFileP(this.helmBin, args, {
      env: { ...process.env, KUBECONFIG: this.controlPlane.localKubeconfig },
      timeout: timeoutMs,
      maxBuffer: 16 << 20,
    }).catch((err: Error & { stderr?: string }) => {
      throw new Error(`helm ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`);
    });
    return stdout;
  }

  node(name: string): ClusterNode {
    const n = this.allNodes.find((x) => x.name === name);
    if (!n) throw new Error(`edge cluster: no node ${name}`);
    return n;
  }

  /** A gateway's Prometheus text (from its node's namespace). */
  gatewayMetrics(nodeName: string): Promise<string> {
    return this.#gatewayGet(nodeName, '/metrics');
  }

  /** A gateway's /status document (JSON text: catalog, tunnel, peers and their paths). */
  gatewayStatus(nodeName: string): Promise<string> {
    return this.#gatewayGet(nodeName, '/status');
  }

  async #gatewayGet(nodeName: string, path: string): Promise<string> {
    const node = this.node(nodeName);
    return (
      await this.lab.exec(node.netns, [
        'curl',
        '-sf',
        '--max-time',
        '3',
        `http://127.0.0.1:${GATEWAY_METRICS_PORT}${path}`,
      ])
    ).stdout;
  }

  /**
   * Cuts the cloud off: the core router drops everything to and from the cloud host (API
   * server, cloud node) and the tunnel-server's address, as when a site's uplink to the
   * cloud fails. Established connections see silence, not resets. The edge kubelets lose
   * the API server too.
   */
  async cutCloud(): Promise<void> {
    const core = this.lab.coreNs;
    const ipt = (args: string[]) => this.lab.exec(core, ['iptables', '-w', ...args]);
    if (this.#cut) return;
    await ipt(['-N', CUT_CHAIN]).catch(() => undefined);
    await ipt(['-F', CUT_CHAIN]);
    for (const host of [this.cloud.addr, TUNNEL_LB_IP]) {
      await ipt(['-A', CUT_CHAIN, '-d', host, '-j', 'DROP']);
      await ipt(['-A', CUT_CHAIN, '-s', host, '-j', 'DROP']);
    }
    await ipt(['-I', 'FORWARD', '-j', CUT_CHAIN]);
    for (const m of this.#metaServers) m.setConnected(false);
    this.#cut = true;
    this.step('cloud cut off (API server and tunnel-server unreachable from the sites)');
  }

  async restoreCloud(): Promise<void> {
    if (!this.#cut) return;
    await this.lab.exec(this.lab.coreNs, ['iptables', '-w', '-D', 'FORWARD', '-j', CUT_CHAIN]);
    for (const m of this.#metaServers) m.setConnected(true);
    this.#cut = false;
    this.step('cloud link restored');
  }

  /**
   * A cloud crash: the API server killed outright, the cloud node's kubelet stopped (so
   * nothing restarts the pods) and the tunnel-server container killed.
   */
  async crashCloud(): Promise<void> {
    const cloud = this.cloudNode;
    if (!cloud) throw new Error('edge cluster: no cloud node');
    const tunnel = await this.containerId('cloud', { namespace: SYSTEM_NS, container: 'tunnel-server' });
    await this.controlPlane.stopApiServer(0);
    await cloud.real.kubelet?.stop(5_000);
    await cloud.real.ctr(['tasks', 'kill', '-s', 'SIGKILL', tunnel]);
    this.step('API server and tunnel-server killed (cloud kubelet stopped)');
  }

  /** Starts the API server and the cloud kubelet again; resolves once the tunnel-server serves. */
  async recoverCloud(): Promise<void> {
    await this.controlPlane.startApiServer();
    await this.cloudNode?.real.startKubelet();
    await this.kubectl(
      ['-n', SYSTEM_NS, 'rollout', 'status', 'deployment/edgemesh-tunnel-server', '--timeout=120s'],
      {
        timeoutMs: 130_000,
      },
    );
    await waitFor(
      async () => {
        const r = await this.lab.run(this.cloud.ns, [
          'curl',
          '-s',
          '-o',
          '/dev/null',
          '--max-time',
          '1',
          `telnet://${TUNNEL_LB_IP}:${TUNNEL_PORT}`,
        ]);
        return r.code === 0 || r.code === 28;
      },
      60_000,
      500,
      'tunnel-server answering',
    );
    this.step('API server, cloud kubelet and tunnel-server back');
  }

  /** True when `url` answers 2xx within 2 s from inside `netns` (our own CAs: not verified). */
  async #answers(netns: string, url: string): Promise<boolean> {
    const r = await this.lab.run(netns, ['curl', '-skf', '--max-time', '2', url]);
    return r.code === 0;
  }

  /** What `scripts/demo` records to tear the cluster down from another process. */
  describe(): { tag: string; dirs: string[]; pids: number[]; kubeconfig: string; kubectl: string } {
    const cp = this.controlPlane;
    const pids = [
      ...this.allNodes.flatMap((n) => [n.real.kubeProxy?.pid, n.real.kubelet?.pid, n.real.containerd?.pid]),
      ...Object.values(cp.pids),
    ].filter((p): p is number => typeof p === 'number');
    return {
      tag: this.lab.netns.tag,
      dirs: [this.workDir, cp.dataDir, ...this.allNodes.flatMap((n) => [n.real.dir, n.real.runDir])],
      pids,
      kubeconfig: cp.localKubeconfig,
      kubectl: join(cp.binDir, 'kubectl'),
    };
  }

  /** Stops everything this cluster started (by PID) and deletes its namespaces. Safe to call twice. */
  async stop(): Promise<void> {
    this.step('stopping: nodes (kubelets, pods, containerd), control plane, lab');
    await this.restoreCloud().catch(() => undefined);
    for (const p of this.#edgeApiProcesses.splice(0)) await p.stop(2_000);
    for (const m of this.#metaServers.splice(0)) await m.stop().catch(() => undefined);
    for (const n of [...this.nodes].reverse())
      await n.real.stop().catch((err) => this.step(`node ${n.name} stop: ${err}`));
    await this.cloudNode?.real.stop().catch((err) => this.step(`cloud node stop: ${err}`));
    await this.cp?.stop().catch((err) => this.step(`control plane stop: ${err}`));
    await this.lab.cleanup();
    if (!process.env.EDGEMESH_KEEP_CLUSTER_DATA) await rm(this.workDir, { recursive: true, force: true });
    this.step('stopped');
  }
}

/** "localhost/edgemesh:0.1.0-abc" → ["localhost/edgemesh", "0.1.0-abc"]. */
export function splitRef(ref: string): [string, string] {
  const at = ref.lastIndexOf(':');
  if (at <= ref.lastIndexOf('/')) return [ref, 'latest'];
  return [ref.slice(0, at), ref.slice(at + 1)];
}
