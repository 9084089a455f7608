import { describe, expect, it } from 'vitest';
import type { Answer } from '../../lib/catalog/lookup-protocol.ts';
import type { ServiceEntry } from '../../lib/catalog/types.ts';
import { compactEntry, HeldCatalog } from './held.ts';
import { keyForName } from './keys.ts';

const svc = (ns: string, name: string, ip: string): ServiceEntry => ({
  service: {
    namespace: ns,
    name,
    type: 'ClusterIP',
    clusterIPs: [ip],
    headless: false,
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    sessionAffinity: { type: 'None' },
    lbPolicy: 'round-robin',
    publishNotReadyAddresses: false,
  },
  endpoints: [],
});
const answer = (id: number, services: Record<string, ServiceEntry>, revision = 5): Answer => ({
  type: 'answer',
  id,
  revision,
  services,
  pods: {},
  namespaces: {},
});
const web = svc('demo', 'web', '10.96.0.10');
const WEB = { kind: 'svc', namespace: 'demo', name: 'web' } as const;
const WEB_IP = { kind: 'ip', ip: '10.96.0.10' } as const;
const at = (t: number) => () => t;
const noClock = () => {
  throw new Error('a held key must not read the clock');
};

describe('held catalog (pure)', () => {
  it('holds an answer with equal endpoint port lists shared, the entry otherwise as it came', () => {
    const http = () => [{ name: 'http', port: 8080, protocol: 'TCP' as const }];
    const ep = (ip: string, ports: ServiceEntry['endpoints'][number]['ports']) => ({
      ip,
      ready: true,
      serving: true,
      terminating: false,
      ports,
    });
    const entry: ServiceEntry = {
      ...svc('demo', 'api', '10.96.0.12'),
      endpoints: [
        ep('10.244.1.1', http()),
        ep('10.244.1.2', http()),
        ep('10.244.1.3', [{ name: 'http', port: 8080, protocol: 'TCP', appProtocol: 'h2c' }]),
        ep('10.244.1.4', http()),
        ep('10.244.1.5', http()),
      ],
    };
    const before = structuredClone(entry);
    const held = new HeldCatalog({ clusterDomain: 'cluster.local' });
    held.answer({ kind: 'svc', namespace: 'demo', name: 'api' }, answer(1, { 'demo/api': entry }), 0);
    const kept = held.catalog().services['demo/api'];
    expect(kept).toEqual(before);
    const [a, b, c, d, e] = kept.endpoints.map((x) => x.ports);
    expect(b).toBe(a);
    expect(c).not.toBe(b); // another appProtocol: its own list, and the next ones compare with it
    expect(d).not.toBe(c);
    expect(e).toBe(d);
    expect(compactEntry(svc('demo', 'none', '10.96.0.13')).endpoints).toEqual([]);
  });

  it('holds a one-service answer (answerService) as answer() holds the same answer', () => {
    const viaAnswer = new HeldCatalog({ clusterDomain: 'cluster.local' });
    const viaService = new HeldCatalog({ clusterDomain: 'cluster.local' });
    const other = svc('demo', 'other', '10.96.0.20');
    expect(viaAnswer.answer(WEB, answer(1, { 'demo/web': web }, 7), 0)).toEqual([]);
    expect(viaService.answerService(WEB, 'demo/web', web, 7, 0)).toEqual([]);
    expect(viaService.catalog()).toEqual(viaAnswer.catalog());
    expect(viaService.drain(0)).toEqual(viaAnswer.drain(0));
    expect(viaService.check('svc demo/web', noClock)).toBe('held');
    // Answered again with another service: the old topic is released, in both.
    expect(viaService.answerService(WEB, 'demo/other', other, 8, 1)).toEqual(['svc demo/web']);
    expect(viaAnswer.answer(WEB, answer(2, { 'demo/other': other }, 8), 1)).toEqual(['svc demo/web']);
    expect(viaService.catalog()).toEqual(viaAnswer.catalog());
  });

  it('holds what answers named until idle; two keys share a topic and release it together', () => {
    const held = new HeldCatalog({ clusterDomain: 'cluster.local', idleMs: 1000, negativeTtlMs: 100 });
    expect(held.check('svc demo/web', at(0))).toBe('miss');
    expect(held.answer(WEB, answer(1, { 'demo/web': web }), 0)).toEqual([]);
    expect(held.answer(WEB_IP, answer(2, { 'demo/web': web }), 0)).toEqual([]);
    expect(held.catalog().services).toEqual({ 'demo/web': web });
    expect(held.catalog().revision).toBe(5);
    expect(held.catalog()).toBe(held.catalog()); // same object until something changes
    expect(held.check('svc demo/web', noClock)).toBe('held'); // used (a held key reads no clock)
    expect(held.sweep(1500)).toEqual([]); // the ip key went idle, but the svc key still holds the topic
    expect(held.check('ip 10.96.0.10', at(1500))).toBe('miss');
    expect(held.sweep(2400)).toEqual([]); // the svc key counts as used at the sweep that saw the use
    expect(held.sweep(2500)).toEqual(['svc demo/web']);
    expect(held.catalog().services).toEqual({});
    expect(held.stats).toEqual({ keys: 0, negative: 0, services: 0, pods: 0, namespaces: 0 });
  });

  it("a key's ticket marks it used without a lookup while live; released or re-answered, it is dead", () => {
    const held = new HeldCatalog({ clusterDomain: 'cluster.local', idleMs: 1000, negativeTtlMs: 100 });
    expect(held.ticket('svc demo/web')).toBeUndefined();
    held.answer(WEB, answer(1, { 'demo/web': web }), 0);
    const ticket = held.ticket('svc demo/web')!;
    expect(ticket.live).toBe(true);
    ticket.used = true; // as check() would
    expect(held.sweep(1500)).toEqual([]);
    expect(held.sweep(2500)).toEqual(['svc demo/web']);
    expect(ticket.live).toBe(false);
    held.answer(WEB, answer(2, { 'demo/web': web }), 3000);
    const again = held.ticket('svc demo/web')!;
    held.answer(WEB, answer(3, {}), 3100); // now a negative answer: no ticket, the old one dead
    expect(again.live).toBe(false);
    expect(held.ticket('svc demo/web')).toBeUndefined();
  });

  it('caches a negative answer for its TTL only', () => {
    const held = new HeldCatalog({ clusterDomain: 'cluster.local', negativeTtlMs: 100 });
    held.answer(WEB, answer(1, {}), 0);
    expect(held.check('svc demo/web', at(50))).toBe('negative');
    expect(held.stats.negative).toBe(1);
    expect(held.check('svc demo/web', at(100))).toBe('miss');
    expect(held.catalog().services).toEqual({});
  });

  it('applies pushes of held topics (a deletion keeps the subscription), ignores others', () => {
    const held = new HeldCatalog({ clusterDomain: 'cluster.local' });
    held.answer(WEB, answer(1, { 'demo/web': web }), 0);
    const moved = svc('demo', 'web', '10.96.0.99');
    expect(held.push({ type: 'service', revision: 9, key: 'demo/web', entry: moved })).toBe(true);
    expect(held.catalog().services['demo/web']).toBe(moved);
    expect(held.catalog().revision).toBe(9);
    expect(held.push({ type: 'service', revision: 10, key: 'demo/db', entry: null })).toBe(false);
    expect(held.push({ type: 'service', revision: 11, key: 'demo/web', entry: null })).toBe(true);
    expect(held.catalog().services).toEqual({});
    expect(held.check('svc demo/web', noClock)).toBe('held'); // still subscribed: a re-creation is pushed
    expect(held.push({ type: 'service', revision: 12, key: 'demo/web', entry: web })).toBe(true);
    expect(held.catalog().services['demo/web']).toBe(web);
  });

  it('a new answer for a key replaces its topics and releases those it no longer names', () => {
    const held = new HeldCatalog({ clusterDomain: 'cluster.local' });
    held.answer(WEB_IP, answer(1, { 'demo/web': web }), 0);
    const other = svc('demo', 'other', '10.96.0.10');
    expect(held.answer(WEB_IP, answer(2, { 'demo/other': other }), 1)).toEqual(['svc demo/web']);
    expect(Object.keys(held.catalog().services)).toEqual(['demo/other']);
    expect(held.heldKeys()).toEqual([WEB_IP]);
  });
});

describe('held catalog changes', () => {
  it('drains what changed as store increments, numbered after the given revision', () => {
    const held = new HeldCatalog({ clusterDomain: 'cluster.local', idleMs: 10 });
    held.answer(WEB, answer(1, { 'demo/web': web }), 0);
    held.answer(WEB_IP, answer(2, { 'demo/web': web }), 0); // same value: no change
    expect(held.drain(7)).toEqual([{ type: 'service', revision: 8, key: 'demo/web', entry: web }]);
    expect(held.drain(8)).toEqual([]);
    held.push({ type: 'service', revision: 20, key: 'demo/web', entry: null });
    held.push({ type: 'service', revision: 21, key: 'demo/web', entry: web });
    expect(held.drain(8)).toEqual([{ type: 'service', revision: 9, key: 'demo/web', entry: web }]);
    expect(held.sweep(100)).toEqual(['svc demo/web']);
    expect(held.drain(9)).toEqual([{ type: 'service', revision: 10, key: 'demo/web', entry: null }]);
  });
});

describe('lookup keys for DNS names', () => {
  it('maps every name of a service to its key, namespaces, pods and reverse names', () => {
    const Z = 'cluster.local';
    const cases: [string, unknown][] = [
      [`web.demo.svc.${Z}`, { kind: 'svc', namespace: 'demo', name: 'web' }],
      [`db-0.db.demo.svc.${Z}`, { kind: 'svc', namespace: 'demo', name: 'db' }],
      [`_http._tcp.web.demo.svc.${Z}`, { kind: 'svc', namespace: 'demo', name: 'web' }],
      [`demo.svc.${Z}`, { kind: 'ns', namespace: 'demo' }],
      [`10-244-1-5.demo.pod.${Z}`, { kind: 'ip', ip: '10.244.1.5' }],
      [`2001-db8--1.demo.pod.${Z}`, { kind: 'ip', ip: '2001:db8::1' }],
      ['5.1.244.10.in-addr.arpa', { kind: 'ip', ip: '10.244.1.5' }],
      [
        `${'1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2'}.ip6.arpa`,
        { kind: 'ip', ip: '2001:db8::1' },
      ],
      [Z, undefined],
      [`svc.${Z}`, undefined],
      [`dns-version.${Z}`, undefined],
      [`x.y.${Z}`, undefined],
      [`web.-bad.svc.${Z}`, undefined],
      [`10-244-1-300.demo.pod.${Z}`, undefined],
      ['1.244.10.in-addr.arpa', undefined],
      ['5.1.244.010.in-addr.arpa', undefined],
      ['example.com', undefined],
    ];
    for (const [name, key] of cases) expect(keyForName(name, Z), name).toEqual(key);
  });
});
