import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GATEWAY_NODE_FLAGS } from '../../gateway/tunnel/node-flags.ts';
import { type GatewayStatus, parseGatewayStatus } from '../../lib/gateway-status.ts';
import { createCA } from '../../lib/tunnel/identity.ts';
import { EDGEMESH_BIN, waitFor } from '../harness/netns.ts';
import { type LabNode, NatLab, type SiteSpec } from './lab.ts';

/**
 * The NAT lab with edgemesh on it: a mesh CA, tunnel-server replicas on the public
 * segment, tunnel nodes (gateway tunnel part, test/natlab/bin/tunnel-node.ts) on chosen
 * lab nodes and a sink (hash + echo server) in each node's pod. Used by the tunnel tests
 * and bench/tunnel.ts.
 */
const NODE = new URL('../../node_modules/.bin/node', import.meta.url).pathname;
const BIN = new URL('./bin/', import.meta.url).pathname;
export const TUNNEL_PORT = 20007;

export interface TunnelStatusJson {
  node: string;
  servers: { address: string; name?: string; up: boolean; observed?: string; rttMs?: number }[];
  peers: {
    node: string;
    path?: string;
    /** Per path, `via` names the relay's replica. */
    rttMs?: number;
    paths: Record<string, { rttMs?: number; streams: number; transport: string; upAt: number; via?: string }>;
    firstUseAt?: number;
    nextUpgradeAt?: number;
  }[];
  /** The node certificate in use (test/natlab/bin/tunnel-node.ts). */
  certificate?: { serial: string; notBefore: number; notAfter: number };
}

export class TunnelLab {
  readonly lab: NatLab;
  readonly dir: string;
  readonly caFile: string;
  readonly tokens = new Map<string, string>();
  readonly servers = new Map<number, ChildProcess>();
  readonly nodes = new Map<string, ChildProcess>();

  private constructor(lab: NatLab) {
    this.lab = lab;
    this.dir = mkdtempSync(join(tmpdir(), 'emt-'));
    const ca = createCA();
    this.caFile = join(this.dir, 'ca.crt');
    writeFileSync(this.caFile, ca.certPem);
    writeFileSync(join(this.dir, 'ca.key'), ca.keyPem, { mode: 0o600 });
  }

  /** `serverArgs`: extra tunnel-server flags for every replica (e.g. relay limits); `prefix`: namespace names. */
  static async create(
    sites: SiteSpec[],
    tunnelServers = 2,
    serverArgs: string[] = [],
    prefix = 'emt',
  ): Promise<TunnelLab> {
    const lab = await NatLab.create({ prefix, sites, tunnelServers });
    const t = new TunnelLab(lab);
    try {
      const hashes: Record<string, string> = {};
      for (const s of lab.sites)
        for (const n of s.nodes) {
          const token = randomBytes(16).toString('hex');
          t.tokens.set(n.name, token);
          hashes[n.name] = createHash('sha256').update(token).digest('hex');
        }
      writeFileSync(join(t.dir, 'tokens.json'), JSON.stringify(hashes));
      for (let i = 0; i < tunnelServers; i++) await t.startServer(i, serverArgs);
      for (const s of lab.sites) for (const n of s.nodes) for (const _ of n.pods) await t.startSink(n);
    } catch (err) {
      await t.cleanup();
      throw err;
    }
    return t;
  }

  get serverList(): string {
    return this.lab.tunnelServers.map((s) => `${s.addr}:${TUNNEL_PORT}`).join(',');
  }

  async startServer(i: number, extra: string[] = []): Promise<void> {
    const ts = this.lab.tunnelServers[i];
    const child = this.lab.spawn(ts.ns, [
      EDGEMESH_BIN,
      'tunnel-server',
      '--listen',
      `${ts.addr}:${TUNNEL_PORT}`,
      '--name',
      `ts${i + 1}`,
      '--ca-cert',
      this.caFile,
      '--ca-key',
      join(this.dir, 'ca.key'),
      '--enrol-tokens',
      join(this.dir, 'tokens.json'),
      ...extra,
    ]);
    collect(child, `ts${i + 1}`);
    this.servers.set(i, child);
    await waitFor(
      async () => (await this.lab.run(ts.ns, ['ss', '-ltn'])).stdout.includes(`:${TUNNEL_PORT}`),
      30_000,
      100,
      `tunnel-server ts${i + 1}`,
    ).catch((err) => {
      throw new Error(`${err.message}\n${processLog(`ts${i + 1}`)}`);
    });
  }

  killServer(i: number): void {
    const child = this.servers.get(i);
    if (child?.pid) process.kill(child.pid, 'SIGKILL');
    this.servers.delete(i);
  }

  /**
   * A slow way to replica `i`: a public host forwarding TCP :TUNNEL_PORT to it with `delayMs`
   * each way (bin/delay-proxy.ts; the lab kernel has no netem), `thenDelayMs` after
   * `degrade()`. Returns "addr:port" to list and the switch.
   */
  async delayedServer(
    i: number,
    delayMs: number,
    thenDelayMs?: number,
  ): Promise<{ address: string; degrade(): void }> {
    const host = await this.lab.addPublicHost(`dly${i + 1}`);
    const ts = this.lab.tunnelServers[i];
    const child = this.lab.spawn(host.ns, [
      NODE,
      join(BIN, 'delay-proxy.ts'),
      '--listen',
      `${host.addr}:${TUNNEL_PORT}`,
      '--to',
      `${ts.addr}:${TUNNEL_PORT}`,
      '--delay-ms',
      String(delayMs),
      ...(thenDelayMs === undefined ? [] : ['--then-delay-ms', String(thenDelayMs)]),
    ]);
    collect(child, `dly${i + 1}`);
    await readyLine(child, `delay proxy to ts${i + 1}`);
    return {
      address: `${host.addr}:${TUNNEL_PORT}`,
      // `ip netns exec` execs the command: the child's pid is the proxy's.
      degrade: () => {
        if (child.pid) process.kill(child.pid, 'SIGUSR2');
      },
    };
  }

  async startSink(node: LabNode): Promise<void> {
    const child = this.lab.spawn(node.pods[0].ns, [NODE, join(BIN, 'sink.ts')]);
    await readyLine(child, `sink on ${node.name}`);
  }

  /** Starts the tunnel node on `node`; its far end allows only its own pod's ports. */
  async startNode(
    node: LabNode,
    opts: { techniques?: string; token?: string; readyTimeoutMs?: number; servers?: string } = {},
  ): Promise<ChildProcess> {
    const peers = this.lab.sites.flatMap((s) => s.nodes.map((x) => `${x.name}=${x.addr}`)).join(',');
    const allow = node.pods.flatMap((p) => [`${p.addr}:9000`, `${p.addr}:9001`]).join(',');
    // The gateway's own V8 flags, as the DaemonSet runs it.
    const child = this.lab.spawn(node.ns, [
      NODE,
      ...GATEWAY_NODE_FLAGS,
      join(BIN, 'tunnel-node.ts'),
      '--node',
      node.name,
      '--state-dir',
      join(this.dir, node.name),
      '--ca',
      this.caFile,
      '--servers',
      opts.servers ?? this.serverList,
      '--token',
      opts.token ?? this.tokens.get(node.name) ?? '',
      '--lan',
      node.addr,
      '--allow',
      allow,
      '--techniques',
      opts.techniques ?? 'lan,tcp,udp',
      '--peer-addresses',
      peers,
      '--ready-timeout',
      String(opts.readyTimeoutMs ?? 15_000),
    ]);
    collect(child, node.name);
    this.nodes.set(node.name, child);
    // Enrolment may need a retry (up to 15 s apart, with jitter, while a tunnel-server is not
    // answering yet, e.g. behind a delay forwarder just started), then registration has its own
    // --ready-timeout: wait for both, and say what the node logged if it still is not ready.
    await readyLine(child, `tunnel node ${node.name}`, (opts.readyTimeoutMs ?? 15_000) + 45_000).catch(
      (err) => {
        throw new Error(`${(err as Error).message}; its log ends:\n${processLog(node.name, 2000)}`);
      },
    );
    return child;
  }

  /** Runs send.ts in `from`'s namespace: `bytes` to `to`'s pod (port 9000) through the tunnel. */
  async send(from: LabNode, to: LabNode, bytes: number, timeoutMs = 60_000): Promise<SendResult> {
    const r = await this.lab.exec(
      from.ns,
      [
        NODE,
        join(BIN, 'send.ts'),
        '--node',
        to.name,
        '--target',
        `${to.pods[0].addr}:9000`,
        '--bytes',
        String(bytes),
      ],
      { timeoutMs },
    );
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as SendResult;
  }

  /** Plain TCP baseline: `bytes` from `from` straight to ip:port (no tunnel). */
  async sendPlain(from: LabNode, addr: string, bytes: number, timeoutMs = 60_000): Promise<SendResult> {
    const r = await this.lab.exec(
      from.ns,
      [NODE, join(BIN, 'send.ts'), '--direct', addr, '--bytes', String(bytes)],
      { timeoutMs },
    );
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as SendResult;
  }

  /** Round-trip latency to `to`'s pod echo port, through the tunnel or (`direct`) plain. */
  async echo(
    from: LabNode,
    to: LabNode | { direct: string },
    n = 300,
  ): Promise<{ path?: string; p50Us?: number; p99Us?: number; error?: string }> {
    const args =
      'direct' in to ? ['--direct', to.direct] : ['--node', to.name, '--target', `${to.pods[0].addr}:9001`];
    const r = await this.lab.exec(from.ns, [NODE, join(BIN, 'echo.ts'), ...args, '--n', String(n)], {
      timeoutMs: 60_000,
    });
    return JSON.parse(r.stdout.trim());
  }

  /**
   * A port forward on `node`'s NAT router (public :19000/:19001 → its pod's :9000/:9001), so
   * plain TCP can cross the same NATs and hops as the tunnel, as a baseline.
   */
  async portForward(node: LabNode): Promise<string> {
    const site = this.lab.sites.find((s) => s.nodes.includes(node));
    if (!site) throw new Error('node not in lab');
    for (const [publicPort, port] of [
      [19000, 9000],
      [19001, 9001],
    ] as const) {
      await this.lab.forwardPort(site, { publicPort, to: node.pods[0].addr, port });
    }
    return site.publicAddr;
  }

  async status(node: LabNode): Promise<TunnelStatusJson> {
    const r = await this.lab.exec(node.ns, ['curl', '-sf', 'http://127.0.0.1:15091/status']);
    return JSON.parse(r.stdout) as TunnelStatusJson;
  }

  /** The gateway's /status document for `node`, validated as `edgemesh status` validates it. */
  async gatewayStatus(node: LabNode): Promise<GatewayStatus> {
    const r = await this.lab.exec(node.ns, ['curl', '-sf', 'http://127.0.0.1:15091/gateway-status']);
    return parseGatewayStatus(JSON.parse(r.stdout), `${node.name} /gateway-status`);
  }

  /** The tunnel node's Prometheus text (its registry: the tunnel's edgemesh_tunnel_* metrics). */
  async metrics(node: LabNode): Promise<string> {
    return (await this.lab.exec(node.ns, ['curl', '-sf', 'http://127.0.0.1:15091/metrics'])).stdout;
  }

  async peerPath(from: LabNode, to: LabNode): Promise<string | undefined> {
    return (await this.status(from)).peers.find((p) => p.node === to.name)?.path;
  }

  async cleanup(): Promise<void> {
    await this.lab.cleanup();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface SendResult {
  path?: string;
  bytes?: number;
  sha?: string;
  reply?: string;
  ms?: number;
  error?: string;
}

const logs = new Map<string, string[]>();
function collect(child: ChildProcess, name: string): void {
  const lines: string[] = [];
  logs.set(name, lines);
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (s: string) => {
    lines.push(s);
    if (lines.length > 400) lines.shift();
  });
}

/** The last log lines of a lab process, for failure messages. */
export function processLog(name: string, chars = 4000): string {
  return (logs.get(name) ?? []).join('').slice(-chars);
}

function readyLine(child: ChildProcess, what: string, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} not ready in ${timeoutMs} ms`)), timeoutMs);
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (s: string) => {
      out += s;
      if (out.includes('READY')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}`));
    });
  });
}
