import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fuzzSeed, runFuzz, summary } from '../test/harness/fuzz.ts';
import { review } from './admission.ts';
import { resolveConfig } from './config.ts';
import { applyPatch } from './manual.ts';
import { admissionTarget } from './testing/fuzz.ts';

const config = resolveConfig({ image: 'registry.example/edgemesh:test' });
const minimal = JSON.parse(
  readFileSync(join(import.meta.dirname, 'testdata', 'admission', 'minimal-pod.json'), 'utf8'),
);
// biome-ignore lint/suspicious/noExplicitAny: the tests break a pod's shape on purpose
type Pod = Record<string, any>;

/** The minimal review with `edit` applied to a copy of its pod. */
function withPod(edit: (pod: Pod) => void) {
  const body = structuredClone(minimal);
  edit(body.request.object);
  return body;
}

describe('fuzz: AdmissionReview', () => {
  // Bounded for CI; `node bench/fuzz.ts` runs a million or more (docs/threat-model.md, Fuzzing).
  it('refuses malformed reviews with BAD_REQUEST only; its patches apply and are not applied twice', async () => {
    const r = await runFuzz(admissionTarget, { seed: fuzzSeed(1608), count: 5_000 });
    expect(r.crashes, summary(r)).toEqual([]);
  });

  // What the fuzzer found: each was a TypeError (a 500, which with failurePolicy Fail blocks
  // the pod) or a patch the API server cannot apply.
  it.each([
    [
      'annotations as a list',
      (p: Pod) => (p.metadata.annotations = []),
      'metadata.annotations must map strings',
    ],
    [
      'an annotation that is not a string',
      (p: Pod) => (p.metadata.annotations = { a: 1 }),
      'metadata.annotations',
    ],
    ['no metadata', (p: Pod) => delete p.metadata, 'metadata must be an object'],
    [
      'initContainers not a list',
      (p: Pod) => (p.spec.initContainers = {}),
      'spec.initContainers must be a list',
    ],
    ['a null container', (p: Pod) => p.spec.containers.push(null), 'spec.containers must be a list'],
    [
      'sysctls not a list',
      (p: Pod) => (p.spec.securityContext = { sysctls: {} }),
      'spec.securityContext.sysctls must be a list',
    ],
    [
      'a sysctl value that is not a string',
      (p: Pod) =>
        (p.spec.securityContext = { sysctls: [{ name: 'net.ipv4.ip_local_reserved_ports', value: 7 }] }),
      'spec.securityContext.sysctls must be a list',
    ],
  ])('refuses a pod with %s as a bad request', (_name, edit, message) => {
    expect(() => review(withPod(edit), config)).toThrow(`request.object: ${message}`);
  });

  it('names a kind whose toString is not a function instead of throwing on it', () => {
    const body = structuredClone(minimal);
    body.request.kind.kind = { toString: 1 };
    expect(review(body, config).decision).toMatchObject({
      outcome: 'ignored',
      reason: 'not a Pod (core/v1 {"toString":1})',
    });
  });

  it('adds the reserved ports to a sysctl that has no value yet (replace would not apply)', () => {
    const body = withPod(
      (p) => (p.spec.securityContext = { sysctls: [{ name: 'net.ipv4.ip_local_reserved_ports' }] }),
    );
    const { response } = review(body, config);
    const patch = JSON.parse(Buffer.from(response.response.patch!, 'base64').toString());
    const pod = applyPatch(body.request.object, patch);
    expect(pod.spec.securityContext.sysctls[0].value).toBe('15000-15100');
  });
});
