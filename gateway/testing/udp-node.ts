// Test-only lab node for the NAT lab (test/natlab/udp-tunnel.netns.test.ts,
// udp-clients.netns.test.ts): a gateway's tunnel part (startGatewayTunnel, as the gateway runs
// it) with forwarders in front. The far end dials through the gateway's own LocalDialer over a
// catalog listing each lab pod's endpoint ports, so streams meet the real "only endpoints of
// pods on this node" rule. UDP and TCP forwarding on one port number serve real clients whose
// protocol needs both (iperf3 -u keeps its control connection on TCP).
//
//   --pods       JSON [{node, ip, ports: [{port, protocol: "UDP"|"TCP"}]}]
//   --udp-pods   JSON [{node, ip, port}]: the same, one UDP port each (shorter form)
//   --forward    PORT/udp=node,ip,port;PORT/tcp=node,ip,port;...  on 127.0.0.1:PORT
//                (PORT=node,ip,port: UDP)
//   --techniques lan,tcp,udp,lane (default all four): the tunnel's path techniques (lane: the datagram lane)
//
// UDP: each client address:port is one flow on one datagram stream, replies sent back to the
// client (what the sidecar's UDP proxy does for pods). TCP: each connection one tunnel stream.
// One JSON line per flow or connection on stdout ({"flow":…,"transport":…,"path":…} or
// {…,"error":…}); status on 127.0.0.1:15091/status, the far end's flow counters on /udp-flows.
import dgram from 'node:dgram';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import { buildCatalog } from '../../lib/catalog/from-objects.ts';
import { CatalogStore } from '../../lib/catalog/store.ts';
import { describeError } from '../../lib/errors.ts';
import { createLogger } from '../../lib/log.ts';
import { createRegistry } from '../../lib/metrics.ts';
import { DatagramDecoder, encodeDatagram } from '../../lib/tunnel/frame.ts';
import { LocalDialer } from '../streams.ts';
import { startGatewayTunnel } from '../tunnel/start.ts';
import { udpFlowCounters } from '../udp-flow.ts';

const { values: a } = parseArgs({
  options: {
    node: { type: 'string' },
    'state-dir': { type: 'string' },
    ca: { type: 'string' },
    servers: { type: 'string' },
    token: { type: 'string' },
    lan: { type: 'string' },
    'peer-addresses': { type: 'string', default: '' },
    'ready-timeout': { type: 'string', default: '15000' },
    techniques: { type: 'string', default: 'lan,tcp,udp,lane' },
    pods: { type: 'string', default: '[]' },
    'udp-pods': { type: 'string', default: '[]' },
    forward: { type: 'string', default: '' },
  },
});
const nodeName = String(a.node);
const log = createLogger(`udp-node/${nodeName}`);
const stateDir = String(a['state-dir']);
mkdirSync(stateDir, { recursive: true });
writeFileSync(join(stateDir, 'token'), String(a.token));

interface LabPod {
  node: string;
  ip: string;
  ports: { port: number; protocol: 'UDP' | 'TCP' }[];
}
const pods = [
  ...(JSON.parse(String(a.pods)) as LabPod[]),
  ...(JSON.parse(String(a['udp-pods'])) as { node: string; ip: string; port: number }[]).map(
    (p): LabPod => ({ node: p.node, ip: p.ip, ports: [{ port: p.port, protocol: 'UDP' }] }),
  ),
];
const techniques = String(a.techniques).split(',');
const portName = (p: LabPod['ports'][number]) => `p${p.port}-${p.protocol.toLowerCase()}`;
const allPorts = [...new Map(pods.flatMap((p) => p.ports).map((p) => [portName(p), p])).values()];
const objects: unknown[] = [
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: 'demo', name: 'clients' },
    spec: {
      clusterIP: '10.96.0.60',
      ports: allPorts.map((p) => ({ name: portName(p), port: p.port, protocol: p.protocol })),
    },
  },
];
for (const [i, pod] of pods.entries()) {
  objects.push(
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        namespace: 'demo',
        name: `clients-${i}`,
        labels: { 'kubernetes.io/service-name': 'clients' },
      },
      addressType: 'IPv4',
      endpoints: [
        { addresses: [pod.ip], nodeName: pod.node, targetRef: { kind: 'Pod', name: `clients-${i}` } },
      ],
      ports: pod.ports.map((p) => ({ name: portName(p), port: p.port, protocol: p.protocol })),
    },
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { namespace: 'demo', name: `clients-${i}` },
      spec: { nodeName: pod.node },
      status: { phase: 'Running', podIP: pod.ip },
    },
  );
}
const store = new CatalogStore();
store.apply({ type: 'snapshot', catalog: { ...buildCatalog(objects).catalog, revision: 1 } });
const dialer = new LocalDialer(nodeName, store);

const peerAddresses = new Map(
  String(a['peer-addresses'])
    .split(',')
    .filter(Boolean)
    .map((e) => e.split('=') as [string, string]),
);
const tunnel = startGatewayTunnel({
  nodeName,
  stateDir,
  caFile: String(a.ca),
  tokenFile: join(stateDir, 'token'),
  servers: String(a.servers).split(','),
  lanAddresses: [String(a.lan)],
  peerAddresses: (node) => (peerAddresses.has(node) ? [peerAddresses.get(node) as string] : []),
  techniques: {
    lan: techniques.includes('lan'),
    tcpPunch: techniques.includes('tcp'),
    udp: techniques.includes('udp'),
    birthday: false,
    lane: techniques.includes('lane'),
  },
  log,
  registry: createRegistry('udp-node'),
  dialTarget: (t) => dialer.dial(t),
});

const out = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`);

/**
 * UDP near end: one datagram stream per client address:port. While the stream opens, 64
 * datagrams wait and more are dropped (counted in `waitingDropped`), as the sidecar drops
 * rather than queues; a stream whose writes are not taken drops too (`streamDropped`).
 */
const nearCounters = { waitingDropped: 0, streamDropped: 0 };
function forwardUdp(localPort: number, node: string, ip: string, port: number): void {
  const socket = dgram.createSocket('udp4');
  const flows = new Map<string, { stream?: Duplex; waiting: Buffer[] }>();
  socket.on('message', (msg, client) => {
    const key = `${client.address}:${client.port}`;
    let flow = flows.get(key);
    if (!flow) {
      const f: { stream?: Duplex; waiting: Buffer[] } = { waiting: [] };
      flow = f;
      flows.set(key, f);
      tunnel.openStream(node, { ip, port, transport: 'udp' }).then(
        ({ stream, path }) => {
          out({ flow: key, transport: 'udp', to: `${node}/${ip}:${port}`, path });
          f.stream = stream;
          const decoder = new DatagramDecoder();
          stream.on('data', (chunk: Buffer) => {
            for (const d of decoder.push(chunk)) socket.send(d, client.port, client.address);
          });
          stream.on('error', () => flows.delete(key));
          stream.on('close', () => flows.delete(key));
          for (const d of f.waiting.splice(0)) stream.write(encodeDatagram(d));
        },
        (err: unknown) => {
          out({ flow: key, transport: 'udp', to: `${node}/${ip}:${port}`, error: describeError(err) });
          flows.delete(key);
        },
      );
    }
    if (flow.stream) {
      if (flow.stream.writableLength > 256 * 1024) nearCounters.streamDropped++;
      else flow.stream.write(encodeDatagram(msg));
    } else if (flow.waiting.length < 64) flow.waiting.push(msg);
    else nearCounters.waitingDropped++;
  });
  socket.bind(localPort, '127.0.0.1');
}

/** TCP near end: each connection one tunnel stream, piped both ways. */
function forwardTcp(localPort: number, node: string, ip: string, port: number): void {
  net
    .createServer((conn) => {
      const key = `${conn.remoteAddress}:${conn.remotePort}`;
      conn.pause();
      conn.on('error', () => {});
      tunnel.openStream(node, { ip, port }).then(
        ({ stream, path }) => {
          out({ flow: key, transport: 'tcp', to: `${node}/${ip}:${port}`, path });
          stream.on('error', () => conn.destroy());
          conn.on('close', () => stream.destroy());
          stream.on('close', () => conn.destroy());
          conn.pipe(stream).pipe(conn);
          conn.resume();
        },
        (err: unknown) => {
          out({ flow: key, transport: 'tcp', to: `${node}/${ip}:${port}`, error: describeError(err) });
          conn.destroy();
        },
      );
    })
    .listen(localPort, '127.0.0.1');
}

for (const spec of String(a.forward).split(';').filter(Boolean)) {
  const m = /^(\d+)(?:\/(udp|tcp))?=([^,]+),([^,]+),(\d+)$/.exec(spec);
  if (!m)
    throw new Error(
      `--forward ${spec}: expected PORT/udp=node,ip,port, PORT/tcp=node,ip,port or PORT=node,ip,port (UDP)`,
    );
  (m[2] === 'tcp' ? forwardTcp : forwardUdp)(Number(m[1]), m[3], m[4], Number(m[5]));
}

http
  .createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url === '/udp-flows') res.end(JSON.stringify({ ...udpFlowCounters, near: nearCounters }));
    else res.end(JSON.stringify(tunnel.status()));
  })
  .listen(15091, '127.0.0.1');

await (await tunnel.ready).ready(Number(a['ready-timeout']));
process.stdout.write('READY\n');
process.on('SIGTERM', () => process.exit(0));
