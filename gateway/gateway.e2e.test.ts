import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayFeedSource } from '../lib/catalog/feed-source.ts';
import { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog } from '../lib/catalog/types.ts';
import { type ApiClient, apiFromUrl } from '../lib/kube/client.ts';
import { silentLogger } from '../lib/log.ts';
import { ControlPlane } from '../test/cluster/control-plane.ts';
import { NetnsLab, waitFor } from '../test/harness/netns.ts';
import { type Gateway, startGateway } from './gateway.ts';
import { loadCatalog } from './persist.ts';

// The gateway's watcher against a real API server (etcd, kube-apiserver, controller-manager,
// scheduler in a "cloud" namespace; this process reaches it through the control plane's
// socket relay). Objects are created with kubectl; the gateway's catalog, a sidecar feed on
// it and the persisted file follow; after a restart with the API unreachable the persisted
// catalog is served at once; after a restart with the API back, what changed while the
// gateway was away arrives as increments continuing the revision.
const lab = new NetnsLab('emc');
const stateDir = mkdtempSync(join(tmpdir(), 'emc-gw-e2e-'));
let cp: ControlPlane;
const gateways: Gateway[] = [];
const feeds: GatewayFeedSource[] = [];

beforeAll(async () => {
  const cloud = await lab.add('cloud');
  // The API server's address lives on a link to an otherwise empty "edge" namespace.
  const edge = await lab.add('edge');
  await lab.link(
    { ns: cloud, ifname: 'eth0', addr: '192.168.51.1/24' },
    { ns: edge, ifname: 'eth0', addr: '192.168.51.2/24' },
  );
  cp = await ControlPlane.start({ netns: cloud, address: '192.168.51.1' });
});

afterAll(async () => {
  for (const f of feeds) await f.stop();
  for (const g of gateways) await g.close().catch(() => {});
  await cp?.stop();
  await lab.cleanup();
  rmSync(stateDir, { recursive: true, force: true });
});

/** A gateway on the test cluster's API, or on `api` when given. */
async function gateway(api?: ApiClient): Promise<Gateway> {
  const gw = await startGateway({
    nodeName: 'edge-a',
    stateDir,
    listenHost: '127.0.0.1',
    listenPort: 0,
    clusterDomain: 'cluster.local',
    ...(api ? { api } : { kubeConfig: cp.kubeConfig() }),
    log: silentLogger,
    persistDelayMs: 50,
  });
  gateways.push(gw);
  return gw;
}

async function sidecar(gw: Gateway): Promise<CatalogStore> {
  const store = new CatalogStore();
  const feed = new GatewayFeedSource({
    host: '127.0.0.1',
    port: (gw.server.address() as net.AddressInfo).port,
  });
  feeds.push(feed);
  await feed.start(store);
  return store;
}

const apply = (yaml: string) => cp.kubectl(['apply', '-f', '-'], { input: yaml });
const statusPatch = (kind: string, name: string, patch: unknown, ns?: string) =>
  cp.kubectl([
    'patch',
    kind,
    name,
    ...(ns ? ['-n', ns] : []),
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify(patch),
  ]);

const OBJECTS = `
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Node
metadata: {name: edge-a}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-manual, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
  - addresses: [10.244.1.17]
    conditions: {ready: true}
    nodeName: edge-a
    targetRef: {kind: Pod, name: web-0, namespace: demo}
ports: [{name: http, port: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: demo}
spec:
  nodeName: edge-a
  containers: [{name: web, image: nginx}]
`;

describe('gateway watching a real API server', () => {
  let first: Catalog;

  it('builds the catalog from Services, EndpointSlices, Pods and Nodes, feeds it and persists it', async () => {
    const gw = await gateway();
    const side = await sidecar(gw);
    // Pods need the namespace's default ServiceAccount, which the controller-manager makes.
    await apply(OBJECTS.split('---')[0]);
    await waitFor(
      () => cp.kubectl(['get', 'serviceaccount', 'default', '-n', 'demo']).then(() => true),
      30_000,
      200,
      'default ServiceAccount',
    );
    await apply(OBJECTS);
    await statusPatch('node', 'edge-a', {
      status: { addresses: [{ type: 'InternalIP', address: '192.168.10.11' }] },
    });
    await statusPatch(
      'pod',
      'web-0',
      { status: { phase: 'Running', podIP: '10.244.1.17', podIPs: [{ ip: '10.244.1.17' }] } },
      'demo',
    );

    await waitFor(
      () => gw.store.current?.pods['10.244.1.17'] && gw.store.current.nodes['edge-a']?.addresses.length,
      60_000,
      100,
      'catalog from the API',
    );
    const c = gw.store.current as Catalog;
    const web = c.services['demo/web'];
    expect(web.service.clusterIPs).toHaveLength(1);
    expect(web.service.clusterIPs[0]).toMatch(/^10\.96\./); // allocated by the API server
    expect(web.service.ports).toEqual([{ name: 'http', port: 80, protocol: 'TCP' }]);
    expect(web.endpoints).toEqual([
      {
        ip: '10.244.1.17',
        ready: true,
        serving: true,
        terminating: false,
        ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
        nodeName: 'edge-a',
        podName: 'web-0',
      },
    ]);
    expect(c.pods['10.244.1.17']).toEqual({
      ip: '10.244.1.17',
      namespace: 'demo',
      name: 'web-0',
      nodeName: 'edge-a',
    });
    expect(c.nodes['edge-a']).toEqual({ name: 'edge-a', addresses: ['192.168.10.11'] });
    // The API's own service is there too.
    expect(c.services['default/kubernetes'].service.clusterIPs).toEqual(['10.96.0.1']);
    expect(gw.watcher?.synced).toBe(true);
    await waitFor(() => side.current?.revision === gw.store.current?.revision, 10_000, 50, 'sidecar in step');
    expect(side.current).toEqual(gw.store.current);
    await waitFor(
      async () => (await loadCatalog(stateDir))?.revision === gw.store.current?.revision,
      10_000,
      50,
      'persisted',
    );
    expect(gw.dialer.check.bind(gw.dialer, { ip: '10.244.1.17', port: 8080 })).not.toThrow();
  });

  it('follows changes: an endpoint going unready, an annotation', async () => {
    const gw = gateways[0];
    const side = await sidecar(gw);
    const before = gw.store.current?.revision as number;
    await cp.kubectl(['annotate', 'service', 'web', '-n', 'demo', 'edgemesh.io/lb-policy=least-connections']);
    await apply(
      OBJECTS.split('---')[3].replace(
        'conditions: {ready: true}',
        'conditions: {ready: false, serving: false}',
      ),
    );
    await waitFor(
      () =>
        gw.store.current?.services['demo/web']?.service.lbPolicy === 'least-connections' &&
        gw.store.current.services['demo/web'].endpoints[0]?.ready === false,
      30_000,
      100,
      'changes seen',
    );
    expect((gw.store.current?.revision as number) - before).toBeGreaterThanOrEqual(2);
    await waitFor(() => side.current?.revision === gw.store.current?.revision, 10_000, 50, 'sidecar in step');
    expect(side.current).toEqual(gw.store.current);
    const events = await gw.registry.getSingleMetricAsString('edgemesh_gateway_kube_events_total');
    expect(events).toMatch(/kind="EndpointSlice"[^\n]*event="update"/);
    // A bad annotation is counted (and logged naming the Service); the Service stays, with
    // the default: a UDP idle timeout over an hour is refused.
    const problems = async () =>
      Number(
        /^edgemesh_gateway_object_problems_total(?:\{[^}]*\})? (\d+)/m.exec(
          await gw.registry.getSingleMetricAsString('edgemesh_gateway_object_problems_total'),
        )?.[1] ?? Number.NaN,
      );
    const problemsBefore = await problems();
    await cp.kubectl(['annotate', 'service', 'web', '-n', 'demo', 'edgemesh.io/udp-idle-timeout=2h']);
    await waitFor(async () => (await problems()) > problemsBefore, 30_000, 100, 'the bad annotation counted');
    expect(gw.store.current?.services['demo/web']?.service.udpIdleTimeoutMs).toBeUndefined();
    await cp.kubectl([
      'annotate',
      'service',
      'web',
      '-n',
      'demo',
      'edgemesh.io/udp-idle-timeout=90s',
      '--overwrite',
    ]);
    await waitFor(
      () => gw.store.current?.services['demo/web']?.service.udpIdleTimeoutMs === 90_000,
      30_000,
      100,
      'a good udp-idle-timeout adopted',
    );
    await waitFor(
      async () => (await loadCatalog(stateDir))?.revision === gw.store.current?.revision,
      10_000,
      50,
      'persisted',
    );
    first = gw.store.current as Catalog;
    await gw.close();
    gateways.splice(0);
  });

  it('after a restart serves the persisted catalog at once while the API is unreachable', async () => {
    // While the gateway is down: the node goes away and a service appears.
    await cp.kubectl(['delete', 'node', 'edge-a']);
    await apply(
      'apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: demo}\nspec:\n  ports: [{port: 9090}]\n',
    );
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const deadPort = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const gw = await gateway(apiFromUrl({ url: `http://127.0.0.1:${deadPort}` }));
    expect(gw.store.current).toEqual(first); // before any API answer
    const side = await sidecar(gw);
    await waitFor(
      () => side.current?.revision === first.revision,
      10_000,
      50,
      'sidecar got the persisted catalog',
    );
    expect(gw.watcher?.synced).toBe(false);
    await gw.close();
    gateways.splice(0);
  });

  it('with the API back, moves to its view by increments that continue the revision', async () => {
    const gw = await gateway();
    expect(gw.store.current).toEqual(first);
    const side = await sidecar(gw);
    await waitFor(() => gw.watcher?.synced, 60_000, 100, 'synced with the API');
    const now = gw.store.current as Catalog;
    expect(now.nodes['edge-a']).toBeUndefined();
    expect(now.services['demo/api']).toBeDefined();
    expect(now.services['demo/web']).toEqual(first.services['demo/web']);
    expect(now.revision).toBeGreaterThan(first.revision);
    expect(now.revision - first.revision).toBeLessThanOrEqual(4); // only what changed, not a rebuild
    await waitFor(() => side.current?.revision === now.revision, 10_000, 50, 'sidecar in step');
    expect(side.current).toEqual(now);
  });
});
