import { describe, expect, it } from 'vitest';
import { buildCatalog, CatalogBuilder, diffCatalogs } from './from-objects.ts';
import { applyUpdate } from './store.ts';
import { emptyCatalog, namespaceExists } from './types.ts';

// Namespaces in the catalog: listed once Namespace objects are seen, else unknown.
const ns = (name: string) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
const svc = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { namespace: 'demo', name: 'web' },
  spec: { ports: [{ port: 80 }] },
};

describe('namespaces from objects', () => {
  it('are listed only when Namespace objects were given', () => {
    expect(buildCatalog([svc]).catalog.namespaces).toBeUndefined();
    expect(buildCatalog([svc, ns('demo'), ns('empty')]).catalog.namespaces).toEqual({
      demo: { name: 'demo' },
      empty: { name: 'empty' },
    });
  });

  it('come and go as updates, and exist while listed or holding services', () => {
    const b = new CatalogBuilder();
    expect(b.handle('Namespace', 'add', ns('empty'))).toEqual([
      { type: 'namespace', revision: 1, name: 'empty', namespace: { name: 'empty' } },
    ]);
    expect(b.handle('Namespace', 'update', ns('empty'))).toEqual([]);
    expect(b.handle('Namespace', 'add', ns('Bad_Name'))).toEqual([]);
    let catalog = applyUpdate(emptyCatalog(), { type: 'snapshot', catalog: b.catalog })!;
    expect(namespaceExists(catalog, 'empty', false)).toBe(true);
    expect(namespaceExists(catalog, 'demo', false)).toBe(false);
    expect(namespaceExists(catalog, 'demo', true)).toBe(true);
    const [gone] = b.handle('Namespace', 'delete', ns('empty'));
    expect(gone).toEqual({ type: 'namespace', revision: 2, name: 'empty', namespace: null });
    catalog = applyUpdate(catalog, { ...gone, revision: catalog.revision + 1 } as typeof gone)!;
    expect(catalog.namespaces).toEqual({});
  });

  it('are diffed only when the new catalog knows them (an edge API keeps the last known)', () => {
    const from = { ...emptyCatalog(), revision: 5, namespaces: { old: { name: 'old' } } };
    expect(diffCatalogs(from, { ...emptyCatalog() })).toEqual([]);
    expect(diffCatalogs(from, { ...emptyCatalog(), namespaces: { new: { name: 'new' } } })).toEqual([
      { type: 'namespace', revision: 6, name: 'new', namespace: { name: 'new' } },
      { type: 'namespace', revision: 7, name: 'old', namespace: null },
    ]);
  });
});
