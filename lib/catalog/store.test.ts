import { describe, expect, it } from 'vitest';
import { CatalogStore } from './store.ts';
import { emptyCatalog, type PodInfo } from './types.ts';

const pod = (ip: string): PodInfo => ({ ip, namespace: 'demo', name: `p-${ip}`, nodeName: 'n' });

describe('catalog store', () => {
  it('copies records on each increment by default (old catalogs stay as they were)', () => {
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: emptyCatalog() });
    const before = store.current!;
    expect(store.apply({ type: 'pod', revision: 1, ip: '10.0.0.1', pod: pod('10.0.0.1') })).toBe(true);
    expect(before.pods).toEqual({});
    expect(store.current!.pods['10.0.0.1']).toEqual(pod('10.0.0.1'));
  });

  it('in place: one record object changed, a new catalog object per revision, gaps refused', () => {
    const store = new CatalogStore({ inPlace: true });
    store.apply({ type: 'snapshot', catalog: emptyCatalog() });
    const before = store.current!;
    store.apply({ type: 'pod', revision: 1, ip: '10.0.0.1', pod: pod('10.0.0.1') });
    store.apply({ type: 'namespace', revision: 2, name: 'demo', namespace: { name: 'demo' } });
    expect(store.current).not.toBe(before);
    expect(store.current!.revision).toBe(2);
    expect(store.current!.pods).toBe(before.pods);
    expect(store.current!.namespaces).toEqual({ demo: { name: 'demo' } });
    expect(store.apply({ type: 'pod', revision: 9, ip: '10.0.0.2', pod: null })).toBe(false);
    store.apply({ type: 'pod', revision: 3, ip: '10.0.0.1', pod: null });
    expect(store.current!.pods).toEqual({});
  });

  it('in place for the records named only: pods changed in place, services still copied', () => {
    const store = new CatalogStore({ inPlace: ['pods'] });
    store.apply({ type: 'snapshot', catalog: emptyCatalog() });
    const before = store.current!;
    store.apply({ type: 'pod', revision: 1, ip: '10.0.0.1', pod: pod('10.0.0.1') });
    expect(store.current!.pods).toBe(before.pods);
    store.apply({ type: 'node', revision: 2, name: 'n', node: { name: 'n', addresses: [] } });
    expect(store.current!.nodes).not.toBe(before.nodes);
    expect(before.nodes).toEqual({});
    expect(store.current!.pods['10.0.0.1']).toEqual(pod('10.0.0.1'));
  });
});
