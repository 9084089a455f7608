import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { createCa as createMeshCa } from '../lib/certs.ts';
import { STATUS_FORMAT } from '../lib/gateway-status.ts';
import { GoldenDir } from '../test/harness/golden.ts';
import { createCa, createServingCert, serviceDnsNames } from '../webhook/tls/certs.ts';
import { type CheckResult, checkExitCode, formatChecks } from './check-format.ts';
import { type InstallInput, installChecks, workloadOf } from './check-install.ts';
import { INSTALL_ACCESS, kubernetesMinor, type PreInput, preChecks } from './check-pre.ts';
import { type PodSummary, podSummary } from './pods.ts';
import type { NodeStatus } from './status-read.ts';

// `edgemesh check [--pre]` (issue 17 item 2): what was read → ✔/‼/× lines with hints,
// rendered to testdata/<case>.check.golden (REFRESH_GOLDEN=1 rewrites them). Certificates are
// real (made by webhook-tls's own code), so the caBundle and expiry checks verify signatures.

const NOW = new Date(Date.UTC(2026, 11, 6, 8, 0, 0));
const DAY = 86_400_000;
const NS = 'edgemesh-system';
const IMAGE = 'localhost/edgemesh:0.1.0-4f2a9c01d3be';
const OLD = 'localhost/edgemesh:0.0.9-0123456789ab';

// --- pre-installation ---------------------------------------------------------------------

const allowed = () => INSTALL_ACCESS.map(() => true);
const preBase: PreInput = {
  server: 'https://10.0.0.1:6443',
  namespace: NS,
  version: 'v1.31.4',
  access: allowed(),
  namespaceLabels: null,
};

function pod(
  ns: string,
  name: string,
  node: string,
  o: {
    part?: string;
    image?: string;
    sidecar?: string;
    ready?: boolean;
    owner?: [string, string];
    hash?: string;
    phase?: string;
    hostNetwork?: boolean;
    optOut?: boolean;
    terminating?: boolean;
  } = {},
): PodSummary {
  return podSummary(
    {
      metadata: {
        namespace: ns,
        name,
        labels: {
          ...(o.part
            ? { 'app.kubernetes.io/name': `edgemesh-${o.part}`, 'app.kubernetes.io/part-of': 'edgemesh' }
            : { app: name }),
          ...(o.hash ? { 'pod-template-hash': o.hash } : {}),
          ...(o.optOut ? { 'sidecar.edgemesh.io/inject': 'false' } : {}),
        },
        ...(o.owner ? { ownerReferences: [{ kind: o.owner[0], name: o.owner[1], controller: true }] } : {}),
        ...(o.terminating ? { deletionTimestamp: '2026-12-06T07:59:58Z' } : {}),
      },
      spec: {
        nodeName: node,
        hostNetwork: o.hostNetwork ?? false,
        containers: [{ name: o.part ?? 'app', image: o.image ?? 'nginx:1.27' }],
        ...(o.sidecar
          ? {
              initContainers: [
                { name: 'edgemesh-init', image: o.sidecar },
                { name: 'edgemesh-proxy', image: o.sidecar },
              ],
            }
          : {}),
      },
      status: {
        phase: o.phase ?? 'Running',
        conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }],
      },
    },
    'fixture',
  );
}

// --- installed ----------------------------------------------------------------------------

const webhookCa = createCa(new Date(NOW.getTime() - 100 * DAY));
const otherCa = createCa(new Date(NOW.getTime() - 100 * DAY), 'someone-else');
const dnsNames = serviceDnsNames('edgemesh-webhook', NS);
const serving = createServingCert(webhookCa, dnsNames, new Date(NOW.getTime() - 100 * DAY));
const expiring = createServingCert(webhookCa, dnsNames, new Date(NOW.getTime() - 355 * DAY));
const meshCa = createMeshCa('edgemesh mesh CA', { now: new Date(NOW.getTime() - DAY) });
const otherMeshCa = createMeshCa('edgemesh mesh CA', { now: new Date(NOW.getTime() - DAY) });

const parts = [
  pod(NS, 'edgemesh-webhook-6d9f-a', 'cloud', { part: 'webhook', image: IMAGE }),
  pod(NS, 'edgemesh-webhook-6d9f-b', 'cloud', { part: 'webhook', image: IMAGE }),
  pod(NS, 'edgemesh-tunnel-server-7f8e-a', 'cloud', { part: 'tunnel-server', image: IMAGE }),
  pod(NS, 'edgemesh-signer-5c7d-a', 'cloud', { part: 'signer', image: IMAGE }),
  ...['cloud', 'edge-1', 'edge-2'].map((n) =>
    pod(NS, `edgemesh-gateway-${n}`, n, { part: 'gateway', image: IMAGE }),
  ),
];
/** A gateway's /status as check reads it: its tunnel state and which server links are up. */
function gw(
  node: string,
  servers: [string, boolean][],
  state: 'running' | 'off' | 'starting' | 'unreachable' = 'running',
  detail = `tunnel: running, ${servers.filter(([, up]) => up).length} of ${servers.length} tunnel-servers connected`,
): NodeStatus {
  return {
    node,
    pod: `edgemesh-gateway-${node}`,
    result: {
      status: {
        format: STATUS_FORMAT,
        node,
        now: NOW.getTime(),
        ready: true,
        readiness: 'ready',
        tunnel: {
          state,
          detail,
          listenPort: 20006,
          servers: servers.map(([address, up]) => ({
            address,
            name: null,
            up,
            observed: null,
            localPort: null,
          })),
        },
        peers: [],
        omittedPeers: 0,
        nat: { probes: [], punches: [] },
      },
    },
  };
}
const TS = '198.51.100.200:20006';
const TS2 = '203.0.113.200:20006';

const app = (ns: string, name: string, node: string, o: Parameters<typeof pod>[3] = {}) =>
  pod(ns, name, node, { owner: ['ReplicaSet', `${name.split('-')[0]}-5d8f7`], hash: '5d8f7', ...o });

const healthy: InstallInput = {
  now: NOW,
  namespace: NS,
  client: { version: '0.1.0', commit: 'unknown', dirty: false, source: 'checkout', nodeVersion: 'v24.21.0' },
  caBundles: [
    { webhook: 'namespace.sidecar-injector.edgemesh.io', pem: webhookCa.certPem },
    { webhook: 'object.sidecar-injector.edgemesh.io', pem: webhookCa.certPem },
  ],
  servingCert: serving.certPem,
  probe: { namespace: 'default', initContainers: ['edgemesh-init', 'edgemesh-proxy'] },
  meshCaConfigMap: meshCa.certPem,
  meshCaSecret: meshCa.certPem,
  partPods: parts,
  allPods: [
    ...parts,
    app('demo', 'web-a1', 'edge-1', { sidecar: IMAGE }),
    app('demo', 'web-a2', 'edge-2', { sidecar: IMAGE }),
    pod('kube-system', 'coredns-1', 'cloud'),
  ],
  gatewayReadiness: new Map(),
  tunnelServersSetting: '198.51.100.200:20006',
  gatewayStatuses: ['cloud', 'edge-1', 'edge-2'].map((n) => gw(n, [[TS, true]])),
  webhookYaml: 'port: 9443\n',
  injectionNamespaces: ['demo'],
};

const broken: InstallInput = {
  ...healthy,
  caBundles: [
    { webhook: 'namespace.sidecar-injector.edgemesh.io', pem: otherCa.certPem },
    { webhook: 'object.sidecar-injector.edgemesh.io', pem: '' },
  ],
  servingCert: expiring.certPem,
  probe: new Error(
    'a dry-run pod in default: HTTP 500: InternalError: Internal error occurred: failed calling webhook "object.sidecar-injector.edgemesh.io": failed to call webhook: Post "https://edgemesh-webhook.edgemesh-system.svc:443/mutate?timeout=10s": tls: failed to verify certificate: x509: certificate signed by unknown authority',
  ),
  meshCaSecret: otherMeshCa.certPem,
  partPods: [
    pod(NS, 'edgemesh-webhook-6d9f-a', 'cloud', { part: 'webhook', image: IMAGE }),
    pod(NS, 'edgemesh-webhook-6d9f-b', 'cloud', {
      part: 'webhook',
      image: IMAGE,
      ready: false,
      phase: 'Pending',
    }),
    pod(NS, 'edgemesh-tunnel-server-7f8e-a', 'cloud', { part: 'tunnel-server', image: IMAGE, ready: false }),
    pod(NS, 'edgemesh-gateway-cloud', 'cloud', { part: 'gateway', image: IMAGE }),
    pod(NS, 'edgemesh-gateway-edge-1', 'edge-1', { part: 'gateway', image: IMAGE, ready: false }),
  ],
  allPods: [
    app('demo', 'web-a1', 'edge-1', { sidecar: IMAGE }),
    app('demo', 'web-a2', 'edge-2', { sidecar: OLD }),
    app('demo', 'web-a3', 'edge-2', { sidecar: OLD }),
    pod('demo', 'db-0', 'cloud', { owner: ['StatefulSet', 'db'] }),
    app('demo', 'api-x1', 'cloud'),
    pod('demo', 'debug', 'cloud'),
    app('demo', 'legacy-1', 'cloud', { optOut: true }),
    app('demo', 'api-old', 'cloud', { terminating: true }),
    pod('demo', 'node-agent-x', 'cloud', { owner: ['DaemonSet', 'node-agent'], hostNetwork: true }),
    pod('demo', 'migrate-x', 'cloud', { owner: ['Job', 'migrate'], phase: 'Succeeded' }),
  ],
  gatewayReadiness: new Map([
    [
      'edgemesh-gateway-edge-1',
      "/ready: not ready: tunnel cannot start (this node's configuration, since 2026-12-06T07:55:00.000Z): cannot read the mesh CA certificate /etc/edgemesh/mesh-ca/ca.crt: ENOENT",
    ],
  ]),
  tunnelServersSetting: 'tunnel.edgemesh.example:20006',
};

const CASES: { name: string; results: CheckResult[]; exit: number }[] = [
  { name: 'pre-ok', results: preChecks(preBase), exit: 0 },
  {
    name: 'pre-upgrade',
    results: preChecks({
      ...preBase,
      namespaceLabels: { 'edgemesh.io/injection': 'disabled' },
      namespacePods: parts,
      namespaceConfigMaps: ['edgemesh-config', 'kube-root-ca.crt'],
    }),
    exit: 0,
  },
  {
    name: 'pre-fail',
    results: preChecks({
      ...preBase,
      version: 'v1.28.9',
      access: INSTALL_ACCESS.map((a, i) =>
        a.resource === 'clusterroles' || a.resource === 'mutatingwebhookconfigurations'
          ? false
          : i === 1
            ? new Error(
                'SelfSubjectAccessReview (create serviceaccounts): no answer from https://10.0.0.1:6443 within 10 s',
              )
            : true,
      ),
      namespaceLabels: {},
      namespacePods: [pod(NS, 'other-app-0', 'cloud')],
      namespaceConfigMaps: ['kube-root-ca.crt', 'other-app'],
    }),
    exit: 1,
  },
  {
    name: 'pre-unreachable',
    results: preChecks({
      ...preBase,
      version: new Error(
        "the API server's version: GET https://10.0.0.1:6443/version: connection refused (ECONNREFUSED): nothing listens there",
      ),
    }),
    exit: 1,
  },
  { name: 'installed-ok', results: installChecks(healthy), exit: 0 },
  {
    // A cluster where nothing was applied yet (what the e2e's bare control plane answers).
    name: 'installed-nothing',
    results: installChecks({
      ...healthy,
      caBundles: null,
      servingCert: null,
      probe: { namespace: 'default', initContainers: [] },
      meshCaConfigMap: null,
      meshCaSecret: null,
      partPods: [],
      allPods: [pod('default', 'web-1', 'node-a')],
      tunnelServersSetting: null,
      gatewayStatuses: [],
      webhookYaml: null,
      injectionNamespaces: [],
    }),
    exit: 1,
  },
  { name: 'installed-broken', results: installChecks(broken), exit: 1 },
  {
    // Two tunnel-servers: one gateway reaches neither, one only the first and still runs with
    // the old setting, one was never restarted after the setting, one the API server cannot ask.
    name: 'installed-links',
    results: installChecks({
      ...healthy,
      tunnelServersSetting: `${TS},${TS2}`,
      gatewayStatuses: [
        gw('cloud', [
          [TS, true],
          [TS2, true],
        ]),
        gw('edge-1', [
          [TS, false],
          [TS2, false],
        ]),
        gw('edge-2', [[TS, true]]),
        gw('edge-3', [], 'off', 'tunnel: off (no tunnel-servers configured: same-node streams only)'),
        {
          node: 'edge-4',
          pod: 'edgemesh-gateway-x7k2p',
          result: {
            error:
              "the API server cannot reach the gateway's port 15090 on its node (HTTP 502: error trying to reach service: dial tcp 192.168.7.4:15090: i/o timeout)",
            hint: 'nodes behind a NAT and KubeEdge edge nodes are not reachable from the API server; on node edge-4: curl -s http://127.0.0.1:15090/status',
          },
        },
      ],
    }),
    exit: 1,
  },
  {
    // Every link up on the gateways asked; one still starting its tunnel; one not askable.
    name: 'installed-links-warn',
    results: installChecks({
      ...healthy,
      gatewayStatuses: [
        gw('cloud', [[TS, true]]),
        gw('edge-1', [], 'starting', 'tunnel: starting (enrolling at 198.51.100.200:20006)'),
      ],
    }),
    exit: 0,
  },
  {
    name: 'installed-unreadable',
    results: installChecks({
      ...healthy,
      caBundles: null,
      meshCaConfigMap: null,
      allPods: new Error(
        'the pods in all namespaces: forbidden: HTTP 403: Forbidden: pods is forbidden: User "dev" cannot list resource "pods" in API group "" at the cluster scope',
      ),
      tunnelServersSetting: null,
    }),
    exit: 1,
  },
];

describe('edgemesh check output (golden)', () => {
  const golden = new GoldenDir(new URL('./testdata', import.meta.url).pathname);
  for (const c of CASES)
    it(c.name, () => {
      golden.expect(`${c.name}.check.golden`, formatChecks(c.results));
      expect(checkExitCode(c.results)).toBe(c.exit);
    });
  afterAll(() => {
    expect(golden.unused('.check.golden')).toEqual([]);
  });
});

describe('checks that must be able to fail', () => {
  const byId = (results: CheckResult[], id: string) =>
    results.filter((r) => r.id === id).map((r) => r.status);
  it('each installed check passes on the healthy input and fails on the broken one', () => {
    const good = installChecks(healthy);
    const bad = installChecks(broken);
    expect(good.every((r) => r.status === 'pass')).toBe(true);
    for (const id of [
      'webhook-ca-bundle',
      'webhook-cert-expiry',
      'webhook-answers',
      'mesh-ca',
      'gateways-ready',
      'tunnel-servers-ready',
      'tunnel-servers-setting',
      'sidecar-versions',
      'pending-injection',
    ])
      expect(byId(bad, id), id).toEqual(['fail']);
    expect(byId(bad, 'webhook-ready')).toEqual(['warn']);
  });

  it('tunnel-server links: fail when a gateway reaches none, warn when only some or unaskable', () => {
    const links = (statuses: NodeStatus[]) =>
      installChecks({ ...healthy, tunnelServersSetting: `${TS},${TS2}`, gatewayStatuses: statuses })
        .filter((r) => r.id.startsWith('tunnel-links') || r.id === 'tunnel-servers-applied')
        .map((r) => `${r.id} ${r.status}`);
    const both = (a: boolean, b: boolean): [string, boolean][] => [
      [TS, a],
      [TS2, b],
    ];
    expect(links([gw('a', both(true, true))])).toEqual(['tunnel-links pass']);
    expect(links([gw('a', both(true, true)), gw('b', both(false, false))])).toEqual(['tunnel-links fail']);
    expect(links([gw('a', both(true, false))])).toEqual(['tunnel-links warn']);
    expect(links([gw('a', [[TS, true]])])).toEqual(['tunnel-links pass', 'tunnel-servers-applied warn']);
    expect(links([gw('a', [], 'unreachable', 'tunnel: unreachable')])).toEqual(['tunnel-links fail']);
    expect(
      links([gw('a', both(true, true)), { node: 'b', pod: 'p', result: { error: 'e', hint: 'h' } }]),
    ).toEqual(['tunnel-links pass', 'tunnel-links-unchecked warn']);
    expect(
      installChecks({ ...healthy, gatewayStatuses: new Error('forbidden') }).find(
        (r) => r.id === 'tunnel-links',
      )?.status,
    ).toBe('fail');
  });

  it('tells the Kubernetes version from gitVersion', () => {
    expect(kubernetesMinor('v1.29.0-eks-1234')).toEqual([1, 29]);
    expect(kubernetesMinor('v1.36.3')).toEqual([1, 36]);
    expect(kubernetesMinor('garbage')).toBeUndefined();
    expect(preChecks({ ...preBase, version: 'v1.29.0' })[1].status).toBe('pass');
    expect(preChecks({ ...preBase, version: 'v2.0.0' })[1].status).toBe('pass');
    expect(preChecks({ ...preBase, version: 'v1.28.15' })[1].status).toBe('fail');
  });

  it('names the workload to restart', () => {
    expect(workloadOf(app('demo', 'web-a1', 'n'))).toBe('deployment/web');
    expect(workloadOf(pod('demo', 'db-0', 'n', { owner: ['StatefulSet', 'db'] }))).toBe('statefulset/db');
    expect(workloadOf(pod('demo', 'rs-x', 'n', { owner: ['ReplicaSet', 'bare-rs'] }))).toBe(
      'replicaset/bare-rs',
    );
    expect(workloadOf(pod('demo', 'debug', 'n'))).toBe('pod/debug');
  });
});

describe('the permissions --pre asks for', () => {
  // Kind → resource as the API names it; the manifests must not grow a kind --pre forgets.
  const RESOURCE: Record<string, string> = {
    Namespace: 'namespaces',
    ServiceAccount: 'serviceaccounts',
    ConfigMap: 'configmaps',
    Secret: 'secrets',
    Service: 'services',
    Deployment: 'deployments',
    DaemonSet: 'daemonsets',
    PodDisruptionBudget: 'poddisruptionbudgets',
    NetworkPolicy: 'networkpolicies',
    Role: 'roles',
    RoleBinding: 'rolebindings',
    ClusterRole: 'clusterroles',
    ClusterRoleBinding: 'clusterrolebindings',
    MutatingWebhookConfiguration: 'mutatingwebhookconfigurations',
  };
  it('cover every kind in manifests/ (base and overlays)', () => {
    const root = new URL('../manifests', import.meta.url).pathname;
    const files = [
      ...readdirSync(join(root, 'base')).map((f) => join(root, 'base', f)),
      ...readdirSync(join(root, 'overlays')).flatMap((d) =>
        readdirSync(join(root, 'overlays', d)).map((f) => join(root, 'overlays', d, f)),
      ),
    ].filter((f) => f.endsWith('.yaml') && !f.endsWith('kustomization.yaml'));
    const kinds = new Set(
      files.flatMap((f) =>
        YAML.parseAllDocuments(readFileSync(f, 'utf8'))
          .map((d) => (d.toJS() as { kind?: string } | null)?.kind)
          .filter((k): k is string => typeof k === 'string'),
      ),
    );
    expect(kinds.size).toBeGreaterThan(10);
    for (const kind of kinds) {
      const resource = RESOURCE[kind];
      expect(resource, `kind ${kind} in manifests/: add it to RESOURCE and INSTALL_ACCESS`).toBeDefined();
      expect(
        INSTALL_ACCESS.some((a) => a.verb === 'create' && a.resource === resource),
        `create ${resource}`,
      ).toBe(true);
    }
  });
});
