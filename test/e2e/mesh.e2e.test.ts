import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UPGRADE_RETRY_START_MS } from '../../gateway/tunnel/peer.ts';
import { waitFor } from '../harness/netns.ts';
import { EdgeCluster } from './edge-cluster.ts';
import {
  apply,
  appNodes,
  clientDeployment,
  clientRef,
  curl,
  expectNothingOfOursLeft,
  getJson,
  inClient,
  isInjected,
  isReady,
  livePods,
  NS,
  namespace,
  nginxConfig,
  nginxDeployment,
  offTheRelay,
  type PodView,
  pathsUsed,
  rolloutStatus,
  SERVICE_URL,
  servedBy,
  services,
  streamsByPath,
  UPTIME_MS_SH,
  uptimeMs,
} from './scenario.ts';

// The whole mesh as users deploy it, on real nodes: kubelet + containerd + runc + CNI on a
// cloud node (with kube-proxy) and three edge nodes on two sites behind different NATs (site
// 1: port-preserving NAT that drops unsolicited inbound, one node; site 2: port-preserving
// NAT that answers it with RST/ICMP, two nodes), each behind its own ISP hop. edgemesh's own
// image, the shipped manifests as pods (webhook ×2 and tunnel-server on the cloud node, a
// gateway on every node), our webhook admitting pods, `edgemesh-init` writing iptables in
// each pod, the native sidecar as uid 1337, nginx and curl/dig in real containers, kubectl
// exec through the kubelets. Installed as the README's "Deploying" says: `edgemesh install |
// kubectl apply -f -`, then `edgemesh config set tunnel-servers`. The tests run in order and
// build on each other.
let cluster: EdgeCluster;
const FQDN = `nginx-svc.${NS}.svc.cluster.local`;

beforeAll(async () => {
  cluster = await EdgeCluster.start({
    install: 'edgemesh',
    progress: (line) => process.stderr.write(`${line}\n`),
  });
});

afterAll(async () => {
  await cluster?.stop();
});

const nodeSite = (name: string | undefined) => cluster.allNodes.find((n) => n.name === name)?.site;
const images = () => {
  if (!cluster.images) throw new Error('cluster has no images');
  return cluster.images;
};

async function readyPods(selector: string, count: number, namespaceName = NS): Promise<PodView[]> {
  return waitFor(
    async () => {
      const pods = await livePods(cluster, selector, namespaceName);
      return pods.length === count && pods.every(isReady) && pods;
    },
    90_000,
    250,
    `${count} ready pods ${namespaceName}/${selector}`,
  );
}

/** iptables rules in a pod's network namespace (what `edgemesh-init` wrote, if anything). */
async function podRules(pod: PodView, container: string): Promise<string> {
  if (!pod.spec.nodeName) throw new Error(`pod ${pod.metadata.name} is not scheduled`);
  const namespace = (pod.metadata as { namespace?: string }).namespace ?? NS;
  return cluster.inPodNetns(pod.spec.nodeName, { namespace, pod: pod.metadata.name, container }, [
    'iptables-save',
  ]);
}

describe('edgemesh on a real control plane across NATs', () => {
  it('brings up the cluster: real nodes on containerd, the manifests as pods, TLS bootstrap done, gateways with least-privilege RBAC', async () => {
    const nodes = await getJson<{
      items: {
        metadata: { name: string; labels: Record<string, string> };
        status: { nodeInfo: { containerRuntimeVersion: string; kubeletVersion: string } };
      }[];
    }>(cluster, ['get', 'nodes']);
    expect(nodes.items.map((n) => n.metadata.name).sort()).toEqual([
      'cloud',
      'node1-1',
      'node2-1',
      'node2-2',
    ]);
    for (const n of nodes.items) {
      expect(n.status.nodeInfo.containerRuntimeVersion).toMatch(/^containerd:\/\//);
      expect(n.status.nodeInfo.kubeletVersion).toMatch(/^v1\.\d+\.\d+/);
    }

    for (const node of cluster.allNodes) {
      process.stderr.write(
        `mesh e2e: node ${node.name} memory (RSS MiB): ${JSON.stringify(await node.real.memory())}\n`,
      );
    }
    // The webhook is reached through its Service (kube-proxy on the cloud node), with the CA
    // that `edgemesh install` generated (the same code as `edgemesh webhook-tls`).
    const mwc = await getJson<{
      webhooks: { clientConfig: { url?: string; service?: { name: string }; caBundle?: string } }[];
    }>(cluster, ['get', 'mutatingwebhookconfiguration', 'edgemesh-sidecar-injector']);
    const secret = await getJson<{ data: Record<string, string> }>(cluster, [
      '-n',
      'edgemesh-system',
      'get',
      'secret',
      'edgemesh-webhook-tls',
    ]);
    expect(mwc.webhooks.length).toBe(2);
    for (const w of mwc.webhooks) {
      expect(w.clientConfig.service?.name).toBe('edgemesh-webhook');
      expect(w.clientConfig.caBundle).toBe(secret.data['ca.crt']);
    }
    const cert = new X509Certificate(Buffer.from(secret.data['tls.crt'] as string, 'base64'));
    expect(cert.checkHost('edgemesh-webhook.edgemesh-system.svc')).toBe(
      'edgemesh-webhook.edgemesh-system.svc',
    );

    // The shipped workloads run as pods of our image: webhook ×2 and the tunnel-server on the
    // cloud node (not behind a NAT), a gateway on every node.
    // Ready is a probe's latest answer: on this shared machine a probe can miss for a while,
    // so each workload gets a bounded time to be seen Ready everywhere it should run.
    const want = [
      ['edgemesh-webhook', ['cloud', 'cloud']],
      ['edgemesh-tunnel-server', ['cloud']],
      ['edgemesh-gateway', ['cloud', 'node1-1', 'node2-1', 'node2-2']],
    ] as const;
    const settled = async () => {
      const pods = await livePods(cluster, 'app.kubernetes.io/part-of=edgemesh', 'edgemesh-system');
      return want.every(([name, nodes]) => {
        const got = appNodes(pods, name);
        return got.unready.length === 0 && JSON.stringify(got.nodes) === JSON.stringify(nodes);
      })
        ? pods
        : undefined;
    };
    await waitFor(settled, 60_000, 1_000, 'edgemesh pods Ready').catch(() => undefined);
    const system = await livePods(cluster, 'app.kubernetes.io/part-of=edgemesh', 'edgemesh-system');
    for (const [name, nodes] of want) {
      expect(appNodes(system, name), name).toEqual({ nodes, unready: [] });
    }
    const image = images().edgemesh;
    for (const p of system) {
      for (const c of p.spec.containers) expect(c.image).toBe(image);
    }
    // kubectl logs through the kubelet on an edge node behind its NAT.
    const gw = system.find(
      (p) => p.spec.nodeName === 'node1-1' && p.metadata.name.startsWith('edgemesh-gateway'),
    );
    const logs = await cluster.kubectl([
      '-n',
      'edgemesh-system',
      'logs',
      gw?.metadata.name ?? '',
      '--tail=50',
    ]);
    expect(logs).toMatch(/"msg"/);

    // The gateways run as the edgemesh-gateway ServiceAccount: they can watch what the
    // catalog needs and nothing more.
    const can = (verb: string, resource: string) =>
      cluster
        .kubectl([
          'auth',
          'can-i',
          verb,
          resource,
          '--as=system:serviceaccount:edgemesh-system:edgemesh-gateway',
        ])
        .then(
          (out) => out.trim(),
          (err: Error) => (/\bno\b/.test(err.message) ? 'no' : err.message),
        );
    expect(await can('watch', 'endpointslices.discovery.k8s.io')).toBe('yes');
    expect(await can('list', 'pods')).toBe('yes');
    expect(await can('create', 'pods')).toBe('no');
    expect(await can('get', 'secrets')).toBe('no');
    for (const node of cluster.allNodes) {
      const metrics = await cluster.gatewayMetrics(node.name);
      // Listed from the API with that token: at least the kubernetes Service and edgemesh's.
      expect(
        Number(/^edgemesh_gateway_catalog_services\{[^}]*\} (\d+)/m.exec(metrics)?.[1]),
      ).toBeGreaterThanOrEqual(3);
    }
  });

  it('labelled namespace: after a rollout restart the new pods carry the injected containers and the old ones are gone', async () => {
    await apply(cluster, [
      namespace(NS),
      nginxConfig(),
      nginxDeployment(images(), 1),
      ...services(),
      clientDeployment(images()),
    ]);
    const [oldServer] = await readyPods('app=nginx', 1);
    const [oldClient] = await readyPods('app=client', 1);
    expect(oldServer && isInjected(oldServer)).toBe(false);
    expect(oldClient && isInjected(oldClient)).toBe(false);

    await cluster.kubectl(['label', 'namespace', NS, 'edgemesh.io/injection=enabled']);
    await cluster.kubectl(['-n', NS, 'rollout', 'restart', 'deployment/nginx', 'deployment/client']);
    await rolloutStatus(cluster, 'nginx');
    await rolloutStatus(cluster, 'client');

    const [server] = await readyPods('app=nginx', 1);
    const [client] = await readyPods('app=client', 1);
    for (const [pod, old, site] of [
      [server, oldServer, 2],
      [client, oldClient, 1],
    ] as const) {
      if (!pod || !old) throw new Error('missing pod');
      expect(isInjected(pod), pod.metadata.name).toBe(true);
      expect(pod.spec.initContainers?.find((c) => c.name === 'edgemesh-proxy')?.restartPolicy).toBe('Always');
      expect(pod.metadata.annotations?.['sidecar.edgemesh.io/status']).toContain('edgemesh-proxy');
      expect(nodeSite(pod.spec.nodeName)).toBe(site);
      expect(pod.metadata.uid).not.toBe(old.metadata.uid);
      // Gone from the API, not just terminating.
      await waitFor(
        async () =>
          !(await getJson(cluster, ['get', 'pods', '-n', NS])).items.some(
            (p) => p.metadata.uid === old.metadata.uid,
          ),
        60_000,
        250,
        `old pod ${old.metadata.name} deleted`,
      );
    }
    // `edgemesh-init` really wrote the capture rules in the client's network namespace.
    expect(await podRules(client as PodView, 'client')).toMatch(/REDIRECT --to-ports 15001/);
  });

  it('curl by service name from site 1 reaches the server on site 2 across both NATs; the gateway reports the path', async () => {
    const clientNode = (await livePods(cluster, 'app=client'))[0]?.spec.nodeName as string;
    const before = streamsByPath(await cluster.gatewayMetrics(clientNode));
    const r = await curl(cluster);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const by = servedBy(r.stdout);
    expect(by?.pod).toMatch(/^nginx-/);
    expect(nodeSite(by?.node)).toBe(2);
    const after = streamsByPath(await cluster.gatewayMetrics(clientNode));
    const used = pathsUsed(before, after);
    process.stderr.write(
      `mesh e2e: ${SERVICE_URL} from ${clientNode} to ${by?.node} took path ${used.join(',')}\n`,
    );
    expect(used.length).toBe(1);
    expect(['direct', 'punched', 'relay']).toContain(used[0]);
  });

  it('DNS in the pod: A record of the ClusterIP, SRV for the named port, headless names list the pod IPs', async () => {
    const svc = await getJson<{ spec: { clusterIP: string } }>(cluster, [
      '-n',
      NS,
      'get',
      'service',
      'nginx-svc',
    ]);
    const a = await inClient(cluster, ['dig', '+short', '+time=2', '+tries=1', FQDN]);
    expect(a.stdout.trim()).toBe(svc.spec.clusterIP);
    const srv = await inClient(cluster, [
      'dig',
      '+short',
      '+time=2',
      '+tries=1',
      'SRV',
      `_http._tcp.${FQDN}`,
    ]);
    expect(srv.stdout.trim()).toMatch(new RegExp(`^\\d+ \\d+ 12345 ${FQDN.replaceAll('.', '\\.')}\\.$`));
    // Headless: the ready pods' IPs. The catalog is eventually consistent (API → gateway →
    // sidecar), so allow it a moment after the rollout to settle on the current pods.
    const podIPs = (await readyPods('app=nginx', 1)).map((p) => p.status.podIP).sort();
    const started = Date.now();
    let headless = '';
    await waitFor(
      async () => {
        headless = (
          await inClient(cluster, [
            'dig',
            '+short',
            '+time=2',
            '+tries=1',
            `nginx-headless.${NS}.svc.cluster.local`,
          ])
        ).stdout.trim();
        return JSON.stringify(headless.split('\n').sort()) === JSON.stringify(podIPs);
      },
      20_000,
      200,
      'headless answer',
    ).catch(() => undefined);
    expect(headless.split('\n').sort()).toEqual(podIPs);
    process.stderr.write(`mesh e2e: headless answer current after ${Date.now() - started} ms\n`);
    const headlessSrv = await inClient(cluster, [
      'dig',
      '+short',
      '+time=2',
      '+tries=1',
      'SRV',
      `_http._tcp.nginx-headless.${NS}.svc.cluster.local`,
    ]);
    expect(headlessSrv.stdout).toMatch(/ 80 \S+\.nginx-headless\.demo\.svc\.cluster\.local\.$/m);
  });

  it('a UDP Service across sites: dig @ClusterIP from a pod with traffic.edgemesh.io/capture-udp on site 1 is answered by a real dnsmasq on site 2, not by the sidecar', async () => {
    // A user's own DNS server run as a UDP Service (issue 18): dnsmasq on site 2 knows one name.
    // The client on site 1 asks the Service's ClusterIP: its sidecar captures the UDP (TPROXY),
    // carries it to its gateway (DGRAM), over the tunnel to site 2's gateway, which sends it to
    // the dnsmasq pod on its node; the answer comes back from the ClusterIP. DNS to an address
    // that is not in the pod's resolv.conf is no longer the sidecar's: a cluster name asked of
    // dnsmasq is not answered from the catalog.
    const dns = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'dnsmasq', namespace: NS },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'dnsmasq' } },
        template: {
          metadata: { labels: { app: 'dnsmasq' } },
          spec: {
            nodeSelector: { 'topology.kubernetes.io/zone': 'site-2' },
            terminationGracePeriodSeconds: 2,
            containers: [
              {
                name: 'dnsmasq',
                image: images().client,
                command: [
                  'dnsmasq',
                  '--keep-in-foreground',
                  '--user=root',
                  '--group=root',
                  '--pid-file',
                  '--no-resolv',
                  '--no-hosts',
                  '--address=/only.example/192.0.2.7',
                  '--log-queries',
                  '--log-facility=-',
                ],
                ports: [{ name: 'dns', containerPort: 53, protocol: 'UDP' }],
              },
            ],
          },
        },
      },
    };
    const svc = {
      apiVersion: 'v1',
      kind: 'Service',
      // Flows of this Service live 5 min idle (the default is 30 s): the flow below must
      // outlast a gateway restart on its own merits, not by being re-created.
      metadata: { name: 'dns-udp', namespace: NS, annotations: { 'edgemesh.io/udp-idle-timeout': '5m' } },
      spec: {
        selector: { app: 'dnsmasq' },
        ports: [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 }],
      },
    };
    const udpClient = clientDeployment(images(), 'udp-client') as {
      spec: { template: { metadata: { annotations?: Record<string, string> } } };
    };
    udpClient.spec.template.metadata.annotations = { 'traffic.edgemesh.io/capture-udp': 'true' };
    await apply(cluster, [dns, svc, udpClient]);
    const [server] = await readyPods('app=dnsmasq', 1);
    const [client] = await readyPods('app=udp-client', 1);
    expect(nodeSite(server?.spec.nodeName)).toBe(2);
    expect(nodeSite(client?.spec.nodeName)).toBe(1);
    const ref = await clientRef(cluster, 'udp-client');
    const { spec } = await getJson<{ spec: { clusterIP: string } }>(cluster, [
      '-n',
      NS,
      'get',
      'service',
      'dns-udp',
    ]);
    const dig = (name: string) =>
      inClient(cluster, ['dig', '+short', '+time=2', '+tries=1', `@${spec.clusterIP}`, name], 30_000, ref);
    // The catalog reaches the client's sidecar and the far gateway a moment after the rollout.
    let answer = '';
    await waitFor(
      async () => {
        answer = (await dig('only.example')).stdout.trim();
        return answer === '192.0.2.7';
      },
      60_000,
      500,
      `dig @${spec.clusterIP} only.example from ${ref.pod}`,
    ).catch(() => undefined);
    expect(answer).toBe('192.0.2.7');
    // Ten more, one flow each (dig takes a new source port per run): all answered.
    for (let i = 0; i < 10; i++) expect((await dig('only.example')).stdout.trim()).toBe('192.0.2.7');
    // dnsmasq knows no cluster names: asked of it, nginx-svc gets no address (the sidecar's
    // catalog would have answered with the ClusterIP before DNS capture was scoped).
    expect((await dig(FQDN)).stdout.trim()).toBe('');
    // One flow across a restart of site 1's gateway (issue 18, "no stream reset until
    // restart"): dig from a fixed source port is one flow to the sidecar (app addr:port →
    // ClusterIP:53). Its gateway connection breaks with the gateway; the flow's next datagram
    // reopens it, and the app, which keeps its socket and port, gets its answers again.
    const pinned = [
      'dig',
      '+short',
      '+time=2',
      '+tries=1',
      '-b',
      '0.0.0.0#40053',
      `@${spec.clusterIP}`,
      'only.example',
    ];
    // The sidecar's count of flows started, summed over its routes (a flow to this remote
    // endpoint counts as route="gateway"; labels besides route are the registry's defaults).
    const flowsStarted = async () => {
      const res = await inClient(
        cluster,
        ['curl', '-sS', '--max-time', '3', 'http://127.0.0.1:15020/metrics'],
        30_000,
        ref,
      );
      const series = [...res.stdout.matchAll(/^edgemesh_udp_flows_total\{[^}]*\} (\d+)$/gm)];
      if (series.length === 0) {
        const udp = res.stdout.split('\n').filter((l) => l.startsWith('edgemesh_udp'));
        throw new Error(
          `no edgemesh_udp_flows_total in the sidecar's metrics (curl exit ${res.code}, ${res.stderr.trim()}); udp lines: ${udp.join(' | ') || 'none'}`,
        );
      }
      return series.reduce((sum, m) => sum + Number(m[1]), 0);
    };
    expect((await inClient(cluster, pinned, 30_000, ref)).stdout.trim()).toBe('192.0.2.7');
    const flowsBefore = await flowsStarted();
    expect(flowsBefore).toBeGreaterThanOrEqual(12);
    await cluster.restartGateway(ref.node);
    const restartedAt = Date.now();
    let again = '';
    await waitFor(
      async () => {
        again = (await inClient(cluster, pinned, 30_000, ref)).stdout.trim();
        return again === '192.0.2.7';
      },
      90_000,
      500,
      `dig from source port 40053 answered again after ${ref.node}'s gateway restarted`,
    ).catch(() => undefined);
    expect(again).toBe('192.0.2.7');
    // The same flow carried on: no new flow was started for it.
    expect(await flowsStarted()).toBe(flowsBefore);
    process.stderr.write(
      `mesh e2e: UDP flow from port 40053 answered again ${Date.now() - restartedAt} ms after ${ref.node}'s gateway was ready again, still flow ${flowsBefore}\n`,
    );
    const log = await cluster.kubectl(['-n', NS, 'logs', `deploy/dnsmasq`, '-c', 'dnsmasq']);
    expect(log).toMatch(/query\[A\] only\.example from /);
    process.stderr.write(
      `mesh e2e: UDP ${spec.clusterIP}:53 from ${client?.spec.nodeName} answered by dnsmasq on ${server?.spec.nodeName}\n`,
    );
    await cluster.kubectl(['-n', NS, 'delete', 'deployment', 'dnsmasq', 'udp-client', '--wait=false']);
    await cluster.kubectl(['-n', NS, 'delete', 'service', 'dns-udp', '--wait=false']);
  });

  it('scaled to 3 on two nodes, requests spread round-robin over all replicas; a deleted pod stops getting traffic and no request fails', async () => {
    await cluster.kubectl(['-n', NS, 'scale', 'deployment/nginx', '--replicas=3']);
    await rolloutStatus(cluster, 'nginx');
    const pods = await readyPods('app=nginx', 3);
    expect(new Set(pods.map((p) => p.spec.nodeName))).toEqual(new Set(['node2-1', 'node2-2']));
    // Wait until the client's sidecar knows all three endpoints (the catalog is eventually consistent).
    const seen = new Set<string>();
    await waitFor(
      async () => {
        const page = (await curl(cluster)).stdout;
        const by = servedBy(page);
        if (by) seen.add(by.pod);
        return seen.size === 3;
      },
      30_000,
      50,
      'all three replicas answering',
    );
    const loop = await inClient(
      cluster,
      [
        'sh',
        '-c',
        `for i in $(seq 30); do curl -sS --fail-with-body --max-time 5 ${SERVICE_URL} || echo FAILED; done`,
      ],
      120_000,
    );
    const counts: Record<string, number> = {};
    for (const line of loop.stdout.split('\n').filter(Boolean)) {
      const pod = servedBy(line)?.pod ?? 'FAILED';
      counts[pod] = (counts[pod] ?? 0) + 1;
    }
    process.stderr.write(`mesh e2e: 30 requests over 3 replicas: ${JSON.stringify(counts)}\n`);
    expect(counts.FAILED).toBeUndefined();
    // The default policy is round-robin: sequential requests take the replicas in turn.
    expect(counts).toEqual(Object.fromEntries(pods.map((p) => [p.metadata.name, 10])));

    // Requests keep flowing (bounded: 300 requests or 25 s) while one replica is deleted.
    const victim = pods[0] as PodView;
    const script = [
      'end=$(( $(date +%s) + 25 ))',
      'i=0',
      'while [ $i -lt 300 ] && [ $(date +%s) -lt $end ]; do',
      '  i=$((i+1))',
      `  out=$(curl -sS --fail-with-body --max-time 5 ${SERVICE_URL} 2>&1) || out="FAILED $out"`,
      `  echo "${UPTIME_MS_SH} $out"`,
      'done',
    ].join('\n');
    const traffic = inClient(cluster, ['sh', '-c', script], 60_000);
    await new Promise((r) => setTimeout(r, 2_000));
    const deletedAt = await uptimeMs();
    await cluster.kubectl(['-n', NS, 'delete', 'pod', victim.metadata.name, '--wait=true', '--timeout=60s']);
    const goneAt = await uptimeMs();
    const lines = (await traffic).stdout.split('\n').filter(Boolean);
    const failed = lines.filter((l) => l.includes('FAILED'));
    const fromVictim = lines
      .filter((l) => servedBy(l)?.pod === victim.metadata.name)
      .map((l) => Number(l.split(' ')[0]));
    const last =
      fromVictim.length > 0 ? `${Math.max(...fromVictim) - deletedAt} ms after the delete call` : 'none';
    process.stderr.write(
      `mesh e2e: ${lines.length} requests during deletion, ${failed.length} failed; last answer from the deleted pod: ` +
        `${last} (pod gone from the API after ${goneAt - deletedAt} ms)\n`,
    );
    expect(lines.length).toBeGreaterThan(20);
    expect(failed).toEqual([]);
    // Nothing is answered by the deleted pod once it is gone (its processes are dead).
    expect(fromVictim.filter((t) => t > goneAt)).toEqual([]);
    // And traffic went on after the deletion, to the other replicas.
    expect(lines.some((l) => Number(l.split(' ')[0]) > goneAt && servedBy(l))).toBe(true);
  });

  it('cloud cut off: established traffic and DNS keep working, a restarted gateway serves its persisted catalog; restored, the changes made meanwhile arrive', async () => {
    expect((await curl(cluster)).code).toBe(0);
    // Site-to-site traffic that survives the cloud must not ride the cloud's relay.
    const clientNode = (await livePods(cluster, 'app=client'))[0]?.spec.nodeName as string;
    const { paths, ms } = await offTheRelay(cluster, clientNode);
    process.stderr.write(
      `mesh e2e: new streams from ${clientNode} on ${paths.join(', ')} (checked after ${ms} ms)\n`,
    );
    // Named now: while the cloud is away, kubectl exec cannot reach the kubelets, so the
    // test runs commands in the client through its node's containerd.
    const pod = await clientRef(cluster);
    await cluster.cutCloud();
    try {
      // The sites really lost the cloud.
      const node = cluster.node('node1-1');
      const probe = await cluster.lab.run(node.netns, [
        'curl',
        '-sk',
        '--max-time',
        '2',
        `https://${cluster.cloud.addr}:6443/healthz`,
      ]);
      expect(probe.code).not.toBe(0);
      for (let i = 0; i < 5; i++) {
        const r = await curl(cluster, SERVICE_URL, 5, pod);
        expect(r.stderr).toBe('');
        expect(servedBy(r.stdout)?.pod).toMatch(/^nginx-/);
      }
      const a = await inClient(cluster, ['dig', '+short', '+time=2', '+tries=1', FQDN], 30_000, pod);
      expect(a.stdout.trim()).toMatch(/^10\.96\.\d+\.\d+$/);
      // A change made while the sites are cut off...
      await apply(cluster, [
        {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: 'late-svc', namespace: NS },
          spec: { selector: { app: 'nginx' }, ports: [{ name: 'http', port: 8080, targetPort: 80 }] },
        },
      ]);
      await new Promise((r) => setTimeout(r, 3_000));
      // ...does not reach site 1 while the link is down.
      const late = await inClient(
        cluster,
        ['dig', '+time=2', '+tries=1', `late-svc.${NS}.svc.cluster.local`],
        30_000,
        pod,
      );
      expect(late.stdout).toMatch(/status: NXDOMAIN/);
      // Offline autonomy: site 1's gateway restarted while the cloud is away serves the
      // catalog it persisted, and the client's sidecar (on-demand) is back on its lookups.
      await cluster.restartGateway(clientNode);
      const metrics = await cluster.gatewayMetrics(clientNode);
      expect(
        Number(/^edgemesh_gateway_catalog_services\{[^}]*\} (\d+)/m.exec(metrics)?.[1]),
      ).toBeGreaterThanOrEqual(5);
      await waitFor(
        async () =>
          Number(
            /^edgemesh_gateway_lookup_clients\{[^}]*\} (\d+)/m.exec(
              await cluster.gatewayMetrics(clientNode),
            )?.[1],
          ) >= 1,
        30_000,
        250,
        "the client's sidecar back on the restarted gateway's lookups",
      );
      expect(
        (await inClient(cluster, ['dig', '+short', '+time=2', '+tries=1', FQDN], 30_000, pod)).stdout.trim(),
      ).toMatch(/^10\.96\.\d+\.\d+$/);
    } finally {
      await cluster.restoreCloud();
    }
    const r = await waitFor(
      async () => {
        const res = await curl(cluster, `http://late-svc.${NS}.svc.cluster.local:8080/`);
        return res.code === 0 && res;
      },
      120_000,
      500,
      'late-svc reachable from site 1 after the cloud came back',
    );
    expect(servedBy(r.stdout)?.pod).toMatch(/^nginx-/);
  });

  it('API server and tunnel-server killed: traffic and DNS keep working; both back, the gateways resync', async () => {
    expect((await curl(cluster)).code).toBe(0);
    const clientNode = (await livePods(cluster, 'app=client'))[0]?.spec.nodeName as string;
    // The client's gateway was restarted during the previous test's cut: its search for a
    // direct path runs when its relay opens and, if that finds none, again after 30 s and
    // 60 s more (gateway/tunnel/peer.ts). Wait through the third search, not only the first.
    await offTheRelay(cluster, clientNode, UPGRADE_RETRY_START_MS * 3 + 30_000);
    const pod = await clientRef(cluster); // named now: no API while it is down
    await cluster.crashCloud();
    try {
      await expect(cluster.kubectl(['get', 'nodes'], { timeoutMs: 10_000 })).rejects.toThrow();
      for (let i = 0; i < 5; i++) {
        const r = await curl(cluster, SERVICE_URL, 5, pod);
        expect(r.stderr).toBe('');
        expect(servedBy(r.stdout)?.pod).toMatch(/^nginx-/);
      }
      const srv = await inClient(
        cluster,
        ['dig', '+short', '+time=2', '+tries=1', 'SRV', `_http._tcp.${FQDN}`],
        30_000,
        pod,
      );
      expect(srv.stdout).toContain(` 12345 ${FQDN}.`);
    } finally {
      await cluster.recoverCloud();
    }
    // The gateways' watches reconnect: a Service created now reaches site 1.
    await apply(cluster, [
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'back-svc', namespace: NS },
        spec: { selector: { app: 'nginx' }, ports: [{ name: 'http', port: 8081, targetPort: 80 }] },
      },
    ]);
    const r = await waitFor(
      async () => {
        const res = await curl(cluster, `http://back-svc.${NS}.svc.cluster.local:8081/`);
        return res.code === 0 && res;
      },
      120_000,
      500,
      'back-svc reachable from site 1 after the restart',
    );
    expect(servedBy(r.stdout)?.pod).toMatch(/^nginx-/);
  }, 300_000);

  it('a namespace without the label and a pod with the opt-out label are not injected (and their traffic is not captured)', async () => {
    const plainServer = { ...nginxDeployment(images(), 1), metadata: { name: 'nginx', namespace: 'plain' } };
    const optOut = clientDeployment(images(), 'opted-out', { 'sidecar.edgemesh.io/inject': 'false' });
    // The demo namespace is labelled (as the earlier steps left it; set here so this test stands alone).
    await apply(cluster, [
      namespace('plain'),
      namespace(NS, { 'edgemesh.io/injection': 'enabled' }),
      nginxConfig('plain'),
      plainServer,
      optOut,
    ]);
    // Control: the webhook is live, so a pod in the labelled namespace without the opt-out is injected.
    await apply(cluster, [
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'control', namespace: NS },
        spec: {
          nodeSelector: { 'kubernetes.io/hostname': 'node1-1' },
          containers: [{ name: 'c', image: images().client, command: ['sleep', 'infinity'] }],
        },
      },
    ]);
    const control = await getJson<PodView>(cluster, ['-n', NS, 'get', 'pod', 'control']);
    expect(isInjected(control)).toBe(true);
    await cluster.kubectl(['-n', NS, 'delete', 'pod', 'control', '--wait=false']);
    const [plain] = await readyPods('app=nginx', 1, 'plain');
    const [opted] = await readyPods('app=opted-out', 1);
    for (const [ns, pod, container] of [
      ['plain', plain, 'nginx'],
      [NS, opted, 'client'],
    ] as const) {
      if (!pod) throw new Error('missing pod');
      expect(isInjected(pod), `${ns}/${pod.metadata.name}`).toBe(false);
      expect((pod.spec.initContainers ?? []).map((c) => c.name)).toEqual(
        container === 'nginx' ? ['page'] : [],
      );
      expect(pod.metadata.annotations?.['sidecar.edgemesh.io/status']).toBeUndefined();
      expect(await podRules(pod, container)).not.toMatch(/edgemesh/i);
    }
  });
  it("a node's kubelet and containerd restarted: the pods keep running, the mesh carries traffic on", async () => {
    const before = await livePods(cluster, 'app=client');
    const clientNode = before[0]?.spec.nodeName as string;
    const serverNodes = new Set((await livePods(cluster, 'app=nginx')).map((p) => p.spec.nodeName as string));
    for (const name of [clientNode, ...serverNodes]) {
      await cluster.node(name).real.restartRuntime();
      cluster.step(`kubelet + containerd on ${name} restarted`);
    }
    const after = await livePods(cluster, 'app=client');
    expect(after.map((p) => p.metadata.uid)).toEqual(before.map((p) => p.metadata.uid));
    const r = await waitFor(
      async () => {
        const res = await curl(cluster);
        return res.code === 0 && res;
      },
      60_000,
      500,
      'curl by name after the runtime restarts',
    );
    expect(servedBy(r.stdout)?.pod).toMatch(/^nginx-/);
  });

  it('edgemesh install run again keeps the mesh CA, the webhook certificates and the settings', async () => {
    const secretHash = async (name: string) =>
      JSON.stringify(
        (
          await getJson<{ data: Record<string, string> }>(cluster, [
            '-n',
            'edgemesh-system',
            'get',
            'secret',
            name,
          ])
        ).data,
      );
    const [ca, tls] = [await secretHash('edgemesh-mesh-ca'), await secretHash('edgemesh-webhook-tls')];
    const images = cluster.images;
    if (!images) throw new Error('cluster has no images');
    const again = await cluster.edgemesh(['install', '--image', images.edgemesh]);
    expect(again.stderr).toMatch(/mesh CA: kept/);
    expect(again.stderr).toMatch(/webhook certificates: kept/);
    expect(again.stderr).toMatch(/tunnel-servers: kept/);
    await cluster.kubectl(['apply', '-f', '-'], { input: again.stdout });
    expect(await secretHash('edgemesh-mesh-ca')).toBe(ca);
    expect(await secretHash('edgemesh-webhook-tls')).toBe(tls);
    expect((await cluster.edgemesh(['config', 'get', 'tunnel-servers'])).stdout.trim()).toMatch(
      /^198\.51\.100\.\d+:\d+$/,
    );
    expect((await curl(cluster)).code).toBe(0);
  });

  it("the README's uninstall leaves nothing of ours behind", async () => {
    await cluster.kubectl(['delete', 'namespace', NS, 'plain', '--wait=true', '--timeout=120s'], {
      timeoutMs: 130_000,
    });
    await cluster.kubectl(['delete', 'mutatingwebhookconfiguration', 'edgemesh-sidecar-injector']);
    const images = cluster.images;
    if (!images) throw new Error('cluster has no images');
    const rendered = await cluster.edgemesh(['install', '--mesh-ca=skip', '--image', images.edgemesh]);
    await cluster.kubectl(['delete', '--ignore-not-found', '--wait=true', '--timeout=120s', '-f', '-'], {
      input: rendered.stdout,
      timeoutMs: 130_000,
    });
    await expectNothingOfOursLeft(cluster);
  });
});
