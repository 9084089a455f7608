import { describe, expect, it } from 'vitest';
import { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog, ServiceEntry } from '../lib/catalog/types.ts';
import { loopbackCatalog } from './test-fixtures.ts';
import type { FlowSweeper } from './udp-flow.ts';
import { followUdpIdle, retimeUdpFlows, udpIdleFor } from './udp-idle.ts';

/** demo/echo with UDP 5683 on 127.0.0.3 (and TCP 7 beside it), plus `extra` services. */
function catalogWith(echoIdleMs: number | undefined, extra: Record<string, ServiceEntry> = {}): Catalog {
  const c = structuredClone(loopbackCatalog([{ name: 'udp-1', ip: '127.0.0.3', node: 'far', ports: [7] }]));
  const echo = c.services['demo/echo'];
  echo.endpoints[0].ports.push({ name: 'coap', port: 5683, protocol: 'UDP' });
  if (echoIdleMs !== undefined) echo.service.udpIdleTimeoutMs = echoIdleMs;
  Object.assign(c.services, extra);
  return c;
}

/** A second Service over the same endpoint (another selector matching the same pod). */
function sharing(from: Catalog, name: string, idleMs: number | undefined, port = 5683): ServiceEntry {
  const entry = structuredClone(from.services['demo/echo']);
  entry.service.name = name;
  entry.service.udpIdleTimeoutMs = idleMs;
  if (idleMs === undefined) delete entry.service.udpIdleTimeoutMs;
  entry.endpoints[0].ports = [{ name: 'coap', port, protocol: 'UDP' }];
  return entry;
}

describe('udpIdleFor', () => {
  it("the Service's annotation for its endpoint's UDP port", () => {
    const c = catalogWith(120_000);
    expect(udpIdleFor(c, '127.0.0.3', 5683)).toBe(120_000);
  });

  it('none set: undefined (the dialer keeps its default)', () => {
    const c = catalogWith(undefined);
    expect(udpIdleFor(c, '127.0.0.3', 5683)).toBeUndefined();
  });

  it('only the UDP port of that endpoint: not a TCP port, another port or another IP', () => {
    const c = catalogWith(120_000);
    expect(udpIdleFor(c, '127.0.0.3', 7)).toBeUndefined(); // TCP 7 of the same slice
    expect(udpIdleFor(c, '127.0.0.3', 5684)).toBeUndefined();
    expect(udpIdleFor(c, '127.0.0.4', 5683)).toBeUndefined();
    expect(udpIdleFor(c, '10.96.0.10', 5683)).toBeUndefined(); // the ClusterIP is not an endpoint
  });

  it('two Services sharing the endpoint and port: the longer of theirs, whichever is listed first', () => {
    const base = catalogWith(60_000);
    const longer = catalogWith(60_000, { 'demo/echo-2': sharing(base, 'echo-2', 300_000) });
    expect(udpIdleFor(longer, '127.0.0.3', 5683)).toBe(300_000);
    const shorter = catalogWith(60_000, { 'demo/echo-2': sharing(base, 'echo-2', 5_000) });
    expect(udpIdleFor(shorter, '127.0.0.3', 5683)).toBe(60_000);
    // One annotated, one not: the annotated one's (the other's default is the dialer's).
    const unset = catalogWith(undefined, { 'demo/echo-2': sharing(base, 'echo-2', 90_000) });
    expect(udpIdleFor(unset, '127.0.0.3', 5683)).toBe(90_000);
    // Sharing the endpoint IP but on another port: each port its own Service's.
    const other = catalogWith(60_000, { 'demo/echo-2': sharing(base, 'echo-2', 300_000, 5684) });
    expect(udpIdleFor(other, '127.0.0.3', 5683)).toBe(60_000);
    expect(udpIdleFor(other, '127.0.0.3', 5684)).toBe(300_000);
  });

  it('per catalog revision: a changed annotation applies from the catalog that carries it', () => {
    const before = catalogWith(60_000);
    expect(udpIdleFor(before, '127.0.0.3', 5683)).toBe(60_000);
    const after = structuredClone(before);
    after.services['demo/echo'].service.udpIdleTimeoutMs = 600_000;
    expect(udpIdleFor(after, '127.0.0.3', 5683)).toBe(600_000);
    expect(udpIdleFor(before, '127.0.0.3', 5683)).toBe(60_000);
  });
});

/** A stand-in for an open UdpFlow: its target and the timeouts it was given. */
function flowTo(ip: string, port: number) {
  const flow = {
    target: { ip, port },
    given: [] as number[],
    retime: (ms: number) => flow.given.push(ms),
  };
  return flow;
}

describe('retimeUdpFlows', () => {
  it("gives the flows to the named ports the catalog's timeout (the longest if shared), else the fallback", () => {
    const base = catalogWith(60_000);
    const c = catalogWith(60_000, { 'demo/echo-2': sharing(base, 'echo-2', 300_000) });
    const shared = [flowTo('127.0.0.3', 5683), flowTo('127.0.0.3', 5683)];
    const unannotated = flowTo('127.0.0.3', 7000);
    const elsewhere = flowTo('127.0.0.4', 5683);
    const open = byTarget([...shared, unannotated, elsewhere]);
    const n = retimeUdpFlows(
      c,
      (k) => open.get(k),
      ['127.0.0.3 5683', '127.0.0.3 7000', '127.0.0.9 1'],
      30_000,
    );
    expect(n).toBe(3);
    expect(shared.map((f) => f.given)).toEqual([[300_000], [300_000]]);
    expect(unannotated.given).toEqual([30_000]);
    expect(elsewhere.given).toEqual([]); // not a port of the changed Service: untouched
  });
});

/** Flows by "ip port", as FlowSweeper.flowsTo finds them. */
function byTarget(flows: ReturnType<typeof flowTo>[]): Map<string, ReturnType<typeof flowTo>[]> {
  const m = new Map<string, ReturnType<typeof flowTo>[]>();
  for (const f of flows)
    m.set(`${f.target.ip} ${f.target.port}`, [...(m.get(`${f.target.ip} ${f.target.port}`) ?? []), f]);
  return m;
}

describe('followUdpIdle', () => {
  /** A sweeper holding `flows`, counting the look-ups by target. */
  function sweeperOf(flows: ReturnType<typeof flowTo>[]) {
    const open = byTarget(flows);
    const s = {
      lookups: 0,
      size: flows.length,
      flowsTo: (key: string) => {
        s.lookups++;
        return open.get(key);
      },
    };
    return s;
  }

  it('re-reads the flows of annotated Services (before or after the update) only', () => {
    const store = new CatalogStore();
    const first = catalogWith(60_000, {
      'demo/plain': sharing(catalogWith(60_000), 'plain', undefined, 6000),
    });
    store.apply({ type: 'snapshot', catalog: first });
    const echo = flowTo('127.0.0.3', 5683);
    const plain = flowTo('127.0.0.3', 6000);
    const sweeper = sweeperOf([echo, plain]);
    const unfollow = followUdpIdle(store, {
      sweeper: sweeper as unknown as FlowSweeper,
      defaultIdleMs: 30_000,
    });
    let revision = first.revision;
    const update = (key: string, entry: ServiceEntry | null) =>
      store.apply({ type: 'service', revision: ++revision, key, entry });

    // A Service without the annotation before and after: nothing looked up.
    update('demo/plain', structuredClone(first.services['demo/plain']));
    expect(sweeper.lookups).toBe(0);
    // The annotated one changes: its flows re-read, the other Service's flow untouched.
    const echoEntry = structuredClone(first.services['demo/echo']);
    echoEntry.service.udpIdleTimeoutMs = 10_000;
    update('demo/echo', echoEntry);
    expect(echo.given).toEqual([10_000]);
    // Removed: the default; deleted while annotated: its old ports still re-read.
    const removed = structuredClone(echoEntry);
    delete removed.service.udpIdleTimeoutMs;
    update('demo/echo', removed);
    expect(echo.given).toEqual([10_000, 30_000]);
    update('demo/echo', echoEntry);
    update('demo/echo', null);
    expect(echo.given).toEqual([10_000, 30_000, 10_000, 30_000]);
    expect(plain.given).toEqual([]);
    // A snapshot re-reads the flows of every Service annotated before or after it.
    store.apply({ type: 'snapshot', catalog: catalogWith(90_000) });
    expect(echo.given.at(-1)).toBe(90_000);
    expect(plain.given).toEqual([]);
    unfollow();
    revision = store.current?.revision ?? 0;
    expect(update('demo/echo', echoEntry)).toBe(true);
    expect(echo.given.at(-1)).toBe(90_000); // unsubscribed: not re-read
  });
});
