import { afterAll, describe, expect, it } from 'vitest';
import { readinessAnswer } from '../gateway/readiness.ts';
import { gatewayStatus } from '../gateway/status.ts';
import type { TunnelReadiness } from '../gateway/streams.ts';
import type { PeerStatus, TunnelStatus } from '../gateway/tunnel/status.ts';
import { MAX_PEERS, parseGatewayStatus } from '../lib/gateway-status.ts';
import { ApiError } from '../lib/kube/client.ts';
import { GoldenDir } from '../test/harness/golden.ts';
import { podSummary } from './pods.ts';
import { bytes, duration, formatStatus } from './status-format.ts';
import { metricsPort, type NodeStatus, proxyFailure } from './status-read.ts';

// `edgemesh status` (issue 17 item 3): the gateway's document from what its tunnel manager
// reports (gateway/status.ts), through JSON and the reader's validation, to the text a user
// reads: testdata/<case>.status.golden (REFRESH_GOLDEN=1 rewrites them).

const NOW = Date.UTC(2026, 11, 6, 8, 0, 0);
const s = (seconds: number) => NOW - seconds * 1000;

const running: TunnelReadiness = {
  state: 'running',
  ready: true,
  detail: 'tunnel: running, 2 of 2 tunnel-servers connected',
  serversUp: 2,
  servers: 2,
};

function peer(node: string, p: Partial<PeerStatus>): PeerStatus {
  return {
    node,
    path: undefined,
    rttMs: undefined,
    paths: {},
    firstUseAt: undefined,
    nextUpgradeAt: undefined,
    bytesIn: 0,
    bytesOut: 0,
    ...p,
  };
}

const tunnel = (node: string, peers: PeerStatus[], more: Partial<TunnelStatus> = {}): TunnelStatus => ({
  node,
  listenPort: 20006,
  servers: [
    { address: '198.51.100.200:20006', name: 'ts-0', up: true, observed: '203.0.113.70:40123' },
    { address: '198.51.100.201:20006', name: 'ts-1', up: true, observed: '203.0.113.70:40124' },
  ],
  peers,
  ...more,
});

/** The document as `edgemesh status` receives it: built, sent as JSON, validated. */
function received(
  node: string,
  t: TunnelStatus | undefined,
  tunnelReadiness: TunnelReadiness | null = running,
): NodeStatus {
  const readiness = tunnelReadiness ?? undefined; // null: no tunnel configured
  const ready = readinessAnswer({ synced: true, revision: 812, tunnel: readiness });
  const doc = gatewayStatus({ node, now: NOW, ready, readiness, tunnel: t });
  const status = parseGatewayStatus(JSON.parse(JSON.stringify(doc)), `gateway ${node}`);
  return { node, pod: `edgemesh-gateway-${node}`, result: { status } };
}

const edge1 = received(
  'edge-1',
  tunnel(
    'edge-1',
    [
      peer('edge-2', {
        path: 'punched',
        rttMs: 3.1234,
        firstUseAt: s(900),
        paths: {
          punched: {
            rttMs: 3.1234,
            streams: 2,
            transport: 'udp',
            upAt: s(723),
            bytesIn: 1_234_567,
            bytesOut: 348_160,
            health: { degraded: false, lastRttMs: 3.1234 },
            // A UDP Service's flow on the datagram channel: what went where, and the drops.
            datagrams: { sent: 1200, dropped: 3, framed: 5, received: 1190, refused: 2, overflow: 0 },
            // …carried on the datagram lane beside the session.
            lane: {
              state: 'up',
              peer: '203.0.113.9:40310',
              counters: { probesSent: 9, probesTaken: 8, refused: {}, sent: 1150, sendErrors: 0 },
              window: {
                size: 80,
                inFlight: 3,
                rttMs: 3.2,
                delivered: 1140,
                lost: 10,
                decreases: 1,
                stalls: 0,
              },
            },
          },
        },
        bytesIn: 1_300_000,
        bytesOut: 350_000,
      }),
      peer('edge-3', {
        path: 'relay',
        rttMs: 41.5,
        firstUseAt: s(120),
        nextUpgradeAt: NOW + 25_000,
        paths: {
          relay: {
            rttMs: 41.5,
            streams: 1,
            transport: 'tcp via ts-1',
            via: 'ts-1',
            upAt: s(119),
            bytesIn: 812,
            bytesOut: 2048,
            health: { degraded: false, since: s(40), lastRttMs: 41.5 },
          },
        },
        bytesIn: 812,
        bytesOut: 2048,
      }),
      peer('cloud', {
        path: 'direct',
        rttMs: 0.42,
        firstUseAt: s(90_000),
        paths: {
          direct: {
            rttMs: 0.42,
            streams: 0,
            transport: 'tcp',
            upAt: s(86_400 + 4 * 3600),
            bytesIn: 5 * 2 ** 30,
            bytesOut: 0,
          },
          relay: {
            rttMs: 30,
            streams: 1,
            transport: 'tcp via ts-0',
            via: 'ts-0',
            upAt: s(90_000),
            bytesIn: 10,
            bytesOut: 10,
          },
        },
        bytesIn: 5 * 2 ** 30 + 10,
        bytesOut: 10,
      }),
      peer('edge-4', { firstUseAt: s(30) }),
      peer('edge-5', {
        path: 'punched',
        rttMs: 12.25,
        firstUseAt: s(50),
        paths: {
          punched: { rttMs: 12.25, streams: 4, transport: 'tcp', upAt: s(45), bytesIn: 4096, bytesOut: 4096 },
        },
        bytesIn: 4096,
        bytesOut: 4096,
      }),
      // Its direct path spiked: new streams went to a relay, the direct path keeps its one stream.
      peer('edge-6', {
        path: 'relay',
        rttMs: 9.5,
        firstUseAt: s(3000),
        paths: {
          direct: {
            rttMs: 318,
            streams: 1,
            transport: 'tcp',
            upAt: s(2990),
            bytesIn: 100,
            bytesOut: 100,
            health: {
              degraded: true,
              since: s(12),
              why: { kind: 'rtt-spike', rttMs: 320.04, baselineMs: 0.81 },
              lastRttMs: 318,
            },
          },
          relay: {
            rttMs: 9.5,
            streams: 3,
            transport: 'tcp via ts-1',
            via: 'ts-1',
            upAt: s(11),
            bytesIn: 300,
            bytesOut: 300,
            health: { degraded: false, lastRttMs: 9.5 },
          },
        },
        bytesIn: 400,
        bytesOut: 400,
      }),
      // Losses on its punched path, nothing healthy: new streams wait for a relay.
      peer('edge-7', {
        path: 'punched',
        rttMs: 5,
        firstUseAt: s(600),
        paths: {
          punched: {
            rttMs: 5,
            streams: 1,
            transport: 'udp',
            upAt: s(590),
            bytesIn: 10,
            bytesOut: 10,
            health: { degraded: true, since: s(7), why: { kind: 'loss', lost: 2, of: 5 } },
          },
        },
        bytesIn: 10,
        bytesOut: 10,
      }),
    ],
    {
      servers: [
        {
          address: '198.51.100.200:20006',
          name: 'ts-0',
          up: true,
          observed: '203.0.113.70:40123',
          rttMs: 87.8,
        },
        {
          address: '198.51.100.201:20006',
          name: 'ts-1',
          up: true,
          observed: '203.0.113.70:40124',
          rttMs: 3.2,
        },
        { address: '198.51.100.202:20006', name: 'ts-2', up: true, observed: '203.0.113.70:40125' },
        { address: '198.51.100.203:20006', name: 'ts-3', up: false, observed: undefined },
      ],
      natClass: { nat: 'hard', at: s(240) },
      birthdays: [
        { peer: 'edge-2', outcomes: { connected: 1 }, lastAt: s(724) },
        { peer: 'edge-3', outcomes: { 'no-hit': 2, failed: 1 }, lastAt: s(100) },
      ],
    },
  ),
  { ...running, detail: 'tunnel: running, 3 of 4 tunnel-servers connected', serversUp: 3, servers: 4 },
);

/**
 * What an older gateway (before control-link RTTs, path health and the NAT class) serves:
 * edge1's document with those fields taken out. The new ctl reads it and shows "—".
 */
function older(n: NodeStatus): NodeStatus {
  // biome-ignore lint/suspicious/noExplicitAny: deleting fields the older format did not have
  const d: any = JSON.parse(JSON.stringify((n.result as { status: unknown }).status));
  for (const srv of d.tunnel.servers) {
    delete srv.rttMs;
    delete srv.preferredRelay;
  }
  for (const p of d.peers)
    for (const x of p.paths) {
      delete x.health;
      delete x.datagrams;
      delete x.lane;
    }
  delete d.nat.class;
  delete d.nat.birthdays;
  return { ...n, pod: `${n.pod}-old`, result: { status: parseGatewayStatus(d, 'older gateway') } };
}

const CASES: { name: string; nodes: NodeStatus[] }[] = [
  { name: 'paths', nodes: [edge1] },
  {
    name: 'mixed',
    nodes: [
      received('cloud', tunnel('cloud', [])),
      {
        node: 'edge-8',
        pod: 'edgemesh-gateway-old',
        result: proxyFailure(
          new ApiError('https://10.0.0.1:6443/x', 'HTTP 404', 404),
          {
            namespace: 'edgemesh-system',
            pod: 'edgemesh-gateway-old',
            node: 'edge-8',
            port: 15090,
            route: '/status',
          },
          10_000,
        ),
      },
      edge1,
      received('edge-9', undefined, {
        state: 'config',
        ready: false,
        detail:
          "tunnel cannot start (this node's configuration, since 2026-12-06T07:55:00.000Z): cannot read the mesh CA certificate /etc/edgemesh/mesh-ca/ca.crt: ENOENT",
      }),
      received('lab', undefined, null),
      {
        node: 'edge-7',
        pod: 'edgemesh-gateway-edge-x2',
        result: proxyFailure(
          new ApiError(
            'https://10.0.0.1:6443/api/v1/namespaces/edgemesh-system/pods/edgemesh-gateway-edge-x2:15090/proxy/status',
            'HTTP 503: ServiceUnavailable: error trying to reach service: dial tcp 192.168.1.11:15090: i/o timeout',
            503,
          ),
          {
            namespace: 'edgemesh-system',
            pod: 'edgemesh-gateway-edge-x2',
            node: 'edge-7',
            port: 15090,
            route: '/status',
          },
          10_000,
        ),
      },
    ],
  },
  { name: 'none', nodes: [] },
  { name: 'older-gateway', nodes: [older(edge1)] },
  {
    name: 'nat-unmeasured',
    nodes: [
      received(
        'edge-10',
        tunnel('edge-10', [], {
          servers: [
            { address: '198.51.100.200:20006', name: 'ts-0', up: true, observed: undefined },
            { address: '198.51.100.201:20006', name: undefined, up: false, observed: undefined },
          ],
          natClass: null,
          birthdays: [],
        }),
      ),
    ],
  },
];

describe('edgemesh status output (golden)', () => {
  const golden = new GoldenDir(new URL('./testdata', import.meta.url).pathname);
  for (const c of CASES)
    it(c.name, () => {
      golden.expect(`${c.name}.status.golden`, formatStatus(c.nodes, 'edgemesh-system'));
    });
  afterAll(() => {
    expect(golden.unused('.status.golden')).toEqual([]);
  });
});

describe('the gateway document', () => {
  it('is bounded: the most recently used MAX_PEERS peers, the rest counted', () => {
    const peers = Array.from({ length: MAX_PEERS + 5 }, (_, i) =>
      peer(`n-${String(i).padStart(5, '0')}`, { firstUseAt: s(MAX_PEERS + 5 - i) }),
    );
    const doc = gatewayStatus({
      node: 'edge-1',
      now: NOW,
      ready: { status: 200, body: 'ready\n' },
      readiness: running,
      tunnel: tunnel('edge-1', peers),
    });
    expect(doc.peers).toHaveLength(MAX_PEERS);
    expect(doc.omittedPeers).toBe(5);
    // The five used longest ago are the ones left out.
    expect(doc.peers[0].node).toBe('n-00005');
    expect(parseGatewayStatus(JSON.parse(JSON.stringify(doc)), 'x').peers).toHaveLength(MAX_PEERS);
  });

  it('marks as preferred relay the fastest link that is up, ties in configured order', () => {
    const preferred = (servers: TunnelStatus['servers']) =>
      gatewayStatus({
        node: 'edge-1',
        now: NOW,
        ready: { status: 200, body: 'ready\n' },
        readiness: running,
        tunnel: { ...tunnel('edge-1', []), servers },
      }).tunnel.servers.map((x) => `${x.name}:${x.preferredRelay ? 'preferred' : '-'}:${x.rttMs}`);
    const srv = (name: string, up: boolean, rttMs?: number) => ({
      address: `${name}:20006`,
      name,
      up,
      observed: undefined,
      ...(rttMs === undefined ? {} : { rttMs }),
    });
    expect(preferred([srv('a', true, 40), srv('b', true, 5)])).toEqual(['a:-:40', 'b:preferred:5']);
    expect(preferred([srv('a', true, 5.5), srv('b', true, 5)])).toEqual(['a:preferred:5.5', 'b:-:5']);
    // A link that is down is never preferred, and its last RTT is not shown as current.
    expect(preferred([srv('a', false, 1), srv('b', true)])).toEqual(['a:-:null', 'b:preferred:null']);
    expect(preferred([srv('a', false)])).toEqual(['a:-:null']);
  });

  it('is validated field by field, errors naming the field', () => {
    const good = JSON.parse(JSON.stringify((edge1.result as { status: unknown }).status));
    // biome-ignore lint/suspicious/noExplicitAny: the point is to write wrong types into the document
    const bad = (mutate: (d: Record<string, any>) => void) => {
      const d = structuredClone(good);
      mutate(d);
      return () => parseGatewayStatus(d, 'gateway g');
    };
    expect(() => parseGatewayStatus('ready\n', 'gateway g')).toThrow(
      'gateway g: the document is not an object',
    );
    expect(bad((d) => (d.format = 'edgemesh.gateway-status/v2'))).toThrow(
      'gateway g: format is "edgemesh.gateway-status/v2", not edgemesh.gateway-status/v1 (another edgemesh version?)',
    );
    expect(bad((d) => (d.peers[0].path = 'teleport'))).toThrow(
      'gateway g: peers[0].path is not one of direct, punched, relay',
    );
    expect(bad((d) => (d.peers[1].paths[0].bytesIn = -1))).toThrow(
      'gateway g: peers[1].paths[0].bytesIn is not a non-negative integer',
    );
    expect(bad((d) => (d.peers[0].rttMs = 'fast'))).toThrow(
      'gateway g: peers[0].rttMs is not a round-trip time in ms',
    );
    expect(bad((d) => (d.peers[0].node = 'x'.repeat(2000)))).toThrow(
      'peers[0].node is longer than 1024 characters',
    );
    expect(bad((d) => (d.peers = Array(MAX_PEERS + 1).fill(d.peers[0])))).toThrow(
      `peers has ${MAX_PEERS + 1} entries, more than ${MAX_PEERS}`,
    );
    expect(bad((d) => (d.tunnel.servers[0].up = 'yes'))).toThrow('tunnel.servers[0].up is not true or false');
    expect(bad((d) => (d.tunnel.listenPort = 70000))).toThrow('tunnel.listenPort is not a port');
    expect(bad((d) => (d.peers[1].paths[0].datagrams.refused = 1.5))).toThrow(
      'gateway g: peers[1].paths[0].datagrams.refused is not a non-negative integer',
    );
    expect(bad((d) => (d.peers[1].paths[0].datagrams = [1, 2]))).toThrow('peers[1].paths[0].datagrams');
    expect(bad((d) => (d.peers[1].paths[0].lane.state = 'sideways'))).toThrow('peers[1].paths[0].lane.state');
    expect(bad((d) => (d.peers[1].paths[0].lane.window.lost = -1))).toThrow(
      'peers[1].paths[0].lane.window.lost is not a non-negative integer',
    );
  });
});

describe('reading gateways through the API server', () => {
  const at = { namespace: 'edgemesh-system', pod: 'gw-a', node: 'edge-1', port: 15090, route: '/status' };
  const url = 'https://10.0.0.1:6443/api/v1/namespaces/edgemesh-system/pods/gw-a:15090/proxy/status';
  it('tells forbidden, a gone pod, an old gateway, an unreachable node and a timeout apart', () => {
    expect(
      proxyFailure(new ApiError(url, 'HTTP 403: Forbidden: pods "gw-a" is forbidden', 403), at, 10_000),
    ).toEqual({
      error: 'forbidden: HTTP 403: Forbidden: pods "gw-a" is forbidden',
      hint: 'needs get pods/proxy in edgemesh-system (kubectl auth can-i get pods/proxy -n edgemesh-system)',
    });
    expect(
      proxyFailure(new ApiError(url, 'HTTP 404: NotFound: pods "gw-a" not found', 404), at, 10_000).error,
    ).toBe('pod gw-a is gone (HTTP 404: NotFound: pods "gw-a" not found)');
    expect(proxyFailure(new ApiError(url, 'HTTP 404', 404), at, 10_000).error).toBe(
      'the gateway answers 404 for /status: it runs an edgemesh older than this client',
    );
    expect(
      proxyFailure(
        new ApiError(
          url,
          'HTTP 502: error trying to reach service: dial tcp 192.168.1.11:15090: connect: no route to host',
          502,
        ),
        at,
        10_000,
      ).hint,
    ).toBe(
      'nodes behind a NAT and KubeEdge edge nodes are not reachable from the API server; on node edge-1: curl -s http://127.0.0.1:15090/status',
    );
    expect(proxyFailure(new ApiError(url, 'aborted'), at, 10_000).error).toBe('no answer within 10 s');
  });

  it("finds the gateway's metrics port in its args", () => {
    const gw = (args: string[]) =>
      podSummary(
        {
          metadata: { name: 'g', namespace: 'edgemesh-system' },
          spec: { containers: [{ name: 'gateway', image: 'x', args }] },
        },
        'fixture',
      );
    expect(metricsPort(gw(['gateway', '--node-name=a']))).toBe(15090);
    expect(metricsPort(gw(['gateway', '--metrics-port=15190']))).toBe(15190);
    expect(metricsPort(gw(['gateway', '--metrics-port', '0']))).toBe(0);
    expect(metricsPort(gw(['gateway', '--metrics-port=$(PORT)']))).toBe(-1);
  });

  it('says durations and sizes briefly', () => {
    expect([0, 42_000, 723_000, 3_600_000, 11_520_000, 100_800_000].map(duration)).toEqual([
      '0s',
      '42s',
      '12m3s',
      '1h',
      '3h12m',
      '1d4h',
    ]);
    expect([0, 812, 1536, 348_160, 5 * 2 ** 30].map(bytes)).toEqual([
      '0 B',
      '812 B',
      '1.5 KiB',
      '340 KiB',
      '5.0 GiB',
    ]);
  });
});
