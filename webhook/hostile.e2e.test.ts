import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EDGEMESH_BIN, waitFor } from '../test/harness/netns.ts';
import { MiB, watchPeakRss } from '../test/harness/proc.ts';
import { createCa, createServingCert } from './tls/certs.ts';

// Issue 16: slow request bodies against the real webhook process (bin/edgemesh webhook) on
// loopback. 1,500 connections from one source (127.0.3.2) each send headers announcing a
// 1 MiB AdmissionReview and then one byte a second; the API server (127.0.0.1) keeps
// posting real AdmissionReviews and must keep getting answers, and the process must stay
// inside its manifest's memory limit (manifests/base/webhook.yaml: 256Mi).
const LIMIT = 256 * MiB;
const fixture = readFileSync(
  join(import.meta.dirname, 'testdata', 'admission', 'deployment-pod.json'),
  'utf8',
);
let dir: string;
let child: ChildProcess;
let port: number;
let log = '';
let caPem: string;

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const p = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return p;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgemesh-webhook-hostile-'));
  const ca = createCa(new Date());
  caPem = ca.certPem;
  const serving = createServingCert(ca, ['localhost'], new Date(), ['127.0.0.1']);
  writeFileSync(join(dir, 'tls.crt'), serving.certPem);
  writeFileSync(join(dir, 'tls.key'), serving.keyPem);
  port = await freePort();
  child = spawn(
    EDGEMESH_BIN,
    [
      'webhook',
      '--host=127.0.0.1',
      `--port=${port}`,
      `--tls-cert=${join(dir, 'tls.crt')}`,
      `--tls-key=${join(dir, 'tls.key')}`,
      '--image=registry.example/edgemesh:test',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  child.stderr?.on('data', (d) => {
    log += d;
  });
  await waitFor(() => log.includes('webhook listening'), 30_000, 100, `webhook start: ${log}`);
});

afterAll(() => {
  if (child?.pid && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('webhook under a slow-body flood (real process, loopback)', () => {
  it('1,500 slow bodies: memory stays inside 256Mi, they are cut, AdmissionReviews keep being answered', async () => {
    const pid = child.pid as number;
    const rss = watchPeakRss(pid);
    const before = rss.peak();
    const agent = new Agent({ connect: { ca: caPem, servername: 'localhost' } });
    const legit: number[] = [];
    let posting = true;
    const poster = (async () => {
      while (posting) {
        const res = await request(`https://127.0.0.1:${port}/mutate`, {
          method: 'POST',
          body: fixture,
          headers: { 'content-type': 'application/json' },
          dispatcher: agent,
        }).catch(() => undefined);
        legit.push(res?.statusCode ?? 0);
        await res?.body.text();
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    const slow: tls.TLSSocket[] = [];
    const closed = new Set<tls.TLSSocket>();
    const ticker = setInterval(() => {
      for (const s of slow) if (!s.destroyed && s.writable) s.write('x');
    }, 1_000);
    try {
      for (let i = 0; i < 1500; i += 100) {
        await Promise.all(
          Array.from({ length: 100 }, async () => {
            const raw = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.3.2' });
            raw.on('error', () => undefined);
            const s = tls.connect({ socket: raw, ca: caPem, servername: 'localhost' });
            s.on('error', () => undefined);
            s.once('close', () => closed.add(s));
            slow.push(s);
            await new Promise<void>((r) => {
              s.once('secureConnect', () => {
                s.write(
                  'POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
                    'Content-Length: 1048576\r\n\r\n{',
                );
                r();
              });
              s.once('close', () => r());
            });
          }),
        );
      }
      const heldAtPeak = slow.length - closed.size;
      // Every slow body is closed (absolute request timeout 10 s; generous deadline).
      await waitFor(() => closed.size === slow.length, 60_000, 200, 'slow bodies closed');
      posting = false;
      await poster;
      const peak = rss.stop();
      console.log(
        `webhook slow bodies: ${slow.length} tried, ${heldAtPeak} held after the burst; RSS ${(before / MiB) | 0} → peak ${(peak / MiB) | 0} MiB; legit answers ${legit.filter((s) => s === 200).length}/${legit.length}`,
      );
      expect(peak).toBeLessThan(LIMIT);
      expect(legit.length).toBeGreaterThan(5);
      expect(legit.every((s) => s === 200)).toBe(true);
    } finally {
      clearInterval(ticker);
      posting = false;
      for (const s of slow) s.destroy();
      await agent.close();
    }
  }, 180_000);
});
