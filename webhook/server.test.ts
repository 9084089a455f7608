import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../lib/log.ts';
import { createRegistry } from '../lib/metrics.ts';
import { resolveConfig } from './config.ts';
import { startWebhookServer, type WebhookServer } from './server.ts';
import { createCa, createServingCert, type KeyPairPem } from './tls/certs.ts';

// The real server over real HTTPS with a real client: certificates from our own CA, the
// AdmissionReview fixtures, malformed bodies, concurrency, and a certificate rotation.
const fixtures = join(import.meta.dirname, 'testdata', 'admission');
const fixture = (name: string) => readFileSync(join(fixtures, `${name}.json`), 'utf8');

let dir: string;
let ca: KeyPairPem;
let server: WebhookServer;
let agent: Agent;
let base: string;

function writeServing(caPair: KeyPairPem) {
  const serving = createServingCert(caPair, ['localhost'], new Date(), ['127.0.0.1']);
  writeFileSync(join(dir, 'tls.crt'), serving.certPem);
  writeFileSync(join(dir, 'tls.key'), serving.keyPem);
  return serving;
}

async function post(body: string | Buffer, contentType = 'application/json') {
  const res = await request(`${base}/mutate`, {
    method: 'POST',
    body,
    headers: { 'content-type': contentType },
    dispatcher: agent,
  });
  return { status: res.statusCode, json: (await res.body.json()) as Record<string, unknown> };
}

function servedSerial(caPem: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(
      { host: '127.0.0.1', port: server.address.port, ca: caPem, servername: 'localhost' },
      () => {
        resolve(s.getPeerX509Certificate()?.serialNumber ?? '');
        s.end();
      },
    );
    s.on('error', reject);
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgemesh-webhook-'));
  ca = createCa(new Date());
  writeServing(ca);
  server = await startWebhookServer({
    host: '127.0.0.1',
    port: 0,
    tlsCertFile: join(dir, 'tls.crt'),
    tlsKeyFile: join(dir, 'tls.key'),
    config: resolveConfig({ image: 'registry.example/edgemesh:test' }),
    log: silentLogger,
    registry: createRegistry('webhook-test'),
    bodyLimit: 256 * 1024,
  });
  agent = new Agent({ connect: { ca: ca.certPem, servername: 'localhost' }, connections: 64 });
  base = `https://127.0.0.1:${server.address.port}`;
});

afterAll(async () => {
  await agent?.close();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('webhook over HTTPS', () => {
  it('injects a pod and answers with a JSONPatch for the same uid', async () => {
    const body = fixture('deployment-pod');
    const { status, json } = await post(body);
    expect(status).toBe(200);
    const response = json.response as { uid: string; allowed: boolean; patchType: string; patch: string };
    expect(response.uid).toBe(JSON.parse(body).request.uid);
    expect(response.allowed).toBe(true);
    expect(response.patchType).toBe('JSONPatch');
    const ops = JSON.parse(Buffer.from(response.patch, 'base64').toString()) as Array<{ path: string }>;
    expect(ops.map((o) => o.path)).toContain('/spec/initContainers');
  });

  it('allows non-pod kinds without a patch and denies a bad annotation with its reason', async () => {
    const ignored = await post(fixture('ignore-deployment-kind'));
    expect(ignored.status).toBe(200);
    expect(ignored.json.response).toEqual({ uid: expect.any(String), allowed: true });
    const denied = await post(fixture('deny-bad-annotation'));
    expect(denied.status).toBe(200);
    expect(denied.json.response).toMatchObject({
      allowed: false,
      status: { code: 400, message: expect.stringMatching(/exclude-outbound-ip-ranges/) },
    });
  });

  it('rejects malformed input with 4xx and a clear message, and keeps serving', async () => {
    const cases: Array<[string | Buffer, string, number, RegExp]> = [
      ['{not json', 'application/json', 400, /JSON/i],
      ['', 'application/json', 400, /empty|body/i],
      ['[]', 'application/json', 400, /JSON object/],
      [
        '{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1"}',
        'application/json',
        400,
        /apiVersion/,
      ],
      [
        '{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}',
        'application/json',
        400,
        /request is missing/,
      ],
      ['{"kind":"Pod","apiVersion":"v1"}', 'application/json', 400, /kind must be AdmissionReview/],
      ['kind: AdmissionReview', 'application/yaml', 415, /content-type/i],
      [Buffer.alloc(300 * 1024, 0x20), 'application/json', 413, /larger than 262144 bytes/],
    ];
    for (const [body, type, status, message] of cases) {
      const res = await post(body, type);
      expect(res.status, `body ${String(body).slice(0, 40)}`).toBe(status);
      expect(String(res.json.message)).toMatch(message);
    }
    const ok = await post(fixture('minimal-pod'));
    expect(ok.status).toBe(200);
  });

  it('answers 200 concurrent requests, each with its own uid', async () => {
    const template = JSON.parse(fixture('multi-container'));
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => {
        const body = structuredClone(template);
        body.request.uid = `uid-${i}`;
        return post(JSON.stringify(body)).then((r) => ({ i, ...r }));
      }),
    );
    for (const r of results) {
      expect(r.status).toBe(200);
      expect((r.json.response as { uid: string }).uid).toBe(`uid-${r.i}`);
    }
  });

  it('serves health, readiness and metrics with decision counters', async () => {
    for (const path of ['/healthz', '/readyz']) {
      const res = await request(`${base}${path}`, { dispatcher: agent });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
    }
    const res = await request(`${base}/metrics`, { dispatcher: agent });
    const text = await res.body.text();
    expect(text).toMatch(/edgemesh_webhook_admissions_total\{outcome="injected",code="injected"[^}]*\} \d+/);
    expect(text).toMatch(/edgemesh_webhook_admissions_total\{outcome="denied",code="invalid-annotation"/);
    expect(text).toMatch(/edgemesh_webhook_bad_requests_total\{status="413"/);
  });

  it('reloads a rotated certificate without a restart', async () => {
    const before = await servedSerial(ca.certPem);
    const newCa = createCa(new Date());
    const serving = writeServing(newCa);
    expect(server.reloadCertificates()).toBe(true);
    const after = await servedSerial(newCa.certPem);
    expect(after).not.toBe(before);
    expect(after.toLowerCase()).toBe(
      new (await import('node:crypto')).X509Certificate(serving.certPem).serialNumber.toLowerCase(),
    );
    // A broken pair is refused and the good certificate stays in service.
    writeFileSync(join(dir, 'tls.key'), 'not a key');
    expect(server.reloadCertificates()).toBe(false);
    expect(await servedSerial(newCa.certPem)).toBe(after);
  });
});
