import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { loopbackCatalog } from '../../gateway/test-fixtures.ts';
import { startGatewayProcess } from '../../gateway/testing/gateway-process.ts';
import { createCA, issueIdentity } from '../../lib/tunnel/identity.ts';
import { EDGEMESH_BIN, NetnsLab, waitFor } from '../../test/harness/netns.ts';
import { dashboardQueries } from './testing/dashboard.ts';
import { prometheusBinary } from './testing/prometheus-tools.ts';

// The dashboard's queries and the alert rules against a real Prometheus (Debian's
// `prometheus` package) scraping real parts, in namespaces with no route out: a gateway with
// its tunnel up to a tunnel-server and a session from a peer gateway, a pod behind it that
// opened a stream, and the Prometheus server (static scrape configs named as the rules
// expect, 1 s scrapes, its TSDB in a temp dir, stopped by PID). Every dashboard query must
// evaluate without error, the gateway's core series must be there, and every alert rule must
// evaluate cleanly.
const NODE_IP = '10.64.0.1';
const POD_IP = '10.64.0.5';
// Its own address on the node: a gateway's LAN address may not be the tunnel-server's.
const TS_IP = '10.64.0.2';
const TUNNEL_SERVER = `${TS_IP}:20016`;
const PROM = 'http://127.0.0.1:19090';
const dir = import.meta.dirname;
const PEER = join(dir, '../../gateway/testing/hostile-peer.ts');
const lab = new NetnsLab('emp');
const work = mkdtempSync(join(tmpdir(), 'edgemesh-prometheus-netns-'));
const stateDir = join(work, 'gateway');
let nodeNs: string;
let podNs: string;
let prometheus: ChildProcess | undefined;
let prometheusLog = '';
let tunnelLog = '';
let gatewayLog = '';

type ApiAnswer = {
  status: string;
  error?: string;
  data: { resultType?: string; result?: unknown[] } & Record<string, unknown>;
};

/** A GET on Prometheus's HTTP API from inside the namespace (curl; 5 s at most). */
async function api(path: string, params: Record<string, string> = {}): Promise<ApiAnswer> {
  const args = ['curl', '-sS', '--max-time', '5', '-G', `${PROM}${path}`];
  for (const [k, v] of Object.entries(params)) args.push('--data-urlencode', `${k}=${v}`);
  const r = await lab.exec(nodeNs, args);
  return JSON.parse(r.stdout) as ApiAnswer;
}
const query = (expr: string) => api('/api/v1/query', { query: expr });
const resultOf = (a: ApiAnswer) =>
  (a.data.result ?? []) as { metric: Record<string, string>; value: [number, string] }[];

beforeAll(async () => {
  const promBin = prometheusBinary('prometheus');
  nodeNs = await lab.add('node');
  podNs = await lab.add('pod');
  await lab.link(
    { ns: nodeNs, ifname: 'cbr0', addr: `${NODE_IP}/24` },
    { ns: podNs, ifname: 'eth0', addr: `${POD_IP}/24` },
  );
  await lab.exec(podNs, ['ip', 'route', 'add', 'default', 'via', NODE_IP]);
  await lab.exec(nodeNs, ['ip', 'addr', 'add', `${TS_IP}/24`, 'dev', 'cbr0']);
  lab.spawn(podNs, ['socat', `TCP-LISTEN:8080,bind=${POD_IP},fork,reuseaddr`, 'EXEC:cat']);

  // A tunnel-server for the gateway's tunnel, with a per-node relay limit so its saturation
  // series have a limit to divide by.
  const ca = createCA();
  writeFileSync(join(work, 'ca.crt'), ca.certPem);
  writeFileSync(join(work, 'ca.key'), ca.keyPem, { mode: 0o600 });
  writeFileSync(join(work, 'token'), 'prometheus-test-token\n');
  const tokenHash = createHash('sha256').update('prometheus-test-token').digest('hex');
  writeFileSync(join(work, 'tokens.json'), JSON.stringify({ 'edge-n': tokenHash }));
  const tunnelServer = lab.spawn(nodeNs, [
    EDGEMESH_BIN,
    'tunnel-server',
    `--listen=${TUNNEL_SERVER}`,
    '--name=ts1',
    `--ca-cert=${join(work, 'ca.crt')}`,
    `--ca-key=${join(work, 'ca.key')}`,
    `--enrol-tokens=${join(work, 'tokens.json')}`,
    '--relay-max-sessions=8',
    '--metrics-port=15091',
  ]);
  tunnelServer.stderr?.on('data', (c: Buffer) => {
    tunnelLog += c.toString();
  });
  await waitFor(
    () => tunnelLog.includes('tunnel-server ready'),
    30_000,
    100,
    `tunnel-server start (${tunnelLog})`,
  );

  // Enrolled before (its key and node certificate in the state directory, as after a
  // restart): the tunnel starts at once with a control session to the tunnel-server.
  mkdirSync(stateDir);
  const id = issueIdentity(ca, { kind: 'node', name: 'edge-n' });
  writeFileSync(join(stateDir, 'tunnel.key'), id.keyPem, { mode: 0o600 });
  writeFileSync(join(stateDir, 'tunnel.crt'), id.certPem);
  await startGatewayProcess(lab, nodeNs, {
    stateDir,
    catalog: {
      ...loopbackCatalog([{ name: 'web-0', ip: POD_IP, node: 'edge-n', ports: [8080] }], 42),
      nodes: {
        'edge-n': { name: 'edge-n', addresses: [NODE_IP] },
        'edge-o': { name: 'edge-o', addresses: [POD_IP] },
      },
    },
    listen: NODE_IP,
    onStderr: (c) => {
      gatewayLog = (gatewayLog + c).slice(-20000);
    },
    args: [
      `--tunnel-servers=${TUNNEL_SERVER}`,
      `--mesh-ca=${join(work, 'ca.crt')}`,
      `--enroll-token-file=${join(work, 'token')}`,
      '--tunnel-port=20017',
    ],
  });
  // One stream through the gateway, so its stream counter has a series.
  const r = await lab.run(podNs, [
    'sh',
    '-c',
    `printf 'EDGEMESH/1 CONNECT edge-n ${POD_IP} 8080\\nhello\\n' | timeout 2 socat -t2 - TCP:${NODE_IP}:15080`,
  ]);
  expect(r.stdout).toBe('OK local\nhello\n');

  // A peer gateway (edge-o, a node certificate from the same CA) dials this one's tunnel
  // port directly and keeps its session, so the per-peer series have a peer: one stream to
  // the pod's echo, a few KiB through it, then held until the lab ends.
  writeFileSync(
    join(work, 'edge-o.json'),
    JSON.stringify(issueIdentity(ca, { kind: 'node', name: 'edge-o' })),
  );
  const peer = lab.spawn(podNs, [
    process.execPath,
    '--disable-warning=ExperimentalWarning',
    PEER,
    JSON.stringify({
      mode: 'attack',
      identityFile: join(work, 'edge-o.json'),
      gateway: { host: NODE_IP, port: 20017, node: 'edge-n' },
      target: { ip: POD_IP, port: 8080 },
      streams: 1,
      bytes: 4096,
    }),
  ]);
  let peerOut = '';
  let peerErr = '';
  peer.stdout?.on('data', (c: Buffer) => {
    peerOut += c.toString();
  });
  peer.stderr?.on('data', (c: Buffer) => {
    peerErr += c.toString();
  });
  await waitFor(() => peerOut.includes('\n'), 30_000, 100, `the peer's stream (${peerErr})`);
  expect(JSON.parse(peerOut.split('\n')[0] as string)).toMatchObject({ opened: 1, reset: 0 });

  const config = {
    global: { scrape_interval: '1s', evaluation_interval: '1s', scrape_timeout: '1s' },
    rule_files: [join(dir, 'edgemesh.rules.yaml')],
    scrape_configs: [
      {
        job_name: 'edgemesh-gateway',
        static_configs: [
          { targets: [`${NODE_IP}:15090`], labels: { pod: 'edgemesh-gateway-test', node: 'edge-n' } },
        ],
      },
      {
        job_name: 'edgemesh-tunnel-server',
        static_configs: [
          { targets: [`${TS_IP}:15091`], labels: { pod: 'edgemesh-tunnel-server-test', node: 'edge-n' } },
        ],
      },
    ],
  };
  writeFileSync(join(work, 'prometheus.yml'), YAML.stringify(config));
  prometheus = lab.spawn(nodeNs, [
    promBin,
    `--config.file=${join(work, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(work, 'tsdb')}`,
    '--web.listen-address=127.0.0.1:19090',
    '--log.level=warn',
  ]);
  prometheus.stderr?.on('data', (c: Buffer) => {
    prometheusLog = (prometheusLog + c.toString()).slice(-4000);
  });
  await waitFor(
    async () => (await lab.run(nodeNs, ['curl', '-sf', '--max-time', '2', `${PROM}/-/ready`])).code === 0,
    30_000,
    200,
    `prometheus ready (log: ${prometheusLog})`,
  );
  // Both targets up and the gateway's tunnel enrolled, as Prometheus sees them; then a few
  // more scrapes so rate() has samples to work with.
  await waitFor(
    async () => resultOf(await query('up == 1')).length === 2,
    30_000,
    500,
    `both targets up (log: ${prometheusLog})`,
  );
  await waitFor(
    async () => resultOf(await query('edgemesh_gateway_tunnel_servers_up == 1')).length === 1,
    30_000,
    500,
    `the gateway's tunnel up to the tunnel-server (gateway log: ${gatewayLog})`,
  );
  await waitFor(
    async () => resultOf(await query('count_over_time(up{job="edgemesh-gateway"}[1m]) >= 4')).length === 1,
    30_000,
    500,
    'four scrapes of the gateway',
  );
}, 150_000);

afterAll(async () => {
  // Prometheus first, by its PID, so it flushes nothing into a directory being removed.
  if (prometheus?.pid && prometheus.exitCode === null) {
    const exited = new Promise((resolve) => prometheus?.once('exit', resolve));
    process.kill(prometheus.pid, 'SIGTERM');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
  }
  await lab.cleanup();
  rmSync(work, { recursive: true, force: true });
}, 60_000);

describe('the dashboard and the alert rules against a real Prometheus scraping a gateway', () => {
  it("has the gateway's and the tunnel-server's core series", async () => {
    const one = async (expr: string) => {
      const r = resultOf(await query(expr));
      expect(r, expr).toHaveLength(1);
      return Number(r[0]?.value[1]);
    };
    expect(await one('edgemesh_build_info{component="gateway",job="edgemesh-gateway"}')).toBe(1);
    expect(await one('edgemesh_gateway_catalog_revision')).toBe(42);
    expect(await one('edgemesh_gateway_catalog_services')).toBe(1);
    expect(await one('edgemesh_gateway_tunnel_state{state="running"}')).toBe(1);
    expect(await one('edgemesh_gateway_tunnel_servers_up')).toBe(1);
    expect(await one('edgemesh_gateway_streams_total{path="local"}')).toBe(1);
    expect(await one('edgemesh_gateway_certificate_expiry_seconds')).toBeGreaterThan(Date.now() / 1000);
    expect(await one('process_resident_memory_bytes{component="gateway"}')).toBeGreaterThan(0);
    expect(await one('edgemesh_gateway_peer_path{peer="edge-o",path="direct"}')).toBe(1);
    expect(await one('edgemesh_gateway_peer_bytes_total{peer="edge-o",direction="in"}')).toBeGreaterThan(
      4096,
    );
    expect(await one('edgemesh_tunnel_peers{path="direct"}')).toBe(1);
    expect(await one('edgemesh_tunnel_server_gateways')).toBe(1);
    expect(await one('edgemesh_tunnel_server_connections_limit')).toBe(1024);
    expect(await one('edgemesh_tunnel_server_relays_per_node_limit')).toBe(8);
  });

  it('evaluates every dashboard query without error', async () => {
    const failed: string[] = [];
    const empty: string[] = [];
    for (const q of dashboardQueries(join(dir, 'grafana-dashboard.json'))) {
      const a = await query(q.expr);
      if (a.status !== 'success') failed.push(`${q.panel} ${q.refId}: ${a.error ?? JSON.stringify(a)}`);
      else if (resultOf(a).length === 0) empty.push(`${q.panel} ${q.refId}`);
    }
    expect(failed).toEqual([]);
    // With one gateway, its tunnel-server, one peer and no sidecar or webhook, these have
    // data: one that comes back empty names a label or metric that is not there.
    for (const panel of [
      'Peers by path',
      'Peer paths per gateway',
      'Tunnel bytes per peer',
      'Streams opened by path',
      'Tunnel state',
      'Tunnel-server links up per gateway',
      'Catalog',
      'Gateway memory',
      'Node certificate: days left',
      'Registered gateways',
      'Relayed sessions and bytes',
      'Connections against the limit',
    ])
      expect(
        empty.filter((e) => e.startsWith(`${panel} `)),
        panel,
      ).toEqual([]);
  });

  it('evaluates every alert rule cleanly, and the ones this setup should fire, fire', async () => {
    const rules = async () =>
      (
        (await api('/api/v1/rules')).data.groups as {
          rules: {
            name: string;
            health: string;
            lastError?: string;
            state?: string;
            lastEvaluation: string;
          }[];
        }[]
      ).flatMap((g) => g.rules);
    // Evaluated at least once since the data was there (1 s evaluation interval).
    const evaluated = await waitFor(
      async () => {
        const all = await rules();
        return all.every((r) => !r.lastEvaluation.startsWith('0001')) ? all : undefined;
      },
      20_000,
      500,
      'every rule evaluated',
    );
    expect(evaluated.length).toBe(16);
    expect(evaluated.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.lastError}`)).toEqual([]);
    // No webhook is scraped here: the webhook-down alert is pending (it waits 2 min); the
    // gateway and tunnel-server are healthy, so nothing about them is.
    const active = evaluated.filter((r) => r.state !== 'inactive').map((r) => r.name);
    expect(active).toEqual(['EdgemeshWebhookDown']);
  });
});
