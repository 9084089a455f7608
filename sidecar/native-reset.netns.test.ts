/**
 * The native L4 engine (sidecar/native/l4.c) while one side is backpressured (issue 16
 * item 10): it stops reading the client then, and used to stop watching it at all, so a
 * client that reset went unseen and both fds stayed until the upstream drained or the 1 h
 * idle sweep. The client here writes to an endpoint that never reads until nothing moves,
 * then resets; the engine must close its upstream socket at once.
 *
 * The node engine has the same gap (a paused socket is not polled by libuv, so its RST is
 * not seen either) and is not run here: see docs/threat-model.md.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../test/harness/netns.ts';
import { labCatalog, NODE, type ProxyLab, setUpProxyLab, startSidecar, TCP_PORT } from './testing/lab.ts';

/** A service whose one endpoint accepts and never reads: whatever is sent to it backs up. */
const SINK = '10.20.0.16';
const VIP_SINK = '10.96.0.26';

// Connects, writes 48 MiB in one go, waits until the bytes stop moving (this process's write
// queue unchanged over three 200 ms looks, at most 100 looks), then resets (SO_LINGER 0).
const RESETTING_CLIENT = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) }, async () => {
  s.write(Buffer.alloc(48 << 20, 0x61));
  let last = -1;
  let still = 0;
  for (let i = 0; i < 100 && still < 3; i++) {
    await new Promise((r) => setTimeout(r, 200));
    still = s.writableLength === last ? still + 1 : 0;
    last = s.writableLength;
  }
  console.log(JSON.stringify({ stalled: still === 3 && last > 0, queued: last }));
  s.resetAndDestroy();
  setTimeout(() => process.exit(0), 100);
});
s.on('error', (err) => {
  console.log(JSON.stringify({ error: err.message }));
  process.exit(1);
});
`;

let l: ProxyLab;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emnr-'));
  await chmod(dir, 0o755); // the sidecar runs as uid 1337 and must read the catalog
  const catalogFile = join(dir, 'catalog.json');
  const catalog = labCatalog();
  const sink = structuredClone(catalog.services['default/flaky-tcp']);
  sink.service.name = 'sink';
  sink.service.clusterIPs = [VIP_SINK];
  sink.endpoints = [{ ...sink.endpoints[1], ip: SINK }];
  catalog.services['default/sink'] = sink;
  l = await setUpProxyLab('emnr', { catalogFile, sidecar: false });
  await writeFile(catalogFile, JSON.stringify(catalog)); // after: the lab writes its own
  await l.lab.exec(l.srv, ['ip', 'addr', 'add', `${SINK}/32`, 'dev', 'lo']);
  l.lab.spawn(l.srv, [
    NODE,
    '-e',
    `require('node:net').createServer((s) => s.pause()).listen(${TCP_PORT}, '${SINK}')`,
  ]);
  l.sidecar = await startSidecar(l, catalogFile, ['--proxy-engine', 'native']);
}, 60_000);

afterAll(async () => {
  await l?.lab.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe('native L4 engine: a client reset while the upstream is backpressured', () => {
  it('frees the upstream socket at once', async () => {
    const out = await l.lab.run(l.pod, [NODE, '-e', RESETTING_CLIENT, VIP_SINK, '7'], { timeoutMs: 60_000 });
    expect(JSON.parse(out.stdout), l.sidecarLog.join('').slice(-2000)).toMatchObject({ stalled: true });
    const upstreams = async () =>
      (
        await l.lab.run(l.pod, ['ss', '-Htn', 'state', 'established', 'dst', `${SINK}:${TCP_PORT}`])
      ).stdout.trim();
    // Before: still established when the wait ran out (the sink never drains).
    await waitFor(async () => (await upstreams()) === '', 10_000, 100, 'the upstream socket to close');
    // The engine carries on.
    expect(l.sidecar?.exitCode).toBeNull();
  }, 90_000);
});
