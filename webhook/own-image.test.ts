import { readFileSync } from 'node:fs';
import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../lib/errors.ts';
import { silentLogger } from '../lib/log.ts';
import {
  DEFAULT_CONFIG,
  imageProblem,
  injectionSection,
  RELEASE_IMAGE,
  resolveConfig,
  withImage,
} from './config.ts';
import { ownContainerImage, PodReadError, type ReadPod, readOwnImage } from './own-image.ts';

// Which image is injected: --image, then injection.image, then the webhook's own container's
// image read from its Pod (a fake API here), else an error naming injection.image and the cause.
const pod = (...containers: { name: string; image?: string }[]): V1Pod => ({
  metadata: { name: 'edgemesh-webhook-abc', namespace: 'edgemesh-system' },
  spec: { containers },
});
const own = { podName: 'edgemesh-webhook-abc', namespace: 'edgemesh-system', log: silentLogger };

/** A ReadPod answering from a list of results in turn, recording its calls. */
function fakeApi(...answers: (V1Pod | PodReadError)[]) {
  const calls: string[] = [];
  const readPod: ReadPod = async (namespace, name) => {
    calls.push(`${namespace}/${name}`);
    const next = answers.shift();
    if (!next) throw new Error('no more answers');
    if (next instanceof PodReadError) throw next;
    return next;
  };
  return { readPod, calls };
}

describe('injected image: explicit settings', () => {
  it('--image wins over injection.image; neither leaves the image unset', () => {
    expect(injectionSection({ image: 'a/b:1' }, 'c/d:2', 'cfg.yaml').image).toEqual({
      value: 'c/d:2',
      from: '--image',
    });
    expect(injectionSection({ image: 'a/b:1' }, undefined, 'cfg.yaml').image).toEqual({
      value: 'a/b:1',
      from: 'cfg.yaml injection.image',
    });
    const { settings, image } = injectionSection({ logLevel: 'debug' }, undefined, 'cfg.yaml');
    expect(image).toBeUndefined();
    expect(settings.logLevel).toBe('debug');
    expect('image' in settings).toBe(false);
    expect(injectionSection(undefined, undefined, 'defaults').image).toBeUndefined();
  });

  it('an empty or malformed explicit image is an error naming its source, not "unset"', () => {
    const empty = injectionSection({ image: null }, undefined, 'cfg.yaml');
    expect(() => withImage(empty.settings, empty.image?.value, `${empty.image?.from}:`)).toThrow(
      'cfg.yaml injection.image: must be a non-empty image reference',
    );
    expect(() => withImage(empty.settings, 'Registry/Edgemesh:0.1', '--image:')).toThrow(
      /--image: "Registry\/Edgemesh:0.1" is not an image reference/,
    );
  });

  it('the rest of the section is still validated, with the same errors', () => {
    expect(() => injectionSection({ image: 'a/b:1', imgae: 'x' }, undefined, 'cfg.yaml')).toThrow(
      'cfg.yaml injection: unknown key "imgae"',
    );
    expect(() => injectionSection({ proxyPort: 0 }, 'a/b:1', 'cfg.yaml')).toThrow(/proxyPort/);
    expect(() => injectionSection(['image'], undefined, 'cfg.yaml')).toThrow(
      'cfg.yaml: injection must be a mapping',
    );
  });

  it('accepts image references as registries write them, refuses others', () => {
    for (const ok of [
      'ghcr.io/edgemesh/edgemesh:0.1.0',
      'localhost/edgemesh:0.1.0-abc',
      'localhost:5000/mesh/edgemesh:v1_2',
      'edgemesh',
      `registry.example/edgemesh@sha256:${'a'.repeat(64)}`,
      `registry.example/edgemesh:0.1.0@sha256:${'0'.repeat(64)}`,
    ])
      expect(imageProblem(ok), ok).toBeUndefined();
    for (const bad of ['', 'a b', 'registry.example/edgemesh:', 'Edgemesh', 'x/y@sha256:abc', 'x//y', '/x'])
      expect(imageProblem(bad), bad).toBeDefined();
    expect(imageProblem(42)).toBe('must be a non-empty image reference');
  });

  it('resolveConfig (edgemesh inject, tests) keeps the release image as its default', () => {
    expect(resolveConfig({}).image).toBe(RELEASE_IMAGE);
    expect(DEFAULT_CONFIG.image).toBe(RELEASE_IMAGE);
    expect(resolveConfig({ image: 'a/b:1' }).image).toBe('a/b:1');
    expect(Object.isFrozen(resolveConfig({}))).toBe(true);
    expect(Object.isFrozen(resolveConfig({}).sidecarResources.requests)).toBe(true);
  });

  it("the release image's tag is package.json's version", () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    expect(RELEASE_IMAGE).toBe(`ghcr.io/edgemesh/edgemesh:${pkg.version}`);
  });
});

describe("injected image: the webhook's own", () => {
  it('is the image of the container named webhook, or of the only container', async () => {
    const api = fakeApi(
      pod({ name: 'istio-proxy', image: 'x/y:1' }, { name: 'webhook', image: 'local/em:2' }),
    );
    expect(await readOwnImage({ ...own, readPod: api.readPod })).toEqual({
      image: 'local/em:2',
      from: 'Pod edgemesh-system/edgemesh-webhook-abc container webhook',
    });
    expect(api.calls).toEqual(['edgemesh-system/edgemesh-webhook-abc']);
    expect(ownContainerImage(pod({ name: 'injector', image: 'a/b:3' }), 'Pod p')).toBe('a/b:3');
    expect(() =>
      ownContainerImage(pod({ name: 'a', image: 'a:1' }, { name: 'b', image: 'b:1' }), 'Pod p'),
    ).toThrow(/injection.image is not set and Pod p has no container named "webhook" .*\(containers: a, b\)/);
  });

  it('without the Pod name or namespace, says which is missing and what to set instead', async () => {
    const api = fakeApi();
    const err = await readOwnImage({ ...own, podName: undefined, readPod: api.readPod }).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.CONFIG);
    expect(err.message).toMatch(
      /^no image to inject: injection.image is not set, and --pod-name \(EDGEMESH_POD_NAME/,
    );
    expect(err.message).toContain(
      'or set injection.image (ConfigMap edgemesh-config, key webhook.yaml) or --image',
    );
    const both = await readOwnImage({
      ...own,
      podName: '',
      namespace: undefined,
      readPod: api.readPod,
    }).catch((e) => e);
    expect(both.message).toContain('--pod-name and --pod-namespace');
    expect(api.calls).toEqual([]);
  });

  it('fails at once when the API refuses, naming the RBAC that grants it', async () => {
    const api = fakeApi(
      new PodReadError(
        'HTTP 403: pods "edgemesh-webhook-abc" is forbidden: User "system:serviceaccount:…"',
        403,
      ),
    );
    const err = await readOwnImage({ ...own, readPod: api.readPod, retryEveryMs: 1 }).catch((e) => e);
    expect(err.code).toBe(ErrorCodes.CONFIG);
    expect(err.message).toMatch(
      /reading the webhook's own image from Pod edgemesh-system\/edgemesh-webhook-abc failed: HTTP 403: .*forbidden.*Role and RoleBinding edgemesh-webhook/,
    );
    expect(err.message).toContain('or set injection.image');
    expect(api.calls).toHaveLength(1);
  });

  it('retries an unreachable or overloaded API server, then gives up with the last cause', async () => {
    const api = fakeApi(
      new PodReadError('connect ECONNREFUSED 10.96.0.1:443'),
      new PodReadError('HTTP 503: unavailable', 503),
      pod({ name: 'webhook', image: 'local/em:2' }),
    );
    expect((await readOwnImage({ ...own, readPod: api.readPod, retryEveryMs: 1 })).image).toBe('local/em:2');
    expect(api.calls).toHaveLength(3);
    const down = fakeApi(...Array.from({ length: 50 }, () => new PodReadError('connect ETIMEDOUT')));
    const err = await readOwnImage({ ...own, readPod: down.readPod, retryForMs: 20, retryEveryMs: 5 }).catch(
      (e) => e,
    );
    expect(err.code).toBe(ErrorCodes.UNAVAILABLE);
    expect(err.message).toMatch(
      /failed after \d+ attempts: connect ETIMEDOUT; fix that or set injection.image/,
    );
  });
});
