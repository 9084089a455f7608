// Test-only (test/natlab/udp-tunnel.netns.test.ts): a gateway's tunnel part with a datagram
// forwarder in front, for the NAT lab. It runs startGatewayTunnel as the gateway does; its far
// end dials through the gateway's own LocalDialer over a catalog that lists each lab pod's UDP
// endpoint port (--udp-pods), so datagram streams meet the real "only endpoints of pods on
// this node" rule. Near end (--forward PORT=node,ip,port;...): a UDP socket on 127.0.0.1:PORT;
// each client address:port is one flow, carried on one datagram stream to ip:port on node,
// replies sent back to the client — what the sidecar's UDP proxy will do. One JSON line per
// flow on stdout ({"flow":…,"path":…} or {"flow":…,"error":…}); status on 127.0.0.1:15091/status.
import dgram from 'node:dgram';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
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
    techniques: { type: 'string', default: 'lan,tcp,udp' },
    'peer-addresses': { type: 'string', default: '' },
    'ready-timeout': { type: 'string', default: '15000' },
    /** JSON [{node, ip, port}]: a pod of each lab node and its UDP endpoint port. */
    'udp-pods': { type: 'string', default: '[]' },
    /** PORT=node,ip,port;... */
    forward: { type: 'string', default: '' },
  },
});
const nodeName = String(a.node);
const log = createLogger(`udp-node/${nodeName}`);
const stateDir = String(a['state-dir']);
mkdirSync(stateDir, { recursive: true });
writeFileSync(join(stateDir, 'token'), String(a.token));

const pods = JSON.parse(String(a['udp-pods'])) as { node: string; ip: string; port: number }[];
const objects: unknown[] = [
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: 'demo', name: 'dns' },
    spec: { clusterIP: '10.96.0.53', ports: [{ name: 'dns', port: 53, protocol: 'UDP' }] },
  },
];
for (const [i, pod] of pods.entries()) {
  objects.push(
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { namespace: 'demo', name: `dns-${i}`, labels: { 'kubernetes.io/service-name': 'dns' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: [pod.ip], nodeName: pod.node, targetRef: { kind: 'Pod', name: `dns-${i}` } }],
      ports: [{ name: 'dns', port: pod.port, protocol: 'UDP' }],
    },
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { namespace: 'demo', name: `dns-${i}` },
      spec: { nodeName: pod.node },
      status: { phase: 'Running', podIP: pod.ip },
    },
  );
}
const store = new CatalogStore();
store.apply({ type: 'snapshot', catalog: { ...buildCatalog(objects).catalog, revision: 1 } });
const dialer = new LocalDialer(nodeName, store);

const techniques = String(a.techniques).split(',');
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
  },
  log,
  registry: createRegistry('udp-node'),
  dialTarget: (t) => dialer.dial(t),
});

/** The near end: one datagram stream per client address:port. */
function forward(localPort: number, node: string, ip: string, port: number): void {
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
          out({ flow: key, to: `${node}/${ip}:${port}`, path });
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
          out({ flow: key, to: `${node}/${ip}:${port}`, error: describeError(err) });
          flows.delete(key);
        },
      );
    }
    if (flow.stream) flow.stream.write(encodeDatagram(msg));
    else if (flow.waiting.length < 64) flow.waiting.push(msg);
  });
  socket.bind(localPort, '127.0.0.1');
}

const out = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`);

for (const spec of String(a.forward).split(';').filter(Boolean)) {
  const m = /^(\d+)=([^,]+),([^,]+),(\d+)$/.exec(spec);
  if (!m) throw new Error(`--forward ${spec}: expected PORT=node,ip,port`);
  forward(Number(m[1]), m[2], m[3], Number(m[4]));
}

http
  .createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url === '/udp-flows') res.end(JSON.stringify(udpFlowCounters));
    else res.end(JSON.stringify(tunnel.status()));
  })
  .listen(15091, '127.0.0.1');

await (await tunnel.ready).ready(Number(a['ready-timeout']));
process.stdout.write('READY\n');
process.on('SIGTERM', () => process.exit(0));
