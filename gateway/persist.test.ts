import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GatewayFeedSource } from '../lib/catalog/feed-source.ts';
import { CatalogStore } from '../lib/catalog/store.ts';
import { apiFromUrl } from '../lib/kube/client.ts';
import { silentLogger } from '../lib/log.ts';
import { waitFor } from '../test/harness/netns.ts';
import { startGateway } from './gateway.ts';
import { CatalogPersister, loadCatalog, STATE_FILE, saveCatalog } from './persist.ts';
import { STATE_FORMAT } from './state-file.ts';
import { loopbackCatalog } from './test-fixtures.ts';

const tmp = mkdtempSync(join(tmpdir(), 'emc-persist-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const catalog = (revision: number) =>
  loopbackCatalog(
    [{ name: `p${revision}`, ip: `10.244.1.${revision % 250}`, node: 'edge-a', ports: [80] }],
    revision,
  );

describe('catalog persistence', () => {
  it('saves atomically and loads back what it saved, leaving no temp files', async () => {
    const dir = join(tmp, 'a');
    await saveCatalog(dir, catalog(1));
    await saveCatalog(dir, catalog(2));
    expect(await loadCatalog(dir)).toEqual(catalog(2));
    expect(readdirSync(dir)).toEqual([STATE_FILE]);
  });

  it('treats a missing, torn or tampered file as no catalog, and says why', async () => {
    const dir = join(tmp, 'b');
    expect(await loadCatalog(dir)).toBeUndefined();
    const problems: string[] = [];
    const log = { ...silentLogger, error: (o: { error: string }) => problems.push(o.error) } as never;
    await saveCatalog(dir, catalog(3));
    const text = readFileSync(join(dir, STATE_FILE), 'utf8');
    writeFileSync(join(dir, STATE_FILE), text.slice(0, text.length / 2));
    expect(await loadCatalog(dir, log)).toBeUndefined();
    writeFileSync(join(dir, STATE_FILE), text.replace('"edge-a"', '"EDGE A"'));
    expect(await loadCatalog(dir, log)).toBeUndefined();
    expect(problems[0]).toMatch(/catalog\.json: not valid JSON/);
    expect(problems[1]).toMatch(/catalog\.json: names\[\d\]\.name: must be a DNS subdomain/);
  });

  it('persists bursts of updates, and flush writes the newest revision', async () => {
    const dir = join(tmp, 'c');
    const store = new CatalogStore();
    const persister = new CatalogPersister(dir, store, { delayMs: 20 });
    store.apply({ type: 'snapshot', catalog: catalog(1) });
    for (let r = 2; r <= 200; r++) {
      store.apply({ type: 'node', revision: r, name: `n${r}`, node: { name: `n${r}`, addresses: [] } });
    }
    await waitFor(async () => (await loadCatalog(dir))?.revision === 200, 5000, 20, 'persisted burst');
    store.apply({ type: 'node', revision: 201, name: 'last', node: null });
    await persister.close();
    expect((await loadCatalog(dir))?.revision).toBe(201);
    expect(persister.savedRevision).toBe(201);
  });
});

// Format 4 is a JSON value per line: the format is on the first.
const fileFormat = (dir: string) =>
  JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8').split('\n')[0]).format;

describe('state file formats', () => {
  it('writes the catalog as it was when the write began, though its pods change in place meanwhile', async () => {
    const dir = join(tmp, 'in-place');
    const store = new CatalogStore({ inPlace: ['pods'] });
    store.apply({ type: 'snapshot', catalog: catalog(1) });
    const writing = saveCatalog(dir, store.current!);
    store.apply({ type: 'pod', revision: 2, ip: '10.244.1.1', pod: null });
    await writing;
    expect(await loadCatalog(dir)).toEqual(catalog(1));
  });

  it('writes the current format, reads a format-1 file an older gateway left, and replaces it at the next write', async () => {
    const dir = join(tmp, 'migrate');
    await saveCatalog(dir, catalog(5));
    expect(fileFormat(dir)).toBe(STATE_FORMAT);
    writeFileSync(join(dir, STATE_FILE), JSON.stringify(catalog(6)));
    expect(await loadCatalog(dir)).toEqual(catalog(6));
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: (await loadCatalog(dir))! });
    const persister = new CatalogPersister(dir, store, { delayMs: 10 });
    store.apply({ type: 'node', revision: 7, name: 'n7', node: { name: 'n7', addresses: [] } });
    await persister.close();
    expect(fileFormat(dir)).toBe(STATE_FORMAT);
    expect((await loadCatalog(dir))?.nodes.n7).toEqual({ name: 'n7', addresses: [] });
  });
});

describe('gateway restart before the API answers', () => {
  it('serves the persisted catalog at once while the API is unreachable', async () => {
    const stateDir = join(tmp, 'restart');
    await saveCatalog(stateDir, catalog(42));
    // An API address where nothing listens (a port we just released): every list fails.
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const apiPort = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r));

    const gw = await startGateway({
      nodeName: 'edge-a',
      stateDir,
      listenHost: '127.0.0.1',
      listenPort: 0,
      clusterDomain: 'cluster.local',
      api: apiFromUrl({ url: `http://127.0.0.1:${apiPort}` }),
      log: silentLogger,
    });
    const store = new CatalogStore();
    const feed = new GatewayFeedSource({
      host: '127.0.0.1',
      port: (gw.server.address() as net.AddressInfo).port,
    });
    try {
      expect(gw.store.current).toEqual(catalog(42)); // before any API answer
      await feed.start(store);
      await waitFor(() => store.current?.revision === 42, 5000, 20, 'sidecar got the persisted catalog');
      expect(store.current).toEqual(catalog(42));
      await waitFor(
        () =>
          gw.registry
            .getSingleMetricAsString('edgemesh_gateway_errors_total')
            .then((m) => /UNAVAILABLE"[^\n]* [1-9]/.test(m)),
        10_000,
        50,
        'API failures counted',
      );
      expect(gw.watcher?.synced).toBe(false);
      expect(gw.store.current?.revision).toBe(42);
    } finally {
      await feed.stop();
      await gw.close();
    }
  });
});
