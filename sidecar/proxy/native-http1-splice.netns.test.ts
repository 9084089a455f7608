/**
 * Content-Length bodies through the native engine's HTTP/1.1 path, which moves them by
 * splice(2) after their head (l4.c "Content-Length bodies by splice(2)"): real curl and wrk
 * clients on really redirected connections (the accept-time route table, in a private network
 * namespace), bodies of 0, 1, 64 KiB − 1, 64 KiB + 1 and 10 MiB each way, compared by SHA-256;
 * a pipelined request right behind a body (bytes after a body stay for the parser), a client
 * that reads a 10 MiB response late (backpressure through the pipe), an upstream that dies
 * mid-body (the client sees it cut; nothing stays open), and the per-service byte counters.
 * Run against the plain and the ASan/UBSan build (its runtime preloaded).
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetnsLab } from '../../test/harness/netns.ts';
import { buildSanitizedAddons, sanitizerEnv } from '../testing/sanitized.ts';

const BUILD = join(import.meta.dirname, '../native/build');
const LISTEN_PORT = 15001;
const VIP = '10.96.9.1';
const SIZES = [0, 1, 64 * 1024 - 1, 64 * 1024 + 1, 10 * 1024 * 1024];

/**
 * Runs in the namespace (argv: addon, work dir); prints one JSON line. The backend: POST /echo
 * answers the request body back with its Content-Length (streaming: its head comes before the
 * body's end, so the engine closes the connection after it), POST /sha the body's SHA-256 once
 * it has all of it, GET /bytes/N the first N bytes of
 * the file `data` (also with a Content-Length), GET /cut/N promises N bytes and dies after 100 KiB.
 */
const SCRIPT = `
const http = require('node:http');
const net = require('node:net');
const fs = require('node:fs');
const crypto = require('node:crypto');
const { execFile } = require('node:child_process');
const addon = require(process.argv[2]);
const dir = process.argv[3];
const sizes = ${JSON.stringify(SIZES)};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (what) => { for (let i = 0; i < 500 && !what(); i++) await sleep(10); return what(); };
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
// The clients without the ASan runtime this process may have preloaded (curl hangs under it).
const clientEnv = { ...process.env, LD_PRELOAD: '' };
const run = (cmd, args) => new Promise((resolve) => execFile(cmd, args, { maxBuffer: 1 << 20, env: clientEnv }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr })));

(async () => {
  const data = fs.readFileSync(dir + '/data');
  const backend = http.createServer((req, res) => {
    if (req.url === '/echo') {
      res.writeHead(200, { 'content-length': req.headers['content-length'] ?? '0' });
      req.pipe(res);
      return;
    }
    if (req.url === '/sha') {
      const hash = crypto.createHash('sha256');
      req.on('data', (d) => hash.update(d));
      req.on('end', () => res.end(hash.digest('hex')));
      return;
    }
    req.resume();
    const bytes = /^\\/bytes\\/(\\d+)$/.exec(req.url);
    if (bytes) return res.end(data.subarray(0, Number(bytes[1])));
    const cut = /^\\/cut\\/(\\d+)$/.exec(req.url);
    if (cut) {
      res.writeHead(200, { 'content-length': cut[1] });
      res.write(data.subarray(0, 100 * 1024), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise((r) => backend.listen(0, '127.0.0.1', r));
  const events = [];
  const engine = addon.create((type, fd) => { events.push(type); if (type === 1) addon.reset(engine, fd); }, 10000);
  addon.listen(engine, '0.0.0.0', ${LISTEN_PORT}, 64);
  addon.httpRoutes(engine, [['${VIP}', 80, 3, 'default/bulk:80', [0, '127.0.0.1', backend.address().port]]], 2000);
  const out = { curl: {}, wrk: {} };
  let bodyBytes = 0; // request bodies sent through the engine (its "sent" count is at least these)
  let backBytes = 0; // response bodies
  let requests = 0;

  // curl: per size one connection, the body up (echoed back) and a download of the same size.
  for (const n of sizes) {
    fs.writeFileSync(dir + '/in', data.subarray(0, n));
    const r = await run('curl', ['-sS', '--fail', '--data-binary', '@' + dir + '/in', '-o', dir + '/echo', 'http://${VIP}/echo',
      '--next', '-sS', '--fail', '-o', dir + '/got', 'http://${VIP}/bytes/' + n]);
    const want = sha(data.subarray(0, n));
    out.curl[n] = { code: r.code, stderr: r.stderr, echo: r.code === 0 && sha(fs.readFileSync(dir + '/echo')) === want,
      got: r.code === 0 && sha(fs.readFileSync(dir + '/got')) === want };
    bodyBytes += n;
    backBytes += 2 * n;
    requests += 2;
  }

  // wrk: 64 KiB + 1 up and back, and 1 MiB down, 4 connections each for a bounded second.
  fs.writeFileSync(dir + '/post.lua', 'wrk.method = "POST"\\nwrk.body = string.rep("x", 65537)\\n');
  for (const [name, args] of [['post', ['-s', dir + '/post.lua', 'http://${VIP}/echo']], ['get', ['http://${VIP}/bytes/1048576']]]) {
    const r = await run('wrk', ['-t1', '-c4', '-d1s', '--timeout', '5s', ...args]);
    const num = (re) => Number(re.exec(r.stdout)?.[1] ?? NaN);
    const errs = /Socket errors: connect (\\d+), read (\\d+), write (\\d+), timeout (\\d+)/.exec(r.stdout);
    out.wrk[name] = { code: r.code, requests: num(/(\\d+) requests in/), non2xx: num(/Non-2xx or 3xx responses: (\\d+)/) || 0,
      errors: errs ? errs.slice(1).reduce((a, b) => a + Number(b), 0) : 0 };
    requests += out.wrk[name].requests;
  }

  // A raw client: one write holding a 70,000-byte body and the next request right behind it,
  // or the head first and the body later (all of it spliced); the next request must be answered
  // on the same connection.
  const raw = (parts, readDelayMs = 0) => new Promise((resolve) => {
    const sock = net.connect(80, '${VIP}');
    const chunks = [];
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', () => {});
    sock.on('close', () => resolve(Buffer.concat(chunks)));
    if (readDelayMs) { sock.pause(); setTimeout(() => sock.resume(), readDelayMs); }
    sock.on('connect', async () => { for (const p of parts) { if (typeof p === 'number') await sleep(p); else sock.write(p); } });
  });
  const body = data.subarray(0, 70000);
  const head = Buffer.from('POST /sha HTTP/1.1\\r\\nhost: bulk\\r\\ncontent-length: 70000\\r\\n\\r\\n');
  const next = Buffer.from('GET /bytes/5 HTTP/1.1\\r\\nhost: bulk\\r\\nconnection: close\\r\\n\\r\\n');
  const twoAnswers = (buf) => {
    const at = buf.indexOf('\\r\\n\\r\\n');
    const rest = buf.subarray(at + 4 + 64).toString('latin1');
    return { status: buf.subarray(0, 12).toString(), sha: buf.subarray(at + 4, at + 4 + 64).toString() === sha(body),
      next: rest.startsWith('HTTP/1.1 200') && rest.endsWith('\\r\\n\\r\\n' + data.subarray(0, 5).toString('latin1')) };
  };
  out.pipelined = twoAnswers(await raw([Buffer.concat([head, body, next])]));
  out.bodyLater = twoAnswers(await raw([head, 50, body.subarray(0, 1000), 20, body.subarray(1000), 20, next]));
  bodyBytes += 140000;
  backBytes += 138;
  requests += 4;

  // A slow reader: a 10 MiB response held in the pipe and the socket buffers until it reads.
  const big = sizes[sizes.length - 1];
  const slow = await raw([Buffer.from('GET /bytes/' + big + ' HTTP/1.1\\r\\nhost: bulk\\r\\nconnection: close\\r\\n\\r\\n')], 300);
  const slowAt = slow.indexOf('\\r\\n\\r\\n');
  out.slow = sha(slow.subarray(slowAt + 4)) === sha(data.subarray(0, big));
  backBytes += big;
  requests += 1;

  // The upstream dies 100 KiB into a 1 MiB body: the client gets fewer bytes and a reset.
  const cut = await run('curl', ['-sS', '-o', dir + '/cut', 'http://${VIP}/cut/1048576']);
  out.cut = { code: cut.code, bytes: fs.existsSync(dir + '/cut') ? fs.statSync(dir + '/cut').size : -1 };

  await until(() => addon.httpOpen(engine) === 0);
  out.open = addon.httpOpen(engine);
  const r = addon.httpStats(engine);
  out.stats = { svc: r[0], c2xx: r[2], sent: r[39], received: r[40] };
  out.bodyBytes = bodyBytes;
  out.backBytes = backBytes;
  out.requests = requests;
  out.events = events;
  addon.stop(engine);
  backend.close();
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((err) => { console.error(err.stack); process.exit(1); });
`;

let lab: NetnsLab;
let ns: string;
let dir: string;

beforeAll(async () => {
  buildSanitizedAddons();
  dir = await mkdtemp(join(tmpdir(), 'emhs-'));
  await writeFile(join(dir, 'splice.cjs'), SCRIPT);
  lab = new NetnsLab('emhs');
  ns = await lab.add('hs');
  const far = await lab.add('far');
  await lab.link(
    { ns, ifname: 'eth0', addr: '10.0.6.1/24' },
    { ns: far, ifname: 'eth0', addr: '10.0.6.2/24' },
  );
  await lab.exec(ns, ['ip', 'route', 'add', '10.96.0.0/16', 'via', '10.0.6.2']);
  await lab.exec(ns, [
    'iptables',
    '-t',
    'nat',
    '-A',
    'OUTPUT',
    '-p',
    'tcp',
    '-d',
    '10.96.0.0/16',
    '-j',
    'REDIRECT',
    '--to-ports',
    String(LISTEN_PORT),
  ]);
});

afterAll(async () => {
  await lab?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('Content-Length bodies through the native HTTP/1.1 path', () => {
  it.each([
    { build: 'l4.node', sanitized: false },
    { build: 'l4-sanitized.node', sanitized: true },
  ])('arrive whole each way, with curl, wrk and raw clients ($build)', async ({ build, sanitized }) => {
    const addon = join(BUILD, build);
    expect(existsSync(addon), `${addon} not built`).toBe(true);
    const work = await mkdtemp(join(dir, `${sanitized ? 's' : 'p'}-`));
    // Random bytes: a body the engine reordered, cut or repeated cannot hash the same.
    await writeFile(join(work, 'data'), randomBytes(SIZES[SIZES.length - 1]));
    const env = sanitized ? sanitizerEnv(work) : [];
    const r = await lab.run(ns, ['env', ...env, process.execPath, join(dir, 'splice.cjs'), addon, work], {
      timeoutMs: 120_000,
    });
    const logs = (await readdir(work)).filter((f) => f.startsWith('asan') || f.startsWith('ubsan'));
    const reports = await Promise.all(logs.map((f) => readFile(join(work, f), 'utf8')));
    expect(reports.join('\n')).toBe('');
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    for (const n of SIZES) expect(out.curl[n], `size ${n}`).toMatchObject({ code: 0, echo: true, got: true });
    for (const name of ['post', 'get']) {
      expect(out.wrk[name].code).toBe(0);
      expect(out.wrk[name].requests).toBeGreaterThan(0);
      expect(out.wrk[name]).toMatchObject({ non2xx: 0, errors: 0 });
    }
    expect(out.pipelined).toEqual({ status: 'HTTP/1.1 200', sha: true, next: true });
    expect(out.bodyLater).toEqual({ status: 'HTTP/1.1 200', sha: true, next: true });
    expect(out.slow).toBe(true);
    // Cut short: curl says so (18: partial file, or 56: reset), with at most what was sent.
    expect(out.cut.code).not.toBe(0);
    expect(out.cut.bytes).toBeLessThan(1024 * 1024);
    expect(out.open).toBe(0);
    expect(out.events).toEqual([]);
    // Byte counters: every body byte (spliced or copied) counted once, plus heads.
    // wrk's bodies are counted too: only lower bounds from the fixed clients, and an upper one
    // from what could have been sent at most.
    expect(out.stats.svc).toBe(3);
    expect(out.stats.sent).toBeGreaterThanOrEqual(out.bodyBytes);
    expect(out.stats.received).toBeGreaterThanOrEqual(out.backBytes);
    expect(out.stats.received).toBeLessThan(
      out.backBytes +
        out.wrk.post.requests * 66_000 +
        (out.wrk.get.requests + 4) * 1_049_000 +
        2 * 1024 * 1024,
    );
    // Counted at their heads: every request above (wrk's in flight at its end too), and the cut one.
    expect(out.stats.c2xx).toBeGreaterThanOrEqual(out.requests + 1);
  });
});
