import { mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../test/harness/netns.ts';
import { catalogFileSource, objectsFileSource } from './file-source.ts';
import { CatalogStore } from './store.ts';
import type { Catalog } from './types.ts';

const tmp = mkdtempSync(join(tmpdir(), 'emc-filesource-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const testdata = join(import.meta.dirname, 'testdata');
const golden = (name: string): Catalog =>
  JSON.parse(readFileSync(join(testdata, `${name}.golden.json`), 'utf8')).catalog;

describe('catalog file source', () => {
  it('loads, follows in-place writes and rename-replace, keeps the last good catalog on a bad file', async () => {
    const dir = mkdtempSync(join(tmp, 'a-'));
    const path = join(dir, 'catalog.json');
    const first = { ...golden('clusterip-web'), revision: 7 };
    writeFileSync(path, JSON.stringify(first));
    const store = new CatalogStore();
    const source = catalogFileSource(path, { debounceMs: 20 });
    await source.start(store);
    try {
      expect(store.current).toEqual(first);

      const second = { ...golden('dual-stack'), revision: 8 };
      writeFileSync(path, JSON.stringify(second));
      await waitFor(() => store.current?.revision === 8, 5000, 20, 'in-place write');
      expect(store.current).toEqual(second);

      // A bad file (wrong port) is rejected; the store keeps revision 8.
      const bad = structuredClone(second) as Catalog;
      bad.revision = 9;
      bad.services['shop/api'].service.ports[0].port = 0;
      writeFileSync(path, JSON.stringify(bad));
      writeFileSync(join(dir, 'garbage.json'), '{'); // another file in the directory: ignored
      await new Promise((r) => setTimeout(r, 300));
      expect(store.current?.revision).toBe(8);

      // Editors replace files by rename; that is seen too.
      const third = { ...golden('headless-statefulset'), revision: 10 };
      writeFileSync(join(dir, '.catalog.json.swp'), JSON.stringify(third));
      renameSync(join(dir, '.catalog.json.swp'), path);
      await waitFor(() => store.current?.revision === 10, 5000, 20, 'rename-replace');
      expect(store.current).toEqual(third);
    } finally {
      await source.stop();
    }
    // Stopped: changes are no longer applied.
    writeFileSync(path, JSON.stringify({ ...golden('clusterip-web'), revision: 11 }));
    await new Promise((r) => setTimeout(r, 200));
    expect(store.current?.revision).toBe(10);
  });

  it('follows a ConfigMap-style symlink swap', async () => {
    const dir = mkdtempSync(join(tmp, 'cm-'));
    const v1 = join(dir, '..v1');
    const v2 = join(dir, '..v2');
    for (const v of [v1, v2]) rmSync(v, { force: true });
    writeFileSync(v1, JSON.stringify({ ...golden('clusterip-web'), revision: 1 }));
    writeFileSync(v2, JSON.stringify({ ...golden('dual-stack'), revision: 2 }));
    symlinkSync('..v1', join(dir, '..data'));
    symlinkSync('..data', join(dir, 'catalog.json'));
    const store = new CatalogStore();
    const source = catalogFileSource(join(dir, 'catalog.json'), { debounceMs: 20 });
    await source.start(store);
    try {
      expect(store.current?.revision).toBe(1);
      symlinkSync('..v2', join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      await waitFor(() => store.current?.revision === 2, 5000, 20, 'symlink swap');
    } finally {
      await source.stop();
    }
  });

  it('refuses a bad first file with an error naming the file and the field', async () => {
    const path = join(tmp, 'bad.json');
    const bad = structuredClone(golden('clusterip-web'));
    bad.services['demo/web'].endpoints[0].ip = '10.0.0';
    writeFileSync(path, JSON.stringify(bad));
    await expect(catalogFileSource(path).start(new CatalogStore())).rejects.toThrow(
      `${path}: services["demo/web"].endpoints[0].ip: must be an IP address`,
    );
    await expect(catalogFileSource(join(tmp, 'none.json')).start(new CatalogStore())).rejects.toThrow(
      /none\.json/,
    );
  });
});

describe('objects file source', () => {
  it('builds the catalog from objects and rebuilds it on change with a higher revision', async () => {
    const dir = mkdtempSync(join(tmp, 'o-'));
    const path = join(dir, 'objects.yaml');
    writeFileSync(path, readFileSync(join(testdata, 'clusterip-web.yaml')));
    const store = new CatalogStore();
    const source = objectsFileSource(path, { debounceMs: 20, clusterDomain: 'edge.local' });
    await source.start(store);
    try {
      expect(store.current).toEqual({ ...golden('clusterip-web'), clusterDomain: 'edge.local', revision: 1 });
      writeFileSync(path, readFileSync(join(testdata, 'dual-stack.yaml')));
      await waitFor(() => store.current?.revision === 2, 5000, 20, 'objects reload');
      expect(Object.keys(store.current?.services ?? {})).toEqual(['shop/api']);
      writeFileSync(path, 'kind: [broken');
      await new Promise((r) => setTimeout(r, 200));
      expect(store.current?.revision).toBe(2);
    } finally {
      await source.stop();
    }
  });
});
