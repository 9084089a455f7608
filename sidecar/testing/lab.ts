/**
 * The proxy's network-namespace lab, shared by sidecar/proxy.netns.test.ts and the benches.
 *
 *   pod ns  eth0 10.10.0.2/24 fd00:10::2/64     app (curl / node client) + `edgemesh sidecar`
 *           capture rules from `edgemesh init`; default routes point at the srv ns only
 *     │ veth
 *   srv ns  eth0 10.10.0.1/24 fd00:10::1/64     backends on 10.20.0.11-13 / fd00:20::11-12
 *           (10.20.0.14 is nobody: refused), a passthrough server on 10.20.0.20, a known pod
 *           on 10.20.0.30, a "remote node" endpoint on 10.20.0.40 that the pod may not reach
 *           directly (REJECT) — only through the gateway peer on 10.10.0.1:15080.
 */

import type { ChildProcess } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Catalog, Endpoint, LbPolicy, ServiceEntry, ServicePort } from '../../lib/catalog/types.ts';
import { EDGEMESH_BIN, NetnsLab, waitFor } from '../../test/harness/netns.ts';

export const NODE = process.execPath;
export const HTTP_PORT = 8080;
export const TCP_PORT = 9000;
export const H2C_PORT = 50051;
/** Where grpc-backend.ts (a @grpc/grpc-js server) listens on each backend, when started. */
export const GRPC_PORT = 50052;
export const BACKENDS = ['10.20.0.11', '10.20.0.12', '10.20.0.13'];
export const BACKENDS6 = ['fd00:20::11', 'fd00:20::12'];
export const DEAD = '10.20.0.14';
export const PASSTHROUGH = '10.20.0.20';
export const KNOWN_POD = '10.20.0.30';
export const REMOTE = '10.20.0.40';
export const GATEWAY = '10.10.0.1';
export const APP_UID = 1000;

const port = (name: string, p: number, appProtocol?: string): ServicePort => ({
  name,
  port: p,
  protocol: 'TCP',
  ...(appProtocol ? { appProtocol } : {}),
});

const endpoint = (ip: string, ports: ServicePort[], over: Partial<Endpoint> = {}): Endpoint => ({
  ip,
  ready: true,
  serving: true,
  terminating: false,
  nodeName: 'node-a',
  ports,
  ...over,
});

function svc(
  name: string,
  clusterIPs: string[],
  ports: ServicePort[],
  endpoints: Endpoint[],
  over: { lbPolicy?: LbPolicy; hashHeader?: string; affinitySeconds?: number } = {},
): [string, ServiceEntry] {
  return [
    `default/${name}`,
    {
      service: {
        namespace: 'default',
        name,
        type: 'ClusterIP',
        clusterIPs,
        headless: false,
        ports,
        sessionAffinity: over.affinitySeconds
          ? { type: 'ClientIP', timeoutSeconds: over.affinitySeconds }
          : { type: 'None' },
        lbPolicy: over.lbPolicy ?? 'round-robin',
        ...(over.hashHeader ? { hashHeader: over.hashHeader } : {}),
        publishNotReadyAddresses: false,
      },
      endpoints,
    },
  ];
}

/** Cluster IPs of the lab's services. */
export const VIP = {
  web: '10.96.0.10',
  web6: 'fd00:96::10',
  echo: '10.96.0.11',
  echo6: 'fd00:96::11',
  sticky: '10.96.0.12',
  flakyHttp: '10.96.0.13',
  flakyTcp: '10.96.0.14',
  empty: '10.96.0.15',
  remote: '10.96.0.16',
  hashed: '10.96.0.17',
  grpc: '10.96.0.18',
  least: '10.96.0.19',
  remoteHttp: '10.96.0.21',
  dead: '10.96.0.22',
  remoteGrpc: '10.96.0.23',
  /** The @grpc/grpc-js backends (startGrpcBackends) behind a `grpc` port. */
  grpcJs: '10.96.0.24',
  /** The HTTP backend behind a plain TCP port: the proxy splices bytes (L4), for the benches. */
  benchL4: '10.96.0.20',
} as const;

export function labCatalog(): Catalog {
  const http = [port('http', HTTP_PORT)];
  const tcp = [port('tcp', TCP_PORT)];
  const grpc = [port('grpc', H2C_PORT)];
  return {
    format: 1,
    revision: 1,
    clusterDomain: 'cluster.local',
    services: Object.fromEntries([
      svc(
        'web',
        [VIP.web, VIP.web6],
        [port('http', 80, 'http')],
        [...BACKENDS, ...BACKENDS6].map((ip) => endpoint(ip, http)),
      ),
      svc(
        'echo',
        [VIP.echo],
        [port('tcp', 7)],
        BACKENDS.map((ip) => endpoint(ip, tcp)),
      ),
      svc(
        'echo6',
        [VIP.echo6],
        [port('tcp', 7)],
        BACKENDS6.map((ip) => endpoint(ip, tcp)),
      ),
      svc(
        'sticky',
        [VIP.sticky],
        [port('tcp', 7)],
        BACKENDS.map((ip) => endpoint(ip, tcp)),
        { affinitySeconds: 600 },
      ),
      svc(
        'flaky-http',
        [VIP.flakyHttp],
        [port('http-api', 80)],
        [DEAD, BACKENDS[0]].map((ip) => endpoint(ip, [port('http-api', HTTP_PORT)])),
      ),
      svc(
        'flaky-tcp',
        [VIP.flakyTcp],
        [port('tcp', 7)],
        [DEAD, BACKENDS[1]].map((ip) => endpoint(ip, tcp)),
      ),
      svc(
        'empty',
        [VIP.empty],
        [port('http', 80), port('tcp', 7)],
        [endpoint(BACKENDS[0], [...http, ...tcp], { ready: false, serving: false })],
      ),
      svc('remote', [VIP.remote], [port('tcp', 7)], [endpoint(REMOTE, tcp, { nodeName: 'node-b' })]),
      svc(
        'remote-grpc',
        [VIP.remoteGrpc],
        [port('grpc', 50051)],
        [endpoint(REMOTE, grpc, { nodeName: 'node-b' })],
      ),
      svc('dead', [VIP.dead], [port('http', 80), port('tcp', 7)], [endpoint(DEAD, [...http, ...tcp])]),
      svc(
        'remote-http',
        [VIP.remoteHttp],
        [port('http', 80)],
        [endpoint(REMOTE, http, { nodeName: 'node-b' })],
      ),
      svc(
        'hashed',
        [VIP.hashed],
        [port('http', 80)],
        BACKENDS.map((ip) => endpoint(ip, http)),
        { lbPolicy: 'consistent-hash', hashHeader: 'x-user' },
      ),
      svc(
        'grpc',
        [VIP.grpc],
        [port('grpc', 50051)],
        BACKENDS.map((ip) => endpoint(ip, grpc)),
      ),
      svc(
        'grpc-js',
        [VIP.grpcJs],
        [port('grpc', 50051)],
        BACKENDS.map((ip) => endpoint(ip, [port('grpc', GRPC_PORT)])),
      ),
      svc(
        'least',
        [VIP.least],
        [port('tcp', 7)],
        BACKENDS.map((ip) => endpoint(ip, tcp)),
        { lbPolicy: 'least-connections' },
      ),
      svc('bench-l4', [VIP.benchL4], [port('tcp', 80)], [endpoint(BACKENDS[0], [port('tcp', HTTP_PORT)])]),
    ]),
    pods: { [KNOWN_POD]: { ip: KNOWN_POD, namespace: 'default', name: 'db-0', nodeName: 'node-a' } },
    nodes: {
      'node-a': { name: 'node-a', addresses: [GATEWAY] },
      'node-b': { name: 'node-b', addresses: [] },
    },
  };
}

export interface ProxyLab {
  lab: NetnsLab;
  pod: string;
  srv: string;
  sidecar?: ChildProcess;
  /** Lines the gateway peer printed (one JSON request each). */
  gatewayRequests: string[];
  sidecarLog: string[];
}

/** Starts `cmd` in `ns` and waits for it to print "ready" on stdout. */
export async function startReady(
  lab: NetnsLab,
  ns: string,
  argv: string[],
  uid?: number,
): Promise<ChildProcess> {
  const child = lab.spawn(ns, argv, uid === undefined ? {} : { uid });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    err += d;
  });
  await waitFor(
    () => out.includes('ready') || child.exitCode !== null,
    15_000,
    50,
    `${argv.join(' ')} ready`,
  );
  if (child.exitCode !== null) throw new Error(`${argv.join(' ')} exited ${child.exitCode}: ${err}`);
  return child;
}

/**
 * Builds the namespaces, backends and gateway peer; applies the capture rules with
 * `edgemesh init`; starts the sidecar (as uid 1337) unless `sidecar: false`.
 */
export async function setUpProxyLab(
  prefix: string,
  opts: {
    sidecar?: boolean;
    catalogFile: string;
    sidecarArgs?: string[];
    sidecarEnv?: Record<string, string>;
  },
): Promise<ProxyLab> {
  const lab = new NetnsLab(prefix);
  const pod = await lab.add('pod');
  const srv = await lab.add('srv');
  await lab.link(
    { ns: pod, ifname: 'eth0', addr: ['10.10.0.2/24', 'fd00:10::2/64'] },
    { ns: srv, ifname: 'eth0', addr: ['10.10.0.1/24', 'fd00:10::1/64'] },
  );
  // Benches open tens of thousands of short connections: let the client side reuse ports in
  // TIME_WAIT, or the lab runs out of ephemeral ports and measures that instead of the proxy.
  for (const ns of [pod, srv]) await lab.exec(ns, ['sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1']);
  await lab.exec(pod, ['ip', 'route', 'add', 'default', 'via', '10.10.0.1']);
  await lab.exec(pod, ['ip', '-6', 'route', 'add', 'default', 'via', 'fd00:10::1']);
  // DEAD has an address but nothing listening: connects to it are refused at once.
  for (const ip of [...BACKENDS, DEAD, PASSTHROUGH, KNOWN_POD, REMOTE]) {
    await lab.exec(srv, ['ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
  }
  for (const ip of BACKENDS6) await lab.exec(srv, ['ip', 'addr', 'add', `${ip}/128`, 'dev', 'lo']);
  // The "other node" endpoint is reachable only from the gateway (which runs in srv).
  await lab.exec(srv, ['iptables', '-A', 'INPUT', '-s', '10.10.0.2', '-d', REMOTE, '-j', 'REJECT']);
  await writeFile(opts.catalogFile, JSON.stringify(labCatalog(), null, 2));

  const backends = [...BACKENDS, PASSTHROUGH, KNOWN_POD, REMOTE, ...BACKENDS6].join(',');
  const here = new URL('.', import.meta.url).pathname;
  await startReady(lab, srv, [
    NODE,
    `${here}backend.ts`,
    '--addr',
    backends,
    '--http',
    String(HTTP_PORT),
    '--tcp',
    String(TCP_PORT),
    '--h2c',
    String(H2C_PORT),
  ]);
  const gatewayRequests: string[] = [];
  const peer = await startReady(lab, srv, [
    NODE,
    `${here}gateway-peer.ts`,
    '--host',
    GATEWAY,
    '--port',
    '15080',
    '--nodes',
    'node-b',
    '--feed',
    opts.catalogFile,
  ]);
  peer.stdout?.on('data', (d: Buffer) => {
    for (const line of String(d).split('\n')) if (line.startsWith('{')) gatewayRequests.push(line);
  });
  // Every backend reachable before anything measures (IPv6 neighbour discovery can lag the
  // first connects, which would otherwise count as endpoint failures). curl runs as the
  // sidecar's uid so the capture rules, installed next, never see it.
  for (const ip of [...BACKENDS, ...BACKENDS6]) {
    const url = `http://${ip.includes(':') ? `[${ip}]` : ip}:${HTTP_PORT}/`;
    await waitFor(
      async () => (await lab.run(pod, ['curl', '-s', '-m', '1', url], { uid: 1337 })).code === 0,
      10_000,
      100,
      `backend ${ip} reachable`,
    );
  }
  // The pod's resolv.conf names the "upstream" 10.10.0.1 (and its IPv6 twin): the init captures
  // DNS only to the pod's nameservers, as in a real pod. It reads the file once, at install.
  const resolvConf = join(tmpdir(), `${pod}.resolv.conf`);
  await writeFile(resolvConf, 'nameserver 10.10.0.1\nnameserver fd00:10::1\n');
  try {
    await lab.exec(pod, [EDGEMESH_BIN, 'init', `--resolv-conf=${resolvConf}`], { timeoutMs: 60_000 });
  } finally {
    await rm(resolvConf, { force: true });
  }
  const result: ProxyLab = { lab, pod, srv, gatewayRequests, sidecarLog: [] };
  if (opts.sidecar !== false)
    result.sidecar = await startSidecar(result, opts.catalogFile, opts.sidecarArgs, opts.sidecarEnv);
  return result;
}

/** Starts the gRPC backend (grpc-backend.ts) on every IPv4 backend address, at GRPC_PORT. */
export function startGrpcBackends(l: ProxyLab): Promise<ChildProcess> {
  const here = new URL('.', import.meta.url).pathname;
  return startReady(l.lab, l.srv, [
    NODE,
    `${here}grpc-backend.ts`,
    '--addr',
    BACKENDS.join(','),
    '--port',
    String(GRPC_PORT),
  ]);
}

/** Starts `edgemesh sidecar` in the pod as uid 1337 and waits until /ready answers 200. */
/**
 * Who runs the sidecar in the lab: uid/gid 1337 as in a pod, when that user can read this
 * checkout (a CI clone may sit in a root-only directory). Otherwise root with gid 1337: the
 * capture rules exempt the gid too, so routing is the same; only the privilege drop is not
 * exercised, and a warning says so.
 */
export async function proxyUser(l: NetnsLab, ns: string): Promise<{ uid: number; gid: number }> {
  proxyUserCache ??= l
    .run(ns, [NODE, '-e', `require('fs').accessSync(${JSON.stringify(EDGEMESH_BIN)}, 4)`], { uid: 1337 })
    .then((r) => {
      if (r.code === 0) return { uid: 1337, gid: 1337 };
      process.stderr.write(
        'lab: uid 1337 cannot read this checkout; running the sidecar as uid 0, gid 1337\n',
      );
      return { uid: 0, gid: 1337 };
    });
  return proxyUserCache;
}
let proxyUserCache: Promise<{ uid: number; gid: number }> | undefined;

export async function startSidecar(
  l: ProxyLab,
  /** Standalone from this file, or undefined: the catalog feed from the lab's gateway, as in a pod. */
  catalogFile: string | undefined,
  extra: string[] = [],
  env: Record<string, string> = {},
  command: string[] = [EDGEMESH_BIN],
): Promise<ChildProcess> {
  const child = l.lab.spawn(
    l.pod,
    [
      ...command,
      'sidecar',
      ...(catalogFile ? ['--catalog-file', catalogFile] : []),
      '--upstream',
      '10.10.0.1',
      '--node-name',
      'node-a',
      '--gateway',
      `${GATEWAY}:15080`,
      '--connect-timeout-ms',
      '1000',
      ...extra,
    ],
    {
      ...(await proxyUser(l.lab, l.pod)),
      env: { ...process.env, EDGEMESH_LOG_LEVEL: process.env.EDGEMESH_LOG_LEVEL ?? 'info', ...env },
    },
  );
  child.stderr?.on('data', (d: Buffer) => l.sidecarLog.push(String(d)));
  await waitFor(
    async () => {
      if (child.exitCode !== null)
        throw new Error(`sidecar exited ${child.exitCode}: ${l.sidecarLog.join('')}`);
      const r = await l.lab.run(l.pod, ['curl', '-s', '-m', '1', 'http://127.0.0.1:15021/ready']);
      return r.stdout.startsWith('ready');
    },
    20_000,
    100,
    'sidecar /ready',
  );
  return child;
}
