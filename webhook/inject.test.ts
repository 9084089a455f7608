import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { GoldenDir } from '../test/harness/golden.ts';
import { review } from './admission.ts';
import { DEFAULT_CONFIG, resolveConfig } from './config.ts';
import { CAPTURE_UDP_ANNOTATION, escapePointer, INIT_NAME, PROXY_NAME } from './inject.ts';
import { applyPatch, injectText } from './manual.ts';

// Each testdata/admission/<case>.json is an AdmissionReview as the API server sends it.
// Goldens: <case>.response.golden.json (the response, patch decoded for review) and, when
// injected, <case>.injected.golden.yaml (the pod after the patch). The `edgemesh inject`
// path must produce the very same injected pod.
const dir = join(import.meta.dirname, 'testdata', 'admission');
const golden = new GoldenDir(join(dir, 'golden'));
const cases = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .map((f) => f.replace(/\.json$/, ''));
const config = resolveConfig({ image: 'registry.example/edgemesh:test' });

describe('admission goldens', () => {
  it('has realistic cases', () => expect(cases.length).toBeGreaterThanOrEqual(20));

  for (const name of cases) {
    it(name, () => {
      const body = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8'));
      const { response, decision } = review(body, config);
      expect(response.response.uid).toBe(body.request.uid);
      const shown = {
        decision: {
          outcome: decision.outcome,
          code: decision.code,
          reason: decision.reason,
          dryRun: decision.dryRun,
        },
        response: {
          ...response.response,
          patch: response.response.patch
            ? JSON.parse(Buffer.from(response.response.patch, 'base64').toString())
            : undefined,
        },
      };
      golden.expect(`${name}.response.golden.json`, `${JSON.stringify(shown, null, 2)}\n`);
      if (decision.outcome !== 'injected') {
        expect(response.response.patch).toBeUndefined();
        return;
      }
      const pod = body.request.object as V1Pod;
      const injected = applyPatch(pod, decision.patch ?? []);
      const injectedYaml = YAML.stringify(injected, { lineWidth: 0 });
      golden.expect(`${name}.injected.golden.yaml`, injectedYaml);

      // Same pure function through the manual path: identical pod.
      const manual = injectText(YAML.stringify({ apiVersion: 'v1', kind: 'Pod', ...pod }), config);
      const { apiVersion: _a, kind: _k, ...manualPod } = YAML.parse(manual.yaml);
      expect(manualPod).toEqual(injected);

      // Invariants the contract names, checked on every injected case.
      const inits = injected.spec?.initContainers ?? [];
      expect(inits[0].name).toBe(INIT_NAME);
      expect(inits[1].name).toBe(PROXY_NAME);
      expect(inits[1].restartPolicy).toBe('Always');
      expect(inits.slice(2).map((c) => c.name)).toEqual((pod.spec?.initContainers ?? []).map((c) => c.name));
      expect(injected.spec?.containers).toEqual(pod.spec?.containers);
      if (pod.metadata?.annotations?.[CAPTURE_UDP_ANNOTATION] === 'true') {
        // UDP capture: transparent sockets need NET_ADMIN, which only uid 0 keeps; gid 1337
        // keeps the sidecar's own traffic out of the capture (docs/udp.md).
        expect(inits[1].securityContext).toEqual({
          runAsUser: 0,
          runAsGroup: 1337,
          runAsNonRoot: false,
          privileged: false,
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          capabilities: { add: ['NET_ADMIN', 'NET_BIND_SERVICE'], drop: ['ALL'] },
        });
        expect(inits[0].args).toContain('--capture-udp=true');
        expect(inits[1].args).toContain('--capture-udp=true');
      } else {
        expect(inits[1].securityContext).toMatchObject({
          runAsUser: 1337,
          runAsGroup: 1337,
          allowPrivilegeEscalation: false,
          capabilities: { drop: ['ALL'] },
        });
        expect(inits[1].securityContext?.capabilities?.add).toBeUndefined();
        expect(inits[0].args?.some((a) => a.startsWith('--capture-udp'))).toBe(false);
        expect(inits[1].args?.some((a) => a.startsWith('--capture-udp'))).toBe(false);
      }
      expect(inits[0].securityContext?.capabilities?.add).toEqual(['NET_ADMIN', 'NET_RAW']);
      // Re-injection of the result is a no-op.
      const again = review({ ...body, request: { ...body.request, object: injected } }, config);
      expect(again.decision.outcome).toBe('skipped');
      expect(again.decision.code).toBe('already-injected');
    });
  }

  afterAll(() => {
    expect(golden.unused('.golden.json').concat(golden.unused('.golden.yaml'))).toEqual([]);
  });
});

describe('manual injection of workload kinds', () => {
  const mdir = join(import.meta.dirname, 'testdata', 'manual');
  const mgolden = new GoldenDir(mdir);
  for (const file of readdirSync(mdir).filter((f) => f.endsWith('.yaml') && !f.endsWith('.golden.yaml'))) {
    it(file, () => {
      const { yaml, report } = injectText(readFileSync(join(mdir, file), 'utf8'), config);
      mgolden.expect(
        file.replace(/\.yaml$/, '.golden.yaml'),
        `${yaml}# report:\n${report.map((l) => `# ${l}\n`).join('')}`,
      );
    });
  }
  afterAll(() => expect(mgolden.unused('.golden.yaml')).toEqual([]));
});

describe('pure pieces', () => {
  it('escapes JSON pointer segments per RFC 6901', () => {
    expect(escapePointer('sidecar.edgemesh.io/status')).toBe('sidecar.edgemesh.io~1status');
    expect(escapePointer('a~b/c')).toBe('a~0b~1c');
  });

  it('rejects malformed reviews with a reason', () => {
    const bad: Array<[unknown, RegExp]> = [
      [null, /JSON object/],
      [[], /JSON object/],
      [{ kind: 'AdmissionReview', apiVersion: 'admission.k8s.io/v1beta1', request: {} }, /apiVersion/],
      [{ kind: 'Pod', apiVersion: 'admission.k8s.io/v1' }, /kind must be AdmissionReview/],
      [{ kind: 'AdmissionReview', apiVersion: 'admission.k8s.io/v1' }, /request is missing/],
      [{ kind: 'AdmissionReview', apiVersion: 'admission.k8s.io/v1', request: { uid: '' } }, /uid/],
      [{ kind: 'AdmissionReview', apiVersion: 'admission.k8s.io/v1', request: { uid: 'u' } }, /request.kind/],
      [
        {
          kind: 'AdmissionReview',
          apiVersion: 'admission.k8s.io/v1',
          request: {
            uid: 'u',
            kind: { group: '', version: 'v1', kind: 'Pod' },
            operation: 'CREATE',
            object: { spec: {} },
          },
        },
        /spec.containers/,
      ],
    ];
    for (const [body, reason] of bad) expect(() => review(body, DEFAULT_CONFIG)).toThrow(reason);
  });

  it('validates the injection config and names the key', () => {
    expect(() => resolveConfig({ imagePullPolicy: 'Sometimes' })).toThrow(/imagePullPolicy/);
    expect(() => resolveConfig({ proxyPort: 70000 })).toThrow(/proxyPort/);
    expect(() => resolveConfig({ proxyUid: 0 })).toThrow(/proxyUid/);
    expect(() => resolveConfig({ sidecarResources: { requests: { memory: 'lots' }, limits: {} } })).toThrow(
      /memory.*not a quantity/,
    );
    expect(() => resolveConfig({ imgae: 'x' })).toThrow(/unknown key "imgae"/);
    // Partial resources merge with the defaults; null removes one; a typo is named.
    expect(resolveConfig({ initResources: { limits: { memory: '96Mi' } } }).initResources).toEqual({
      requests: { cpu: '10m', memory: '16Mi' },
      limits: { memory: '96Mi' },
    });
    expect(resolveConfig({ initResources: { requests: { cpu: null } } }).initResources.requests).toEqual({
      memory: '16Mi',
    });
    expect(() => resolveConfig({ initResources: { limit: {} } })).toThrow(
      /initResources: unknown key "limit"/,
    );
    expect(() => resolveConfig({ sidecarNodeOptions: '--x; rm -rf /' })).toThrow(/sidecarNodeOptions/);
    expect(resolveConfig({ sidecarNodeOptions: '' }).sidecarNodeOptions).toBe('');
    expect(resolveConfig({ excludedNamespaces: ['legacy'] }).excludedNamespaces).toEqual([
      'kube-system',
      'kube-public',
      'kube-node-lease',
      'edgemesh-system',
      'legacy',
    ]);
  });
});
