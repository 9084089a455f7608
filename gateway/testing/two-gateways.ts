// Test-only (sidecar/udp-remote.netns.test.ts, bench/udp.ts): two gateways in one process,
// node-a serving the node's sidecars on LISTEN_HOST:15080 and node-b owning the endpoints,
// joined by the in-process tunnel (gateway/streams.ts InProcessTunnel), both on the catalog
// in CATALOG_FILE (its pods: the sidecar's pod on node-a for admission, the endpoints' pods on
// node-b for the far end's rule). The real gateway code (startGateway, server.ts, LocalDialer,
// udp-flow.ts) minus the TLS tunnel, which test/natlab covers. Prints "ready" when listening.
//
//   node gateway/testing/two-gateways.ts LISTEN_HOST CATALOG_FILE STATE_DIR
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { silentLogger } from '../../lib/log.ts';
import { startGateway } from '../gateway.ts';
import { InProcessTunnel } from '../streams.ts';

const [listenHost, catalogFile, stateRoot] = process.argv.slice(2);
if (!listenHost || !catalogFile || !stateRoot)
  throw new Error('usage: two-gateways.ts LISTEN_HOST CATALOG_FILE STATE_DIR');
const catalog = JSON.parse(readFileSync(catalogFile, 'utf8'));
const tunnel = new InProcessTunnel();
const common = { clusterDomain: 'cluster.local', log: silentLogger };
const a = await startGateway({
  ...common,
  listenHost,
  listenPort: 15080,
  nodeName: 'node-a',
  stateDir: join(stateRoot, 'a'),
  tunnel,
});
const b = await startGateway({
  ...common,
  listenHost: '127.0.0.1',
  listenPort: 0,
  nodeName: 'node-b',
  stateDir: join(stateRoot, 'b'),
  tunnel: async (dialer) => {
    tunnel.register(dialer);
    return tunnel;
  },
});
tunnel.register(a.dialer);
a.store.apply({ type: 'snapshot', catalog });
b.store.apply({ type: 'snapshot', catalog });
process.stdout.write('ready\n');
// An orderly exit on SIGTERM, so that `node --cpu-prof` (bench/udp.ts --cpu-prof) writes its profile.
process.on('SIGTERM', () => process.exit(0));
