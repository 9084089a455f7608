import { describe, expect, it } from 'vitest';
import { applyUpdate } from '../../lib/catalog/store.ts';
import type { Catalog } from '../../lib/catalog/types.ts';
import { fixtureCatalog } from './fixture.ts';
import { Type } from './wire.ts';
import { buildZone, createZoneMemo, type LocalAnswer, type Zone } from './zone.ts';

const Z = 'cluster.local';
const names = [
  Z,
  `svc.${Z}`,
  `default.svc.${Z}`,
  `web.default.svc.${Z}`,
  `_http._tcp.web.default.svc.${Z}`,
  `db.default.svc.${Z}`,
  `db-0.db.default.svc.${Z}`,
  `db-1.db.default.svc.${Z}`,
  `_pg._tcp.db.default.svc.${Z}`,
  `idle.default.svc.${Z}`,
  `ext.default.svc.${Z}`,
  `api.team-b.svc.${Z}`,
  `team-b.svc.${Z}`,
  '10.0.96.10.in-addr.arpa',
  '5.1.244.10.in-addr.arpa',
  `10-244-1-5.default.pod.${Z}`,
];
const types = [Type.A, Type.AAAA, Type.SRV, Type.PTR, Type.CNAME, Type.TXT, Type.SOA, Type.ANY];

const wire = (a: LocalAnswer | undefined) =>
  a && [
    a.rcode,
    a.answer?.bytes.toString('hex'),
    a.answer?.glue.toString('hex'),
    a.authority?.toString('hex'),
    a.cnameTarget,
  ];
const snapshot = (zone: Zone) => names.flatMap((n) => types.map((t) => wire(zone.lookup(n, t))));

describe('buildZone', () => {
  it('gives the same answers with per-service memoization across updates as a fresh build', () => {
    const memo = createZoneMemo();
    let catalog: Catalog = fixtureCatalog();
    buildZone(catalog, { domain: Z, memo });
    const db = structuredClone(catalog.services['default/db']);
    db.endpoints[0].ready = false; // db-0 leaves
    catalog = applyUpdate(catalog, { type: 'service', revision: 43, key: 'default/db', entry: db })!;
    catalog = applyUpdate(catalog, { type: 'service', revision: 44, key: 'default/web', entry: null })!;
    const memoized = buildZone(catalog, { domain: Z, memo }).zone;
    const fresh = buildZone(catalog, { domain: Z }).zone;
    expect(snapshot(memoized)).toEqual(snapshot(fresh));
    expect(memoized.lookup(`db-0.db.default.svc.${Z}`, Type.A)?.rcode).toBe(3);
    expect(memoized.lookup(`web.default.svc.${Z}`, Type.A)?.rcode).toBe(3);
    // A memo entry is per domain: another cluster domain is built from scratch.
    const other = buildZone(catalog, { domain: 'edge.test', memo }).zone;
    expect(other.lookup('kubernetes.default.svc.edge.test', Type.A)?.answer?.count).toBe(1);
    expect(other.lookup(`kubernetes.default.svc.${Z}`, Type.A)).toBeUndefined();
  });

  it('skips invalid catalog entries and says why', () => {
    const catalog = fixtureCatalog();
    const bad = structuredClone(catalog.services['default/web']);
    bad.service.name = 'Not_A_Label';
    catalog.services['default/Not_A_Label'] = bad;
    const ext = structuredClone(catalog.services['default/ext']);
    ext.service.name = 'ext2';
    ext.service.externalName = 'bad..name';
    catalog.services['default/ext2'] = ext;
    const ip = structuredClone(catalog.services['default/kubernetes']);
    ip.service.name = 'badip';
    ip.service.clusterIPs = ['10.96.0.300'];
    catalog.services['default/badip'] = ip;
    const { zone, problems } = buildZone(catalog, { domain: Z });
    expect(problems).toEqual([
      'service default/Not_A_Label: namespace/name is not a DNS label',
      'service default/ext2: externalName "bad..name" is not a DNS name',
      'service default/badip: invalid clusterIP in ["10.96.0.300"]',
    ]);
    expect(zone.lookup(`ext2.default.svc.${Z}`, Type.CNAME)?.rcode).toBe(3);
    expect(zone.lookup(`web.default.svc.${Z}`, Type.A)?.answer?.count).toBe(1);
  });

  it('keeps one record per address when a headless service lists an endpoint twice', () => {
    const catalog = fixtureCatalog();
    const db = catalog.services['default/db'];
    db.endpoints.push(structuredClone(db.endpoints[0]));
    const { zone } = buildZone(catalog, { domain: Z });
    expect(zone.lookup(`db.default.svc.${Z}`, Type.A)?.answer?.count).toBe(3);
    expect(zone.lookup(`_pg._tcp.db.default.svc.${Z}`, Type.SRV)?.answer?.count).toBe(3);
    expect(zone.lookup('5.1.244.10.in-addr.arpa', Type.PTR)?.answer?.count).toBe(1);
  });

  it('never matches a name whose labels hold dots (its text form is ambiguous)', () => {
    const { zone } = buildZone(fixtureCatalog(), { domain: Z });
    expect(zone.lookup(`web.default.svc.${Z}`, Type.A, true)?.rcode).toBe(3);
    expect(zone.lookup('10.0.96.10.in-addr.arpa', Type.PTR, true)).toBeUndefined();
    expect(zone.lookup('10.0.96.10.in-addr.arpa', Type.PTR)?.answer?.count).toBe(1);
  });
});
