/**
 * The fuzz target of the LIST body decoder (lib/kube/list-body.ts): list-body.fuzz.test.ts
 * runs a bounded count in CI, bench/fuzz.ts (`list-body`) a million or more.
 */
import { isDeepStrictEqual } from 'node:util';
import { check, type FuzzTarget, mutateBytes, mutateJson } from '../../../test/harness/fuzz.ts';
import { ListBodyDecoder, ListBodyError } from '../list-body.ts';

// A LIST body from a hostile or broken API (list-body.ts), in pieces cut anywhere. The decoder
// must throw only ListBodyErrors, never stall, never hold more than one value (its bound) plus
// a piece, and agree with JSON.parse of the whole body: what it accepts, JSON.parse gives the
// same items and metadata of.
const MAX_VALUE_BYTES = 4096;
const CORPUS: readonly unknown[] = [
  {
    kind: 'EndpointSliceList',
    apiVersion: 'discovery.k8s.io/v1',
    metadata: { resourceVersion: '12', continue: 'eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ' },
    items: [
      {
        metadata: { name: 'web-abc', namespace: 'demo', labels: { 'kubernetes.io/service-name': 'web' } },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
        endpoints: [{ addresses: ['10.244.1.5'], conditions: { ready: true }, nodeName: 'edge-a' }],
      },
      { metadata: { name: 'q"uo}te]', namespace: 'ü日本😀\\' }, endpoints: [] },
    ],
  },
  { items: [], metadata: { resourceVersion: '1' } },
  { items: [[1, [2, [3]]], 'x', null, { a: '{[' }], kind: 'List', extra: { deep: [{}, []] } },
];
const TEXTS = CORPUS.map((c) => JSON.stringify(c));

interface Input {
  bytes: Buffer;
  cuts: number[];
}

export const listBodyTarget: FuzzTarget<Input> = {
  name: 'LIST body decoder (lib/kube/list-body.ts)',
  input(rng) {
    const doc = rng.pick(CORPUS);
    let text = rng.chance(0.7) ? mutateJson(rng, doc) : rng.pick(TEXTS);
    if (rng.chance(0.2)) text = JSON.stringify(JSON.parse(text), null, rng.int(3));
    const bytes = rng.chance(0.4) ? mutateBytes(rng, [Buffer.from(text)]) : Buffer.from(text);
    const cuts = Array.from({ length: rng.int(6) }, () => rng.int(bytes.length + 1)).sort((a, b) => a - b);
    return { bytes, cuts };
  },
  parse({ bytes, cuts }) {
    const items: unknown[] = [];
    const decoder = new ListBodyDecoder('/fuzz', (item) => items.push(item), {
      maxValueBytes: MAX_VALUE_BYTES,
    });
    let from = 0;
    for (const cut of [...cuts, bytes.length]) {
      const piece = bytes.subarray(from, cut);
      decoder.write(piece);
      check(decoder.held <= MAX_VALUE_BYTES + piece.length, () => `holds ${decoder.held} bytes`);
      from = cut;
    }
    return { items, meta: decoder.end() };
  },
  verify({ bytes }, { value, error }) {
    let doc: { items?: unknown; metadata?: { resourceVersion?: unknown; continue?: unknown } } | undefined;
    try {
      doc = JSON.parse(bytes.toString('utf8'));
    } catch {}
    const isList = typeof doc === 'object' && doc !== null && !Array.isArray(doc) && Array.isArray(doc.items);
    if (value) {
      check(isList, () => 'accepted what JSON.parse refuses or is not a list');
      const got = value as { items: unknown[]; meta: { resourceVersion: string; continue: string } };
      check(isDeepStrictEqual(got.items, doc?.items), () => 'items differ from JSON.parse');
      const text = (v: unknown) => (typeof v === 'string' ? v : '');
      const m = typeof doc?.metadata === 'object' && doc.metadata !== null ? doc.metadata : {};
      check(
        got.meta.resourceVersion === text(m.resourceVersion) && got.meta.continue === text(m.continue),
        () => 'metadata differs from JSON.parse',
      );
    } else if (isList) {
      // JSON.parse keeps the last of a key given twice; the decoder refuses it. Or a value too large.
      check(
        /appears twice|larger than/.test(error?.message ?? ''),
        () => `refused a list JSON.parse takes: ${error?.message}`,
      );
    }
  },
  expected: (err) => err instanceof ListBodyError,
  show: (i) => `${JSON.stringify(i.bytes.toString('latin1'))} cuts ${i.cuts.join(',')}`,
};
