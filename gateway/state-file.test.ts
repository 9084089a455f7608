import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CatalogValidationError, validateCatalog } from '../lib/catalog/validate.ts';
import { decodeStateFile, STATE_FORMAT, stateFileChunks } from './state-file.ts';

// A format-1 catalog with every optional field somewhere (IPv6, hostname, no nodeName/podName,
// appProtocol, headless, ExternalName, namespaces), and its format-3 form, golden:
// REFRESH_GOLDEN=1 rewrites the golden file. Its format-2 form (what gateways wrote before
// format 3) is kept as it was written, for the reader's format-2 path.
const dir = new URL('./testdata/state-file/', import.meta.url);
const v1 = validateCatalog(JSON.parse(readFileSync(new URL('catalog.v1.json', dir), 'utf8')));
const goldenPath = new URL('catalog.v3.golden.json', dir);
const v2Path = new URL('catalog.v2.golden.json', dir);
const encode = (c: Parameters<typeof stateFileChunks>[0], size?: number) =>
  [...stateFileChunks(c, size)].join('');

describe('state file format 3', () => {
  it('encodes the catalog as the golden file says', () => {
    const text = encode(v1);
    if (process.env.REFRESH_GOLDEN) writeFileSync(goldenPath, `${text}\n`);
    expect(`${text}\n`).toBe(readFileSync(goldenPath, 'utf8'));
    expect(JSON.parse(text).format).toBe(STATE_FORMAT);
  });

  it('decodes to the same catalog as format 1, key order included, whatever the chunk size', () => {
    for (const size of [1, 64, 1 << 20]) {
      const decoded = decodeStateFile(JSON.parse(encode(v1, size)));
      expect(decoded).toEqual(v1);
      // The builder's reuse of persisted items compares them as JSON.
      expect(JSON.stringify(decoded)).toBe(JSON.stringify(v1));
    }
  });

  it('keeps one array per distinct port list and one string per name', () => {
    const decoded = decodeStateFile(JSON.parse(readFileSync(goldenPath, 'utf8')));
    const [a, b] = decoded.services['demo/web'].endpoints;
    expect(a.ports).toBe(b.ports);
    const doc = JSON.parse(readFileSync(goldenPath, 'utf8'));
    expect(doc.portLists).toHaveLength(3);
    // Node names; no namespace: every pod is an endpoint row's (format 3).
    expect(doc.names).toEqual(['edge-a', 'edge-b']);
  });

  it('still reads format 1 and format 2 (files older gateways wrote), key order included', () => {
    expect(decodeStateFile(JSON.parse(JSON.stringify(v1)))).toEqual(v1);
    const v2 = decodeStateFile(JSON.parse(readFileSync(v2Path, 'utf8')));
    expect(JSON.stringify(v2)).toBe(JSON.stringify(v1));
  });

  it("writes a pod that an endpoint row names as that row's number, any other as a row", () => {
    const doc = JSON.parse(readFileSync(goldenPath, 'utf8'));
    // web's rows are 0..2 (the third has no pod), db's is 3.
    expect(doc.pods).toEqual([0, 1, 3]);
    const moved = structuredClone(v1);
    moved.pods['10.244.2.9'].nodeName = 'edge-a'; // no longer what its endpoint row says
    const text = encode(moved);
    expect(JSON.parse(text).pods).toEqual([0, ['10.244.2.9', 2, 'web-5d9c7b8f6d-fghij', 0], 3]);
    expect(JSON.stringify(decodeStateFile(JSON.parse(text)))).toBe(JSON.stringify(moved));
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
    expect(decodeStateFile(JSON.parse(encode(empty)))).toEqual(empty);
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

describe('state file format 2 and 3: what is refused', () => {
  for (const { name, change, error } of negativeRefs) {
    it(`format 3: ${name}`, () => {
      const doc = JSON.parse(readFileSync(goldenPath, 'utf8')) as Doc;
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

  it('anything but format 2 or 3 is format 1 to its validator', () => {
    expect(() => decodeStateFile([])).toThrow(/must be an object/);
    expect(() => decodeStateFile({ ...v1, format: 4 })).toThrow(/format: must be 1/);
  });
});
