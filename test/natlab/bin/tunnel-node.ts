// A gateway's tunnel part alone, for the NAT lab and benchmarks: startGatewayTunnel (enrol, run the tunnel),
// accepts CONNECT requests (the sidecar↔gateway protocol) on 127.0.0.1:15080 and
// serves its status as JSON on 127.0.0.1:15091/status. Far end: dials only --allow targets.
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readinessAnswer } from '../../../gateway/readiness.ts';
import { gatewayStatus } from '../../../gateway/status.ts';
import { startGatewayTunnel } from '../../../gateway/tunnel/start.ts';
import { EdgemeshError, ErrorCodes } from '../../../lib/errors.ts';
import { formatReply, parseRequest, takeLine } from '../../../lib/gateway-protocol.ts';
import { createLogger } from '../../../lib/log.ts';
import { createRegistry } from '../../../lib/metrics.ts';

const { values: a } = parseArgs({
  options: {
    node: { type: 'string' },
    'state-dir': { type: 'string' },
    ca: { type: 'string' },
    servers: { type: 'string' },
    token: { type: 'string' },
    lan: { type: 'string' },
    allow: { type: 'string', default: '' },
    techniques: { type: 'string', default: 'lan,tcp,udp' },
    // node=ip,... : what the catalog's Node InternalIPs would say.
    'peer-addresses': { type: 'string', default: '' },
    'ready-timeout': { type: 'string', default: '15000' },
  },
});
const log = createLogger(`tunnel-node/${a.node}`);
const stateDir = String(a['state-dir']);
mkdirSync(stateDir, { recursive: true });
writeFileSync(join(stateDir, 'token'), String(a.token));
const allowed = new Set(String(a.allow).split(',').filter(Boolean));
const techniques = String(a.techniques).split(',');
const peerAddresses = new Map(
  String(a['peer-addresses'])
    .split(',')
    .filter(Boolean)
    .map((e) => e.split('=') as [string, string]),
);
const registry = createRegistry('tunnel-node');
// The gateway's own entry point, as the gateway calls it.
const tunnel = startGatewayTunnel({
  nodeName: String(a.node),
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
    birthday: techniques.includes('birthday'),
  },
  log,
  registry,
  dialTarget: async (t) => {
    if (!allowed.has(`${t.ip}:${t.port}`))
      throw new EdgemeshError(
        ErrorCodes.DIAL_REFUSED,
        `${t.ip}:${t.port} is not an endpoint of a pod on node ${a.node}`,
      );
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: t.ip, port: t.port, allowHalfOpen: true }, () => resolve(s));
      s.once('error', reject);
    });
  },
});

net
  .createServer({ allowHalfOpen: true }, (client) => {
    client.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    const onData = async (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const got = takeLine(buf);
      if (!got) return;
      client.removeListener('data', onData);
      client.pause();
      try {
        const req = parseRequest(got.line);
        if (req.kind !== 'connect') throw new Error('only CONNECT here');
        const { stream, path } = await tunnel.openStream(req.node, { ip: req.ip, port: req.port });
        client.write(formatReply({ ok: true, path }));
        if (got.rest.length) stream.write(got.rest);
        stream.on('error', () => client.destroy());
        client.on('error', () => stream.destroy());
        client.pipe(stream);
        stream.pipe(client);
        client.resume();
      } catch (err) {
        const e = err as EdgemeshError;
        client.end(formatReply({ ok: false, code: e.code ?? ErrorCodes.INTERNAL, message: e.message }));
      }
    };
    client.on('data', onData);
  })
  .listen(15080, '127.0.0.1');

http
  .createServer(async (req, res) => {
    if (req.url === '/metrics') {
      res.setHeader('content-type', registry.contentType);
      res.end(await registry.metrics());
      return;
    }
    res.setHeader('content-type', 'application/json');
    if (req.url === '/gateway-status') {
      // The gateway's own /status document (gateway/status.ts), as `edgemesh status` reads it.
      const readiness = tunnel.readiness();
      res.end(
        JSON.stringify(
          gatewayStatus({
            node: String(a.node),
            now: Date.now(),
            ready: readinessAnswer({ synced: true, revision: 0, tunnel: readiness }),
            readiness,
            tunnel: tunnel.status(),
          }),
        ),
      );
      return;
    }
    res.end(JSON.stringify({ ...tunnel.status(), certificate: tunnel.certificate() }));
  })
  .listen(15091, '127.0.0.1');

await (await tunnel.ready).ready(Number(a['ready-timeout']));
process.stdout.write('READY\n');
// A clean exit on SIGTERM (lets --cpu-prof write its profile).
process.on('SIGTERM', () => process.exit(0));
