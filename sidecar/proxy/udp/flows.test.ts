import { describe, expect, it } from 'vitest';
import { DEFAULT_IDLE_MS, type EndReason, type Flow, FlowTable, type Route } from './flows.ts';

function setup(options: { idleMs?: number; maxFlows?: number } = {}) {
  let now = 1_000;
  const ended: [string, EndReason][] = [];
  const table = new FlowTable<string>({ ...options, now: () => now }, (f: Flow<string>, r) =>
    ended.push([f.key, r]),
  );
  return {
    table,
    ended,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

/** A route whose picks go round the given endpoints; `ready` can be changed by the test. */
function route(endpoints: string[], idleMs?: number): Route & { ready: Set<string>; picks: number } {
  let i = 0;
  const ready = new Set(endpoints);
  const r = {
    ready,
    picks: 0,
    idleMs,
    pick() {
      const list = [...ready];
      if (list.length === 0) return undefined;
      r.picks++;
      return list[i++ % list.length];
    },
  };
  return r;
}

const A = '10.60.0.2:40000';
const B = '10.60.0.2:40001';
const VIP = '10.96.0.10:5353';

describe('FlowTable', () => {
  it('keeps a client on the endpoint it got while the flow is active', () => {
    const { table } = setup();
    const r = route(['10.1.0.1:53', '10.1.0.2:53']);
    const first = table.lookup(A, VIP, r);
    expect(first.kind).toBe('new');
    for (let i = 0; i < 5; i++) {
      const again = table.lookup(A, VIP, r);
      expect(again.kind).toBe('existing');
      if (again.kind !== 'no-endpoint' && first.kind !== 'no-endpoint') {
        expect(again.flow.endpoint).toBe(first.flow.endpoint);
      }
    }
    expect(r.picks).toBe(1);
    // Another source port of the same client is another flow, balanced separately.
    const other = table.lookup(B, VIP, r);
    expect(other.kind === 'new' && other.flow.endpoint).toBe('10.1.0.2:53');
    expect(table.size).toBe(2);
  });

  it('expires idle flows on a sweep, not before, and a reply counts as activity', () => {
    const { table, ended, advance } = setup();
    const r = route(['10.1.0.1:53']);
    const a = table.lookup(A, VIP, r);
    table.lookup(B, VIP, r);
    advance(DEFAULT_IDLE_MS - 1);
    if (a.kind !== 'no-endpoint') table.touch(a.flow); // a reply on A's flow
    expect(table.sweep()).toBe(0);
    advance(1);
    expect(table.sweep()).toBe(1);
    expect(ended).toEqual([[`${B}|${VIP}`, 'idle']]);
    expect(table.get(A, VIP)).toBeDefined();
    expect(table.get(B, VIP)).toBeUndefined();
  });

  it('uses the per-service idle timeout when the route has one', () => {
    const { table, advance } = setup();
    table.lookup(A, VIP, route(['10.1.0.1:53'], 5_000));
    table.lookup(B, VIP, route(['10.1.0.1:53']));
    advance(5_000);
    expect(table.sweep()).toBe(1);
    expect(table.get(A, VIP)).toBeUndefined();
    expect(table.get(B, VIP)?.idleMs).toBe(DEFAULT_IDLE_MS);
  });

  it.each([0, -1, Number.NaN, Number.POSITIVE_INFINITY])(
    'falls back to the table default for a route idle timeout of %d',
    (idleMs) => {
      const { table } = setup({ idleMs: 700 });
      table.lookup(A, VIP, route(['10.1.0.1:53'], idleMs));
      expect(table.get(A, VIP)?.idleMs).toBe(700);
    },
  );

  it("retime: a flow takes its service's changed timeout from the next sweep", () => {
    const { table, ended, advance } = setup({ idleMs: 700 });
    table.lookup(A, VIP, route(['10.1.0.1:53'], 60_000));
    table.lookup(B, VIP, route(['10.1.0.1:53'], 60_000));
    const a = table.get(A, VIP) as Flow<string>;
    advance(20_000);
    // Shortened below how long it has been idle: ended at the next sweep, not 40 s later.
    table.retime(a, 10_000);
    expect(table.sweep()).toBe(1);
    expect(ended).toEqual([[`${A}|${VIP}`, 'idle']]);
    // Lengthened: kept past the 60 s the flow was created with.
    const b = table.get(B, VIP) as Flow<string>;
    table.retime(b, 120_000);
    advance(50_000); // idle 70 s
    expect(table.sweep()).toBe(0);
    // Removed (undefined) or unusable: the table's default, measured from the last activity.
    table.retime(b, Number.NaN);
    expect(b.idleMs).toBe(700);
    table.retime(b, 120_000);
    table.retime(b, undefined);
    expect(b.idleMs).toBe(700);
    expect(table.sweep()).toBe(1);
    expect(table.size).toBe(0);
  });

  it('treats an idle flow not yet swept as gone: a new pick', () => {
    const { table, ended, advance } = setup({ idleMs: 100 });
    const r = route(['10.1.0.1:53', '10.1.0.2:53']);
    table.lookup(A, VIP, r);
    advance(100);
    const again = table.lookup(A, VIP, r);
    expect(again.kind).toBe('new');
    expect(ended).toEqual([[`${A}|${VIP}`, 'idle']]);
    expect(r.picks).toBe(2);
  });

  it('evicts the least recently active flow at the bound', () => {
    const { table, ended, advance } = setup({ maxFlows: 3 });
    const r = route(['10.1.0.1:53']);
    const clients = ['10.60.0.2:1', '10.60.0.2:2', '10.60.0.2:3'];
    for (const c of clients) {
      table.lookup(c, VIP, r);
      advance(10);
    }
    table.lookup(clients[0], VIP, r); // the first client is active again: the second is oldest
    table.lookup('10.60.0.2:4', VIP, r);
    expect(table.size).toBe(3);
    expect(ended).toEqual([[`${clients[1]}|${VIP}`, 'evicted']]);
    expect(table.get(clients[0], VIP)).toBeDefined();
  });

  it('re-picks when the chosen endpoint leaves the ready set, keeping the flow', () => {
    const { table, ended } = setup();
    const r = route(['10.1.0.1:53', '10.1.0.2:53']);
    const first = table.lookup(A, VIP, r);
    if (first.kind === 'no-endpoint') throw new Error('expected a flow');
    first.flow.value = 'upstream socket';
    r.ready.delete(first.flow.endpoint);
    const again = table.lookup(A, VIP, r);
    expect(again.kind).toBe('repicked');
    if (again.kind === 'no-endpoint') throw new Error('expected a flow');
    expect(again.flow).toBe(first.flow);
    expect(again.flow.endpoint).toBe('10.1.0.2:53');
    expect(again.flow.value).toBe('upstream socket');
    expect(ended).toEqual([]);
  });

  it('reports no endpoint without creating a flow, and remove() ends a flow', () => {
    const { table, ended } = setup();
    const r = route([]);
    expect(table.lookup(A, VIP, r)).toEqual({ kind: 'no-endpoint' });
    expect(table.size).toBe(0);
    r.ready.add('10.1.0.1:53');
    const made = table.lookup(A, VIP, r);
    if (made.kind === 'no-endpoint') throw new Error('expected a flow');
    r.ready.clear();
    expect(table.lookup(A, VIP, r)).toEqual({ kind: 'no-endpoint' });
    table.remove(made.flow);
    table.remove(made.flow); // twice is harmless
    expect(ended).toEqual([[`${A}|${VIP}`, 'removed']]);
    expect(table.size).toBe(0);
  });

  it('refuses nonsense limits, naming them', () => {
    expect(() => new FlowTable({ idleMs: 0 })).toThrow(/idle timeout must be > 0/);
    expect(() => new FlowTable({ maxFlows: 0 })).toThrow(/bound must be a positive integer/);
  });
});
