/**
 * `scripts/demo`: starts the edge cluster in a box in a detached supervisor process, runs the
 * demo scenario printing each step, and leaves the cluster running; `down` tears it down.
 *
 *   node test/e2e/demo.ts up | down | status | exec NAMESPACE/POD -- CMD... | supervise
 *
 * The supervisor owns every process and namespace (EdgeCluster) and writes its state to
 * STATE_DIR/state.json; `down` asks it to stop (SIGTERM) and, if it is gone or stuck, kills
 * the recorded PIDs and deletes the namespaces carrying the recorded tag itself.
 */
import { execFile, spawn } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { EdgeCluster } from './edge-cluster.ts';
import {
  apply,
  clientDeployment,
  curl,
  inClient,
  isInjected,
  livePods,
  NS,
  namespace,
  nginxConfig,
  nginxDeployment,
  offTheRelay,
  pathsUsed,
  rolloutStatus,
  SERVICE_URL,
  servedBy,
  services,
  streamsByPath,
} from './scenario.ts';

const execFileP = promisify(execFile);
const STATE_DIR = process.env.EDGEMESH_DEMO_DIR ?? '/run/edgemesh-demo';
const STATE = join(STATE_DIR, 'state.json');
const PROGRESS = join(STATE_DIR, 'progress.log');
const SUPERVISOR_LOG = join(STATE_DIR, 'supervisor.log');
const KUBECONFIG = join(STATE_DIR, 'kubeconfig');
const PREFIX = 'emed';

interface State {
  phase: 'starting' | 'ready' | 'failed' | 'stopping';
  supervisor: number;
  tag?: string;
  dirs?: string[];
  pids?: number[];
  kubeconfig?: string;
  kubectl?: string;
  error?: string;
}

const readState = (): State | undefined => {
  try {
    return JSON.parse(readFileSync(STATE, 'utf8')) as State;
  } catch {
    return undefined;
  }
};
const writeState = (s: State) => writeFileSync(STATE, `${JSON.stringify(s, null, 2)}\n`);
const alive = (pid: number | undefined) => {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function up(): Promise<number> {
  const existing = readState();
  if (existing && alive(existing.supervisor)) {
    console.log(`demo: already running (supervisor PID ${existing.supervisor}, ${existing.phase})`);
    if (existing.phase === 'ready') printUsage(existing);
    return 0;
  }
  if (existing) {
    console.log('demo: a previous demo did not shut down cleanly; cleaning up first');
    await down();
  }
  await mkdir(STATE_DIR, { recursive: true, mode: 0o700 });
  for (const f of [PROGRESS, SUPERVISOR_LOG]) rmSync(f, { force: true });
  writeFileSync(PROGRESS, '');
  const log = openSync(SUPERVISOR_LOG, 'a');
  const child = spawn(process.execPath, [new URL(import.meta.url).pathname, 'supervise'], {
    detached: true,
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  child.unref();
  writeState({ phase: 'starting', supervisor: child.pid as number });
  console.log(`demo: supervisor started (PID ${child.pid}); its log: ${SUPERVISOR_LOG}`);
  // Follow the supervisor's progress until the cluster is up and the demo has run.
  let offset = 0;
  for (;;) {
    const text = readFileSync(PROGRESS, 'utf8');
    if (text.length > offset) {
      process.stdout.write(text.slice(offset));
      offset = text.length;
    }
    const state = readState();
    if (state?.phase === 'ready') {
      printUsage(state);
      return 0;
    }
    if (state?.phase === 'failed' || !alive(child.pid)) {
      console.error(`demo: failed: ${state?.error ?? 'the supervisor exited'}; see ${SUPERVISOR_LOG}`);
      await down();
      return 1;
    }
    await sleep(200);
  }
}

function printUsage(state: State): void {
  const bin = state.kubectl ? state.kubectl.replace(/\/kubectl$/, '') : '';
  console.log(
    [
      '',
      'The edge cluster is running in the background. Use it with kubectl:',
      `  export KUBECONFIG=${KUBECONFIG}`,
      `  export PATH=${bin}:$PATH`,
      '  kubectl get nodes -o wide',
      `  kubectl -n ${NS} get pods -o wide`,
      '  kubectl -n edgemesh-system get pods -o wide',
      'Run a command inside a pod (real kubelets: kubectl exec and logs work):',
      `  kubectl -n ${NS} exec deploy/client -c client -- curl -s ${SERVICE_URL}`,
      `  kubectl -n ${NS} logs deploy/client -c edgemesh-proxy`,
      'Tear it all down:',
      '  scripts/demo down',
    ].join('\n'),
  );
}

/** Runs in the background: owns the cluster until SIGTERM. */
async function supervise(): Promise<void> {
  const progress = (line: string) => appendFileSync(PROGRESS, `${line}\n`);
  let cluster: EdgeCluster | undefined;
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    const state = readState();
    if (state) writeState({ ...state, phase: 'stopping' });
    await cluster?.stop().catch((err) => progress(`demo: stop failed: ${err}`));
    rmSync(KUBECONFIG, { force: true });
    rmSync(STATE, { force: true });
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  try {
    cluster = await EdgeCluster.start({ prefix: PREFIX, progress });
    writeFileSync(KUBECONFIG, readFileSync(cluster.controlPlane.localKubeconfig), { mode: 0o600 });
    writeState({ phase: 'starting', supervisor: process.pid, ...cluster.describe() });
    await runDemo(cluster, progress);
    writeState({ phase: 'ready', supervisor: process.pid, ...cluster.describe() });
  } catch (err) {
    progress(`demo: ${(err as Error).message}`);
    const state = readState();
    writeState({ ...(state ?? { supervisor: process.pid }), phase: 'failed', error: (err as Error).message });
    await stop();
  }
  // Stay alive: the API server bridge and every process's lifetime hang on this one.
  setInterval(() => undefined, 1 << 30);
}

/** The demo scenario; a step that fails is reported and the cluster stays up for a look. */
async function runDemo(cluster: EdgeCluster, say: (line: string) => void): Promise<void> {
  const steps: [string, () => Promise<string>][] = [
    [
      `kubectl create namespace ${NS}; deploy nginx (site 2), its Services and a curl client (site 1)`,
      async () => {
        const images = cluster.images;
        if (!images) throw new Error('the cluster has no images');
        await apply(cluster, [
          namespace(NS),
          nginxConfig(),
          nginxDeployment(images, 1),
          ...services(),
          clientDeployment(images),
        ]);
        await rolloutStatus(cluster, 'nginx');
        await rolloutStatus(cluster, 'client');
        return cluster.kubectl(['-n', NS, 'get', 'pods', '-o', 'wide']);
      },
    ],
    [
      `kubectl label namespace ${NS} edgemesh.io/injection=enabled`,
      () => cluster.kubectl(['label', 'namespace', NS, 'edgemesh.io/injection=enabled']),
    ],
    [
      `kubectl -n ${NS} rollout restart deployment/nginx deployment/client (new pods get the mesh)`,
      async () => {
        await cluster.kubectl(['-n', NS, 'rollout', 'restart', 'deployment/nginx', 'deployment/client']);
        await rolloutStatus(cluster, 'nginx');
        await rolloutStatus(cluster, 'client');
        const pods = [...(await livePods(cluster, 'app=nginx')), ...(await livePods(cluster, 'app=client'))];
        return pods
          .map(
            (p) =>
              `${p.metadata.name} on ${p.spec.nodeName}: ${isInjected(p) ? 'injected' : 'NOT injected'} ` +
              `(init containers: ${(p.spec.initContainers ?? []).map((c) => c.name).join(', ') || 'none'})`,
          )
          .join('\n');
      },
    ],
    [
      `from the client pod on site 1: curl ${SERVICE_URL}`,
      async () => {
        const node = (await livePods(cluster, 'app=client'))[0]?.spec.nodeName as string;
        const before = streamsByPath(await cluster.gatewayMetrics(node));
        const r = await curl(cluster);
        const by = servedBy(r.stdout);
        if (r.code !== 0 || !by)
          throw new Error(`curl exited ${r.code}: ${`${r.stdout}\n${r.stderr}`.trim()}`);
        const after = streamsByPath(await cluster.gatewayMetrics(node));
        return `${r.stdout.trim()}\n→ answered by ${by?.pod} on ${by?.node}; path taken by ${node}'s gateway: ${pathsUsed(before, after).join(', ') || 'unknown'}`;
      },
    ],
    [
      'a moment later: new connections leave the relay for a direct or hole-punched path',
      async () => {
        const node = (await livePods(cluster, 'app=client'))[0]?.spec.nodeName as string;
        const { paths } = await offTheRelay(cluster, node);
        return `${node}'s gateway now opens streams to site 2 on: ${paths.join(', ')}`;
      },
    ],
    [
      `dig SRV _http._tcp.nginx-svc.${NS}.svc.cluster.local (answered by the sidecar from the catalog)`,
      async () =>
        (
          await inClient(cluster, [
            'dig',
            '+short',
            '+time=2',
            '+tries=1',
            'SRV',
            `_http._tcp.nginx-svc.${NS}.svc.cluster.local`,
          ])
        ).stdout.trim() || '(no answer)',
    ],
  ];
  for (const [i, [title, run]] of steps.entries()) {
    say(`\n== demo step ${i + 1}/${steps.length}: ${title}`);
    try {
      say((await run()).trim());
    } catch (err) {
      say(`!! step failed: ${(err as Error).message.split('\n').slice(0, 6).join('\n')}`);
      say('   the cluster stays up so you can look around (see the logs under the work dir)');
      return;
    }
  }
  say('\n== demo done');
}

/** Stops the supervisor; if it is gone or does not finish, removes what it left itself. */
async function down(): Promise<number> {
  const state = readState();
  if (!state) {
    console.log('demo: not running');
    return 0;
  }
  if (alive(state.supervisor)) {
    console.log(`demo: stopping the supervisor (PID ${state.supervisor})`);
    process.kill(state.supervisor, 'SIGTERM');
    const deadline = Date.now() + 90_000;
    while (alive(state.supervisor) && Date.now() < deadline) await sleep(250);
    if (alive(state.supervisor)) {
      console.log('demo: the supervisor did not stop in 90 s; killing it');
      process.kill(state.supervisor, 'SIGKILL');
    }
  }
  // Whatever is left (a supervisor that crashed or was killed): recorded PIDs, then namespaces.
  for (const pid of state.pids ?? []) {
    if (alive(pid)) {
      console.log(`demo: killing leftover PID ${pid}`);
      process.kill(pid, 'SIGKILL');
    }
  }
  if (state.tag) {
    const { stdout } = await execFileP('ip', ['netns', 'list']);
    for (const ns of stdout.split('\n').map((l) => l.split(' ')[0] ?? '')) {
      if (!ns.startsWith(`${state.tag}-`)) continue;
      const pids = (await execFileP('ip', ['netns', 'pids', ns]).catch(() => ({ stdout: '' }))).stdout;
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await execFileP('ip', ['netns', 'del', ns]).catch(() => undefined);
      console.log(`demo: deleted leftover namespace ${ns}`);
    }
    for (const dir of await readdir('/etc/netns').catch(() => [] as string[])) {
      if (dir.startsWith(`${state.tag}-`))
        await rm(join('/etc/netns', dir), { recursive: true, force: true });
    }
  }
  // Mounts a killed kubelet/containerd left (volumes, rootfs, shm) before their folders go.
  const mounts = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .filter((mp) => (state.dirs ?? []).some((d) => mp.startsWith(`${d}/`)))
    .sort((a, b) => b.length - a.length);
  for (const mp of mounts) await execFileP('umount', ['-l', mp]).catch(() => undefined);
  for (const dir of state.dirs ?? []) await rm(dir, { recursive: true, force: true });
  rmSync(STATE, { force: true });
  rmSync(KUBECONFIG, { force: true });
  console.log('demo: down');
  return 0;
}

function status(): number {
  const state = readState();
  if (!state || !alive(state.supervisor)) {
    console.log(state ? 'demo: supervisor gone (run `scripts/demo down` to clean up)' : 'demo: not running');
    return state ? 1 : 0;
  }
  console.log(`demo: ${state.phase} (supervisor PID ${state.supervisor}, namespaces ${state.tag}-*)`);
  if (state.phase === 'ready') printUsage(state);
  return 0;
}

/** `kubectl exec` into a pod (its first container): `exec NAMESPACE/POD -- CMD...`. */
async function execInPod(args: string[]): Promise<number> {
  const state = readState();
  const [target, dashes, ...cmd] = args;
  const m = /^([a-z0-9-]+)\/([a-z0-9.-]+)$/.exec(target ?? '');
  if (!m || dashes !== '--' || cmd.length === 0) {
    console.error('usage: scripts/demo exec NAMESPACE/POD -- COMMAND [ARGS...]');
    return 2;
  }
  if (!state?.kubectl || !existsSync(KUBECONFIG)) {
    console.error('demo: not running');
    return 1;
  }
  const child = spawn(
    state.kubectl,
    [`--kubeconfig=${KUBECONFIG}`, '-n', m[1] as string, 'exec', m[2] as string, '--', ...cmd],
    { stdio: 'inherit' },
  );
  return new Promise((resolve) => child.on('close', (code) => resolve(code ?? 1)));
}

const [command = 'up', ...rest] = process.argv.slice(2);
if (process.getuid?.() !== 0) {
  console.error('demo: must run as root (network namespaces, iptables)');
  process.exit(1);
}
switch (command) {
  case 'up':
    process.exitCode = await up();
    break;
  case 'down':
    process.exitCode = await down();
    break;
  case 'status':
    process.exitCode = status();
    break;
  case 'exec':
    process.exitCode = await execInPod(rest);
    break;
  case 'supervise':
    await supervise();
    break;
  default:
    console.error('usage: scripts/demo [up|down|status|exec NAMESPACE/POD -- CMD...]');
    process.exitCode = 2;
}
