import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { resolveConfig } from './config.ts';
import { INIT_NAME, injectionPatch, PROXY_NAME, STATUS_ANNOTATION, skipReason } from './inject.ts';
import { applyPatch, injectText, uninjectText } from './manual.ts';
import { uninjectPod } from './uninject.ts';

// uninject is the inverse of inject: uninject(inject(x)) = x on every testdata manifest and
// pod, and on the pod shapes where inject creates or changes something besides its containers.
const config = resolveConfig({ image: 'registry.example/edgemesh:test' });
const docs = (text: string) =>
  YAML.parseAllDocuments(text)
    .map((d) => d.toJS())
    .filter((v) => v !== null);

const inject = (pod: V1Pod): V1Pod => {
  expect(skipReason(pod, 'demo', config)).toBeUndefined();
  return applyPatch(structuredClone(pod), injectionPatch(pod, config));
};
const roundTrip = (pod: V1Pod): V1Pod => {
  const injected = inject(pod);
  expect(injected).not.toEqual(pod);
  const { pod: back, outcome } = uninjectPod(injected);
  expect(outcome).toBe('removed');
  return back;
};

describe('uninject ∘ inject = identity', () => {
  const manual = join(import.meta.dirname, 'testdata', 'manual');
  for (const file of readdirSync(manual).filter((f) => f.endsWith('.yaml') && !f.endsWith('.golden.yaml'))) {
    it(`testdata/manual/${file}`, () => {
      const text = readFileSync(join(manual, file), 'utf8');
      const injected = injectText(text, config);
      expect(injected.report.some((l) => l.endsWith(': injected'))).toBe(true);
      const back = uninjectText(injected.yaml);
      expect(docs(back.yaml)).toEqual(docs(text));
      expect(back.report.some((l) => l.endsWith(': uninjected'))).toBe(true);
    });
  }

  const admission = join(import.meta.dirname, 'testdata', 'admission');
  for (const file of readdirSync(admission).filter((f) => f.endsWith('.json'))) {
    const body = JSON.parse(readFileSync(join(admission, file), 'utf8'));
    const pod = body.request?.object as V1Pod | undefined;
    if (body.request?.kind?.kind !== 'Pod' || !pod || skipReason(pod, body.request.namespace, config))
      continue;
    if (body.request.operation !== 'CREATE') continue;
    it(`testdata/admission/${file}`, () => {
      try {
        expect(roundTrip(pod)).toEqual(pod);
      } catch (err) {
        // A pod the webhook denies (malformed annotation) has nothing to undo.
        if ((err as Error).name !== 'InjectionError') throw err;
      }
    });
  }

  const containers = [{ name: 'app', image: 'nginx' }];
  const shapes: Record<string, V1Pod> = {
    'no metadata': { spec: { containers } },
    'empty annotations and init containers': {
      metadata: { annotations: {} },
      spec: { containers, initContainers: [] },
    },
    'empty securityContext': { metadata: {}, spec: { containers, securityContext: {} } },
    'empty sysctls': { metadata: {}, spec: { containers, securityContext: { sysctls: [] } } },
    'other sysctls': {
      metadata: {},
      spec: { containers, securityContext: { sysctls: [{ name: 'net.core.somaxconn', value: '1024' }] } },
    },
    'reserved ports already there': {
      metadata: {},
      spec: {
        containers,
        securityContext: { sysctls: [{ name: 'net.ipv4.ip_local_reserved_ports', value: '15000-15100' }] },
      },
    },
    'reserved ports sysctl without a value': {
      metadata: {},
      spec: {
        containers,
        securityContext: {
          sysctls: [{ name: 'net.ipv4.ip_local_reserved_ports' } as { name: string; value: string }],
        },
      },
    },
    'reserved ports empty': {
      metadata: {},
      spec: {
        containers,
        securityContext: { sysctls: [{ name: 'net.ipv4.ip_local_reserved_ports', value: '' }] },
      },
    },
    'own init containers and volumes': {
      metadata: { annotations: { team: 'a' }, labels: { app: 'x' } },
      spec: {
        containers,
        initContainers: [{ name: 'setup', image: 'busybox' }],
        volumes: [{ name: 'data', emptyDir: {} }],
        securityContext: { runAsNonRoot: true },
      },
    },
  };
  for (const [name, pod] of Object.entries(shapes)) it(name, () => expect(roundTrip(pod)).toEqual(pod));
});

describe('uninject keeps what is not its own', () => {
  it('an object injection created but that holds more now is kept, and said', () => {
    const injected = inject({ metadata: {}, spec: { containers: [{ name: 'app' }] } });
    injected.metadata!.annotations!.later = 'added after injection';
    const { pod, notes } = uninjectPod(injected);
    expect(pod.metadata?.annotations).toEqual({ later: 'added after injection' });
    expect(pod.spec?.initContainers).toBeUndefined();
    expect(notes).toEqual(['/metadata/annotations was created by injection but holds more now: kept']);
  });

  it('an edited record cannot remove the pod’s own containers or other objects', () => {
    const pod: V1Pod = {
      metadata: {
        annotations: {
          [STATUS_ANNOTATION]: JSON.stringify({
            version: '1',
            initContainers: ['setup'],
            containers: ['app'],
          }),
        },
      },
      spec: { containers: [{ name: 'app' }], initContainers: [{ name: 'setup' }, { name: INIT_NAME }] },
    };
    const { pod: out } = uninjectPod(pod);
    expect(out.spec?.containers).toEqual([{ name: 'app' }]);
    expect(out.spec?.initContainers).toEqual([{ name: 'setup' }]);
    const bad = (record: unknown) =>
      uninjectPod({ metadata: { annotations: { [STATUS_ANNOTATION]: JSON.stringify(record) } } });
    expect(() => bad({ created: ['/spec/containers'] })).toThrow(
      'created: "/spec/containers" is not an object injection creates',
    );
    expect(() => bad({ reservedPorts: { before: 3 } })).toThrow(/reservedPorts must be/);
    expect(() => uninjectPod({ metadata: { annotations: { [STATUS_ANNOTATION]: '{' } } })).toThrow(
      `${STATUS_ANNOTATION} is not JSON`,
    );
  });

  it('containers without the annotation (injected by hand): ours removed, the rest left', () => {
    const { pod, notes } = uninjectPod({
      spec: { containers: [{ name: 'app' }], initContainers: [{ name: INIT_NAME }, { name: PROXY_NAME }] },
    });
    expect(pod.spec).toEqual({ containers: [{ name: 'app' }], initContainers: [] });
    expect(notes[0]).toContain('removed the edgemesh containers only');
  });

  it('manifests never injected come back as they were, reported', () => {
    const text = 'apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a}]}\n';
    const { yaml, report } = uninjectText(text, 'pod.yaml');
    expect(docs(yaml)).toEqual(docs(text));
    expect(report).toEqual(['pod.yaml: Pod/p: not injected: unchanged']);
  });
});
