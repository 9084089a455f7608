import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildCatalog, objectKind } from './from-objects.ts';
import { trimObject } from './object-fields.ts';
import { parseObjectsText } from './objects-file.ts';

const dir = join(import.meta.dirname, 'testdata');
const cases = readdirSync(dir).filter((f) => f.endsWith('.yaml'));

describe('trimObject', () => {
  // The builder must not read a field the trim drops: the golden cases cover every field it reads.
  it.each(cases)('builds the same catalog from trimmed objects: %s', (file) => {
    const objects = parseObjectsText(readFileSync(join(dir, file), 'utf8'), file);
    const trimmed = objects.map((o) => {
      const kind = objectKind(o);
      return kind ? trimObject(kind, o) : o;
    });
    expect(buildCatalog(trimmed)).toEqual(buildCatalog(objects));
  });

  it('drops what the builder never reads', () => {
    const slice = {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: 'web-x',
        namespace: 'demo',
        uid: 'u',
        resourceVersion: '7',
        labels: { 'kubernetes.io/service-name': 'web', app: 'web' },
        annotations: { big: 'x'.repeat(1000) },
        managedFields: [{ manager: 'kube-controller-manager' }],
        ownerReferences: [{ kind: 'Service' }],
      },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 80 }],
      endpoints: [{ addresses: ['10.0.0.1'], zone: 'a', deprecatedTopology: { a: 'b' } }],
    };
    expect(trimObject('EndpointSlice', slice)).toEqual({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: 'web-x',
        namespace: 'demo',
        uid: 'u',
        resourceVersion: '7',
        labels: { 'kubernetes.io/service-name': 'web' },
      },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 80 }],
      endpoints: [{ addresses: ['10.0.0.1'] }],
    });
    const pod = { metadata: { name: 'p' }, status: { containerStatuses: [] } };
    expect(trimObject('Pod', pod)).toBe(pod);
  });
});
