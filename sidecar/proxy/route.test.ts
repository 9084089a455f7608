import { afterAll, describe, expect, it } from 'vitest';
import type { Catalog, Endpoint, ServicePort } from '../../lib/catalog/types.ts';
import { GoldenDir } from '../../test/harness/golden.ts';
import { labCatalog } from '../testing/lab.ts';
import { decodeSockaddr, formatIPv6 } from './original-dst.ts';
import { l7Protocol, normalizeIp, type Route, RouteTable, serviceTargets } from './route.ts';

const golden = new GoldenDir(new URL('./testdata/', import.meta.url).pathname);

const ep = (ip: string, ports: ServicePort[], over: Partial<Endpoint> = {}): Endpoint => ({
  ip,
  ready: true,
  serving: true,
  terminating: false,
  ports,
  ...over,
});
const tcp = (name: string, port: number): ServicePort => ({ name, port, protocol: 'TCP' });

/** The lab catalog plus the corner cases routing must get right. */
function catalog(): Catalog {
  const c = labCatalog();
  const base = c.services['default/echo'].service;
  const add = (name: string, over: Partial<typeof base>, endpoints: Endpoint[]) => {
    c.services[`default/${name}`] = { service: { ...base, name, ...over }, endpoints };
  };
  // Two named ports mapped to different target ports on each endpoint.
  add('multi', { clusterIPs: ['10.96.1.1'], ports: [tcp('web', 80), tcp('admin', 9090)] }, [
    ep('10.30.0.1', [tcp('admin', 19090), tcp('web', 8080)], { nodeName: 'node-a' }),
    ep('10.30.0.2', [tcp('web', 8081)], { nodeName: 'node-b' }), // lacks 'admin': not a target for it
  ]);
  // Nothing ready: serving-but-terminating endpoints still take traffic (Kubernetes semantics).
  add('draining', { clusterIPs: ['10.96.1.2'] }, [
    ep('10.30.0.3', [tcp('tcp', 9000)], { ready: false, serving: true, terminating: true }),
    ep('10.30.0.4', [tcp('tcp', 9000)], { ready: false, serving: false, terminating: true }),
  ]);
  add('not-ready-published', { clusterIPs: ['10.96.1.3'], publishNotReadyAddresses: true }, [
    ep('10.30.0.5', [tcp('tcp', 9000)], { ready: false, serving: false }),
  ]);
  add('headless', { clusterIPs: [], headless: true }, [ep('10.30.0.6', [tcp('tcp', 9000)])]);
  add('udp-only', { clusterIPs: ['10.96.1.4'], ports: [{ name: 'dns', port: 53, protocol: 'UDP' }] }, [
    ep('10.30.0.7', [{ name: 'dns', port: 53, protocol: 'UDP' }]),
  ]);
  // The same address listed twice (two EndpointSlices during a change) is one target.
  add('duplicated', { clusterIPs: ['10.96.1.5'] }, [
    ep('10.30.0.8', [tcp('tcp', 9000)]),
    ep('10.30.0.8', [tcp('tcp', 9000)]),
  ]);
  return c;
}

const cases: { name: string; ip: string; port: number }[] = [
  { name: 'service-http', ip: '10.96.0.10', port: 80 },
  { name: 'service-http-ipv6', ip: 'FD00:96:0:0::10', port: 80 },
  { name: 'service-tcp', ip: '10.96.0.11', port: 7 },
  { name: 'service-v4-mapped', ip: '::ffff:10.96.0.11', port: 7 },
  { name: 'service-wrong-port', ip: '10.96.0.11', port: 8 },
  { name: 'service-h2c-by-name', ip: '10.96.0.18', port: 50051 },
  { name: 'service-remote-node', ip: '10.96.0.16', port: 7 },
  { name: 'service-no-ready-endpoint', ip: '10.96.0.15', port: 80 },
  { name: 'multi-port-web', ip: '10.96.1.1', port: 80 },
  { name: 'multi-port-admin', ip: '10.96.1.1', port: 9090 },
  { name: 'draining-fallback', ip: '10.96.1.2', port: 7 },
  { name: 'publish-not-ready', ip: '10.96.1.3', port: 7 },
  { name: 'udp-port-passes-through', ip: '10.96.1.4', port: 53 },
  { name: 'duplicate-endpoints', ip: '10.96.1.5', port: 7 },
  { name: 'known-pod', ip: '10.20.0.30', port: 5432 },
  { name: 'passthrough', ip: '198.51.100.7', port: 443 },
  { name: 'passthrough-ipv6', ip: '2001:db8::1', port: 443 },
];

/** The parts of a route the proxy acts on (the Service object itself is the catalog's). */
const summary = (r: Route) =>
  r.kind === 'service'
    ? { kind: r.kind, key: r.key, l7: r.l7 ?? null, policy: r.service.lbPolicy, targets: r.targets }
    : r;

describe('RouteTable (golden)', () => {
  const table = new RouteTable(catalog());
  it.each(cases)('$name', ({ name, ip, port }) => {
    golden.expect(`${name}.golden`, `${JSON.stringify(summary(table.resolve(ip, port)), null, 2)}\n`);
  });

  it('lists every service-port key and endpoint id of the revision', () => {
    expect(table.serviceKeys.has('default/multi:9090')).toBe(true);
    expect(table.serviceKeys.has('default/headless:7')).toBe(false);
    expect(table.targetIds.has('10.30.0.1:19090')).toBe(true);
    expect(table.targetIds.has('[fd00:20::11]:8080')).toBe(true);
  });

  afterAll(() => {
    expect(golden.unused('.golden'), 'golden files no case uses').toEqual([]);
  });
});

describe('HTTP detection', () => {
  it.each([
    [{ name: 'http', appProtocol: undefined }, 'http'],
    [{ name: 'http-api', appProtocol: undefined }, 'http'],
    [{ name: 'https', appProtocol: undefined }, undefined], // TLS: spliced, never parsed
    [{ name: 'httpx', appProtocol: undefined }, undefined],
    [{ name: 'http2', appProtocol: undefined }, 'h2c'],
    [{ name: 'grpc-web', appProtocol: undefined }, 'h2c'],
    [{ name: 'tcp', appProtocol: 'http' }, 'http'],
    [{ name: 'x', appProtocol: 'kubernetes.io/h2c' }, 'h2c'],
    [{ name: 'x', appProtocol: 'grpc' }, 'h2c'],
    [{ name: 'http', appProtocol: 'mysql' }, undefined], // explicit protocol wins over the name
    [{ name: '', appProtocol: undefined }, undefined],
  ])('%o → %s', (p, expected) => {
    expect(l7Protocol({ port: 80, protocol: 'TCP', ...p } as ServicePort)).toBe(expected);
  });
});

describe('addresses', () => {
  it('normalizes IPv4-mapped and upper-case IPv6', () => {
    expect(normalizeIp('::FFFF:10.1.2.3')).toBe('10.1.2.3');
    expect(normalizeIp('FD00::1')).toBe('fd00::1');
    expect(normalizeIp('10.1.2.3')).toBe('10.1.2.3');
  });

  it('decodes sockaddr_in and sockaddr_in6 as the kernel fills them', () => {
    const v4 = Buffer.from('02001f900a60000b0000000000000000', 'hex'); // AF_INET, port 8080, 10.96.0.11
    expect(decodeSockaddr(v4)).toEqual({ ip: '10.96.0.11', port: 8080, family: 4 });
    const v6 = Buffer.concat([
      Buffer.from('0a000050', 'hex'), // AF_INET6, port 80
      Buffer.alloc(4), // flowinfo
      Buffer.from('fd000096000000000000000000000010', 'hex'),
      Buffer.alloc(4), // scope id
    ]);
    expect(decodeSockaddr(v6)).toEqual({ ip: 'fd00:96::10', port: 80, family: 6 });
    expect(() => decodeSockaddr(Buffer.from('01000000', 'hex'))).toThrow(/unexpected sockaddr family 1/);
    expect(() => decodeSockaddr(Buffer.from('0a00005000', 'hex'))).toThrow(/unexpected sockaddr/);
  });

  it.each([
    ['00000000000000000000000000000000', '::'],
    ['00000000000000000000000000000001', '::1'],
    ['20010db8000000000001000000000001', '2001:db8::1:0:0:1'],
    ['20010db8000100000000000100000001', '2001:db8:1::1:0:1'], // longest run first, leftmost on ties
    ['20010db800010001000100010001000a', '2001:db8:1:1:1:1:1:a'],
    ['20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'], // a single zero group stays
    ['00000000000000000000ffff0a000001', '::ffff:10.0.0.1'],
  ])('formats %s as %s (RFC 5952)', (hex, text) => {
    expect(formatIPv6(Buffer.from(hex, 'hex'))).toBe(text);
  });

  it('maps a single unnamed service port to the only endpoint port', () => {
    const targets = serviceTargets({ name: '', port: 80, protocol: 'TCP' }, [
      ep('10.0.0.1', [tcp('', 8080)]),
    ]);
    expect(targets).toEqual([{ id: '10.0.0.1:8080', ip: '10.0.0.1', port: 8080 }]);
  });
});
