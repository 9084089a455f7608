import { afterEach, describe, expect, it, vi } from 'vitest';
import { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog } from '../lib/catalog/types.ts';
import { Admission, decideSource, type SourceContext, sourceIP } from './admission.ts';
import { loopbackCatalog } from './test-fixtures.ts';

// Pods 10.61.0.5 on edge-n (this node) and 10.62.0.7 on edge-m; nodes with LAN addresses.
function catalog(revision = 1): Catalog {
  const c = loopbackCatalog(
    [
      { name: 'web-0', ip: '10.61.0.5', node: 'edge-n', ports: [8080] },
      { name: 'web-1', ip: '10.62.0.7', node: 'edge-m', ports: [8080] },
      { name: 'v6-0', ip: 'fd00::5', node: 'edge-n', ports: [8080] },
    ],
    revision,
  );
  return {
    ...c,
    nodes: {
      'edge-n': { name: 'edge-n', addresses: ['192.168.50.1'] },
      'edge-m': { name: 'edge-m', addresses: ['192.168.50.3'] },
    },
  };
}

const ctx: SourceContext = { nodeName: 'edge-n', allowNodeLocal: true, localAddress: '192.168.50.1' };
const strict: SourceContext = { ...ctx, allowNodeLocal: false };

describe('decideSource', () => {
  const cases: Array<[string, string | undefined, Catalog | undefined, SourceContext, string]> = [
    ['a pod on this node', '10.61.0.5', catalog(), ctx, 'admit pod'],
    ['a pod on this node, IPv4-mapped', '::ffff:10.61.0.5', catalog(), ctx, 'admit pod'],
    ['an IPv6 pod on this node, non-canonical', 'FD00:0:0::5', catalog(), strict, 'admit pod'],
    ['loopback', '127.0.0.1', catalog(), ctx, 'admit node'],
    ['loopback v6', '::1', undefined, ctx, 'admit node'],
    ['the listen address itself', '192.168.50.1', undefined, ctx, 'admit node'],
    [
      "this node's address from the catalog",
      '192.168.50.1',
      catalog(),
      { ...ctx, localAddress: undefined },
      'admit node',
    ],
    ['loopback without --allow-node-local', '127.0.0.1', catalog(), strict, 'refuse not-a-local-pod'],
    ['this node without --allow-node-local', '192.168.50.1', catalog(), strict, 'refuse not-a-local-pod'],
    ['a pod on another node', '10.62.0.7', catalog(), ctx, 'refuse not-a-local-pod'],
    ["another node's address", '192.168.50.3', catalog(), ctx, 'refuse not-a-local-pod'],
    ['an unknown LAN host', '192.168.50.2', catalog(), ctx, 'wait'],
    ['anything before the first catalog', '10.61.0.5', undefined, ctx, 'wait'],
    ['no address (socket already gone)', undefined, catalog(), ctx, 'refuse not-a-local-pod'],
  ];
  for (const [name, source, cat, c, expected] of cases) {
    it(name, () => {
      const d = decideSource(source, cat, c);
      const summary =
        d.verdict === 'admit' ? `admit ${d.as}` : d.verdict === 'refuse' ? `refuse ${d.reason}` : 'wait';
      expect(summary).toBe(expected);
    });
  }

  it('names the source and why in a refusal', () => {
    expect(decideSource('10.62.0.7', catalog(), ctx)).toMatchObject({
      message: 'source 10.62.0.7 is a pod on node edge-m, not on edge-n',
    });
    expect(decideSource('192.168.50.3', catalog(), ctx)).toMatchObject({
      message: 'source 192.168.50.3 is node edge-m, not a pod on edge-n',
    });
  });

  it('maps sources to the catalog form', () => {
    expect(sourceIP('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(sourceIP('FD00::0:1')).toBe('fd00::1');
    expect(sourceIP('fe80::1%eth0')).toBeUndefined();
    expect(sourceIP(undefined)).toBeUndefined();
  });
});

describe('Admission', () => {
  afterEach(() => vi.useRealTimers());

  const opts = { nodeName: 'edge-n', allowNodeLocal: false };

  it('decides known sources at once', async () => {
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: catalog() });
    const a = new Admission(store, opts);
    expect(await a.decide('10.61.0.5', '192.168.50.1').decision).toEqual({ verdict: 'admit', as: 'pod' });
    expect((await a.decide('10.62.0.7', '192.168.50.1').decision).verdict).toBe('refuse');
    expect(a.held).toBe(0);
    a.close();
  });

  it('admits a held source when the catalog learns it is a pod here (a pod that just started)', async () => {
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: catalog() });
    const a = new Admission(store, opts);
    const { decision } = a.decide('10.61.0.9', '192.168.50.1');
    expect(a.held).toBe(1);
    store.apply({
      type: 'pod',
      revision: 2,
      ip: '10.61.0.9',
      pod: { ip: '10.61.0.9', namespace: 'demo', name: 'new-0', nodeName: 'edge-n' },
    });
    expect(await decision).toEqual({ verdict: 'admit', as: 'pod' });
    expect(a.held).toBe(0);
    a.close();
  });

  it('refuses a held source when the catalog places it on another node', async () => {
    const store = new CatalogStore();
    const a = new Admission(store, opts); // no catalog yet: everything waits
    const { decision } = a.decide('10.62.0.7', undefined);
    store.apply({ type: 'snapshot', catalog: catalog() });
    expect(await decision).toMatchObject({ verdict: 'refuse', reason: 'not-a-local-pod' });
    a.close();
  });

  it('refuses an unknown source once the hold time passes', async () => {
    vi.useFakeTimers();
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: catalog() });
    const a = new Admission(store, { ...opts, holdMs: 3_000 });
    const { decision } = a.decide('192.168.50.2', '192.168.50.1');
    vi.advanceTimersByTime(3_000);
    expect(await decision).toEqual({
      verdict: 'refuse',
      reason: 'not-a-local-pod',
      message: 'source 192.168.50.2 is not a pod on node edge-n',
    });
    expect(a.held).toBe(0);
    a.close();
  });

  it('holds at most maxHeldPerSource per source and maxHeld in all; cancel frees a slot', async () => {
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: catalog() });
    const a = new Admission(store, { ...opts, maxHeld: 3, maxHeldPerSource: 2 });
    const first = a.decide('192.168.50.2', undefined);
    a.decide('192.168.50.2', undefined);
    expect(await a.decide('192.168.50.2', undefined).decision).toMatchObject({
      verdict: 'refuse',
      reason: 'hold-limit',
    });
    a.decide('192.168.50.4', undefined);
    expect(await a.decide('192.168.50.5', undefined).decision).toMatchObject({ reason: 'hold-limit' });
    first.cancel();
    first.cancel(); // twice is harmless
    expect(a.held).toBe(2);
    a.decide('192.168.50.5', undefined);
    expect(a.held).toBe(3);
    a.close();
    expect(a.held).toBe(0);
  });
});
