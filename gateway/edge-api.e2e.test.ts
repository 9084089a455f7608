import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayFeedSource } from '../lib/catalog/feed-source.ts';
import { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog } from '../lib/catalog/types.ts';
import { ApiError, apiFromKubeConfig, apiFromUrl } from '../lib/kube/client.ts';
import { ControlPlane } from '../test/cluster/control-plane.ts';
import { createPki, issueCert } from '../test/cluster/pki.ts';
import { EDGEMESH_BIN, waitFor } from '../test/harness/netns.ts';
import { MetaServer } from '../test/metaserver/metaserver.ts';

// `edgemesh gateway --api-server http://…` (edge mode) against two edge APIs, both on
// loopback in front of a real control plane: (a) `kubectl proxy` as the node's own identity
// system:node:n1 (the Node authorizer decides what it sees), (b) the metaServer stand-in
// (test/metaserver), whose cloud link the test cuts and restores.
const tmp = mkdtempSync(join(tmpdir(), 'em-edge-api-'));
let cp: ControlPlane;
const children: ChildProcess[] = [];
const feeds: GatewayFeedSource[] = [];
const servers: MetaServer[] = [];

const OBJECTS = `
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web, namespace: demo}
subsets:
  - addresses:
      - {ip: 10.244.1.7, nodeName: n1, targetRef: {kind: Pod, name: web-0, namespace: demo}}
      - {ip: 10.244.2.9, nodeName: n2, targetRef: {kind: Pod, name: web-1, namespace: demo}}
    ports: [{name: http, port: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: demo}
spec: {ports: [{port: 9090}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: api, namespace: demo}
subsets: [{addresses: [{ip: 10.244.2.10, nodeName: n2}], ports: [{port: 9090}]}]
`;

// What cloudcore's own ClusterRole grants it (manifests/charts/cloudcore/templates/
// rbac_cloudcore.yaml), given here to the node identity kubectl proxy runs as.
const ENDPOINTS_READER = `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: edge-endpoints-reader}
rules: [{apiGroups: [""], resources: [endpoints], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: edge-endpoints-reader-n1}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edge-endpoints-reader}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:node:n1"}]
`;

beforeAll(async () => {
  cp = await ControlPlane.start();
  await cp.kubectl(['apply', '-f', '-'], { input: OBJECTS });
}, 180_000);

afterAll(async () => {
  for (const f of feeds) await f.stop();
  for (const c of children) c.kill('SIGTERM');
  for (const m of servers) await m.stop();
  await cp?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

interface RunningGateway {
  port: number;
  metricsPort: number;
  log: () => string;
  stop: () => void;
}

async function startGateway(apiUrl: string, name: string, extra: string[] = []): Promise<RunningGateway> {
  const [port, metricsPort] = [await freePort(), await freePort()];
  let stderr = '';
  const child = spawn(
    EDGEMESH_BIN,
    [
      'gateway',
      `--api-server=${apiUrl}`,
      '--node-name=n1',
      `--state-dir=${join(tmp, name)}`,
      '--listen=127.0.0.1',
      `--port=${port}`,
      `--metrics-port=${metricsPort}`,
      '--relist-seconds=2',
      ...extra,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, EDGEMESH_LOG_LEVEL: 'info' } },
  );
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  children.push(child);
  return { port, metricsPort, log: () => stderr, stop: () => child.kill('SIGTERM') };
}

async function ready(gw: RunningGateway): Promise<number> {
  try {
    return (await fetch(`http://127.0.0.1:${gw.metricsPort}/ready`)).status;
  } catch {
    return 0;
  }
}

async function metric(gw: RunningGateway, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gw.metricsPort}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

/** A sidecar's view: the feed (lib/gateway-protocol.ts) into a store. */
async function sidecar(gw: RunningGateway): Promise<CatalogStore> {
  const store = new CatalogStore();
  const feed = new GatewayFeedSource({ host: '127.0.0.1', port: gw.port });
  feeds.push(feed);
  await feed.start(store);
  await waitFor(() => store.current, 20_000, 50, 'a catalog on the feed');
  return store;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('gateway in edge mode against kubectl proxy as system:node:n1', () => {
  it('the Node authorizer refuses core/v1 Endpoints: the error names URL and status; with a grant the gateway gets ready', async () => {
    const kubeconfig = await cp.componentKubeconfig({ node: 'n1' });
    const proxyPort = await freePort();
    const proxy = spawn(
      `${cp.binDir}/kubectl`,
      ['proxy', `--port=${proxyPort}`, '--address=127.0.0.1', `--kubeconfig=${kubeconfig}`],
      { stdio: 'ignore' },
    );
    children.push(proxy);
    const url = `http://127.0.0.1:${proxyPort}`;
    await waitFor(() => fetch(`${url}/api/v1/services`).then((r) => r.ok), 20_000, 100, 'kubectl proxy');
    const gw = await startGateway(url, 'proxy');
    await waitFor(
      () =>
        gw
          .log()
          .includes(`GET ${url}/api/v1/endpoints?limit=500: HTTP 403: Forbidden: endpoints is forbidden`),
      30_000,
      100,
      'a 403 naming the URL',
    );
    expect(await ready(gw)).toBe(503);
    // Logged with backoff, not every few hundred ms.
    await sleep(3000);
    expect(gw.log().match(/api\/v1\/endpoints: HTTP 403/g)?.length ?? 0).toBeLessThanOrEqual(4);

    await cp.kubectl(['apply', '-f', '-'], { input: ENDPOINTS_READER });
    await waitFor(async () => (await ready(gw)) === 200, 60_000, 200, '/ready 200');
    const side = await sidecar(gw);
    const c = side.current as Catalog;
    expect(Object.keys(c.services).sort()).toEqual(['default/kubernetes', 'demo/api', 'demo/web']);
    expect(c.services['demo/web'].endpoints.map((e) => [e.ip, e.nodeName])).toEqual([
      ['10.244.1.7', 'n1'],
      ['10.244.2.9', 'n2'],
    ]);
    // The pod on n2 from its endpoint; none on n1 without a Pod object there; no nodes.
    expect(Object.keys(c.pods)).toEqual(['10.244.2.9']);
    expect(c.nodes).toEqual({});
    expect(gw.log()).toContain('"watch":["Service","Endpoints","Pod(spec.nodeName=n1)"]');
    gw.stop();
    proxy.kill('SIGTERM');
  }, 150_000);
});

describe('gateway in edge mode against the metaServer stand-in', () => {
  let meta: MetaServer;
  let gw: RunningGateway;
  let side: CatalogStore;

  beforeAll(async () => {
    meta = await MetaServer.start({
      upstream: apiFromKubeConfig(cp.kubeConfig()),
      resources: ['/api/v1/services', '/api/v1/endpoints', '/api/v1/pods'],
    });
    servers.push(meta);
    await waitFor(() => meta.cached('/api/v1/services').includes('demo/web'), 20_000, 50, 'cache filled');
  });

  it('gets ready with the Services and Endpoints', async () => {
    gw = await startGateway(meta.url, 'meta');
    await waitFor(async () => (await ready(gw)) === 200, 30_000, 100, '/ready 200');
    side = await sidecar(gw);
    expect(Object.keys(side.current?.services ?? {}).sort()).toEqual([
      'default/kubernetes',
      'demo/api',
      'demo/web',
    ]);
    expect(await metric(gw, 'edgemesh_gateway_catalog_services')).toBe(3);
  }, 60_000);

  it('re-watches replaying every object as ADDED change nothing', async () => {
    const revision = await metric(gw, 'edgemesh_gateway_catalog_revision');
    const watches = meta.served.watches;
    await sleep(7000); // --relist-seconds=2: a relist and a replaying watch per kind every ~2 s
    expect(meta.served.watches - watches).toBeGreaterThanOrEqual(6);
    expect(await metric(gw, 'edgemesh_gateway_catalog_revision')).toBe(revision);
    expect(side.current?.revision).toBe(revision);
  }, 30_000);

  it('cloud cut: empty or cached lists withdraw nothing, even what the cloud deleted meanwhile', async () => {
    const revision = await metric(gw, 'edgemesh_gateway_catalog_revision');
    meta.setConnected(false);
    await cp.kubectl(['delete', 'service', 'api', '-n', 'demo']);
    await cp.kubectl(['delete', 'endpoints', 'api', '-n', 'demo', '--ignore-not-found']);
    const local = meta.served.localLists;
    await sleep(7000);
    expect(meta.served.localLists - local).toBeGreaterThanOrEqual(6);
    expect(await metric(gw, 'edgemesh_gateway_catalog_revision')).toBe(revision);
    expect(side.current?.services['demo/api']).toBeDefined();
  }, 30_000);

  it('reconnect: converges (the deleted service goes) and stays put though the edge cache still replays it', async () => {
    meta.setConnected(true);
    await waitFor(() => !side.current?.services['demo/api'], 30_000, 100, 'demo/api withdrawn');
    // The stand-in, like edgecore, never learned of the delete made while offline.
    expect(meta.cached('/api/v1/services')).toContain('demo/api');
    const revision = side.current?.revision;
    await sleep(7000);
    expect(side.current?.revision).toBe(revision); // no flapping back
    expect(Object.keys(side.current?.services ?? {}).sort()).toEqual(['default/kubernetes', 'demo/web']);
    gw.stop();
  }, 60_000);

  it('a cold edge cache (no cloud, nothing cached) is not adopted: not ready until the cloud answers', async () => {
    const cold = await MetaServer.start({
      upstream: apiFromKubeConfig(cp.kubeConfig()),
      resources: ['/api/v1/services', '/api/v1/endpoints', '/api/v1/pods'],
      startDisconnected: true,
    });
    servers.push(cold);
    const g = await startGateway(cold.url, 'cold');
    await waitFor(() => g.log().includes('the API looks cold'), 20_000, 100, 'cold cache noticed');
    expect(await ready(g)).toBe(503);
    cold.setConnected(true);
    await waitFor(async () => (await ready(g)) === 200, 30_000, 100, '/ready 200 after reconnect');
    g.stop();
  }, 60_000);
});

// requireAuthorization: edgecore serves HTTPS with a certificate the cluster's kubelet-serving
// signer issued (the cluster CA here, as kube-controller-manager signs with
// --cluster-signing-cert-file), so a pod's service-account ca.crt is the right --api-ca-file,
// and wants a service-account bearer token (test/metaserver: requireAuthorization).
describe('gateway in edge mode against the metaServer stand-in with requireAuthorization (HTTPS + token)', () => {
  const dir = join(tmp, 'authz');
  const TOKEN_A = 'sa-token-a.first-issued';
  const TOKEN_B = 'sa-token-b.rotated';
  const TOKEN_C = 'sa-token-c.for-the-wrong-ca';
  let meta: MetaServer;
  let otherCa: string;
  let gw: RunningGateway;
  let side: CatalogStore;

  /** As kubelet writes projected tokens: a new file renamed over the old one. */
  function writeToken(path: string, token: string): void {
    writeFileSync(`${path}.tmp`, token);
    renameSync(`${path}.tmp`, path);
  }

  beforeAll(async () => {
    mkdirSync(join(dir, 'other-pki'), { recursive: true });
    // certificate/manager.go: CN=system:node:<node>, O=system:nodes, both listen addresses.
    const serving = await issueCert(
      dir,
      { cert: cp.pki.caCert, key: cp.pki.caKey },
      'metaserver-n1',
      '/O=system:nodes/CN=system:node:n1',
      'serverAuth',
      'IP:127.0.0.1,IP:169.254.30.10',
    );
    otherCa = (await createPki(join(dir, 'other-pki'), { ips: ['127.0.0.1'], dnsNames: [] })).caCert;
    meta = await MetaServer.start({
      upstream: apiFromKubeConfig(cp.kubeConfig()),
      resources: ['/api/v1/services', '/api/v1/endpoints', '/api/v1/pods'],
      requireAuthorization: {
        cert: readFileSync(serving.cert),
        key: readFileSync(serving.key),
        tokens: [TOKEN_A],
      },
    });
    servers.push(meta);
    expect(meta.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    await waitFor(() => meta.cached('/api/v1/services').includes('demo/web'), 20_000, 50, 'cache filled');
  });

  it('without a token: 401 (v1.22), or 403 for system:anonymous (v1.23 anonymous fallback)', async () => {
    const noToken = apiFromUrl({ url: meta.url, caFile: cp.pki.caCert });
    const err = await noToken.getJSON('/api/v1/services').catch((e: unknown) => e);
    noToken.close();
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(401);
    expect((err as ApiError).message).toBe(
      `GET ${meta.url}/api/v1/services: HTTP 401: Unauthorized: Unauthorized`,
    );

    const serving = { cert: join(dir, 'metaserver-n1.crt'), key: join(dir, 'metaserver-n1.key') };
    const v123 = await MetaServer.start({
      upstream: apiFromKubeConfig(cp.kubeConfig()),
      resources: ['/api/v1/services'],
      startDisconnected: true,
      requireAuthorization: {
        cert: readFileSync(serving.cert),
        key: readFileSync(serving.key),
        tokens: [TOKEN_A],
        anonymous: true,
      },
    });
    servers.push(v123);
    const anon = apiFromUrl({ url: v123.url, caFile: cp.pki.caCert });
    const err2 = await anon.getJSON('/api/v1/namespaces/demo/services').catch((e: unknown) => e);
    anon.close();
    expect((err2 as ApiError).status).toBe(403);
    expect((err2 as ApiError).message).toContain(
      'HTTP 403: Forbidden: services is forbidden: User "system:anonymous" cannot list resource "services" in API group "" in the namespace "demo"',
    );
    await v123.stop();
  }, 30_000);

  it('with the cluster CA and a valid token: gets ready and serves the catalog', async () => {
    writeToken(join(dir, 'token'), TOKEN_A);
    gw = await startGateway(meta.url, 'authz', [
      `--api-token-file=${join(dir, 'token')}`,
      `--api-ca-file=${cp.pki.caCert}`,
    ]);
    await waitFor(async () => (await ready(gw)) === 200, 30_000, 100, '/ready 200');
    side = await sidecar(gw);
    const c = side.current as Catalog;
    expect(Object.keys(c.services)).toContain('default/kubernetes');
    expect(c.services['demo/web'].endpoints.map((e) => [e.ip, e.nodeName])).toEqual([
      ['10.244.1.7', 'n1'],
      ['10.244.2.9', 'n2'],
    ]);
    expect(meta.authenticated.get(TOKEN_A)).toBeGreaterThanOrEqual(3); // a LIST per kind at least
    // Counted per token: a gateway of an earlier case may still have a request in flight.
    expect(meta.rejected.get(TOKEN_A)).toBeUndefined();
    expect(gw.log()).not.toContain('HTTP 401');
  }, 60_000);

  it('a token file rewritten while running (kubelet rotating a projected token) is used from then on', async () => {
    writeToken(join(dir, 'token'), TOKEN_B);
    meta.setTokens([TOKEN_B, TOKEN_C]); // the old token no longer authenticates
    const usedA = meta.authenticated.get(TOKEN_A) ?? 0;
    // --relist-seconds=2: new LISTs and WATCHes every ~2 s, each with the token as read then.
    await waitFor(
      () => (meta.authenticated.get(TOKEN_B) ?? 0) >= 6,
      20_000,
      100,
      'requests with the new token',
    );
    expect(meta.rejected.get(TOKEN_A)).toBeUndefined(); // the old token was never sent again
    expect(meta.authenticated.get(TOKEN_A) ?? 0).toBe(usedA);
    expect(gw.log()).not.toContain('HTTP 401');
    expect(await ready(gw)).toBe(200);
    // And the data path works on the new token: a change in the cloud reaches the sidecar.
    await cp.kubectl(['apply', '-f', '-'], {
      input: `
apiVersion: v1
kind: Service
metadata: {name: rotated, namespace: demo}
spec: {ports: [{port: 81}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: rotated, namespace: demo}
subsets: [{addresses: [{ip: 10.244.1.8, nodeName: n1}], ports: [{port: 81}]}]
`,
    });
    await waitFor(
      () => side.current?.services['demo/rotated']?.endpoints.length === 1,
      30_000,
      100,
      'demo/rotated',
    );
    gw.stop();
  }, 90_000);

  it('with a token that does not authenticate: stays not ready, and the log names the URL and the 401', async () => {
    writeToken(join(dir, 'wrong-token'), 'not-a-service-account-token');
    const unauthorized = meta.served.unauthorized;
    const g = await startGateway(meta.url, 'authz-wrong-token', [
      `--api-token-file=${join(dir, 'wrong-token')}`,
      `--api-ca-file=${cp.pki.caCert}`,
    ]);
    const line = new RegExp(
      `GET ${meta.url.replace(/[.]/g, '\\.')}/api/v1/(services|endpoints|pods)\\?[^:]*: HTTP 401: Unauthorized`,
    );
    await waitFor(() => line.test(g.log()), 30_000, 100, 'a 401 naming the URL');
    expect(meta.served.unauthorized).toBeGreaterThan(unauthorized);
    await sleep(3000);
    expect(await ready(g)).toBe(503);
    g.stop();
  }, 60_000);

  it("with a CA that did not sign the server's certificate: stays not ready, and the log names the TLS failure", async () => {
    // A token that would authenticate: only the certificate check keeps the gateway out.
    writeToken(join(dir, 'token-c'), TOKEN_C);
    const g = await startGateway(meta.url, 'authz-wrong-ca', [
      `--api-token-file=${join(dir, 'token-c')}`,
      `--api-ca-file=${otherCa}`,
    ]);
    const line = new RegExp(
      `GET ${meta.url.replace(/[.]/g, '\\.')}/api/v1/(services|endpoints|pods)\\?[^:]*: TLS: unable to verify the first certificate[^(]*\\(UNABLE_TO_VERIFY_LEAF_SIGNATURE\\)`,
    );
    await waitFor(() => line.test(g.log()), 30_000, 100, 'a TLS failure naming the URL');
    await sleep(3000);
    expect(await ready(g)).toBe(503);
    // No request got through the handshake: the token was never sent.
    expect(meta.authenticated.get(TOKEN_C)).toBeUndefined();
    // Counted per token: the wrong-token gateway of the case before may still have requests in flight.
    expect(meta.rejected.get(TOKEN_C)).toBeUndefined();
    g.stop();
  }, 60_000);
});
