import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  CoordinationV1Api,
  CoreV1Api,
  type Informer,
  type KubeConfig,
  type KubernetesObject,
  ListWatch,
  PatchStrategy,
  setHeaderOptions,
  type V1Container,
  type V1Pod,
  type V1Probe,
  Watch,
} from '@kubernetes/client-node';
import { createLogger } from '../../lib/log.ts';
import { EDGEMESH_BIN, exitResult } from '../harness/netns.ts';
import { apiErrorText, isApiStatus, rfc3339, sleep } from './api-util.ts';
import { containerArgv, ImageError } from './images.ts';
import {
  LEASE_RENEW_MS,
  NODE_STATUS_MS,
  patchNodeStatus,
  registerNode,
  renewLease,
  type TestNode,
} from './nodes.ts';
import { containerEnv, containerUser, EnvError, type PodFacts } from './pod-env.ts';
import { createPodSandbox, deletePodSandbox, IpPool, setUpNodeNetwork } from './pod-network.ts';
import { type ContainerRecord, type PodRecord, podStatus } from './pod-status.ts';
import {
  containerMounts,
  ensureMountpoint,
  materialize,
  VolumeError,
  type VolumeSources,
  volumeContent,
} from './pod-volumes.ts';
import { periodMs, runProbe } from './probes.ts';
import { ManagedProcess, placedArgv } from './process.ts';

export type { TestNode } from './nodes.ts';

const execFileP = promisify(execFile);
const log = createLogger('test-node-agent');

const PROGRAMS = {
  edgemeshBin: EDGEMESH_BIN,
  node: new URL('../../node_modules/.bin/node', import.meta.url).pathname,
  httpServer: new URL('./images/http-server.ts', import.meta.url).pathname,
};

export interface NodeAgentOptions {
  /** Credentials for everything, unless nodeCredentials is given. */
  kubeConfig: KubeConfig;
  /**
   * Per-node kubelet credentials (e.g. ControlPlane.nodeKubeConfig): each node then talks
   * to the API as `system:node:<name>`, under the Node authorizer and NodeRestriction, and
   * watches only the pods bound to it, as a real kubelet does.
   */
  nodeCredentials?: (nodeName: string) => Promise<KubeConfig>;
  nodes: TestNode[];
  /** Prefix of pod namespace names (e.g. a NetnsLab tag); keep it short. */
  netnsPrefix: string;
  /** Nameserver in pods' resolv.conf (ClusterFirst DNS); default 10.96.0.10. */
  clusterDns?: string;
  clusterDomain?: string;
  /** The API server's ClusterIP service, for KUBERNETES_SERVICE_HOST (default 10.96.0.1:443). */
  kubernetesService?: { host: string; port: number };
  kubeletVersion?: string;
}

const MAX_BACKOFF_MS = 30_000;

interface PodRun {
  pod: V1Pod;
  node: TestNode;
  record: PodRecord;
  netns: string;
  ownsNetns: boolean;
  /** Settles once the namespace is wired (teardown waits for it, so none is left half-made). */
  sandbox: Promise<void>;
  logDir: string;
  processes: Map<string, ManagedProcess>;
  /** Volume name → host path, once the pod's volumes are set up. */
  volumes: Map<string, string>;
  terminating: boolean;
  /** Set when the pod is gone or being torn down: loops and restarts stop. */
  stopped: boolean;
  // Status patches (see #statusChanged): one in flight, another queued, failures retried.
  patching: boolean;
  patchAgain: boolean;
  patchFailing: boolean;
}

/**
 * Plays the kubelet for a few test nodes: registers them (Ready, InternalIP, podCIDR), keeps
 * their Leases fresh, and runs every pod bound to them as real processes in a network
 * namespace of its own: init containers in order, native sidecars kept running (startup
 * probes hold the next container back), then the app containers, each as its
 * securityContext's uid. Pod status is patched as the kubelet would, so EndpointSlices
 * fill. Graceful deletion: a deletionTimestamp stops the containers (SIGTERM, then
 * SIGKILL at the grace period), removes the namespace and deletes the pod with grace 0.
 */
export class NodeAgent {
  readonly dataDir: string;
  readonly #opts: NodeAgentOptions;
  /** API clients by node name (all the same admin client without nodeCredentials). */
  readonly #clients = new Map<string, NodeClients>();
  readonly #nodes: Map<string, TestNode>;
  readonly #kubeletVersion: string;
  readonly #pools = new Map<string, IpPool>();
  readonly #pods = new Map<string, PodRun>();
  readonly #timers: NodeJS.Timeout[] = [];
  /** Mount targets this agent had to create on the host; removed (if still empty) by stop(). */
  readonly #createdPaths: string[] = [];
  readonly #informers: (Informer<V1Pod> & { stop(): Promise<void> })[] = [];
  #stopped = false;

  private constructor(opts: NodeAgentOptions, dataDir: string) {
    this.#opts = opts;
    this.dataDir = dataDir;
    this.#nodes = new Map(opts.nodes.map((n) => [n.name, n]));
    this.#kubeletVersion = opts.kubeletVersion ?? 'v1.36.3';
    for (const n of opts.nodes) this.#pools.set(n.name, new IpPool(n.podCidr));
  }

  static async start(opts: NodeAgentOptions): Promise<NodeAgent> {
    validateOptions(opts);
    const agent = new NodeAgent(opts, await mkdtemp(join(tmpdir(), 'edgemesh-node-agent-')));
    try {
      const admin = clientsFor(opts.kubeConfig);
      for (const node of opts.nodes) {
        agent.#clients.set(
          node.name,
          opts.nodeCredentials ? clientsFor(await opts.nodeCredentials(node.name)) : admin,
        );
        await setUpNodeNetwork(node.netns, node.podCidr);
        const api = agent.#api(node.name);
        await registerNode(api.core, api.coordination, node, agent.#kubeletVersion);
      }
      agent.#every(LEASE_RENEW_MS, () =>
        Promise.all(opts.nodes.map((n) => renewLease(agent.#api(n.name).coordination, n))),
      );
      agent.#every(NODE_STATUS_MS, () =>
        Promise.all(
          opts.nodes.map((n) => patchNodeStatus(agent.#api(n.name).core, n, agent.#kubeletVersion)),
        ),
      );
      // With per-node identities each node watches only its own pods (field selector), as
      // a kubelet does; with shared credentials one watch covers every node.
      if (opts.nodeCredentials) {
        for (const node of opts.nodes)
          await agent.#watchPods(agent.#api(node.name), `spec.nodeName=${node.name}`);
      } else {
        await agent.#watchPods(admin, undefined);
      }
    } catch (err) {
      await agent.stop();
      throw err;
    }
    return agent;
  }

  /** The network namespace a pod runs in (undefined until the agent has set it up). */
  podNetns(namespace: string, name: string): string | undefined {
    return this.#find(namespace, name)?.netns;
  }

  /** Runs argv in the pod's network namespace (as `container`'s uid when given); never throws on exit codes. */
  async exec(
    namespace: string,
    name: string,
    argv: string[],
    opts: { container?: string; timeoutMs?: number } = {},
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const run = this.#find(namespace, name);
    if (!run) throw new Error(`pod ${namespace}/${name} is not running on this agent's nodes`);
    const container = [...(run.pod.spec?.initContainers ?? []), ...(run.pod.spec?.containers ?? [])].find(
      (c) => c.name === opts.container,
    );
    if (opts.container && !container)
      throw new Error(`pod ${namespace}/${name} has no container ${opts.container}`);
    // As that container: its uid and its volume mounts.
    const user = container ? containerUser(run.pod, container) : undefined;
    const mounts = container ? containerMounts(container, run.volumes) : [];
    const full = placedArgv(argv, { netns: run.netns, uid: user?.uid, gid: user?.gid, mounts });
    return exitResult(execFileP(full[0] as string, full.slice(1), { timeout: opts.timeoutMs ?? 30_000 }));
  }

  /** A container's output so far (stdout and stderr together). */
  async logs(namespace: string, name: string, container: string): Promise<string> {
    const run = this.#find(namespace, name);
    if (!run) throw new Error(`pod ${namespace}/${name} is not running on this agent's nodes`);
    return readFile(join(run.logDir, `${container}.log`), 'utf8').catch(() => '');
  }

  /** Stops watching and heartbeating, kills every pod's processes and deletes their namespaces. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const t of this.#timers.splice(0)) clearInterval(t);
    await Promise.all(this.#informers.map((i) => i.stop().catch(() => undefined)));
    await Promise.all([...this.#pods.values()].map((run) => this.#teardown(run, 0)));
    for (const path of this.#createdPaths.splice(0).reverse()) {
      const st = await stat(path).catch(() => undefined);
      if (st?.isDirectory())
        await rmdir(path).catch(() => undefined); // only if empty
      else if (st?.size === 0) await unlink(path).catch(() => undefined);
    }
    if (!process.env.EDGEMESH_KEEP_CLUSTER_DATA) await rm(this.dataDir, { recursive: true, force: true });
  }

  #every(ms: number, fn: () => Promise<unknown>): void {
    this.#timers.push(setInterval(() => void fn().catch(() => undefined), ms));
  }

  // --- pods ----------------------------------------------------------------------------

  /** The API clients acting for `nodeName`. */
  #api(nodeName: string): NodeClients {
    const api = this.#clients.get(nodeName);
    if (!api) throw new Error(`no API clients for node ${nodeName}`);
    return api;
  }

  async #watchPods(api: NodeClients, fieldSelector: string | undefined): Promise<void> {
    const informer = new ListWatch<V1Pod>(
      '/api/v1/pods',
      new Watch(api.kubeConfig),
      () => api.core.listPodForAllNamespaces({ fieldSelector }),
      false,
      undefined,
      fieldSelector,
    );
    let failures = 0;
    const onPod = (pod: V1Pod) => {
      if (failures > 0) log.info({ failures }, 'pod watch restored');
      failures = 0;
      void this.#onPod(pod).catch((err) => log.error({ err: apiErrorText(err) }, 'pod handling failed'));
    };
    informer.on('add', onPod);
    informer.on('update', onPod);
    informer.on('delete', (pod: V1Pod) => {
      const run = this.#pods.get(pod.metadata?.uid ?? '');
      if (run) void this.#teardown(run, 0);
    });
    // The informer gives up on an error (API server down, connection refused) after
    // reporting it once; each restart attempt reports at most one error, so restarting on
    // every report keeps exactly one retry chain going.
    const restart = () =>
      setTimeout(() => {
        if (!this.#stopped) informer.start().catch(restart);
      }, 1_000);
    informer.on('error', (err: unknown) => {
      if (this.#stopped) return;
      failures += 1;
      if (failures === 1 || failures % 30 === 0) {
        log.warn({ err: apiErrorText(err), failures }, 'pod watch failed; retrying every 1 s');
      }
      restart();
    });
    this.#informers.push(informer);
    await informer.start();
  }

  async #onPod(pod: V1Pod): Promise<void> {
    if (this.#stopped) return;
    const uid = pod.metadata?.uid ?? '';
    const node = this.#nodes.get(pod.spec?.nodeName ?? '');
    if (!node || !uid) return;
    const existing = this.#pods.get(uid);
    if (existing) {
      existing.pod = pod;
      if (pod.metadata?.deletionTimestamp && !existing.terminating) {
        await this.#terminate(existing, pod.metadata.deletionGracePeriodSeconds ?? 30);
      }
      return;
    }
    if (pod.metadata?.deletionTimestamp) {
      await this.#deleteFromApi(pod);
      return;
    }
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
    await this.#startPod(pod, node);
  }

  async #startPod(pod: V1Pod, node: TestNode): Promise<void> {
    const uid = pod.metadata?.uid ?? '';
    const namespace = pod.metadata?.namespace ?? 'default';
    const name = pod.metadata?.name ?? '';
    const hostNetwork = pod.spec?.hostNetwork === true;
    const ip = hostNetwork ? node.address : (this.#pools.get(node.name) as IpPool).allocate();
    const containers: ContainerRecord[] = [
      ...(pod.spec?.initContainers ?? []).map((c) =>
        record(c, c.restartPolicy === 'Always' ? 'sidecar' : 'init', 'PodInitializing'),
      ),
      ...(pod.spec?.containers ?? []).map((c) => record(c, 'app', 'PodInitializing')),
    ];
    const run: PodRun = {
      pod,
      node,
      netns: hostNetwork ? node.netns : `${this.#opts.netnsPrefix}-p${uid.slice(0, 8)}`,
      ownsNetns: !hostNetwork,
      logDir: join(this.dataDir, `${namespace}_${name}_${uid.slice(0, 8)}`),
      record: {
        uid,
        podIP: ip,
        hostIP: node.address,
        startTime: rfc3339(new Date()),
        sandboxReady: false,
        containers,
      },
      sandbox: Promise.resolve(),
      processes: new Map(),
      volumes: new Map(),
      terminating: false,
      stopped: false,
      patching: false,
      patchAgain: false,
      patchFailing: false,
    };
    this.#pods.set(uid, run);
    log.info({ pod: `${namespace}/${name}`, node: node.name, ip }, 'starting pod');
    run.sandbox = this.#createSandbox(run);
    try {
      await run.sandbox;
    } catch (err) {
      log.error({ pod: podName(pod), err: apiErrorText(err) }, 'pod sandbox failed');
      for (const rec of run.record.containers) {
        rec.state = { kind: 'waiting', reason: 'CreatePodSandboxError', message: apiErrorText(err) };
      }
      this.#statusChanged(run);
      return;
    }
    if (run.stopped) return;
    run.record.sandboxReady = true;
    this.#statusChanged(run);
    // Like the kubelet, keep retrying volumes (a Secret may be created after the pod).
    for (;;) {
      try {
        run.volumes = await this.#setUpVolumes(run);
        break;
      } catch (err) {
        const message = `MountVolume.SetUp failed: ${apiErrorText(err)}`;
        for (const rec of run.record.containers)
          rec.state = { kind: 'waiting', reason: 'ContainerCreating', message };
        this.#statusChanged(run);
        await sleep(500);
        if (run.stopped) return;
      }
    }
    for (const rec of run.record.containers) rec.state = { kind: 'waiting', reason: 'PodInitializing' };
    await this.#runContainers(run);
  }

  async #setUpVolumes(run: PodRun): Promise<Map<string, string>> {
    const pod = run.pod;
    const { namespace = 'default', name = '', uid = '' } = pod.metadata ?? {};
    const core = this.#api(run.node.name).core;
    const decode = (data: Record<string, string> | undefined) =>
      Object.fromEntries(
        Object.entries(data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]),
      );
    const notFoundIsUndefined = (err: unknown) => {
      if (isApiStatus(err, 404)) return undefined;
      throw err;
    };
    const sources: VolumeSources = {
      configMap: (n) =>
        core
          .readNamespacedConfigMap({ name: n, namespace })
          .then((o) => ({ ...decode(o.binaryData), ...o.data }), notFoundIsUndefined),
      secret: (n) =>
        core.readNamespacedSecret({ name: n, namespace }).then((o) => decode(o.data), notFoundIsUndefined),
      token: async (audience, expirationSeconds) => {
        const r = await core.createNamespacedServiceAccountToken({
          name: pod.spec?.serviceAccountName ?? 'default',
          namespace,
          body: {
            spec: {
              audiences: audience ? [audience] : [],
              expirationSeconds,
              boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name, uid },
            },
          },
        });
        return r.status?.token ?? '';
      },
    };
    const volumes = new Map<string, string>();
    for (const v of pod.spec?.volumes ?? []) {
      const content = await volumeContent(pod, v, sources, run.record);
      volumes.set(v.name, await materialize(join(run.logDir, 'volumes', v.name), content));
    }
    return volumes;
  }

  async #createSandbox(run: PodRun): Promise<void> {
    const { namespace = 'default', name = '', uid = '' } = run.pod.metadata ?? {};
    const node = run.node;
    const ip = run.record.podIP;
    await mkdir(run.logDir, { recursive: true });
    if (run.ownsNetns) {
      const domain = this.#opts.clusterDomain ?? 'cluster.local';
      await createPodSandbox({
        nodeNs: node.netns,
        netns: run.netns,
        hostVeth: `ve${uid.slice(0, 8)}`,
        ip,
        podCidr: node.podCidr,
        resolvConf: `search ${namespace}.svc.${domain} svc.${domain} ${domain}\nnameserver ${this.#opts.clusterDns ?? '10.96.0.10'}\noptions ndots:5\n`,
        hosts: `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n${ip}\t${name}\n`,
      });
    }
  }

  /** Init containers in order (sidecars started and left running), then the app containers. */
  async #runContainers(run: PodRun): Promise<void> {
    for (const c of run.pod.spec?.initContainers ?? []) {
      if (run.stopped) return;
      const rec = findRecord(run, c.name);
      if (rec.role === 'sidecar') {
        this.#startContainer(run, c, rec);
        // The next container starts once the sidecar has started (startup probe, if any).
        while (!rec.started && !run.stopped) await sleep(100);
        continue;
      }
      // A failing init container is retried with back-off as the kubelet does (kubectl
      // shows Init:Error, then Init:CrashLoopBackOff), unless the pod never restarts.
      for (;;) {
        const code = await this.#startContainer(run, c, rec);
        if (code === 0 || run.stopped || run.terminating) break;
        log.warn({ pod: podName(run.pod), container: c.name, code }, 'init container failed');
        if ((run.pod.spec?.restartPolicy ?? 'Always') === 'Never') {
          run.record.failed = {
            reason: 'InitContainerFailed',
            message: `init container ${c.name} exited ${code}`,
          };
          this.#statusChanged(run);
          return;
        }
        const backoff = Math.min(1_000 * 2 ** rec.restartCount, MAX_BACKOFF_MS);
        await sleep(Math.min(backoff, 1_000)); // long enough for Init:Error to be seen
        if (run.stopped || run.terminating) return;
        if (rec.state.kind === 'terminated') {
          rec.lastTerminated = {
            exitCode: rec.state.exitCode,
            reason: rec.state.reason,
            finishedAt: rec.state.finishedAt,
          };
          rec.restartCount += 1;
          rec.state = {
            kind: 'waiting',
            reason: 'CrashLoopBackOff',
            message: `back-off ${backoff / 1000}s restarting ${c.name}`,
          };
          this.#statusChanged(run);
        }
        await sleep(Math.max(0, backoff - 1_000));
        if (run.stopped || run.terminating) return;
      }
      if (run.stopped || run.terminating) return;
    }
    for (const c of run.pod.spec?.containers ?? []) {
      if (!run.stopped) this.#startContainer(run, c, findRecord(run, c.name));
    }
  }

  /**
   * Starts one container; resolves with its exit code when it ends. Sidecars and app
   * containers are restarted per the pod's restart policy (sidecars always), with back-off.
   */
  async #startContainer(run: PodRun, c: V1Container, rec: ContainerRecord): Promise<number> {
    const pod = run.pod;
    let argv: string[];
    let env: Record<string, string>;
    try {
      env = containerEnv(pod, c, await this.#facts(run));
      argv = containerArgv(
        c,
        { namespace: pod.metadata?.namespace ?? '', name: pod.metadata?.name ?? '', node: run.node.name },
        env,
        PROGRAMS,
      );
    } catch (err) {
      const reason =
        err instanceof ImageError
          ? 'ErrImagePull'
          : err instanceof EnvError
            ? 'CreateContainerConfigError'
            : 'CreateContainerError';
      rec.state = { kind: 'waiting', reason, message: (err as Error).message };
      this.#statusChanged(run);
      return 128;
    }
    // The pod may have been deleted while the API answered: start nothing then.
    if (run.stopped || run.terminating) return 137;
    let mounts: { source: string; target: string; readOnly: boolean }[];
    try {
      mounts = containerMounts(c, run.volumes);
      for (const m of mounts) {
        const isDir = (await stat(m.source)).isDirectory();
        this.#createdPaths.push(...(await ensureMountpoint(m.target, isDir)));
      }
    } catch (err) {
      const reason = err instanceof VolumeError ? 'CreateContainerConfigError' : 'CreateContainerError';
      rec.state = { kind: 'waiting', reason, message: (err as Error).message };
      this.#statusChanged(run);
      return 128;
    }
    const user = containerUser(pod, c);
    const kube = this.#opts.kubernetesService ?? { host: '10.96.0.1', port: 443 };
    const proc = new ManagedProcess(c.name, argv, {
      netns: run.netns,
      mounts,
      uid: user?.uid,
      gid: user?.gid,
      logFile: join(run.logDir, `${c.name}.log`),
      env: {
        PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        HOSTNAME: pod.metadata?.name ?? '',
        HOME: user && user.uid !== 0 ? '/tmp' : '/root',
        KUBERNETES_SERVICE_HOST: kube.host,
        KUBERNETES_SERVICE_PORT: String(kube.port),
        ...env,
      },
    });
    run.processes.set(c.name, proc);
    rec.state = { kind: 'running', startedAt: rfc3339(new Date()) };
    rec.started = !c.startupProbe;
    rec.ready = rec.role !== 'init' && !c.startupProbe && !c.readinessProbe;
    this.#statusChanged(run);
    if (rec.role !== 'init') void this.#probeLoop(run, c, rec, proc);

    const code = await proc.exited;
    if (run.stopped || run.terminating) return code;
    rec.state = {
      kind: 'terminated',
      exitCode: code,
      reason: code === 0 ? 'Completed' : 'Error',
      startedAt: rec.state.kind === 'running' ? rec.state.startedAt : undefined,
      finishedAt: rfc3339(new Date()),
    };
    rec.ready = false;
    if (code !== 0) log.warn({ pod: podName(pod), container: c.name, code }, 'container exited');
    this.#statusChanged(run);
    const policy = rec.role === 'sidecar' ? 'Always' : (pod.spec?.restartPolicy ?? 'Always');
    const restart = rec.role !== 'init' && (policy === 'Always' || (policy === 'OnFailure' && code !== 0));
    if (restart) {
      const backoff = Math.min(1_000 * 2 ** rec.restartCount, MAX_BACKOFF_MS);
      rec.lastTerminated = {
        exitCode: code,
        reason: code === 0 ? 'Completed' : 'Error',
        finishedAt: rfc3339(new Date()),
      };
      rec.restartCount += 1;
      rec.state = {
        kind: 'waiting',
        reason: 'CrashLoopBackOff',
        message: `back-off ${backoff / 1000}s restarting ${c.name}`,
      };
      this.#statusChanged(run);
      await sleep(backoff);
      if (!run.stopped && !run.terminating) void this.#startContainer(run, c, rec);
    }
    return code;
  }

  /** Startup probe until it passes, then readiness probes every periodSeconds while the container runs. */
  async #probeLoop(run: PodRun, c: V1Container, rec: ContainerRecord, proc: ManagedProcess): Promise<void> {
    const alive = () => proc.running && !run.stopped && !run.terminating;
    const startup = c.startupProbe;
    if (startup) {
      await sleep((startup.initialDelaySeconds ?? 0) * 1000);
      let failures = 0;
      while (alive() && !(await this.#probe(run, c, startup))) {
        failures += 1;
        if (failures >= (startup.failureThreshold ?? 3))
          return this.#restartUnhealthy(run, c, proc, 'startup');
        await sleep(periodMs(startup));
      }
      if (!alive()) return;
      rec.started = true;
      rec.ready = !c.readinessProbe;
      this.#statusChanged(run);
    }
    const liveness = c.livenessProbe;
    if (liveness) {
      void (async () => {
        await sleep((liveness.initialDelaySeconds ?? 0) * 1000);
        let failures = 0;
        while (alive()) {
          failures = (await this.#probe(run, c, liveness)) ? 0 : failures + 1;
          if (failures >= (liveness.failureThreshold ?? 3) && alive()) {
            return this.#restartUnhealthy(run, c, proc, 'liveness');
          }
          await sleep(periodMs(liveness));
        }
      })();
    }
    const probe = c.readinessProbe;
    if (!probe) return;
    await sleep((probe.initialDelaySeconds ?? 0) * 1000);
    let failures = 0;
    while (alive()) {
      const ok = await this.#probe(run, c, probe);
      failures = ok ? 0 : failures + 1;
      const ready = ok || (rec.ready && failures < (probe.failureThreshold ?? 3));
      if (ready !== rec.ready && alive()) {
        rec.ready = ready;
        this.#statusChanged(run);
      }
      await sleep(periodMs(probe));
    }
  }

  /** A failed startup or liveness probe: the container is stopped and restarted per its policy. */
  async #restartUnhealthy(run: PodRun, c: V1Container, proc: ManagedProcess, kind: string): Promise<void> {
    log.warn({ pod: podName(run.pod), container: c.name }, `${kind} probe failed; restarting the container`);
    await proc.stop(2_000);
  }

  async #probe(run: PodRun, c: V1Container, probe: V1Probe): Promise<boolean> {
    const target = {
      container: c,
      podIP: run.record.podIP,
      nodeNetns: run.node.netns,
      podNetns: run.netns,
      user: containerUser(run.pod, c),
    };
    return runProbe(probe, target).catch((err) => {
      log.warn(
        { pod: podName(run.pod), container: c.name, err: apiErrorText(err) },
        'probe cannot run; counts as failed',
      );
      return false;
    });
  }

  /** ConfigMaps and Secrets the pod's env refers to, read from the API. */
  async #facts(run: PodRun): Promise<PodFacts> {
    const ns = run.pod.metadata?.namespace ?? 'default';
    const facts: PodFacts = {
      podIP: run.record.podIP,
      hostIP: run.record.hostIP,
      configMaps: {},
      secrets: {},
    };
    const containers = [...(run.pod.spec?.initContainers ?? []), ...(run.pod.spec?.containers ?? [])];
    for (const v of containers.flatMap((c) => c.env ?? [])) {
      const cm = v.valueFrom?.configMapKeyRef?.name;
      const secret = v.valueFrom?.secretKeyRef?.name;
      if (cm && facts.configMaps && !facts.configMaps[`${ns}/${cm}`]) {
        const obj = await this.#api(run.node.name)
          .core.readNamespacedConfigMap({ name: cm, namespace: ns })
          .catch(() => undefined);
        facts.configMaps[`${ns}/${cm}`] = obj?.data ?? {};
      }
      if (secret && facts.secrets && !facts.secrets[`${ns}/${secret}`]) {
        const obj = await this.#api(run.node.name)
          .core.readNamespacedSecret({ name: secret, namespace: ns })
          .catch(() => undefined);
        facts.secrets[`${ns}/${secret}`] = Object.fromEntries(
          Object.entries(obj?.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]),
        );
      }
    }
    return facts;
  }

  /** Patches the pod's status; coalesces bursts so at most one patch is in flight per pod. */
  #statusChanged(run: PodRun): void {
    if (run.patching) {
      run.patchAgain = true;
      return;
    }
    run.patching = true;
    void (async () => {
      do {
        run.patchAgain = false;
        const status = podStatus(run.pod, run.record, rfc3339(new Date()));
        try {
          await this.#api(run.node.name).core.patchNamespacedPodStatus(
            {
              name: run.pod.metadata?.name ?? '',
              namespace: run.pod.metadata?.namespace ?? '',
              body: { status },
            },
            setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
          );
        } catch (err) {
          if (!isApiStatus(err, 404)) {
            // Not lost: retried (with the then-current status) until the API takes it.
            if (!run.patchFailing)
              log.warn(
                { pod: podName(run.pod), err: apiErrorText(err) },
                'pod status patch failed; retrying',
              );
            run.patchFailing = true;
            run.patchAgain = true;
            await sleep(1_000);
            continue;
          }
        }
        run.patchFailing = false;
      } while (run.patchAgain && !this.#stopped && !(run.stopped && run.patchFailing));
      run.patching = false;
    })();
  }

  /** Graceful deletion: apps get SIGTERM, then sidecars (in reverse order), SIGKILL at the grace period. */
  async #terminate(run: PodRun, graceSeconds: number): Promise<void> {
    run.terminating = true;
    log.info({ pod: podName(run.pod), graceSeconds }, 'terminating pod');
    for (const rec of run.record.containers) rec.ready = false;
    this.#statusChanged(run);
    await this.#teardown(run, graceSeconds * 1000);
    await this.#deleteFromApi(run.pod);
  }

  async #teardown(run: PodRun, graceMs: number): Promise<void> {
    if (run.stopped) return;
    run.stopped = true;
    run.terminating = true;
    const deadline = Date.now() + graceMs;
    const sidecarNames = new Set(
      run.record.containers.filter((c) => c.role === 'sidecar').map((c) => c.name),
    );
    const apps = [...run.processes.values()].filter((p) => !sidecarNames.has(p.name));
    const sidecars = [...run.processes.values()].filter((p) => sidecarNames.has(p.name)).reverse();
    await Promise.all(apps.map((p) => p.stop(Math.max(0, deadline - Date.now()))));
    for (const p of sidecars) await p.stop(Math.max(0, deadline - Date.now()));
    await run.sandbox.catch(() => undefined);
    if (run.ownsNetns) {
      await deletePodSandbox(run.netns);
      this.#pools.get(run.node.name)?.release(run.record.podIP);
    }
    this.#pods.delete(run.record.uid);
    log.info({ pod: podName(run.pod) }, 'pod torn down');
  }

  async #deleteFromApi(pod: V1Pod): Promise<void> {
    if (this.#stopped) return;
    const api = this.#clients.get(pod.spec?.nodeName ?? '');
    if (!api) return;
    await api.core
      .deleteNamespacedPod({
        name: pod.metadata?.name ?? '',
        namespace: pod.metadata?.namespace ?? '',
        gracePeriodSeconds: 0,
        body: { gracePeriodSeconds: 0, preconditions: { uid: pod.metadata?.uid } },
      })
      .catch((err) => {
        if (!isApiStatus(err, 404, 409)) {
          log.warn({ pod: podName(pod), err: apiErrorText(err) }, 'pod delete failed');
        }
      });
  }

  #find(namespace: string, name: string): PodRun | undefined {
    for (const run of this.#pods.values()) {
      if (run.pod.metadata?.namespace === namespace && run.pod.metadata?.name === name) return run;
    }
    return undefined;
  }
}

interface NodeClients {
  kubeConfig: KubeConfig;
  core: CoreV1Api;
  coordination: CoordinationV1Api;
}

function clientsFor(kubeConfig: KubeConfig): NodeClients {
  return {
    kubeConfig,
    core: kubeConfig.makeApiClient(CoreV1Api),
    coordination: kubeConfig.makeApiClient(CoordinationV1Api),
  };
}

/** Rejects options that would fail later in a confusing place, naming the field. */
export function validateOptions(opts: Pick<NodeAgentOptions, 'nodes' | 'netnsPrefix' | 'clusterDns'>): void {
  const fail = (why: string) => {
    throw new Error(`NodeAgent: ${why}`);
  };
  if (!/^[a-z0-9][a-z0-9-]{0,15}$/.test(opts.netnsPrefix))
    fail(`netnsPrefix ${JSON.stringify(opts.netnsPrefix)}: 1-16 of [a-z0-9-]`);
  if (opts.nodes.length === 0) fail('nodes: at least one node');
  const ipv4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
  if (opts.clusterDns !== undefined && !ipv4.test(opts.clusterDns))
    fail(`clusterDns ${opts.clusterDns}: not an IPv4 address`);
  const seen = new Set<string>();
  for (const [i, n] of opts.nodes.entries()) {
    const where = `nodes[${i}]`;
    if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(n.name))
      fail(`${where}.name ${JSON.stringify(n.name)}: not a DNS subdomain`);
    if (seen.has(n.name)) fail(`${where}.name ${n.name}: listed twice`);
    seen.add(n.name);
    if (!n.netns) fail(`${where}.netns: required`);
    if (!ipv4.test(n.address)) fail(`${where}.address ${JSON.stringify(n.address)}: not an IPv4 address`);
    try {
      new IpPool(n.podCidr);
    } catch (err) {
      fail(`${where}.podCidr: ${(err as Error).message}`);
    }
  }
}

function record(c: V1Container, role: ContainerRecord['role'], reason: string): ContainerRecord {
  return {
    name: c.name,
    image: c.image ?? '',
    role,
    state: { kind: 'waiting', reason },
    restartCount: 0,
    started: false,
    ready: false,
  };
}

function findRecord(run: PodRun, name: string): ContainerRecord {
  const rec = run.record.containers.find((c) => c.name === name);
  if (!rec) throw new Error(`no record for container ${name}`);
  return rec;
}

function podName(pod: V1Pod | KubernetesObject): string {
  return `${pod.metadata?.namespace}/${pod.metadata?.name}`;
}
