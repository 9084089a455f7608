/**
 * The fd-reuse race against the real UDP addon (udp.c "Generations"), in a private network
 * namespace (the reply socket is IP_TRANSPARENT: root there): a gateway flow's connection
 * ends while JS is busy, so the addon's thread queues REC_CLOSED for its fd; before JS gets
 * it, JS closes that flow and opens a new one, which the kernel gives the same fd number.
 * The stale report must not reach JS (it would end the new flow's carrier: a needless
 * reconnect), while the new flow's own reports do. Run against the plain and the
 * ASan/UBSan build (its runtime preloaded: node is not built with it).
 *
 * JS is kept busy with Atomics.wait (the event loop does not run, so the queued batch waits).
 * Whether the thread read the EOF within that wait depends on the machine's load, so each
 * attempt counts whether a stale report was made and dropped (stats()[5]), and the test asks
 * that at least one attempt was; none may let a stale report through.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetnsLab } from '../../../test/harness/netns.ts';
import { buildSanitizedAddons, sanitizerEnv } from '../../testing/sanitized.ts';

const BUILD = join(import.meta.dirname, '../../native/build');
const ATTEMPTS = 5;

/** Runs in the namespace; prints one JSON line with what each attempt saw. */
const SCRIPT = `
const fs = require('node:fs');
const net = require('node:net');
const dgram = require('node:dgram');
const addon = require(process.argv[2]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (what) => { for (let i = 0; i < 300 && !what(); i++) await sleep(10); return what(); };
// Blocks this thread (the event loop too) while the addon's thread runs on.
const busy = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

(async () => {
  const reports = []; // [kind, fd, generation] of every report that reached JS
  const engine = addon.create((_data, recs) => {
    for (let i = 0; i < recs.length; i += 6) if (recs[i] !== 1) reports.push([recs[i], recs[i + 1], recs[i + 3]]);
  });
  const app = dgram.createSocket('udp4');
  await new Promise((r) => app.bind(0, '127.0.0.1', r));
  const got = [];
  app.on('message', (m) => got.push(m.toString()));
  const client = '127.0.0.1:' + app.address().port;
  const dst = '127.0.0.2:5353';
  const reply = addon.replySocket(engine, dst);
  const echo = dgram.createSocket('udp4');
  echo.on('message', (m, r) => echo.send(m, r.port, r.address));
  await new Promise((r) => echo.bind(7000, '127.0.0.3', r));
  const server = net.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));

  const attempts = [];
  for (let a = 0; a < ${ATTEMPTS}; a++) {
    const accepted = new Promise((r) => server.once('connection', r));
    const sock = net.connect(server.address().port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    const peer = await accepted;
    const old = addon.gatewayFlow(engine, sock._handle.fd, reply, client, dst, Buffer.alloc(0), Buffer.alloc(0));
    sock.destroy(); // the addon's dup keeps the connection
    await sleep(20);
    const staleBefore = addon.stats(engine)[5];
    const seenBefore = reports.length;
    peer.destroy(); // closes now: the addon's thread reads the EOF and queues REC_CLOSED(old)
    // Lower free numbers (the peer's among them) taken, so that the next socket gets old's
    // number (the lowest free).
    const fillers = [];
    for (let i = 0; i < 1000; i++) {
      const f = fs.openSync('/dev/null', 'r');
      if (f > old) { fs.closeSync(f); break; }
      fillers.push(f);
    }
    busy(300);
    addon.close(engine, old);
    const fresh = addon.upstream(engine, '127.0.0.3:7000', reply, client, dst);
    for (const f of fillers) fs.closeSync(f);
    // JS runs again: the queued batch arrives; then the new flow carries a datagram both ways.
    await sleep(50);
    const ping = 'ping' + a;
    addon.send(engine, fresh, Buffer.from(ping), 0, ping.length);
    const echoed = await until(() => got.includes(ping));
    await until(() => reports.slice(seenBefore).some(([k, fd]) => k === 2 && fd === fresh));
    attempts.push({
      reused: fresh === old ? true : old + ' then ' + fresh,
      stale: addon.stats(engine)[5] - staleBefore,
      echoed,
      reports: reports.slice(seenBefore).filter(([, fd]) => fd === fresh).map(([k, , gen]) => ({ kind: k, gen })),
    });
    addon.close(engine, fresh);
  }
  console.log(JSON.stringify({ attempts }));
  addon.stop(engine);
  process.exit(0);
})().catch((err) => { console.error(err.stack); process.exit(1); });
`;

let lab: NetnsLab;
let ns: string;
let dir: string;

beforeAll(async () => {
  buildSanitizedAddons(); // a fresh clone has only the plain addons
  dir = await mkdtemp(join(tmpdir(), 'emfr-'));
  await writeFile(join(dir, 'reuse.cjs'), SCRIPT);
  lab = new NetnsLab('emfr');
  ns = await lab.add('fr');
  await lab.exec(ns, ['ip', 'link', 'set', 'lo', 'up']);
  await lab.exec(ns, ['ip', 'addr', 'add', '127.0.0.3/8', 'dev', 'lo']).catch(() => undefined);
});

afterAll(async () => {
  await lab?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('a report about a flow whose fd number was reused', () => {
  it.each([
    { build: 'udp.node', sanitized: false },
    { build: 'udp-sanitized.node', sanitized: true },
  ])('never reaches the new flow ($build)', async ({ build, sanitized }) => {
    const addon = join(BUILD, build);
    // Built in beforeAll (sidecar/testing/sanitized.ts).
    expect(existsSync(addon), `${addon} not built`).toBe(true);
    const env = sanitized ? sanitizerEnv(dir) : [];
    const r = await lab.run(ns, ['env', ...env, process.execPath, join(dir, 'reuse.cjs'), addon], {
      timeoutMs: 60_000,
    });
    const logs = (await readdir(dir)).filter((f) => f.startsWith('asan') || f.startsWith('ubsan'));
    const reports = await Promise.all(logs.map((f) => readFile(join(dir, f), 'utf8')));
    expect(reports.join('\n'), 'sanitizer reports').toBe('');
    expect(r.code, r.stderr).toBe(0);
    const { attempts } = JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as {
      attempts: {
        reused: true | string;
        stale: number;
        echoed: boolean;
        reports: { kind: number; gen: number }[];
      }[];
    };
    expect(attempts).toHaveLength(ATTEMPTS);
    for (const a of attempts) {
      expect(a.reused).toBe(true); // the new flow got the old flow's fd number
      expect(a.echoed).toBe(true); // and carries datagrams both ways
      // Only the new flow's own reports reached JS on that number: activity, one generation.
      expect(a.reports.length).toBeGreaterThan(0);
      expect(a.reports.every((x) => x.kind === 2 && x.gen === a.reports[0]?.gen)).toBe(true);
      expect(a.stale).toBeLessThanOrEqual(1);
    }
    // The race was there to lose: the old flow's REC_CLOSED was made, and dropped.
    expect(attempts.reduce((n, a) => n + a.stale, 0)).toBeGreaterThanOrEqual(1);
  });
});
