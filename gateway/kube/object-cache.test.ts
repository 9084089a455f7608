import { describe, expect, it } from 'vitest';
import { holdsKubernetesService, ObjectCache } from './object-cache.ts';

const svc = (name: string, rv: string, uid = `uid-${name}`, namespace = 'demo') => ({
  metadata: { namespace, name, uid, resourceVersion: rv },
});
const kubernetes = svc('kubernetes', '1', 'uid-k', 'default');
const types = (events: { type: string; key: string }[]) => events.map((e) => `${e.type} ${e.key}`);

describe('ObjectCache', () => {
  it('a replayed ADDED of the version it holds is a no-op (the edge API replays on every watch)', () => {
    const cache = new ObjectCache({ isWarm: holdsKubernetesService });
    expect(types(cache.applyList([kubernetes, svc('web', '5')]).events)).toEqual([
      'add default/kubernetes',
      'add demo/web',
    ]);
    expect(cache.applyEvent('ADDED', svc('web', '5'))).toBeUndefined();
    expect(cache.applyEvent('ADDED', kubernetes)).toBeUndefined();
    expect(cache.applyList([kubernetes, svc('web', '5')]).events).toEqual([]);
    expect(cache.applyEvent('MODIFIED', svc('web', '6'))?.type).toBe('update');
  });

  it('a cold list (no default/kubernetes) withdraws nothing; a warm one withdraws what it lacks', () => {
    const cache = new ObjectCache({ isWarm: holdsKubernetesService });
    cache.applyList([kubernetes, svc('web', '5'), svc('api', '7')]);
    const empty = cache.applyList([]);
    expect(empty).toEqual({ events: [], warm: false, kept: ['default/kubernetes', 'demo/web', 'demo/api'] });
    const partial = cache.applyList([svc('web', '5')]);
    expect(partial.warm).toBe(false);
    expect(partial.events).toEqual([]);
    expect(cache.size).toBe(3);
    const warm = cache.applyList([kubernetes, svc('web', '5')]);
    expect(warm.warm).toBe(true);
    expect(types(warm.events)).toEqual(['delete demo/api']);
    expect(warm.events[0].obj).toEqual({ metadata: { namespace: 'demo', name: 'api' } });
  });

  it('a cold list still adds and updates', () => {
    const cache = new ObjectCache({ isWarm: holdsKubernetesService });
    cache.applyList([kubernetes, svc('web', '5')]);
    expect(types(cache.applyList([svc('web', '6'), svc('new', '1')]).events)).toEqual([
      'update demo/web',
      'add demo/new',
    ]);
  });

  it('an object a warm list showed gone stays gone when a stale cache replays it; a new one under its name is taken', () => {
    const cache = new ObjectCache({ isWarm: holdsKubernetesService });
    cache.applyList([kubernetes, svc('api', '7')]);
    cache.applyList([kubernetes]); // deleted in the cloud while the edge was offline
    expect(cache.applyEvent('ADDED', svc('api', '7'))).toBeUndefined(); // edge cache replay
    expect(cache.applyList([kubernetes, svc('api', '7')]).events).toEqual([]); // offline list from the cache
    expect(cache.applyEvent('ADDED', svc('api', '9', 'uid-api-2'))?.type).toBe('add'); // recreated
  });

  it('DELETED of an unknown object is a no-op; without isWarm every list is the whole truth', () => {
    const cache = new ObjectCache();
    expect(cache.applyEvent('DELETED', svc('web', '1'))).toBeUndefined();
    cache.applyList([svc('web', '1')]);
    expect(types(cache.applyList([]).events)).toEqual(['delete demo/web']);
  });

  it('objects without uid and resourceVersion are never taken for replays', () => {
    const cache = new ObjectCache();
    const bare = { metadata: { name: 'n1' } };
    expect(cache.applyEvent('ADDED', bare)?.type).toBe('add');
    expect(cache.applyEvent('ADDED', bare)?.type).toBe('update');
  });
});
