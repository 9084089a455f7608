import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, readlink, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { waitFor } from '../harness/netns.ts';
import type { ControlPlane } from './control-plane.ts';
import { importImages } from './oci-images.ts';
import { ManagedProcess } from './process.ts';

const execFileP = promisify(execFile);

/** Where every node's state lives: one folder per node, removed by stop(). */
const LIB_ROOT = '/var/lib/edgemesh-nodes';
const RUN_ROOT = '/run/edgemesh-nodes';
/** The sysctls a kubelet rewrites VM-wide at start (kubelet/cm/container_manager_linux.go setupKernelTunables). */
const KUBELET_SYSCTLS = ['vm.overcommit_memory', 'kernel.panic', 'kernel.panic_on_oops'];

export interface RealNodeSpec {
  /** Node name, also the kubelet's --hostname-override. */
  name: string;
  /** An existing network namespace (a lab host) the node runs in: its host network. */
  netns: string;
  /** The node's address in that namespace (InternalIP; the kubelet listens there). */
  address: string;
  /** Pod addresses on this node's CNI bridge, e.g. 10.1.1.0/24 (.1 is the bridge). */
  podCidr: string;
  /** Run kube-proxy (iptables mode) in the node's namespace too (the cloud node). */
  kubeProxy?: boolean;
  /** kube-proxy's --cluster-cidr (default: podCidr). */
  clusterCidr?: string;
  /** Labels the kubelet registers the node with (only those NodeRestriction lets a kubelet set). */
  labels?: Record<string, string>;
  /** Image tars (docker-archive) imported into this node's containerd before the kubelet starts. */
  images: string[];
}

/**
 * A real Kubernetes node on this machine: containerd (Debian's), runc, the CNI bridge plugin
 * and a kubelet (built from the control plane's Kubernetes version), optionally kube-proxy,
 * all inside one lab network namespace, which is the node's host network.
 *
 * Several nodes share one kernel and one filesystem, so each has its own: kubelet root dir
 * and cert dir, containerd root/state/socket, runc root, CNI config, network name and IPAM
 * dir, and pod cgroup root. Daemons enter the namespace with `nsenter --net` and keep the
 * root mount namespace: runc must see the volume mounts the kubelet makes.
 *
 * stop() kills what it started by PID (kubelet, kube-proxy, containerd, then every shim and
 * container task of this node's containerd), unmounts everything under the node's folders
 * and pod network namespaces, removes the pod cgroups and the folders; also after a failed
 * start. The VM-wide sysctls the kubelet rewrites are put back after each kubelet start.
 */
export class RealNode {
  readonly spec: RealNodeSpec;
  readonly #cp: ControlPlane;
  readonly dir: string;
  readonly runDir: string;
  readonly socket: string;
  readonly cgroupRoot: string;
  containerd: ManagedProcess | undefined;
  kubelet: ManagedProcess | undefined;
  kubeProxy: ManagedProcess | undefined;
  #kubeletArgv: string[] = [];
  #stopped = false;

  private constructor(cp: ControlPlane, spec: RealNodeSpec, tag: string) {
    this.#cp = cp;
    this.spec = spec;
    this.dir = join(LIB_ROOT, `${tag}-${spec.name}`);
    this.runDir = join(RUN_ROOT, `${tag}-${spec.name}`);
    this.socket = join(this.runDir, 'containerd.sock');
    this.cgroupRoot = `/edgemesh-${tag}-${spec.name}`;
  }

  /** Starts containerd, imports the images, starts the kubelet (and kube-proxy); resolves when the Node is Ready. */
  static async start(cp: ControlPlane, spec: RealNodeSpec, tag: string): Promise<RealNode> {
    const node = new RealNode(cp, spec, tag);
    try {
      await node.#start();
    } catch (err) {
      await node.stop();
      throw err;
    }
    return node;
  }

  async #start(): Promise<void> {
    await mkdir(join(this.dir, 'cni', 'net.d'), { recursive: true });
    await mkdir(this.runDir, { recursive: true });
    await writeFile(join(this.dir, 'containerd.toml'), containerdConfig(this));
    await writeFile(join(this.dir, 'cni', 'net.d', '10-edgemesh-test.conflist'), cniConfig(this));
    await this.startContainerd();
    await importImages(this.socket, this.spec.images);
    const kubeconfig = await this.#cp.componentKubeconfig({ node: this.spec.name });
    await writeFile(join(this.dir, 'kubelet.yaml'), kubeletConfig(this, this.#cp.pki.caCert));
    for (const controller of await cgroupControllers()) {
      await mkdir(join('/sys/fs/cgroup', controller, this.cgroupRoot), { recursive: true });
    }
    this.#kubeletArgv = [
      join(this.#cp.binDir, 'kubelet'),
      `--config=${join(this.dir, 'kubelet.yaml')}`,
      `--kubeconfig=${kubeconfig}`,
      `--hostname-override=${this.spec.name}`,
      `--node-ip=${this.spec.address}`,
      `--root-dir=${join(this.dir, 'kubelet')}`,
      `--cert-dir=${join(this.dir, 'kubelet-pki')}`,
      ...(this.spec.labels
        ? [
            `--node-labels=${Object.entries(this.spec.labels)
              .map(([k, v]) => `${k}=${v}`)
              .join(',')}`,
          ]
        : []),
      '--v=1',
    ];
    await this.startKubelet();
    if (this.spec.kubeProxy) await this.#startKubeProxy();
  }

  /** The node's containerd (its own root, state and socket); resolves once it answers. */
  async startContainerd(): Promise<void> {
    this.containerd = new ManagedProcess(
      `containerd-${this.spec.name}`,
      ['containerd', `--config=${join(this.dir, 'containerd.toml')}`],
      { netns: this.spec.netns, shareMounts: true, logFile: join(this.dir, 'containerd.log') },
    );
    const proc = this.containerd;
    await waitFor(
      async () => {
        if (!proc.running) throw new Error(`containerd exited: ${await tail(proc.logFile)}`);
        return (await this.ctr(['version'], 5_000).then(() => true)).valueOf();
      },
      30_000,
      100,
      `containerd on ${this.spec.name}`,
    );
  }

  /** The kubelet; resolves when the Node is Ready. Restores the sysctls it rewrites. */
  async startKubelet(): Promise<void> {
    const saved = await readSysctls();
    this.kubelet = new ManagedProcess(`kubelet-${this.spec.name}`, this.#kubeletArgv, {
      netns: this.spec.netns,
      shareMounts: true,
      logFile: join(this.dir, 'kubelet.log'),
    });
    const proc = this.kubelet;
    try {
      await waitFor(
        async () => {
          if (!proc.running) throw new Error(`kubelet exited: ${await tail(proc.logFile)}`);
          // Its own health first: after a restart the Node may still read Ready from before.
          if (!(await this.#nodeCurl('http://127.0.0.1:10248/healthz'))) return false;
          const ready = await this.#cp.kubectl([
            'get',
            'node',
            this.spec.name,
            '-o',
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
          ]);
          return ready === 'True';
        },
        120_000,
        250,
        `node ${this.spec.name} Ready`,
      );
    } finally {
      await restoreSysctls(saved);
    }
  }

  async #startKubeProxy(): Promise<void> {
    const kubeconfig = await this.#cp.componentKubeconfig('kube-proxy');
    await writeFile(join(this.dir, 'kube-proxy.yaml'), kubeProxyConfig(this, kubeconfig));
    this.kubeProxy = new ManagedProcess(
      `kube-proxy-${this.spec.name}`,
      [join(this.#cp.binDir, 'kube-proxy'), `--config=${join(this.dir, 'kube-proxy.yaml')}`, '--v=1'],
      { netns: this.spec.netns, shareMounts: true, logFile: join(this.dir, 'kube-proxy.log') },
    );
    const proc = this.kubeProxy;
    await waitFor(
      async () => {
        if (!proc.running) throw new Error(`kube-proxy exited: ${await tail(proc.logFile)}`);
        return this.#nodeCurl('http://127.0.0.1:10256/healthz');
      },
      60_000,
      250,
      `kube-proxy on ${this.spec.name} healthy`,
    );
  }

  /** True when `url` answers 2xx within a second from inside the node's namespace. */
  #nodeCurl(url: string): Promise<boolean> {
    return execFileP('nsenter', [
      `--net=/run/netns/${this.spec.netns}`,
      'curl',
      '-sf',
      '--max-time',
      '1',
      url,
    ]).then(
      () => true,
      () => false,
    );
  }

  /**
   * Stops the kubelet and containerd (SIGTERM) and starts them again: what a node's
   * `systemctl restart containerd kubelet` does. Running containers keep running under their
   * shims meanwhile; resolves when the Node is Ready again.
   */
  async restartRuntime(): Promise<void> {
    await this.kubelet?.stop(10_000);
    await this.containerd?.stop(10_000);
    await this.startContainerd();
    await this.startKubelet();
  }

  /** ctr against this node's containerd, in the k8s.io namespace (the CRI's). */
  async ctr(args: string[], timeoutMs = 30_000): Promise<string> {
    const r = await execFileP('ctr', ['-a', this.socket, '-n', 'k8s.io', ...args], {
      timeout: timeoutMs,
      maxBuffer: 16 * 1024 * 1024,
    }).catch((err: { stderr?: string; message: string }) => {
      throw new Error(`ctr ${args.join(' ')} on ${this.spec.name}: ${err.stderr?.trim() || err.message}`);
    });
    return r.stdout;
  }

  /** Host PIDs of this node's running container tasks, by container id. */
  async tasks(): Promise<Map<string, number>> {
    const out = await this.ctr(['tasks', 'ls']);
    const tasks = new Map<string, number>();
    for (const line of out.trim().split('\n').slice(1)) {
      const [id, pid, status] = line.trim().split(/\s+/);
      if (id && pid && status === 'RUNNING') tasks.set(id, Number(pid));
    }
    return tasks;
  }

  /** Resident memory (MiB) of the node's daemons and of its container shims together. */
  async memory(): Promise<{
    kubelet: number;
    containerd: number;
    kubeProxy: number;
    shims: number;
    shimCount: number;
  }> {
    const shimPids = await pidsWithArg(this.socket);
    const rss = async (pid: number | undefined) => (pid ? await rssMiB(pid) : 0);
    let shims = 0;
    for (const pid of shimPids) shims += await rssMiB(pid);
    return {
      kubelet: await rss(this.kubelet?.pid),
      containerd: await rss(this.containerd?.pid),
      kubeProxy: await rss(this.kubeProxy?.pid),
      shims,
      shimCount: shimPids.length,
    };
  }

  /** Stops everything this node started and removes its state. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await this.kubeProxy?.stop(5_000);
    await this.kubelet?.stop(10_000);
    const netnsPaths = new Set<string>();
    if (this.containerd?.running) {
      // Pod network namespaces (bind mounts under /run/netns) are the sandboxes': note them
      // before the tasks go, then kill every task and delete the containers.
      const ids = (await this.ctr(['containers', 'ls', '-q']).catch(() => '')).split('\n').filter(Boolean);
      for (const id of ids) {
        const info = await this.ctr(['containers', 'info', '--spec', id]).catch(() => '');
        for (const m of info.matchAll(/"path":\s*"(\/(?:var\/)?run\/netns\/cni-[0-9a-f-]+)"/g)) {
          // /var/run is a link to /run, and /proc/mounts names the real path.
          if (m[1]) netnsPaths.add(m[1].replace(/^\/var\/run\//, '/run/'));
        }
      }
      for (const id of (await this.tasks().catch(() => new Map())).keys()) {
        await this.ctr(['tasks', 'kill', '-s', 'SIGKILL', id]).catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, 500));
      for (const id of ids) {
        await this.ctr(['tasks', 'delete', '-f', id]).catch(() => undefined);
        await this.ctr(['containers', 'delete', id]).catch(() => undefined);
      }
    }
    await this.containerd?.stop(10_000);
    // Shims of this containerd that outlived it (they carry its socket path in their argv).
    for (const pid of await pidsWithArg(this.socket)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await unmountUnder([this.dir, this.runDir, ...netnsPaths]);
    for (const p of netnsPaths) await rm(p, { force: true }).catch(() => undefined);
    await removeCgroups(this.cgroupRoot);
    // The kubelet links each container's log into the machine-wide /var/log/containers.
    for (const name of await readdir('/var/log/containers').catch(() => [] as string[])) {
      const link = join('/var/log/containers', name);
      const target = await readlink(link).catch(() => '');
      if (target.startsWith(`${this.dir}/`)) await rm(link, { force: true });
    }
    if (!process.env.EDGEMESH_KEEP_CLUSTER_DATA) {
      await rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
    }
    await rm(this.runDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** containerd 1.6 CRI settings this VM needs (see ../../docs/local-cluster.md for why each). */
export function containerdConfig(node: RealNode): string {
  return `version = 2
root = "${join(node.dir, 'containerd')}"
state = "${join(node.runDir, 'containerd')}"
[grpc]
  address = "${node.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.10"
  enable_selinux = false
  # This VM lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below its own (the pause
  # container asks for -998); without this every sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # One runc state dir per node: nodes share the machine's /run.
        Root = "${join(node.runDir, 'runc')}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${join(node.dir, 'cni', 'net.d')}"
`;
}

/** The CNI bridge on the node's pod CIDR; network name and IPAM dir are per node. */
export function cniConfig(node: RealNode): string {
  return `${JSON.stringify(
    {
      cniVersion: '0.4.0',
      name: `edgemesh-${node.spec.name}`,
      plugins: [
        {
          type: 'bridge',
          bridge: 'cni0',
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            dataDir: join(node.dir, 'cni', 'ipam'),
            ranges: [[{ subnet: node.spec.podCidr }]],
            routes: [{ dst: '0.0.0.0/0' }],
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
        { type: 'loopback' },
      ],
    },
    null,
    2,
  )}\n`;
}

/**
 * Kubelet settings: cgroup v1 with cgroupfs (this VM), a cgroup root and pod log dir of its own, no swap
 * check, images never garbage-collected (they were imported, nothing can pull them again),
 * no disk-pressure evictions on a CI disk; x509 client auth with the cluster CA and the
 * webhook authorizer, so only the API server (system:masters) gets exec/logs.
 */
export function kubeletConfig(node: RealNode, clientCa: string): string {
  return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: ${node.cgroupRoot}
failSwapOn: false
containerRuntimeEndpoint: unix://${node.socket}
address: ${node.spec.address}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${clientCa}}
authorization: {mode: Webhook}
# Per node: every kubelet's log GC removes pod log dirs it does not know from its own root.
podLogsDir: ${join(node.dir, 'pod-logs')}
clusterDomain: cluster.local
clusterDNS: [10.96.0.10]
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
`;
}

/** kube-proxy in iptables mode; conntrack sysctls left alone (global, read-only in a netns). */
export function kubeProxyConfig(node: RealNode, kubeconfig: string): string {
  return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: ${kubeconfig}}
mode: iptables
hostnameOverride: ${node.spec.name}
clusterCIDR: ${node.spec.clusterCidr ?? node.spec.podCidr}
bindAddress: ${node.spec.address}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {masqueradeAll: false, syncPeriod: 30s, minSyncPeriod: 1s}
`;
}

async function readSysctls(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const key of KUBELET_SYSCTLS) {
    out[key] = (await readFile(`/proc/sys/${key.replaceAll('.', '/')}`, 'utf8')).trim();
  }
  return out;
}

async function restoreSysctls(saved: Record<string, string>): Promise<void> {
  // The kubelet writes them within a second or two of starting; by Ready it has.
  for (const [key, value] of Object.entries(saved)) {
    await writeFile(`/proc/sys/${key.replaceAll('.', '/')}`, value).catch(() => undefined);
  }
}

async function cgroupControllers(): Promise<string[]> {
  const entries = await readdir('/sys/fs/cgroup', { withFileTypes: true });
  // cgroup v1: one hierarchy per controller (symlinks such as cpu -> cpu,cpuacct skipped),
  // plus the v2 "unified" one of the hybrid layout, where runc makes the pods' groups too.
  return entries.filter((e) => e.isDirectory()).map((e) => e.name);
}

async function removeCgroups(root: string): Promise<void> {
  for (const controller of await cgroupControllers().catch(() => [])) {
    const top = join('/sys/fs/cgroup', controller, root);
    if (!existsSync(top)) continue;
    await rmdirDepthFirst(top);
  }
}

async function rmdirDepthFirst(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) if (e.isDirectory()) await rmdirDepthFirst(join(dir, e.name));
  await rmdir(dir).catch(() => undefined);
}

/** Unmounts (lazily, deepest first) every mount at or below the given paths. */
async function unmountUnder(paths: Iterable<string>): Promise<void> {
  const roots = [...paths];
  const mounts = (await readFile('/proc/mounts', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && roots.some((r) => m === r || m.startsWith(`${r}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await execFileP('umount', ['-l', m]).catch(() => undefined);
}

async function pidsWithArg(arg: string): Promise<number[]> {
  const r = await execFileP('pgrep', ['-f', '--', arg]).catch(() => ({ stdout: '' }));
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map(Number)
    .filter((p) => p !== process.pid);
}

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
  return Math.round((kb / 1024) * 10) / 10;
}

async function tail(file: string, lines = 25): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return `\n--- ${file} ---\n${text.trim().split('\n').slice(-lines).join('\n')}`;
}
