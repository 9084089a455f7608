import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CatalogValidationError, validateCatalog } from '../lib/catalog/validate.ts';
import {
  decodeStateFile,
  PODS_PER_LINE,
  parseStateFileText,
  STATE_FORMAT,
  stateFileChunks,
} from './state-file.ts';

// A format-1 catalog with every optional field somewhere (IPv6, hostname, no nodeName/podName,
// appProtocol, headless, ExternalName, namespaces), and its format-4 form, golden:
// REFRESH_GOLDEN=1 rewrites the golden file. Its format-2 and format-3 forms (what gateways
// wrote before format 4) are kept as they were written, for the reader's older paths.
const dir = new URL('./testdata/state-file/', import.meta.url);
const v1 = validateCatalog(JSON.parse(readFileSync(new URL('catalog.v1.json', dir), 'utf8')));
const goldenPath = new URL('catalog.v4.golden', dir);
const v3Path = new URL('catalog.v3.golden.json', dir);
const v2Path = new URL('catalog.v2.golden.json', dir);
const encode = (c: Parameters<typeof stateFileChunks>[0], size?: number) =>
  [...stateFileChunks(c, size)].join('');
const decode = (text: string) => parseStateFileText(text, 'catalog.json');
const lines = (text: string) => text.split('\n').slice(0, -1);
const golden = () => readFileSync(goldenPath, 'utf8');

describe('state file format 4', () => {
  it('encodes the catalog as the golden file says: tables on line 1, a line per service, then the pods', () => {
    const text = encode(v1);
    if (process.env.REFRESH_GOLDEN) writeFileSync(goldenPath, text);
    expect(text).toBe(golden());
    const [head, ...rest] = lines(text);
    expect(JSON.parse(head)).toMatchObject({ format: STATE_FORMAT, services: 3, pods: 3 });
    // Every line one JSON value.
    expect(rest.map((l) => JSON.parse(l))).toHaveLength(4);
  });

  it('decodes to the same catalog as format 1, key order included, whatever the chunk size', () => {
    for (const size of [1, 64, 1 << 20]) {
      const decoded = decode(encode(v1, size));
      expect(decoded).toEqual(v1);
      // The builder's reuse of persisted items compares them as JSON.
      expect(JSON.stringify(decoded)).toBe(JSON.stringify(v1));
    }
  });

  it('keeps one array per distinct port list and one string per name', () => {
    const decoded = decode(golden());
    const [a, b] = decoded.services['demo/web'].endpoints;
    expect(a.ports).toBe(b.ports);
    const head = JSON.parse(lines(golden())[0]);
    expect(head.portLists).toHaveLength(3);
    // Node names; no namespace: every pod is an endpoint row's.
    expect(head.names).toEqual(['edge-a', 'edge-b']);
  });

  it('still reads formats 1, 2 and 3 (files older gateways wrote), key order included', () => {
    expect(decode(JSON.stringify(v1))).toEqual(v1);
    for (const path of [v2Path, v3Path]) {
      const older = decode(readFileSync(path, 'utf8'));
      expect(JSON.stringify(older)).toBe(JSON.stringify(v1));
    }
  });

  it("writes a pod that an endpoint row names as that row's number, any other as a row", () => {
    // web's rows are 0..2 (the third has no pod), db's is 3.
    expect(JSON.parse(lines(golden())[4])).toEqual([0, 1, 3]);
    const moved = structuredClone(v1);
    moved.pods['10.244.2.9'].nodeName = 'edge-a'; // no longer what its endpoint row says
    const text = encode(moved);
    expect(JSON.parse(lines(text)[4])).toEqual([0, ['10.244.2.9', 2, 'web-5d9c7b8f6d-fghij', 0], 3]);
    expect(JSON.parse(lines(text)[0]).names).toEqual(['edge-a', 'edge-b', 'demo']);
    expect(JSON.stringify(decode(text))).toBe(JSON.stringify(moved));
  });

  it(`writes the pods ${PODS_PER_LINE} to a line, and reads them back in order`, () => {
    const many = structuredClone(v1);
    many.pods = {};
    for (let i = 0; i < 2 * PODS_PER_LINE + 1; i++) {
      const ip = `10.1.${i >> 8}.${i & 255}`;
      many.pods[ip] = { ip, namespace: 'demo', name: `p-${i}`, nodeName: 'edge-b' };
    }
    const text = encode(many, 100);
    const podLines = lines(text)
      .slice(4)
      .map((l) => JSON.parse(l));
    expect(podLines.map((l) => l.length)).toEqual([PODS_PER_LINE, PODS_PER_LINE, 1]);
    expect(JSON.stringify(decode(text))).toBe(JSON.stringify(many));
  });

  it('an empty catalog, and one without namespaces', () => {
    const empty = {
      format: 1 as const,
      revision: 0,
      clusterDomain: 'cluster.local',
      services: {},
      pods: {},
      nodes: {},
    };
    expect(lines(encode(empty))).toHaveLength(1);
    expect(decode(encode(empty))).toEqual(empty);
  });
});

// Format 4's own: the lines. Each a change to the golden file's lines and the error it must give.
const negativeLines: { name: string; change: (l: string[]) => string[]; error: string }[] = [
  {
    name: 'truncated at a line end',
    change: (l) => l.slice(0, 3),
    error: 'catalog.json: services[2]: the file ends at line 3 (truncated)',
  },
  {
    name: 'truncated before the pods',
    change: (l) => l.slice(0, 4),
    error: 'catalog.json: pods[0]: the file ends at line 4 (truncated)',
  },
  {
    name: 'truncated inside a line',
    change: (l) => [...l.slice(0, 2), l[2].slice(0, 40)],
    error: 'catalog.json: not valid JSON: line 3: ',
  },
  {
    name: 'a line after the last pod',
    change: (l) => [...l, '[]'],
    error: 'catalog.json: line 6: trailing data after the last pod (line 1 announces 3 services and 3 pods)',
  },
  {
    name: 'more pods on a line than line 1 announces',
    change: (l) => [...l.slice(0, 4), '[0,1,3,0]'],
    error: 'catalog.json: line 5: must have at most 3 items, has 4',
  },
  {
    name: 'an empty pods line',
    change: (l) => [...l.slice(0, 4), '[]', l[4]],
    error: 'catalog.json: line 5: must hold at least one pod',
  },
  {
    name: 'a pods line that is not an array',
    change: (l) => [...l.slice(0, 4), '{"pods":[0,1,3]}'],
    error: 'catalog.json: line 5: must be an array',
  },
  {
    name: 'a service count that is not a count',
    change: (l) => [l[0].replace('"services":3', '"services":-1'), ...l.slice(1)],
    error: 'catalog.json: services: must be a count 0..',
  },
  {
    name: 'a pod count that is not a count',
    change: (l) => [l[0].replace('"pods":3', '"pods":"3"'), ...l.slice(1)],
    error: 'catalog.json: pods: must be a count 0..',
  },
  {
    name: 'an unknown field on line 1',
    change: (l) => [l[0].replace('"pods":3', '"pods":3,"extra":1'), ...l.slice(1)],
    error: 'catalog.json: extra: unknown field',
  },
  {
    name: 'a bad row, named by its path',
    change: (l) => [...l.slice(0, 1), l[1].replace('"10.244.2.9"', '"10.244.2.300"'), ...l.slice(2)],
    error: 'catalog.json: services[0].endpoints[1].ip: must be an IP address',
  },
  {
    name: 'a reference to a row with no pod',
    change: (l) => [...l.slice(0, 4), '[0,2,3]'],
    error: 'catalog.json: pods[1]: must name an endpoint row with a pod name and a node (row 2 has none)',
  },
];

describe('state file format 4: what is refused', () => {
  for (const { name, change, error } of negativeLines) {
    it(name, () => {
      const text = `${change(lines(golden())).join('\n')}\n`;
      let thrown: unknown;
      try {
        decode(text);
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(Error);
      expect((thrown as Error).message.slice(0, error.length)).toBe(error);
    });
  }

  it('a file that is not format 4 by its first bytes is read as one JSON document', () => {
    // Line 1 with a space before its first member: not as the writer writes it.
    expect(() => decode(golden().replace('{"format":4,', '{ "format":4,'))).toThrow(
      /catalog\.json: not valid JSON/,
    );
  });
});

type Doc = Record<string, unknown> & {
  services: [unknown, unknown[][]][];
  pods: unknown[][];
  names: unknown[];
  portLists: unknown[][];
};

// Each a change to the golden document and the error it must give (path first).
const negative: { name: string; change: (d: Doc) => void; error: string }[] = [
  { name: 'unknown top-level field', change: (d) => (d.extra = 1), error: 'extra: unknown field' },
  {
    name: 'services not an array',
    change: (d) => (d.services = {} as never),
    error: 'services: must be an array',
  },
  { name: 'bad revision', change: (d) => (d.revision = -1), error: 'revision: must be 0..' },
  {
    name: 'service row too short',
    change: (d) => (d.services[0] = [d.services[0][0]] as never),
    error: 'services[0]: must be [service, endpoints]',
  },
  {
    name: 'bad service',
    change: (d) => ((d.services[0][0] as Record<string, unknown>).type = 'Nope'),
    error: 'services[0].service.type: must be one of',
  },
  {
    name: 'service twice',
    change: (d) => d.services.push(d.services[0]),
    error: 'services[3]: service "demo/web" twice',
  },
  {
    name: 'endpoint row too short',
    change: (d) => (d.services[0][1][0] = ['10.0.0.1', 3, 0]),
    error: 'services[0].endpoints[0]: must be [ip, flags, portList, node, podName(, hostname)]',
  },
  {
    name: 'endpoint row too long',
    change: (d) => d.services[0][1][0].push('h', 'x'),
    error: 'services[0].endpoints[0]: must have at most 6 items',
  },
  {
    name: 'bad endpoint IP',
    change: (d) => (d.services[0][1][1][0] = '10.0.0.300'),
    error: 'services[0].endpoints[1].ip: must be an IP address',
  },
  {
    name: 'bad flags',
    change: (d) => (d.services[0][1][0][1] = 8),
    error: 'services[0].endpoints[0].flags: must be 0..7',
  },
  {
    name: 'port list out of range',
    change: (d) => (d.services[0][1][0][2] = 3),
    error: 'services[0].endpoints[0].portList: must index portLists (0..2)',
  },
  {
    name: 'node out of range',
    change: (d) => (d.services[0][1][0][3] = 99),
    error: 'services[0].endpoints[0].node: must index names',
  },
  {
    name: 'bad pod name',
    change: (d) => (d.services[0][1][0][4] = 'Web_1'),
    error: 'services[0].endpoints[0].podName: must be a DNS subdomain',
  },
  {
    name: 'bad hostname',
    change: (d) => (d.services[1][1][0][5] = 'a.b'),
    error: 'services[1].endpoints[0].hostname: must be a DNS label',
  },
  {
    name: 'bad port in a port list',
    change: (d) => ((d.portLists[0][0] as Record<string, unknown>).port = 0),
    error: 'portLists[0].ports[0].port: must be 1..65535',
  },
  {
    name: 'port list not an array',
    change: (d) => (d.portLists[1] = 'http' as never),
    error: 'portLists[1].ports: must be an array',
  },
  {
    name: 'bad node name in the table',
    change: (d) => (d.names[0] = 'EDGE A'),
    error: 'names[0].name: must be a DNS subdomain',
  },
  {
    name: 'a node name used as a namespace must be a DNS label',
    change: (d) => {
      d.names.push('a.b');
      d.pods[0][1] = d.names.length - 1;
    },
    error: 'names[3].name: must be a DNS label',
  },
  {
    name: 'pod row too short',
    change: (d) => d.pods[0].pop(),
    error: 'pods[0]: must be [ip, namespace, name, node]',
  },
  {
    name: 'bad pod IP',
    change: (d) => (d.pods[1][0] = 'nope'),
    error: 'pods[1].ip: must be an IP address',
  },
  {
    name: 'pod twice',
    change: (d) => d.pods.push(d.pods[0]),
    error: 'pods[3]: pod 10.244.1.17 twice',
  },
  {
    name: 'namespace index not an integer',
    change: (d) => (d.pods[0][1] = '0'),
    error: 'pods[0].namespace: must index names',
  },
  {
    name: 'bad node record',
    change: (d) => ((d.nodes as Record<string, { name: string }>)['edge-a'].name = 'edge-b'),
    error: 'nodes["edge-a"]: key must be the node name',
  },
];

// Format 3's own: ENDPOINT_REF pods (the rows above are checked in format 2's golden document).
const negativeRefs: { name: string; change: (d: Doc) => void; error: string }[] = [
  {
    name: 'endpoint row number out of range',
    change: (d) => ((d.pods as unknown[])[1] = 4),
    error: 'pods[1]: must be a pod row or the number of an endpoint row (4 rows)',
  },
  {
    name: 'endpoint row number not an integer',
    change: (d) => ((d.pods as unknown[])[0] = 0.5),
    error: 'pods[0]: must be a pod row or the number of an endpoint row',
  },
  {
    name: 'endpoint row without a pod',
    change: (d) => ((d.pods as unknown[])[0] = 2),
    error: 'pods[0]: must name an endpoint row with a pod name and a node (row 2 has none)',
  },
  {
    name: 'the same pod twice through two references',
    change: (d) => (d.pods as unknown[]).push(0),
    error: 'pods[3]: pod 10.244.1.17 twice',
  },
  {
    name: 'a reference in a format-2 file',
    change: (d) => {
      d.format = 2;
    },
    error: 'pods[0]: must be an array',
  },
];

describe('state file formats 2 and 3 (still read): what is refused', () => {
  for (const { name, change, error } of negativeRefs) {
    it(`format 3: ${name}`, () => {
      const doc = JSON.parse(readFileSync(v3Path, 'utf8')) as Doc;
      change(doc);
      expect(() => decodeStateFile(doc)).toThrow(CatalogValidationError);
      expect(() => decodeStateFile(doc)).toThrow(error);
    });
  }
  for (const { name, change, error } of negative) {
    it(name, () => {
      const doc = JSON.parse(readFileSync(v2Path, 'utf8')) as Doc;
      change(doc);
      let thrown: unknown;
      try {
        decodeStateFile(doc);
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(CatalogValidationError);
      expect((thrown as Error).message.slice(0, error.length)).toBe(error);
    });
  }

  it('a parsed document of any format but 2 or 3 is format 1 to its validator (format 4 is not one document)', () => {
    expect(() => decodeStateFile([])).toThrow(/must be an object/);
    expect(() => decodeStateFile({ ...v1, format: 4 })).toThrow(/format: must be 1/);
  });
});
