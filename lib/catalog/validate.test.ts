import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Catalog, LB_POLICY_ANNOTATION } from './types.ts';
import {
  CatalogValidationError,
  canonicalIP,
  parseCatalogJSON,
  validateCatalog,
  validateUpdate,
} from './validate.ts';

const golden = (name: string): Catalog =>
  JSON.parse(readFileSync(join(import.meta.dirname, 'testdata', `${name}.golden.json`), 'utf8')).catalog;

// Tests poke at arbitrary paths of the JSON on purpose.
// biome-ignore lint/suspicious/noExplicitAny: see above
type Json = Record<string, any>;

/** A deep copy of a good catalog with one change made by `edit`. */
function edited(edit: (c: Json) => void): unknown {
  const c = structuredClone(golden('clusterip-web')) as Json;
  edit(c);
  return c;
}

describe('catalog validation', () => {
  it('accepts every golden catalog unchanged', () => {
    for (const name of [
      'clusterip-web',
      'dual-stack',
      'headless-statefulset',
      'externalname-and-policies',
      'udp-idle-timeout',
    ]) {
      const c = golden(name);
      expect(validateCatalog(structuredClone(c))).toEqual(c);
    }
  });

  const web = 'services["demo/web"]';
  const bad: Array<[string, (c: Json) => void, string]> = [
    [
      'port out of range',
      (c) => (c.services['demo/web'].service.ports[0].port = 70000),
      `${web}.service.ports[0].port: must be 1..65535`,
    ],
    [
      'fractional port',
      (c) => (c.services['demo/web'].service.ports[1].port = 80.5),
      `${web}.service.ports[1].port: must be 1..65535`,
    ],
    [
      'port as a string',
      (c) => (c.services['demo/web'].endpoints[0].ports[0].port = '80'),
      `${web}.endpoints[0].ports[0].port: must be 1..65535`,
    ],
    [
      'bad endpoint IP',
      (c) => (c.services['demo/web'].endpoints[2].ip = '10.244.2.300'),
      `${web}.endpoints[2].ip: must be an IP address`,
    ],
    [
      'unknown protocol',
      (c) => (c.services['demo/web'].service.ports[0].protocol = 'ICMP'),
      `${web}.service.ports[0].protocol: must be one of TCP, UDP, SCTP`,
    ],
    [
      'unknown field',
      (c) => (c.services['demo/web'].service.extra = 1),
      `${web}.service.extra: unknown field`,
    ],
    [
      'missing field',
      (c) => delete c.services['demo/web'].service.headless,
      `${web}.service.headless: is required`,
    ],
    [
      'bad lb policy',
      (c) => (c.services['demo/web'].service.lbPolicy = 'fastest'),
      `${web}.service.lbPolicy: must be one of`,
    ],
    [
      'namespace not a DNS label',
      (c) => (c.services['demo/web'].service.namespace = 'Demo'),
      `${web}.service.namespace: must be a DNS label`,
    ],
    [
      'key does not match',
      (c) => (c.services['demo/web'].service.name = 'api'),
      `${web}: key must be "<namespace>/<name>"`,
    ],
    [
      'pod key does not match',
      (c) => (c.pods['10.244.1.17'].ip = '10.244.1.18'),
      'pods["10.244.1.17"]: key must be the pod IP',
    ],
    [
      'node key does not match',
      (c) => (c.nodes['edge-a'].name = 'edge-z'),
      'nodes["edge-a"]: key must be the node name',
    ],
    [
      '__proto__ key',
      (c) => (c.nodes = JSON.parse('{"__proto__": {"name": "x", "addresses": []}}')),
      'nodes["__proto__"]: key must be the node name',
    ],
    [
      'headless with IPs',
      (c) => (c.services['demo/web'].service.headless = true),
      `${web}.service.clusterIPs: must be empty for a headless service`,
    ],
    [
      'externalName on ClusterIP',
      (c) => (c.services['demo/web'].service.externalName = 'a.example'),
      'is only allowed on an ExternalName service',
    ],
    [
      'affinity timeout',
      (c) => (c.services['demo/web'].service.sessionAffinity = { type: 'ClientIP', timeoutSeconds: 0 }),
      `${web}.service.sessionAffinity.timeoutSeconds: must be 1..86400`,
    ],
    [
      'affinity extra field',
      (c) => (c.services['demo/web'].service.sessionAffinity = { type: 'None', timeoutSeconds: 5 }),
      'sessionAffinity.timeoutSeconds: unknown field',
    ],
    [
      'hash header with a space',
      (c) => (c.services['demo/web'].service.hashHeader = 'x y'),
      `${web}.service.hashHeader: must be an HTTP header name`,
    ],
    [
      'UDP idle timeout under 1 s',
      (c) => (c.services['demo/web'].service.udpIdleTimeoutMs = 999),
      `${web}.service.udpIdleTimeoutMs: must be 1000..3600000`,
    ],
    [
      'UDP idle timeout over 1 h',
      (c) => (c.services['demo/web'].service.udpIdleTimeoutMs = 3_600_001),
      `${web}.service.udpIdleTimeoutMs: must be 1000..3600000`,
    ],
    [
      'UDP idle timeout as text',
      (c) => (c.services['demo/web'].service.udpIdleTimeoutMs = '120s'),
      `${web}.service.udpIdleTimeoutMs: must be 1000..3600000`,
    ],
    [
      'UDP idle timeout not whole ms',
      (c) => (c.services['demo/web'].service.udpIdleTimeoutMs = 1500.5),
      `${web}.service.udpIdleTimeoutMs: must be 1000..3600000`,
    ],
    [
      'too many cluster IPs',
      (c) => (c.services['demo/web'].service.clusterIPs = ['10.0.0.1', '10.0.0.2', '10.0.0.3']),
      'clusterIPs: must have at most 2 items',
    ],
    ['wrong format', (c) => (c.format = 2), 'format: must be 1'],
    ['negative revision', (c) => (c.revision = -1), 'revision: must be 0..'],
    ['services an array', (c) => (c.services = []), 'services: must be an object'],
    [
      'node address',
      (c) => (c.nodes['edge-b'].addresses = ['fe80::1%eth0']),
      'nodes["edge-b"].addresses[0]: must be an IP address',
    ],
    [
      'overlong hostname',
      (c) => (c.services['demo/web'].endpoints[0].hostname = 'a'.repeat(64)),
      'endpoints[0].hostname: must be a DNS label',
    ],
    ['cluster domain', (c) => (c.clusterDomain = 'bad domain'), 'clusterDomain: must be a DNS name'],
  ];
  for (const [what, edit, message] of bad) {
    it(`rejects ${what}`, () => {
      const input = edited(edit);
      expect(() => validateCatalog(input)).toThrow(CatalogValidationError);
      expect(() => validateCatalog(input)).toThrow(message);
    });
  }

  it('canonicalizes IPv6 addresses and strips a trailing dot from the domain', () => {
    const c = validateCatalog(
      edited((c) => {
        c.clusterDomain = 'cluster.local.';
        c.services['demo/web'].service.clusterIPs = ['FD00:0:0::A'];
      }),
    ) as Catalog;
    expect(c.services['demo/web'].service.clusterIPs).toEqual(['fd00::a']);
    expect(c.clusterDomain).toBe('cluster.local');
    expect(canonicalIP('::ffff:10.0.0.1')).toBe('::ffff:a00:1');
    expect(canonicalIP('1.2.3')).toBeUndefined();
    expect(canonicalIP('01.2.3.4')).toBeUndefined();
  });

  it('bounds sizes', () => {
    const many = { ...golden('clusterip-web'), nodes: {} as Record<string, unknown> };
    for (let i = 0; i < 20_001; i++) many.nodes[`n${i}`] = { name: `n${i}`, addresses: [] };
    expect(() => validateCatalog(many)).toThrow('nodes: must have at most 20000 entries');
  });

  it('validates updates', () => {
    const entry = golden('clusterip-web').services['demo/web'];
    expect(validateUpdate({ type: 'service', revision: 3, key: 'demo/web', entry })).toEqual({
      type: 'service',
      revision: 3,
      key: 'demo/web',
      entry,
    });
    expect(validateUpdate({ type: 'pod', revision: 4, ip: 'FD00::1', pod: null })).toEqual({
      type: 'pod',
      revision: 4,
      ip: 'fd00::1',
      pod: null,
    });
    expect(() => validateUpdate({ type: 'service', revision: 3, key: 'demo/api', entry })).toThrow(
      'key: must be "<namespace>/<name>" of the entry\'s service',
    );
    expect(() =>
      validateUpdate({ type: 'node', revision: 1, name: 'a', node: { name: 'b', addresses: [] } }),
    ).toThrow("name: must equal the node's name");
    expect(() => validateUpdate({ type: 'teleport' })).toThrow(
      'type: must be one of snapshot, service, pod, node',
    );
    expect(() => validateUpdate({ type: 'snapshot', catalog: {} })).toThrow('catalog.format: is required');
    expect(() => validateUpdate({ type: 'pod', revision: 1.5, ip: '1.2.3.4', pod: null })).toThrow(
      'revision: must be',
    );
    expect(() => validateUpdate('x')).toThrow('must be an object');
  });

  it('parses JSON text and names the source', () => {
    expect(() => parseCatalogJSON('{', 'a.json')).toThrow(/^a\.json: not valid JSON/);
    expect(() => parseCatalogJSON('{"format":1}', 'a.json')).toThrow('a.json: revision: is required');
    expect(LB_POLICY_ANNOTATION).toBe('edgemesh.io/lb-policy');
  });
});

describe('namespaces in the catalog', () => {
  it('are optional, keyed by name, and have their own update', () => {
    const withNs = edited((c) => {
      c.namespaces = { demo: { name: 'demo' } };
    }) as Catalog;
    expect(validateCatalog(withNs).namespaces).toEqual({ demo: { name: 'demo' } });
    expect(validateCatalog(golden('clusterip-web')).namespaces).toBeUndefined();
    expect(() =>
      validateCatalog(
        edited((c) => {
          c.namespaces = { demo: { name: 'other' } };
        }),
      ),
    ).toThrow('namespaces["demo"]: key must be the namespace name (expected key "other")');
    expect(() =>
      validateCatalog(
        edited((c) => {
          c.namespaces = { Bad_NS: { name: 'Bad_NS' } };
        }),
      ),
    ).toThrow(/namespaces\["Bad_NS"\]\.name: must be a DNS label/);
    expect(
      validateUpdate({ type: 'namespace', revision: 3, name: 'demo', namespace: { name: 'demo' } }),
    ).toEqual({ type: 'namespace', revision: 3, name: 'demo', namespace: { name: 'demo' } });
    expect(() =>
      validateUpdate({ type: 'namespace', revision: 3, name: 'demo', namespace: { name: 'x' } }),
    ).toThrow("name: must equal the namespace's name");
  });
});
