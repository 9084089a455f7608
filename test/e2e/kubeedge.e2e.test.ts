import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../harness/netns.ts';
import { EDGE_API_PORT, type EdgeApi, EdgeCluster } from './edge-cluster.ts';
import {
  apply,
  appNodes,
  clientDeployment,
  clientRef,
  curl,
  curlChecked,
  getJson,
  inClient,
  isReady,
  livePods,
  NS,
  namespace,
  nginxConfig,
  nginxDeployment,
  offTheRelay,
  type PodView,
  rolloutStatus,
  SERVICE_URL,
  servedBy,
  services,
} from './scenario.ts';

// KubeEdge mode on real nodes: the edge nodes' gateways (the KubeEdge overlay's
// edgemesh-gateway-edge DaemonSet) read only an edge API on 127.0.0.1:10550 — never the cloud
// API server — in edge mode (Services + core/v1 Endpoints + their own node's Pods). Run
// against two edge APIs: a real `kubectl proxy` as each node's identity, and the metaServer
// stand-in that reproduces edgecore's caching (test/metaserver). Then the cloud is cut for
// EDGEMESH_E2E_CUT_SECONDS (default 60; the ten-minute runs issue 12 asks for are
// EDGEMESH_E2E_CUT_SECONDS=600, see docs/kubeedge.md for their results):
// requests and DNS across both NATs keep working the whole time, and after the link comes
// back the catalog converges to the API's view. During the cut the nginx pod's sandbox is
// killed: the kubelet gives it a new IP that no API reports, and the clients on both sites
// must reach it there (its sidecar's HELLO, gateway/pod-moves.ts) for the rest of the cut.
const CUT_SECONDS = Number(process.env.EDGEMESH_E2E_CUT_SECONDS ?? 60);
const FQDN = `nginx-svc.${NS}.svc.cluster.local`;

describe.each(['metaserver', 'kubectl-proxy'] as EdgeApi[])('KubeEdge mode, edge API: %s', (edgeApi) => {
  let cluster: EdgeCluster;
  const images = () => {
    if (!cluster.images) throw new Error('cluster has no images');
    return cluster.images;
  };

  beforeAll(async () => {
    cluster = await EdgeCluster.start({
      prefix: 'emk',
      edgeApi,
      progress: (line) => process.stderr.write(`${line}\n`),
    });
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('edge nodes run the edge gateway against 127.0.0.1:10550 only; the cloud node the base gateway', async () => {
    const pods = await livePods(cluster, 'app.kubernetes.io/part-of=edgemesh', 'edgemesh-system');
    expect(appNodes(pods, 'edgemesh-gateway')).toEqual({ nodes: ['cloud'], unready: [] });
    expect(appNodes(pods, 'edgemesh-gateway-edge')).toEqual({
      nodes: ['node1-1', 'node2-1', 'node2-2'],
      unready: [],
    });
    const ds = await getJson<{ spec: { template: { spec: { containers: { args: string[] }[] } } } }>(
      cluster,
      ['-n', 'edgemesh-system', 'get', 'daemonset', 'edgemesh-gateway-edge'],
    );
    expect(ds.spec.template.spec.containers[0]?.args).toContain(
      `--api-server=http://127.0.0.1:${EDGE_API_PORT}`,
    );
    for (const node of cluster.nodes) {
      const metrics = await cluster.gatewayMetrics(node.name);
      expect(
        Number(/^edgemesh_gateway_catalog_services\{[^}]*\} (\d+)/m.exec(metrics)?.[1]),
        node.name,
      ).toBeGreaterThanOrEqual(3);
    }
  });

  it('injected pods reach a service across both NATs by name; DNS answers from the catalog', async () => {
    await apply(cluster, [
      namespace(NS, { 'edgemesh.io/injection': 'enabled' }),
      nginxConfig(),
      nginxDeployment(images(), 1),
      ...services(),
      clientDeployment(images()),
    ]);
    await rolloutStatus(cluster, 'nginx');
    await rolloutStatus(cluster, 'client');
    // Site 2's other node: reaches nginx across its own LAN, through both gateways.
    const [server] = await livePods(cluster, 'app=nginx');
    const other = cluster.nodes.find((n) => n.site === 2 && n.name !== server?.spec.nodeName);
    if (!other) throw new Error('no second node on site 2');
    await apply(cluster, [clientDeployment(images(), 'client2', {}, { node: other.name })]);
    await rolloutStatus(cluster, 'client2');
    const r = await waitFor(
      async () => {
        const res = await curl(cluster);
        return res.code === 0 && res;
      },
      60_000,
      500,
      `curl ${SERVICE_URL}`,
    );
    expect(servedBy(r.stdout)?.pod).toMatch(/^nginx-/);
    const svc = await getJson<{ spec: { clusterIP: string } }>(cluster, [
      '-n',
      NS,
      'get',
      'service',
      'nginx-svc',
    ]);
    expect((await inClient(cluster, ['dig', '+short', '+time=2', '+tries=1', FQDN])).stdout.trim()).toBe(
      svc.spec.clusterIP,
    );
  });

  it(
    `cloud cut for ${CUT_SECONDS} s: requests and DNS keep working throughout; restored, the catalog converges`,
    async () => {
      const pod = await clientRef(cluster);
      const sameSite = await clientRef(cluster, 'client2');
      const [server] = await livePods(cluster, 'app=nginx');
      if (!server?.spec.nodeName) throw new Error('no scheduled nginx pod');
      const serverRef = { namespace: NS, pod: server.metadata.name, container: 'nginx' };
      // Streams opened while the tunnel was still on the cloud's relay die with it (see
      // offTheRelay): start the cut once new streams take a direct or punched path.
      const { paths } = await offTheRelay(cluster, pod.node);
      process.stderr.write(
        `kubeedge e2e (${edgeApi}): streams from ${pod.node} on ${paths.join(', ')} before the cut\n`,
      );
      await cluster.cutCloud();
      let requests = 0;
      let lostOutputs = 0;
      const failures: string[] = [];
      try {
        // The pod gets a new sandbox and IP while no API can say so.
        const cutAt = Date.now();
        const moved = await cluster.restartSandbox(server.spec.nodeName, serverRef);
        for (const client of [pod, sameSite]) {
          await waitFor(
            async () => {
              const r = await curl(cluster, SERVICE_URL, 3, client);
              return r.code === 0 && servedBy(r.stdout)?.pod === server.metadata.name;
            },
            90_000,
            1_000,
            `${client.pod} on ${client.node} reaching nginx at its new IP ${moved.after} during the cut`,
          );
        }
        process.stderr.write(
          `kubeedge e2e (${edgeApi}): nginx moved ${moved.before} → ${moved.after} during the cut; both sites served ${Date.now() - cutAt} ms after the cut began\n`,
        );
        // A gateway restarted with no tunnel-server reachable finds its same-site peer from its
        // peer book (edge mode has no Node objects to take LAN addresses from).
        await cluster.restartGateway(sameSite.node);
        const restartedAt = Date.now();
        await waitFor(
          async () => (await curl(cluster, SERVICE_URL, 3, sameSite)).code === 0,
          60_000,
          1_000,
          `${sameSite.pod} reaching nginx after its gateway restarted during the cut`,
        );
        process.stderr.write(
          `kubeedge e2e (${edgeApi}): ${sameSite.node}'s gateway restarted during the cut; its site's nginx reached again ${Date.now() - restartedAt} ms after it was ready\n`,
        );
        const until = Date.now() + CUT_SECONDS * 1000;
        while (Date.now() < until) {
          for (const client of [pod, sameSite]) {
            const r = await curlChecked(cluster, SERVICE_URL, 5, client);
            requests++;
            lostOutputs += r.lostOutput;
            if (r.code !== 0 || !servedBy(r.stdout))
              failures.push(`curl from ${client.node}: ${r.code} ${r.stdout}${r.stderr}`.trim());
          }
          const a = await inClient(cluster, ['dig', '+short', '+time=2', '+tries=1', FQDN], 10_000, pod);
          if (!/^10\.96\.\d+\.\d+$/.test(a.stdout.trim()))
            failures.push(`dig: ${a.stdout}${a.stderr}`.trim());
          await new Promise((r) => setTimeout(r, 2_000));
        }
        // A change made in the cloud while the sites are cut off.
        await apply(cluster, [
          {
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: 'late-svc', namespace: NS },
            spec: { selector: { app: 'nginx' }, ports: [{ name: 'http', port: 8080, targetPort: 80 }] },
          },
        ]);
      } finally {
        await cluster.restoreCloud();
      }
      process.stderr.write(
        `kubeedge e2e (${edgeApi}): ${requests} requests + DNS lookups during a ${CUT_SECONDS} s cut, ${failures.length} failed (${lostOutputs} exec outputs lost and run again)\n`,
      );
      expect(failures).toEqual([]);
      expect(requests).toBeGreaterThan(0);

      // Converges: the Service made during the cut arrives through the edge API.
      await waitFor(
        async () => (await curl(cluster, `http://late-svc.${NS}.svc.cluster.local:8080/`)).code === 0,
        180_000,
        1_000,
        'late-svc reachable from site 1 after the cloud came back',
      );
      // Scaled up, every replica gets traffic; scaled down, the gone replica never answers again.
      await cluster.kubectl(['-n', NS, 'scale', 'deployment/nginx', '--replicas=2']);
      await rolloutStatus(cluster, 'nginx');
      const replicas = (await livePods(cluster, 'app=nginx')).filter(isReady) as PodView[];
      expect(replicas.length).toBe(2);
      const seen = new Set<string>();
      await waitFor(
        async () => {
          const by = servedBy((await curl(cluster)).stdout);
          if (by) seen.add(by.pod);
          return seen.size === 2;
        },
        60_000,
        200,
        'both replicas answering',
      );
      await cluster.kubectl(['-n', NS, 'scale', 'deployment/nginx', '--replicas=1']);
      await waitFor(
        async () => (await livePods(cluster, 'app=nginx')).length === 1,
        60_000,
        500,
        'scaled to 1',
      );
      const [left] = await livePods(cluster, 'app=nginx');
      // No stale endpoint: within a minute every request is answered by the one left.
      let last: string[] = [];
      await waitFor(
        async () => {
          last = (
            await inClient(
              cluster,
              [
                'sh',
                '-c',
                `for i in $(seq 10); do curl -sS --max-time 5 ${SERVICE_URL} || echo FAILED; done`,
              ],
              120_000,
            )
          ).stdout
            .split('\n')
            .filter(Boolean);
          return last.length === 10 && last.every((l) => servedBy(l)?.pod === left?.metadata.name);
        },
        60_000,
        1_000,
        'every answer from the one replica left',
      ).catch((err: Error) => {
        throw new Error(`${err.message}; last round: ${JSON.stringify(last)}`);
      });
      // What each gateway watched and received over the whole run (the watch fan-out per node).
      for (const node of cluster.allNodes) {
        const events: Record<string, number> = {};
        for (const m of (await cluster.gatewayMetrics(node.name)).matchAll(
          /^edgemesh_gateway_kube_events_total\{([^}]*)\} (\d+)/gm,
        )) {
          const kind = /kind="([^"]+)"/.exec(m[1] ?? '')?.[1] ?? '?';
          events[kind] = (events[kind] ?? 0) + Number(m[2]);
        }
        process.stderr.write(
          `kubeedge e2e (${edgeApi}): ${node.name} gateway API events by kind ${JSON.stringify(events)}\n`,
        );
      }
    },
    (CUT_SECONDS + 480) * 1000,
  ); // the cut, the moves before it, and up to 8 min to converge
});
