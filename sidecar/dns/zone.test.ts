import { describe, expect, it } from 'vitest';
import { applyUpdate } from '../../lib/catalog/store.ts';
import type { Catalog, CatalogUpdate } from '../../lib/catalog/types.ts';
import { skipName } from './message.ts';
import { fixtureCatalog } from './testing/fixture.ts';
import { prng } from './testing/fuzz.ts';
import { Type } from './wire.ts';
import { buildZone, type LocalAnswer, type Zone, ZoneTables } from './zone.ts';

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

/** Records of a section as sorted hex strings: the order inside an RRset carries no meaning. */
const records = (bytes: Buffer | undefined): string[] => {
  const out: string[] = [];
  for (let o = 0; bytes && o < bytes.length; ) {
    const end = skipName(bytes, o);
    const next = end + 10 + bytes.readUInt16BE(end + 8);
    out.push(bytes.subarray(o, next).toString('hex'));
    o = next;
  }
  return out.sort();
};
const wire = (a: LocalAnswer | undefined) =>
  a && [
    a.rcode,
    records(a.answer?.bytes),
    records(a.answer?.glue),
    a.authority?.toString('hex'),
    a.cnameTarget,
  ];
const snapshot = (zone: Zone) => names.flatMap((n) => types.map((t) => wire(zone.lookup(n, t))));

describe('zone tables', () => {
  it('updated in place gives the same answers as a fresh build', () => {
    const zone = new ZoneTables({ domain: Z });
    let catalog: Catalog = fixtureCatalog();
    zone.update(catalog);
    const db = structuredClone(catalog.services['default/db']);
    db.endpoints[0].ready = false; // db-0 leaves
    catalog = applyUpdate(catalog, { type: 'service', revision: 43, key: 'default/db', entry: db })!;
    catalog = applyUpdate(catalog, { type: 'service', revision: 44, key: 'default/web', entry: null })!;
    zone.update(catalog);
    const fresh = buildZone(catalog, { domain: Z }).zone;
    expect(snapshot(zone)).toEqual(snapshot(fresh));
    expect([...zone.names()].sort()).toEqual([...fresh.names()].sort());
    expect(zone.lookup(`db-0.db.default.svc.${Z}`, Type.A)?.rcode).toBe(3);
    expect(zone.lookup(`web.default.svc.${Z}`, Type.A)?.rcode).toBe(3);
    expect(zone.lookup(`_http._tcp.web.default.svc.${Z}`, Type.SRV)?.rcode).toBe(3);
    expect(zone.lookup('10.0.96.10.in-addr.arpa', Type.PTR)).toBeUndefined();
  });

  it('stays equal to a fresh build over 300 random catalog updates (names and answers)', () => {
    const rand = prng(7);
    const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)];
    const zone = new ZoneTables({ domain: Z });
    let catalog: Catalog = fixtureCatalog();
    zone.update(catalog);
    // The same updates applied one by one (ZoneTables.apply, the on-demand sidecar's path).
    const inc = new ZoneTables({ domain: Z });
    inc.update(catalog);
    const template = fixtureCatalog();
    // A second headless service on the same pods: PTR names shared by two sources.
    template.services['default/db2'] = structuredClone(template.services['default/db']);
    template.services['default/db2'].service.name = 'db2';
    for (let step = 0; step < 300; step++) {
      const revision = catalog.revision + 1;
      const keys = Object.keys(template.services);
      const key = pick(keys);
      const r = rand();
      let update: CatalogUpdate;
      if (r < 0.2) {
        update = { type: 'service', revision, key, entry: null };
      } else if (r < 0.7) {
        const entry = structuredClone(catalog.services[key] ?? template.services[key]);
        for (const ep of entry.endpoints) if (rand() < 0.3) ep.ready = !ep.ready;
        if (rand() < 0.2) entry.service.namespace = pick(['default', 'team-b', 'team-c']);
        if (rand() < 0.1) entry.service.publishNotReadyAddresses = !entry.service.publishNotReadyAddresses;
        update = { type: 'service', revision, key, entry };
      } else if (r < 0.9) {
        const ip = pick(['10.244.1.5', 'fd00:244::6', '10.244.7.7']);
        const pod =
          rand() < 0.5 ? null : { ip, namespace: pick(['default', 'team-b']), name: 'p', nodeName: 'n' };
        update = { type: 'pod', revision, ip, pod };
      } else {
        const name = pick(['default', 'empty', 'team-c']);
        update = { type: 'namespace', revision, name, namespace: rand() < 0.5 ? null : { name } };
      }
      catalog = applyUpdate(catalog, update)!;
      zone.update(catalog);
      inc.apply(update);
      if (step % 5 === 0 || step === 299) {
        const fresh = buildZone(catalog, { domain: Z }).zone;
        const all = [...new Set([...zone.names(), ...fresh.names()])].sort();
        expect([...zone.names()].sort(), `names at step ${step}`).toEqual([...fresh.names()].sort());
        const answers = (t: ZoneTables) => all.flatMap((n) => types.map((ty) => wire(t.lookup(n, ty))));
        expect(answers(zone), `answers at step ${step}`).toEqual(answers(fresh));
        expect([...inc.names()].sort(), `names (increments) at step ${step}`).toEqual(
          [...fresh.names()].sort(),
        );
        expect(answers(inc), `answers (increments) at step ${step}`).toEqual(answers(fresh));
      }
    }
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

describe('namespaces in the zone', () => {
  it('an existing namespace without services answers NODATA with the SOA; a missing one NXDOMAIN', () => {
    const catalog: Catalog = { ...fixtureCatalog(), namespaces: { empty: { name: 'empty' } } };
    const { zone } = buildZone(catalog, { domain: Z });
    const empty = zone.lookup(`empty.svc.${Z}`, Type.A)!;
    expect(empty.rcode).toBe(0);
    expect(empty.answer).toBeUndefined();
    expect(empty.authority).toBeDefined();
    expect(zone.lookup(`missing.svc.${Z}`, Type.A)!.rcode).toBe(3);
    // A service in an empty namespace is still missing.
    expect(zone.lookup(`web.empty.svc.${Z}`, Type.A)!.rcode).toBe(3);
    // Removed from the catalog: gone from the zone.
    zone.update({ ...catalog, revision: catalog.revision + 1, namespaces: {} });
    expect(zone.lookup(`empty.svc.${Z}`, Type.A)!.rcode).toBe(3);
    // Namespaces with services exist whether listed or not.
    expect(zone.lookup(`team-b.svc.${Z}`, Type.A)!.rcode).toBe(0);
  });
});
