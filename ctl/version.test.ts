import { afterAll, describe, expect, it } from 'vitest';
import { ApiError } from '../lib/kube/client.ts';
import { GoldenDir } from '../test/harness/golden.ts';
import { describeApiFailure } from './cluster.ts';
import { injectedImage } from './injected-image.ts';
import { chooseKubeconfig } from './kube.ts';
import { type PodSummary, podListPage, podSummary } from './pods.ts';
import { compareVersions, imageVersion, skewOf } from './semver.ts';
import { formatVersionReport } from './version-format.ts';
import { type VersionReport, versionReport } from './version-report.ts';

// `edgemesh version` (issue 17 item 1): tags → versions, precedence, skew, and the text a
// user reads, rendered from fixed inputs to testdata/<case>.version.golden
// (REFRESH_GOLDEN=1 rewrites them).

describe('image tags and versions', () => {
  it('reads the release tag, scripts/image builds and pre-releases', () => {
    expect(imageVersion('ghcr.io/edgemesh/edgemesh:0.1.0')).toEqual({ version: '0.1.0', build: undefined });
    expect(imageVersion('localhost/edgemesh:0.1.0-4f2a9c01d3be')).toEqual({
      version: '0.1.0',
      build: '4f2a9c01d3be',
    });
    expect(imageVersion('registry:5000/edgemesh:v0.2.0-rc.1')).toEqual({
      version: '0.2.0-rc.1',
      build: undefined,
    });
    expect(imageVersion('registry:5000/edgemesh:0.2.0-rc.1-4f2a9c01d3be@sha256:ab')).toEqual({
      version: '0.2.0-rc.1',
      build: '4f2a9c01d3be',
    });
  });

  it('has no version for tags that are not one', () => {
    for (const image of ['edgemesh:latest', 'registry:5000/edgemesh', 'edgemesh@sha256:abcd', '', 'x:0.1'])
      expect(imageVersion(image).version, image).toBeUndefined();
  });

  it('orders versions as semver does', () => {
    const sorted = [
      '0.1.0-alpha',
      '0.1.0-alpha.1',
      '0.1.0-alpha.beta',
      '0.1.0-beta.2',
      '0.1.0-beta.11',
      '0.1.0',
      '0.1.1',
      '0.2.0',
      '1.0.0',
    ];
    for (let i = 0; i < sorted.length - 1; i++) {
      expect(compareVersions(sorted[i], sorted[i + 1]), `${sorted[i]} < ${sorted[i + 1]}`).toBe(-1);
      expect(compareVersions(sorted[i + 1], sorted[i])).toBe(1);
    }
    expect(compareVersions('0.10.0', '0.9.9')).toBe(1);
    expect(compareVersions('1.2.3', 'v1.2.3')).toBe(0);
    expect(() => compareVersions('1.2', '1.2.3')).toThrow('not a version: "1.2"');
  });

  it('tells skew against the client', () => {
    expect(skewOf('0.1.0', '0.1.0')).toBe('same');
    expect(skewOf('0.0.9', '0.1.0')).toBe('older');
    expect(skewOf('0.2.0', '0.1.0')).toBe('newer');
    expect(skewOf(undefined, '0.1.0')).toBe('unknown');
    expect(skewOf('0.1.0', 'unknown')).toBe('unknown');
  });
});

describe('API answers are validated', () => {
  it('names the list and the item', () => {
    expect(() => podListPage({ kind: 'Status' }, 'the pods')).toThrow('the pods: the answer is not a list');
    expect(() => podListPage({ items: [{}] }, 'the pods')).toThrow('the pods: an item is not a Pod');
    expect(() =>
      podSummary(
        { metadata: { name: 'a', namespace: 'b' }, spec: { initContainers: [{ image: 'x' }] } },
        'the pods',
      ),
    ).toThrow('the pods: Pod b/a spec.initContainers[0]: a container without a name');
    expect(podListPage({ items: [], metadata: { continue: 'tok' } }, 'x').continue).toBe('tok');
  });

  it('says forbidden, unauthorized and timeouts in words', () => {
    const url = 'https://10.0.0.1:6443/api/v1/pods?limit=500';
    expect(
      describeApiFailure(
        'the pods in all namespaces',
        new ApiError(
          url,
          'HTTP 403: Forbidden: pods is forbidden: User "dev" cannot list resource "pods"',
          403,
        ),
        10_000,
      ),
    ).toBe(
      'the pods in all namespaces: forbidden: HTTP 403: Forbidden: pods is forbidden: User "dev" cannot list resource "pods"',
    );
    expect(describeApiFailure('v', new ApiError(url, 'HTTP 401', 401), 10_000)).toBe(
      'v: unauthorized (HTTP 401): the API server did not accept the credentials',
    );
    expect(describeApiFailure('v', new ApiError(url, 'aborted'), 10_000)).toBe(
      'v: no answer from https://10.0.0.1:6443 within 10 s',
    );
    expect(
      describeApiFailure(
        'v',
        new ApiError(url, 'connection refused (ECONNREFUSED): nothing listens there'),
        10_000,
      ),
    ).toBe(`v: GET ${url}: connection refused (ECONNREFUSED): nothing listens there`);
  });
});

describe('the image injected now, as the webhook decides it', () => {
  const webhook = (image: string, args: string[] = [], env: { name: string; value: string }[] = []) =>
    podSummary(
      {
        metadata: { namespace: 'edgemesh-system', name: `wh-${args.length}-${image.length}` },
        spec: { containers: [{ name: 'webhook', image, args: ['webhook', ...args], env }] },
      },
      'fixture',
    );
  it('takes --image, then injection.image, then its own image', () => {
    expect(injectedImage([webhook('a:1', ['--image=b:2'])], 'injection: {image: c:3}')).toEqual({
      image: 'b:2',
      from: "the webhook's --image",
    });
    expect(injectedImage([webhook('a:1', ['--image', 'b:2'])], null)).toMatchObject({ image: 'b:2' });
    expect(
      injectedImage([webhook('a:1', [], [{ name: 'EDGEMESH_IMAGE', value: 'e:5' }])], null),
    ).toMatchObject({
      image: 'e:5',
    });
    expect(injectedImage([webhook('a:1')], 'injection: {image: c:3}')).toEqual({
      image: 'c:3',
      from: 'injection.image in ConfigMap edgemesh-config',
    });
    expect(injectedImage([webhook('a:1')], 'port: 9443')).toEqual({
      image: 'a:1',
      from: "the webhook's own image",
    });
    expect(injectedImage([webhook('a:1')], null)).toMatchObject({ image: 'a:1' });
  });

  it('says why it cannot tell', () => {
    expect(injectedImage([], null)).toEqual({ image: undefined, why: 'no webhook pods' });
    expect(injectedImage([webhook('a:1'), webhook('a:22')], null)).toEqual({
      image: undefined,
      why: 'the webhook pods run different images (a rollout?)',
    });
    expect(injectedImage([webhook('a:1')], new Error('forbidden'))).toEqual({
      image: undefined,
      why: 'ConfigMap edgemesh-config could not be read: forbidden',
    });
    expect(injectedImage([webhook('a:1')], 'injection: [')).toMatchObject({
      why: expect.stringMatching(/^ConfigMap edgemesh-config webhook\.yaml is not YAML: /),
    });
  });
});

describe('which kubeconfig, as kubectl decides', () => {
  const has =
    (...files: string[]) =>
    (f: string) =>
      files.includes(f);
  it('takes the flag, then $KUBECONFIG, then ~/.kube/config, then in-cluster', () => {
    expect(chooseKubeconfig('/k', {}, has(), '/home/u')).toEqual({
      kind: 'file',
      file: '/k',
      source: '--kubeconfig',
    });
    expect(chooseKubeconfig(undefined, { KUBECONFIG: '/a:/b' }, has('/b'), '/home/u')).toEqual({
      kind: 'file',
      file: '/b',
      source: '$KUBECONFIG (/b)',
    });
    expect(chooseKubeconfig(undefined, {}, has('/home/u/.kube/config'), '/home/u')).toMatchObject({
      file: '/home/u/.kube/config',
    });
    expect(chooseKubeconfig(undefined, { KUBERNETES_SERVICE_HOST: '10.96.0.1' }, has(), '/home/u')).toEqual({
      kind: 'in-cluster',
      source: 'in-cluster service account',
    });
  });

  it('says why there is none', () => {
    expect(chooseKubeconfig(undefined, { KUBECONFIG: '/a' }, has(), '/home/u')).toEqual({
      kind: 'none',
      why: 'no kubeconfig: none of $KUBECONFIG (/a) exists, nor /home/u/.kube/config, and not in a pod',
    });
  });
});

// --- golden reports ---------------------------------------------------------------------

const BUILD_A = 'localhost/edgemesh:0.1.0-4f2a9c01d3be';
const BUILD_B = 'localhost/edgemesh:0.1.0-77aa00bb11cc';
const OLD = 'localhost/edgemesh:0.0.9-0123456789ab';

function pod(
  ns: string,
  name: string,
  node: string,
  opts: { part?: string; image?: string; sidecar?: string; ready?: boolean },
): PodSummary {
  return podSummary(
    {
      metadata: {
        namespace: ns,
        name,
        labels: opts.part
          ? { 'app.kubernetes.io/name': `edgemesh-${opts.part}`, 'app.kubernetes.io/part-of': 'edgemesh' }
          : { app: name },
      },
      spec: {
        nodeName: node,
        containers: [{ name: opts.part ?? 'app', image: opts.image ?? 'nginx:1.27' }],
        ...(opts.sidecar
          ? {
              initContainers: [
                { name: 'edgemesh-init', image: opts.sidecar },
                { name: 'edgemesh-proxy', image: opts.sidecar },
              ],
            }
          : {}),
      },
      status: {
        phase: 'Running',
        conditions: [{ type: 'Ready', status: opts.ready === false ? 'False' : 'True' }],
      },
    },
    'fixture',
  );
}

const client = (version: string, commit = 'unknown'): VersionReport['client'] => ({
  version,
  commit,
  dirty: false,
  source: commit === 'unknown' ? 'checkout' : 'image',
  nodeVersion: 'v24.21.0',
});
const server = { url: 'https://10.0.0.1:6443', source: '/home/u/.kube/config', kubernetes: 'v1.31.4' };

const healthy = [
  pod('edgemesh-system', 'edgemesh-webhook-6d9f-a', 'cloud', { part: 'webhook', image: BUILD_A }),
  pod('edgemesh-system', 'edgemesh-webhook-6d9f-b', 'cloud', { part: 'webhook', image: BUILD_A }),
  pod('edgemesh-system', 'edgemesh-signer-5c7d-a', 'cloud', { part: 'signer', image: BUILD_A }),
  pod('edgemesh-system', 'edgemesh-tunnel-server-7f8e-a', 'cloud', { part: 'tunnel-server', image: BUILD_A }),
  ...['cloud', 'edge-1', 'edge-2'].map((n) =>
    pod('edgemesh-system', `edgemesh-gateway-${n}`, n, { part: 'gateway', image: BUILD_A }),
  ),
];

const CASES: { name: string; report: VersionReport }[] = [
  { name: 'client-only', report: versionReport({ client: client('0.1.0') }) },
  {
    name: 'client-from-image',
    report: versionReport({ client: client('0.1.0', '0123456789abcdef0123456789abcdef01234567') }),
  },
  {
    name: 'no-skew',
    report: versionReport({
      client: client('0.1.0', '0123456789abcdef0123456789abcdef01234567'),
      server,
      namespace: 'edgemesh-system',
      partPods: healthy,
      sidecarPods: [
        pod('demo', 'web-1', 'edge-1', { sidecar: BUILD_A }),
        pod('demo', 'web-2', 'edge-2', { sidecar: BUILD_A }),
        pod('demo', 'plain', 'edge-2', {}),
      ],
    }),
  },
  {
    name: 'skew',
    report: versionReport({
      client: client('0.1.0'),
      server,
      namespace: 'edgemesh-system',
      partPods: [
        ...healthy.filter((p) => !p.name.includes('gateway-edge-2') && !p.name.includes('signer')),
        pod('edgemesh-system', 'edgemesh-gateway-edge-2', 'edge-2', {
          part: 'gateway',
          image: OLD,
          ready: false,
        }),
        pod('edgemesh-system', 'edgemesh-gateway-edge-edge-3', 'edge-3', {
          part: 'gateway-edge',
          image: BUILD_A,
        }),
      ],
      sidecarPods: [
        pod('demo', 'web-1', 'edge-1', { sidecar: BUILD_A }),
        pod('demo', 'web-2', 'edge-2', { sidecar: BUILD_B }),
        pod('shop', 'cart-0', 'edge-3', { sidecar: OLD }),
        pod('shop', 'cart-1', 'edge-1', { sidecar: 'registry.example/edgemesh:latest', ready: false }),
      ],
    }),
  },
  {
    name: 'all-pods',
    report: versionReport({
      client: client('0.1.0'),
      server,
      namespace: 'edgemesh-system',
      partPods: healthy,
      sidecarPods: [
        pod('demo', 'web-1', 'edge-1', { sidecar: BUILD_A }),
        pod('demo', 'web-2', 'edge-2', { sidecar: BUILD_A }),
      ],
      allPods: true,
    }),
  },
  {
    // injection.image in the ConfigMap wins over the webhook's own image.
    name: 'injection-image',
    report: versionReport({
      client: client('0.1.0'),
      server,
      namespace: 'edgemesh-system',
      partPods: healthy,
      sidecarPods: [
        pod('demo', 'web-1', 'edge-1', { sidecar: BUILD_A }),
        pod('demo', 'web-2', 'edge-2', { sidecar: BUILD_B }),
      ],
      webhookConfig: `port: 9443\ninjection:\n  image: ${BUILD_B}\n`,
    }),
  },
  {
    name: 'config-forbidden',
    report: versionReport({
      client: client('0.1.0'),
      server,
      namespace: 'edgemesh-system',
      partPods: healthy,
      sidecarPods: [pod('demo', 'web-2', 'edge-2', { sidecar: BUILD_B })],
      webhookConfig: new Error('forbidden: HTTP 403: Forbidden: configmaps "edgemesh-config" is forbidden'),
    }),
  },
  {
    name: 'not-installed',
    report: versionReport({
      client: client('0.1.0'),
      server,
      namespace: 'edgemesh-system',
      partPods: [],
      sidecarPods: [pod('demo', 'plain', 'edge-2', {})],
    }),
  },
  {
    name: 'forbidden-sidecars',
    report: versionReport({
      client: client('0.2.0'),
      server,
      namespace: 'edgemesh-system',
      partPods: healthy,
      errors: [
        'the pods in all namespaces (for their sidecars): forbidden: HTTP 403: Forbidden: pods is forbidden: User "dev" cannot list resource "pods" in API group "" at the cluster scope',
      ],
    }),
  },
];

describe('edgemesh version output (golden)', () => {
  const golden = new GoldenDir(new URL('./testdata', import.meta.url).pathname);
  for (const c of CASES)
    it(c.name, () => {
      golden.expect(`${c.name}.version.golden`, formatVersionReport(c.report));
    });
  afterAll(() => {
    expect(golden.unused('.version.golden')).toEqual([]);
  });

  it('flags each skew once, in words', () => {
    const skew = CASES.find((c) => c.name === 'skew')?.report.skew;
    expect(skew).toEqual([
      'gateway 0.0.9: older than the client (0.1.0)',
      '1 sidecar on 0.0.9: older than the client (0.1.0)',
      "1 sidecar on 0.1.0: not the image injected now, localhost/edgemesh:0.1.0-4f2a9c01d3be (the webhook's own image): restart those pods",
      '1 sidecar on registry.example/edgemesh:latest: version unknown (the image tag is not a version)',
    ]);
  });
});
