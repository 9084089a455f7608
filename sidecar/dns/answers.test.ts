import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../../lib/catalog/store.ts';
import { Resolver, type Transport } from './resolver.ts';
import { fixtureCatalog } from './testing/fixture.ts';
import { encodeQuery, golden, type QuerySpec, renderResponse, unusedGoldens } from './testing/testutil.ts';
import { reverseName } from './wire.ts';

// Table-driven answer logic: each case is a list of queries against the fixture catalog,
// answered by the Resolver in-process (no sockets; no upstream, so names outside the
// cluster are REFUSED here — forwarding is covered by dns.netns.test.ts), decoded with
// dns-packet and compared with testdata/answers/<case>.golden.
const GOLDEN_DIR = fileURLToPath(new URL('./testdata/answers', import.meta.url));
const Z = 'cluster.local';

interface Case {
  name: string;
  queries: (QuerySpec & { transport?: Transport })[];
  synced?: boolean;
  searchDomains?: string[];
}

const cases: Case[] = [
  {
    name: 'clusterip',
    queries: [
      { name: `Web.Default.SVC.Cluster.Local`, type: 'A' },
      { name: `web.default.svc.${Z}`, type: 'AAAA' },
      { name: `web.default.svc.${Z}`, type: 'TXT' },
      { name: `web.default.svc.${Z}`, type: 'ANY' },
      { name: `kubernetes.default.svc.${Z}`, type: 'A', recursionDesired: false },
      { name: `v6only.team-b.svc.${Z}`, type: 'A' },
      { name: `v6only.team-b.svc.${Z}`, type: 'AAAA' },
    ],
  },
  {
    name: 'srv',
    queries: [
      { name: `_http._tcp.web.default.svc.${Z}`, type: 'SRV' },
      { name: `_DNS._UDP.web.default.svc.${Z}`, type: 'SRV' },
      { name: `_https._tcp.kubernetes.default.svc.${Z}`, type: 'SRV' },
      { name: `_grpc._tcp.api.team-b.svc.${Z}`, type: 'SRV' },
      { name: `_http._udp.web.default.svc.${Z}`, type: 'SRV' },
      { name: `_tcp.web.default.svc.${Z}`, type: 'SRV' },
      { name: `_http._tcp.web.default.svc.${Z}`, type: 'A' },
    ],
  },
  {
    name: 'headless',
    queries: [
      { name: `db.default.svc.${Z}`, type: 'A' },
      { name: `db.default.svc.${Z}`, type: 'AAAA' },
      { name: `db-0.db.default.svc.${Z}`, type: 'A' },
      { name: `DB-1.db.default.svc.${Z}`, type: 'AAAA' },
      { name: `10-244-2-7.db.default.svc.${Z}`, type: 'A' },
      { name: `db-3.db.default.svc.${Z}`, type: 'A' },
      { name: `_pg._tcp.db.default.svc.${Z}`, type: 'SRV' },
    ],
  },
  {
    name: 'headless-not-ready',
    queries: [
      { name: `idle.default.svc.${Z}`, type: 'A' },
      { name: `warmup.default.svc.${Z}`, type: 'A' },
      { name: `warmup-0.warmup.default.svc.${Z}`, type: 'A' },
    ],
  },
  {
    name: 'ptr',
    queries: [
      { name: '10.0.96.10.in-addr.arpa', type: 'PTR' },
      { name: reverseName('fd00:10:96::a').toUpperCase(), type: 'PTR' },
      { name: '5.1.244.10.in-addr.arpa', type: 'PTR' },
      { name: '7.2.244.10.in-addr.arpa', type: 'PTR' },
      { name: reverseName('fd00:244::6'), type: 'PTR' },
      { name: '10.0.96.10.in-addr.arpa', type: 'A' },
      { name: '8.3.244.10.in-addr.arpa', type: 'PTR' },
    ],
  },
  {
    name: 'externalname',
    queries: [
      { name: `ext.default.svc.${Z}`, type: 'CNAME' },
      { name: `ext.default.svc.${Z}`, type: 'A' },
      { name: `Alias.default.svc.${Z}`, type: 'A' },
      { name: `alias.default.svc.${Z}`, type: 'AAAA' },
    ],
  },
  {
    name: 'negative',
    queries: [
      { name: `nope.default.svc.${Z}`, type: 'A' },
      { name: `default.svc.${Z}`, type: 'A' },
      { name: `svc.${Z}`, type: 'A' },
      { name: Z, type: 'SOA' },
      { name: Z, type: 'NS' },
      { name: `nobody.svc.${Z}`, type: 'A' },
      { name: `web.default.svc.${Z}.default.svc.${Z}`, type: 'A' },
      { name: `web.default.${Z}`, type: 'A' },
      { name: `dns-version.${Z}`, type: 'TXT' },
      { name: `dns-version.${Z}`, type: 'A' },
    ],
  },
  {
    name: 'pods',
    queries: [
      { name: `10-244-1-5.default.pod.${Z}`, type: 'A' },
      { name: `fd00-244--6.default.pod.${Z}`, type: 'AAAA' },
      { name: `10-244-1-5.team-b.pod.${Z}`, type: 'A' },
    ],
  },
  {
    name: 'truncation',
    queries: [
      { name: `big.default.svc.${Z}`, type: 'A' },
      { name: `big.default.svc.${Z}`, type: 'A', edns: 1232 },
      { name: `big.default.svc.${Z}`, type: 'A', transport: 'tcp' },
      { name: `big.default.svc.${Z}`, type: 'A', edns: 256 },
      { name: `_pg._tcp.db.default.svc.${Z}`, type: 'SRV', edns: 4096, dnssecOk: true },
    ],
  },
  {
    name: 'not-synced',
    synced: false,
    queries: [
      { name: `web.default.svc.${Z}`, type: 'A' },
      { name: '10.0.96.10.in-addr.arpa', type: 'PTR' },
      { name: 'www.example.test', type: 'A' },
    ],
  },
  {
    name: 'search-expansions',
    searchDomains: [`default.svc.${Z}`, `svc.${Z}`, Z, 'corp.example'],
    queries: [
      { name: `web.default.svc.${Z}.corp.example`, type: 'A' },
      { name: `web.default.svc.${Z}.svc.${Z}`, type: 'A' },
      { name: 'www.corp.example', type: 'A' },
    ],
  },
];

function ask(resolver: Resolver, q: QuerySpec, transport: Transport): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer to ${q.name}`)), 5000);
    const willAnswer = resolver.handle(encodeQuery(q), transport, (b) => {
      clearTimeout(timer);
      resolve(b);
    });
    if (!willAnswer) reject(new Error('dropped'));
  });
}

const resolvers: Resolver[] = [];
afterAll(() => {
  for (const r of resolvers) r.close();
});

describe('DNS answers from the catalog (golden)', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const store = new CatalogStore();
      if (c.synced !== false) store.apply({ type: 'snapshot', catalog: fixtureCatalog() });
      const resolver = new Resolver({ store, upstreams: [], searchDomains: c.searchDomains });
      resolvers.push(resolver);
      const parts: string[] = [];
      for (const q of c.queries) {
        const transport = q.transport ?? 'udp';
        const head = `# ${q.name} ${q.type} over ${transport}${q.edns ? ` edns=${q.edns}` : ''}${q.dnssecOk ? ' +do' : ''}${q.recursionDesired === false ? ' +norecurse' : ''}`;
        parts.push(`${head}\n${renderResponse(await ask(resolver, q, transport))}`);
      }
      const actual = parts.join('\n');
      expect(actual).toBe(golden(GOLDEN_DIR, c.name, actual));
    });
  }

  it('has no unused golden files', () => {
    expect(
      unusedGoldens(
        GOLDEN_DIR,
        cases.map((c) => c.name),
      ),
    ).toEqual([]);
  });

  it('sees catalog updates on the next query', async () => {
    const store = new CatalogStore();
    store.apply({ type: 'snapshot', catalog: fixtureCatalog() });
    const resolver = new Resolver({ store, upstreams: [] });
    resolvers.push(resolver);
    const rcodeOf = async (name: string) =>
      (await ask(resolver, { name, type: 'A' }, 'udp')).readUInt16BE(2) & 0xf;
    expect(await rcodeOf(`web.default.svc.${Z}`)).toBe(0);
    store.apply({ type: 'service', revision: 43, key: 'default/web', entry: null });
    expect(await rcodeOf(`web.default.svc.${Z}`)).toBe(3);
    expect(await rcodeOf(`kubernetes.default.svc.${Z}`)).toBe(0);
  });
});
