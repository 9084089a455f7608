import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../lib/kube/client.ts';
import { waitFor } from '../../test/harness/netns.ts';
import { type CacheEvent, ObjectCache } from './object-cache.ts';
import { LIST_EVENTS_PER_TURN, Reflector } from './reflector.ts';

const svc = (name: string) => ({
  metadata: { namespace: 'd', name, uid: name, resourceVersion: '5' },
  junk: 'x',
});
let server: http.Server;
let api: ApiClient;
const asked: string[] = [];
/** Pages as a full API server answers them; `ignoreLimit`: as KubeEdge's edge API (one page). */
let ignoreLimit = false;
/** A body to answer LISTs with instead (a broken API). */
let listBody: string | undefined;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '', 'http://x');
    asked.push(`${url.pathname}?${url.searchParams}`);
    res.setHeader('content-type', 'application/json');
    if (url.searchParams.get('watch')) {
      setTimeout(() => res.end(), 200); // a watch that ends quietly
      return;
    }
    if (listBody !== undefined) {
      // In two writes: the decoder sees the body in pieces, as from a real server.
      res.write(listBody.slice(0, 7));
      setTimeout(() => res.end(listBody?.slice(7)), 10);
      return;
    }
    const all = ['a', 'b', 'c'].map(svc);
    if (ignoreLimit) {
      res.end(JSON.stringify({ metadata: { resourceVersion: '5' }, items: all }));
      return;
    }
    const page = url.searchParams.get('continue') === 'next' ? all.slice(2) : all.slice(0, 2);
    const cont = url.searchParams.get('continue') ? undefined : 'next';
    res.end(JSON.stringify({ metadata: { resourceVersion: '5', continue: cont }, items: page }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  api = new ApiClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, async () => ({
    headers: {},
  }));
});
afterAll(() => {
  api.close();
  server.close();
});

async function listOnce(): Promise<{ events: CacheEvent[]; count: number }> {
  const events: CacheEvent[] = [];
  let count = -1;
  const reflector = new Reflector({
    api,
    path: '/api/v1/services',
    cache: new ObjectCache(),
    relist: false,
    watchTimeoutSeconds: 60,
    pageSize: 2,
    decode: (obj) => ({ metadata: (obj as { metadata: unknown }).metadata }),
    onEvent: (e) => events.push(e),
    onListed: (info) => {
      count = info.count;
    },
    onError: (err) => {
      throw err;
    },
  });
  reflector.start();
  await waitFor(() => count >= 0, 5_000, 20, 'listed');
  await reflector.stop();
  return { events, count };
}

describe('Reflector LIST', () => {
  it('follows continue tokens page by page and decodes every item', async () => {
    asked.length = 0;
    const { events, count } = await listOnce();
    expect(count).toBe(3);
    expect(events.map((e) => e.key)).toEqual(['d/a', 'd/b', 'd/c']);
    expect(events.every((e) => !('junk' in (e.obj as object)))).toBe(true);
    expect(asked.slice(0, 2)).toEqual(['/api/v1/services?limit=2', '/api/v1/services?limit=2&continue=next']);
  });

  it('takes a whole list from an API that ignores limit (the edge API)', async () => {
    ignoreLimit = true;
    asked.length = 0;
    const { count } = await listOnce();
    expect(count).toBe(3);
    expect(asked.filter((p) => !p.includes('watch'))).toEqual(['/api/v1/services?limit=2']);
  });
});

describe('Reflector LIST of a broken body', () => {
  it('fails the list with the URL, the problem and its byte offset, and retries', async () => {
    const body = '{"metadata":{"resourceVersion":"5"},"items":[{"metadata":{"name":"a"}},{"metadata":';
    listBody = body;
    const errors: string[] = [];
    const reflector = new Reflector({
      api,
      path: '/api/v1/services',
      cache: new ObjectCache(),
      relist: false,
      watchTimeoutSeconds: 60,
      retryInitialMs: 10,
      onEvent: () => {},
      onListed: () => {
        throw new Error('a broken list must not be listed');
      },
      onError: (err) => errors.push(err.message),
    });
    reflector.start();
    await waitFor(() => errors.length >= 2, 5_000, 20, 'two failed lists');
    await reflector.stop();
    listBody = undefined;
    expect(errors[0]).toMatch(
      /^GET http:\/\/127\.0\.0\.1:\d+\/api\/v1\/services\?limit=500: HTTP 200: the body is not a List: the body ends inside items\[1\] \(truncated\) at byte (\d+)$/,
    );
    // Where the body ended: a truncated body's offset is its length.
    expect(errors[0]).toMatch(new RegExp(`at byte ${body.length}$`));
  });
});

describe('Reflector LIST applied in turns', () => {
  it(`hands a large list's events over ${LIST_EVENTS_PER_TURN} per event-loop turn, in order`, async () => {
    const total = 2 * LIST_EVENTS_PER_TURN + 7;
    const names = Array.from({ length: total }, (_, i) => `s${i}`);
    listBody = JSON.stringify({ metadata: { resourceVersion: '9' }, items: names.map(svc) });
    const keys: string[] = [];
    let otherWorkAt = -1;
    let listed = -1;
    const reflector = new Reflector({
      api,
      path: '/api/v1/services',
      cache: new ObjectCache(),
      relist: false,
      watchTimeoutSeconds: 60,
      onEvent: (e) => {
        // Other work queued by the first event (a LOOKUP, the heap budget's check) runs after the first turn's events.
        if (keys.length === 0) setImmediate(() => (otherWorkAt = keys.length));
        keys.push(e.key);
      },
      onListed: (info) => {
        listed = info.count;
      },
      onError: (err) => {
        throw err;
      },
    });
    reflector.start();
    await waitFor(() => listed >= 0, 5_000, 20, 'listed');
    await reflector.stop();
    listBody = undefined;
    expect(listed).toBe(total);
    expect(keys).toEqual(names.map((n) => `d/${n}`));
    expect(otherWorkAt).toBe(LIST_EVENTS_PER_TURN);
  });
});
