import { describe, expect, it } from 'vitest';
import { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog, CatalogUpdate } from '../lib/catalog/types.ts';
import { MAX_CONTROL } from '../lib/tunnel/frame.ts';
import {
  MAX_MOVES_PER_NODE,
  moveCatalog,
  movePod,
  PodMoves,
  podIdentity,
  podMovesMessage,
  validateMove,
} from './pod-moves.ts';
import { loopbackCatalog } from './test-fixtures.ts';

// demo/echo with web-0 on edge-n (this node, 10.61.0.5) and web-1 on edge-m (10.62.0.7).
function catalog(): Catalog {
  const c = loopbackCatalog([
    { name: 'web-0', ip: '10.61.0.5', node: 'edge-n', ports: [8080] },
    { name: 'web-1', ip: '10.62.0.7', node: 'edge-m', ports: [8080] },
  ]);
  return {
    ...c,
    nodes: {
      'edge-n': { name: 'edge-n', addresses: ['192.168.50.1'] },
      'edge-m': { name: 'edge-m', addresses: ['192.168.50.3'] },
    },
  };
}

const UID0 = '0f3c1f9e-1111-4a4a-9b9b-000000000000';
const endpointIps = (c: Catalog | undefined) => c?.services['demo/echo'].endpoints.map((e) => e.ip).sort();

function setup(podSide = true) {
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: catalog() });
  const told: unknown[][] = [];
  const moves = new PodMoves(store, {
    nodeName: 'edge-n',
    onLocalChange: (m) => told.push(m),
    podSide: async () => podSide,
  });
  moves.apiPod('demo/web-0', { uid: UID0, ips: ['10.61.0.5'] });
  return { store, moves, told };
}

describe('validateMove', () => {
  it('takes a move and canonicalises its IP', () => {
    expect(validateMove({ namespace: 'demo', name: 'web-0', uid: UID0, ip: 'FD00:0::5' })).toEqual({
      namespace: 'demo',
      name: 'web-0',
      uid: UID0,
      ip: 'fd00::5',
    });
  });
  const bad: Array<[string, unknown, RegExp]> = [
    ['not an object', 'x', /namespace/],
    ['a namespace with a slash', { namespace: 'a/b', name: 'p', uid: 'u', ip: '10.0.0.1' }, /namespace/],
    ['an upper-case name', { namespace: 'a', name: 'P', uid: 'u', ip: '10.0.0.1' }, /name/],
    ['a uid with spaces', { namespace: 'a', name: 'p', uid: 'u u', ip: '10.0.0.1' }, /uid/],
    ['a host name for an IP', { namespace: 'a', name: 'p', uid: 'u', ip: 'example.com' }, /ip/],
    ['a zoned IPv6', { namespace: 'a', name: 'p', uid: 'u', ip: 'fe80::1%eth0' }, /ip/],
  ];
  for (const [name, raw, message] of bad)
    it(`refuses ${name}`, () => expect(() => validateMove(raw)).toThrow(message));
});

describe('the rewrite (pure)', () => {
  const moves = new Map([
    ['edge-n', new Map([['demo/web-0', { namespace: 'demo', name: 'web-0', uid: UID0, ip: '10.61.0.9' }]])],
  ]);
  it('re-addresses the moved pod, in endpoints and the pod table, and only it', () => {
    const moved = moveCatalog(catalog(), moves);
    expect(endpointIps(moved)).toEqual(['10.61.0.9', '10.62.0.7']);
    expect(moved.pods['10.61.0.5']).toBeUndefined();
    expect(moved.pods['10.61.0.9']).toEqual({
      ip: '10.61.0.9',
      namespace: 'demo',
      name: 'web-0',
      nodeName: 'edge-n',
    });
    expect(moved.pods['10.62.0.7']?.name).toBe('web-1');
  });
  it('a pod update for the old IP is a removal; any update for the new IP is the moved pod', () => {
    const old = catalog().pods['10.61.0.5'];
    expect(movePod('10.61.0.5', old, moves)).toBeNull();
    expect(movePod('10.61.0.9', null, moves)?.name).toBe('web-0');
    expect(movePod('10.62.0.7', catalog().pods['10.62.0.7'], moves)?.name).toBe('web-1');
  });
  it('a pod of the same name on another node is not moved', () => {
    const other = new Map([['edge-m', moves.get('edge-n') as Map<string, never>]]);
    expect(endpointIps(moveCatalog(catalog(), other))).toEqual(['10.61.0.5', '10.62.0.7']);
  });
});

describe('PodMoves', () => {
  it('a HELLO from a new pod-side IP with the API uid moves the pod and tells the peers', async () => {
    const { store, moves, told } = setup();
    expect(
      await moves.claim('10.61.0.9', '192.168.50.1', { namespace: 'demo', name: 'web-0', uid: UID0 }),
    ).toBeUndefined();
    expect(endpointIps(store.current)).toEqual(['10.61.0.9', '10.62.0.7']);
    expect(store.current?.pods['10.61.0.9']?.name).toBe('web-0');
    expect(told).toEqual([[{ namespace: 'demo', name: 'web-0', uid: UID0, ip: '10.61.0.9' }]]);
    // The same HELLO again changes nothing.
    const revision = store.current?.revision;
    expect(
      await moves.claim('10.61.0.9', '192.168.50.1', { namespace: 'demo', name: 'web-0', uid: UID0 }),
    ).toBeUndefined();
    expect(store.current?.revision).toBe(revision);
  });

  const refusals: Array<[string, string, { namespace: string; name: string; uid: string }, boolean, RegExp]> =
    [
      ['a wrong uid', '10.61.0.9', { namespace: 'demo', name: 'web-0', uid: 'other' }, true, /has uid/],
      [
        "another node's pod",
        '10.61.0.9',
        { namespace: 'demo', name: 'web-1', uid: UID0 },
        true,
        /not a pod of node edge-n/,
      ],
      [
        'a source that is another pod',
        '10.62.0.7',
        { namespace: 'demo', name: 'web-0', uid: UID0 },
        true,
        /is pod demo\/web-1/,
      ],
      [
        'a source that is a node',
        '192.168.50.3',
        { namespace: 'demo', name: 'web-0', uid: UID0 },
        true,
        /is node edge-m/,
      ],
      [
        'a source routed like the LAN',
        '192.168.50.77',
        { namespace: 'demo', name: 'web-0', uid: UID0 },
        false,
        /routed/,
      ],
    ];
  for (const [name, source, hello, podSide, message] of refusals) {
    it(`refuses ${name}, and changes nothing`, async () => {
      const { store, moves, told } = setup(podSide);
      const before = store.current;
      expect(await moves.claim(source, '192.168.50.1', hello)).toMatch(message);
      expect(store.current).toBe(before);
      expect(told).toEqual([]);
    });
  }

  it('replayed old objects from the watcher do not bring the old IP back', async () => {
    const { store, moves } = setup();
    await moves.claim('10.61.0.9', '192.168.50.1', { namespace: 'demo', name: 'web-0', uid: UID0 });
    const old = catalog();
    // What the watcher applies when the edge API replays the cached objects.
    expect(
      moves.apply({ type: 'service', revision: 99, key: 'demo/echo', entry: old.services['demo/echo'] }),
    ).toBe(true);
    expect(moves.apply({ type: 'pod', revision: 7, ip: '10.61.0.5', pod: old.pods['10.61.0.5'] })).toBe(true);
    expect(moves.apply({ type: 'snapshot', catalog: { ...old, revision: 50 } })).toBe(true);
    expect(endpointIps(store.current)).toEqual(['10.61.0.9', '10.62.0.7']);
    expect(store.current?.pods['10.61.0.5']).toBeUndefined();
    expect(store.current?.pods['10.61.0.9']?.name).toBe('web-0');
  });

  it('numbers what it applies after the store, whatever the watcher numbered', () => {
    const { store, moves } = setup();
    const r = store.current?.revision ?? 0;
    const updates: CatalogUpdate[] = [
      { type: 'node', revision: 1000, name: 'edge-x', node: { name: 'edge-x', addresses: [] } },
      { type: 'node', revision: 3, name: 'edge-x', node: null },
    ];
    for (const u of updates) expect(moves.apply(u)).toBe(true);
    expect(store.current?.revision).toBe(r + 2);
  });

  it('the move ends when the API reports the pod at its new IP, or a new pod under the name', async () => {
    const { moves, told } = setup();
    await moves.claim('10.61.0.9', '192.168.50.1', { namespace: 'demo', name: 'web-0', uid: UID0 });
    moves.apiPod('demo/web-0', { uid: UID0, ips: ['10.61.0.5'] }); // API still behind: kept
    expect(moves.local).toHaveLength(1);
    moves.apiPod('demo/web-0', { uid: UID0, ips: ['10.61.0.9'] });
    expect(moves.local).toEqual([]);
    expect(told.at(-1)).toEqual([]);
    await moves.claim('10.61.0.10', '192.168.50.1', { namespace: 'demo', name: 'web-0', uid: UID0 });
    moves.apiPod('demo/web-0', { uid: 'a-new-pod', ips: ['10.61.0.11'] });
    expect(moves.local).toEqual([]);
  });

  it("streams for a moved pod's old IP go to its new one, until the move ends", async () => {
    const { moves } = setup();
    expect(moves.translate('10.61.0.5')).toBe('10.61.0.5');
    await moves.claim('10.61.0.9', '192.168.50.1', { namespace: 'demo', name: 'web-0', uid: UID0 });
    expect(moves.translate('10.61.0.5')).toBe('10.61.0.9');
    expect(moves.translate('10.62.0.7')).toBe('10.62.0.7');
    moves.apiPod('demo/web-0', { uid: UID0, ips: ['10.61.0.9'] });
    expect(moves.translate('10.61.0.5')).toBe('10.61.0.5');
  });

  it("a peer's moves apply to its own pods only, and its next set replaces the last", () => {
    const { store, moves } = setup();
    const web1 = { namespace: 'demo', name: 'web-1', uid: 'u1', ip: '10.62.0.8' };
    const web0 = { namespace: 'demo', name: 'web-0', uid: UID0, ip: '10.62.0.66' };
    expect(moves.fromPeer('edge-m', [web1, web0])).toEqual([]);
    // web-0 is edge-n's pod: edge-m's word for it changes nothing.
    expect(endpointIps(store.current)).toEqual(['10.61.0.5', '10.62.0.8']);
    expect(store.current?.pods['10.62.0.8']).toMatchObject({ name: 'web-1', nodeName: 'edge-m' });
    expect(moves.fromPeer('edge-m', [{ ...web1, ip: '10.62.0.9' }])).toEqual([]);
    expect(endpointIps(store.current)).toEqual(['10.61.0.5', '10.62.0.9']);
    expect(moves.fromPeer('edge-n', [web0])).toEqual(['a peer named like this node']);
  });

  it("a peer's bad entries are refused one by one, and a flood is capped", () => {
    const { moves } = setup();
    const problems = moves.fromPeer('edge-m', [{ namespace: 'demo', name: 'web-1', uid: 'u1', ip: 'x' }, 7]);
    expect(problems).toHaveLength(2);
    const many = Array.from({ length: MAX_MOVES_PER_NODE + 10 }, (_, i) => ({
      namespace: 'demo',
      name: `p${i}`,
      uid: 'u',
      ip: `10.63.${i >> 8}.${i & 255}`,
    }));
    expect(moves.fromPeer('edge-m', many)).toEqual([`more than ${MAX_MOVES_PER_NODE} moves`]);
    expect(moves.counts['edge-m']).toBe(MAX_MOVES_PER_NODE);
    expect(moves.fromPeer('edge-m', 'nope')).toEqual(['moves is not a list']);
    expect(moves.counts['edge-m']).toBeUndefined();
  });
});

describe('messages and Pod objects', () => {
  it('a moves message always fits one CONTROL frame', () => {
    const long = 'a'.repeat(250);
    const many = Array.from({ length: MAX_MOVES_PER_NODE }, (_, i) => ({
      namespace: 'n'.repeat(63),
      name: `${long}${i}`.slice(-253),
      uid: 'u'.repeat(64),
      ip: `fd00::${i.toString(16)}`,
    }));
    const message = podMovesMessage(many) as { moves: unknown[] };
    expect(Buffer.byteLength(JSON.stringify(message))).toBeLessThanOrEqual(MAX_CONTROL);
    expect(message.moves.length).toBeGreaterThan(0);
    expect(message.moves.at(-1)).toEqual(many.at(-1)); // the newest are kept
  });
  it("reads a Pod's uid and the IPs the catalog takes", () => {
    expect(
      podIdentity({
        metadata: { namespace: 'demo', name: 'web-0', uid: UID0 },
        spec: { nodeName: 'edge-n' },
        status: { phase: 'Running', podIP: '10.61.0.5', podIPs: [{ ip: '10.61.0.5' }, { ip: 'fd00::5' }] },
      }),
    ).toEqual({ uid: UID0, ips: ['10.61.0.5', 'fd00::5'] });
    expect(podIdentity(null)).toEqual({ uid: '', ips: [] });
  });
});
