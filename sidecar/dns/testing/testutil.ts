/**
 * Test helpers for the DNS server (used by unit and namespace tests, never by the server):
 * query building with dns-packet — an independent codec, so tests do not trust our own —
 * a dig-like rendering of answers for golden files, and the golden-file check itself.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';

export interface QuerySpec {
  name: string;
  type: string;
  /** EDNS0 with this UDP payload size. */
  edns?: number;
  dnssecOk?: boolean;
  recursionDesired?: boolean;
  id?: number;
}

export function encodeQuery(q: QuerySpec): Buffer {
  const additionals: dnsPacket.Answer[] = q.edns
    ? [
        {
          type: 'OPT',
          name: '.',
          udpPayloadSize: q.edns,
          flags: q.dnssecOk ? dnsPacket.DNSSEC_OK : 0,
        } as dnsPacket.Answer,
      ]
    : [];
  return dnsPacket.encode({
    type: 'query',
    id: q.id ?? 4242,
    flags: q.recursionDesired === false ? 0 : dnsPacket.RECURSION_DESIRED,
    questions: [{ name: q.name, type: q.type as 'A', class: 'IN' }],
    additionals,
  });
}

const FLAG_NAMES: [number, string][] = [
  [1 << 15, 'qr'],
  [1 << 10, 'aa'],
  [1 << 9, 'tc'],
  [1 << 8, 'rd'],
  [1 << 7, 'ra'],
  [1 << 5, 'ad'],
  [1 << 4, 'cd'],
];

function rdataText(r: dnsPacket.Answer): string {
  const d = (r as { data?: unknown }).data;
  switch (r.type) {
    case 'SRV': {
      const s = d as dnsPacket.SrvData;
      return `${s.priority ?? 0} ${s.weight ?? 0} ${s.port} ${s.target}.`;
    }
    case 'SOA': {
      const s = d as dnsPacket.SoaData;
      return `${s.mname}. ${s.rname}. ${s.serial} ${s.refresh} ${s.retry} ${s.expire} ${s.minimum}`;
    }
    case 'TXT':
      return (d as Buffer[]).map((b) => JSON.stringify(b.toString())).join(' ');
    case 'CNAME':
    case 'PTR':
    case 'NS':
      return `${d}.`;
    case 'OPT': {
      const o = r as unknown as { udpPayloadSize: number; flags: number; extendedRcode?: number };
      return `udp=${o.udpPayloadSize} flags=${o.flags} ext-rcode=${o.extendedRcode ?? 0}`;
    }
    default:
      return String(d);
  }
}

/** dig-like text of a response, stable for golden files. */
export function renderResponse(buf: Buffer): string {
  const d = dnsPacket.decode(buf);
  const flags = FLAG_NAMES.filter(
    ([bit]) => ((d.flags ?? 0) | (d.type === 'response' ? 1 << 15 : 0)) & bit,
  ).map(([, n]) => n);
  const lines = [
    `;; id ${d.id} rcode ${(d as { rcode?: string }).rcode} flags ${flags.join(' ')}; question ${d.questions?.length ?? 0}, answer ${d.answers?.length ?? 0}, authority ${d.authorities?.length ?? 0}, additional ${d.additionals?.length ?? 0}`,
  ];
  for (const q of d.questions ?? []) lines.push(`;${q.name}.\tIN\t${q.type}`);
  const section = (title: string, records: dnsPacket.Answer[] | undefined) => {
    if (!records || records.length === 0) return;
    lines.push(`;; ${title}`);
    for (const r of records) {
      const ttl = (r as { ttl?: number }).ttl ?? 0;
      lines.push(
        `${r.name === '.' || r.name === '' ? '' : r.name}.\t${r.type === 'OPT' ? 0 : ttl}\tIN\t${r.type}\t${rdataText(r)}`,
      );
    }
  };
  section('ANSWER', d.answers);
  section('AUTHORITY', d.authorities);
  section('ADDITIONAL', d.additionals);
  return `${lines.join('\n')}\n`;
}

/**
 * Compares `actual` with testdata/<dir>/<name>.golden; REFRESH_GOLDEN=1 rewrites it. Returns
 * the expected text (the caller asserts equality, so a failure shows a diff).
 */
export function golden(dir: string, name: string, actual: string): string {
  const file = join(dir, `${name}.golden`);
  if (process.env.REFRESH_GOLDEN === '1') {
    mkdirSync(dir, { recursive: true });
    writeFileSync(file, actual);
  }
  if (!existsSync(file))
    throw new Error(`missing golden file ${file} (run with REFRESH_GOLDEN=1 to create it)`);
  return readFileSync(file, 'utf8');
}

/** Golden files in `dir` that no case produced: they fail the test. */
export function unusedGoldens(dir: string, used: Iterable<string>): string[] {
  const names = new Set([...used].map((n) => `${n}.golden`));
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.golden') && !names.has(f)) : [];
}
