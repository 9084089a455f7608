// The gateway's local CONNECT path (sidecar → gateway → pod on the same node), against
// connecting to the pod directly, in the same run on loopback addresses:
// - stream setup: sequential connect + 1-byte round trip + close;
// - bulk: MB/s of one stream carrying BULK_MB (sink reads and counts).
// Bounded in count and time.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startGateway } from '../gateway/gateway.ts';
import { loopbackCatalog } from '../gateway/test-fixtures.ts';
import { silentLogger } from '../lib/log.ts';

const SETUPS = 1_000;
const BULK_MB = 256;
const ROUNDS = 3;
const POD = '127.0.0.2';

const listen = (server: net.Server) =>
  new Promise<number>((r) => server.listen(0, POD, () => r((server.address() as net.AddressInfo).port)));

// One port echoes a byte, another swallows bytes and answers with the count on end.
const echo = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
const sink = net.createServer({ allowHalfOpen: true }, (s) => {
  let n = 0;
  s.on('data', (c: Buffer) => {
    n += c.length;
  });
  s.on('end', () => s.end(`${n}\n`));
});
const echoPort = await listen(echo);
const sinkPort = await listen(sink);
const dir = mkdtempSync(join(tmpdir(), 'emc-bench-connect-'));
const gw = await startGateway({
  nodeName: 'edge-a',
  stateDir: dir,
  listenHost: '127.0.0.1',
  listenPort: 0,
  clusterDomain: 'cluster.local',
  log: silentLogger,
});
gw.store.apply({
  type: 'snapshot',
  catalog: loopbackCatalog([{ name: 'pod', ip: POD, node: 'edge-a', ports: [echoPort, sinkPort] }]),
});
const gwPort = (gw.server.address() as net.AddressInfo).port;

// A plain Node relay (pipe both ways, no protocol, no checks): what one extra hop costs.
const relay = net.createServer({ allowHalfOpen: true }, (c) => {
  const u = net.connect({ host: POD, port: sinkPort, allowHalfOpen: true });
  c.pipe(u);
  u.pipe(c);
  c.on('error', () => u.destroy());
  u.on('error', () => c.destroy());
});
const relayPort = await new Promise<number>((r) =>
  relay.listen(0, '127.0.0.1', () => r((relay.address() as net.AddressInfo).port)),
);

type Via = 'direct' | 'relay' | 'gateway';

/** Opens a stream to the pod, directly, via the plain relay (sink only) or through the gateway. */
function open(via: Via, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s =
      via === 'direct'
        ? net.connect({ host: POD, port, allowHalfOpen: true })
        : net.connect({ host: '127.0.0.1', port: via === 'relay' ? relayPort : gwPort, allowHalfOpen: true });
    s.once('error', reject);
    if (via !== 'gateway') {
      s.once('connect', () => resolve(s));
      return;
    }
    s.once('connect', () => s.write(`EDGEMESH/1 CONNECT edge-a ${POD} ${port}\n`));
    s.once('data', (c: Buffer) => {
      if (!c.toString().startsWith('OK local\n')) return reject(new Error(c.toString()));
      if (c.length > 9) s.unshift(c.subarray(9));
      resolve(s);
    });
  });
}

async function setups(via: Via): Promise<number> {
  const start = performance.now();
  let i = 0;
  for (; i < SETUPS && performance.now() - start < 20_000; i++) {
    const s = await open(via, echoPort);
    await new Promise<void>((r) => {
      s.once('data', () => r());
      s.write('x');
    });
    s.destroy();
  }
  return i / ((performance.now() - start) / 1000);
}

async function bulk(via: Via): Promise<number> {
  const s = await open(via, sinkPort);
  const chunk = Buffer.alloc(256 * 1024, 7);
  const total = BULK_MB * 1024 * 1024;
  const start = performance.now();
  const answer = new Promise<string>((r) => {
    let text = '';
    s.on('data', (c: Buffer) => {
      text += c.toString();
    });
    s.on('end', () => r(text));
  });
  for (let sent = 0; sent < total && performance.now() - start < 30_000; sent += chunk.length) {
    if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  const received = Number((await answer).trim());
  const mbps = received / 1e6 / ((performance.now() - start) / 1000);
  s.destroy();
  return mbps;
}

try {
  // Interleaved rounds, median of each: this machine is shared, so one-shot figures drift.
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const setup: Record<'direct' | 'gateway', number[]> = { direct: [], gateway: [] };
  const mb: Record<Via, number[]> = { direct: [], relay: [], gateway: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const via of ['direct', 'gateway'] as const) setup[via].push(await setups(via));
    for (const via of ['direct', 'relay', 'gateway'] as const) mb[via].push(await bulk(via));
  }
  const [sd, sg] = [median(setup.direct), median(setup.gateway)];
  console.log(`stream setup (connect + 1-byte round trip + close), median of ${ROUNDS} rounds of ${SETUPS}:`);
  console.log(
    `  direct (baseline) ${sd.toFixed(0)}/s; through the gateway ${sg.toFixed(0)}/s; ratio ${(sg / sd).toFixed(2)}`,
  );
  const [bd, br, bg] = [median(mb.direct), median(mb.relay), median(mb.gateway)];
  console.log(`bulk, one stream of ${BULK_MB} MB, median of ${ROUNDS} rounds:`);
  console.log(
    `  direct (baseline) ${bd.toFixed(0)} MB/s; plain Node relay ${br.toFixed(0)} MB/s (${(br / bd).toFixed(2)})`,
  );
  console.log(
    `  through the gateway ${bg.toFixed(0)} MB/s: ${(bg / bd).toFixed(2)} of direct, ${(bg / br).toFixed(2)} of the plain relay`,
  );
} finally {
  await gw.close();
  echo.close();
  relay.close();
  sink.close();
  rmSync(dir, { recursive: true, force: true });
}
