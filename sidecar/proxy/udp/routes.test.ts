/**
 * The UDP route table's per-service idle timeout, from the annotation on the Service object
 * through the catalog builder (lib/catalog/testdata/udp-idle-timeout.yaml) to the entry the
 * flow table reads (flows.ts Route.idleMs). The table's other rules are tested in proxy.test.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildCatalog } from '../../../lib/catalog/from-objects.ts';
import { parseObjectsText } from '../../../lib/catalog/objects-file.ts';
import { DEFAULT_IDLE_MS, FlowTable } from './flows.ts';
import { UdpRouteTable } from './routes.ts';

const FILE = join(import.meta.dirname, '../../../lib/catalog/testdata/udp-idle-timeout.yaml');
const { catalog } = buildCatalog(parseObjectsText(readFileSync(FILE, 'utf8'), 'udp-idle-timeout.yaml'));
const table = new UdpRouteTable(catalog, undefined);

describe('UdpRouteTable idle timeouts', () => {
  it.each([
    ['10.96.7.1:5004', 120_000], // "120s"
    ['10.96.7.2:514', 3_600_000], // "1h"
    ['10.96.7.3:5683', 90_000], // "1m30.0004s", whole ms
    ['10.96.7.4:7777', 1_000], // "1000ms", the lower bound
  ])('%s carries its service annotation: %d ms', (dst, ms) => {
    expect(table.resolve(dst)?.idleMs).toBe(ms);
  });

  it.each([
    '10.96.7.5:7777', // "30": no unit
    '10.96.7.6:7777', // "2h": over 1 h
    '10.96.7.7:7777', // "999ms": under 1 s
    '10.96.7.11:7777', // ""
    '10.96.7.12:7777', // no annotation
  ])('%s (no valid annotation) is routed with the default left to the flow table', (dst) => {
    const service = table.resolve(dst);
    expect(service?.key).toMatch(/^media\//);
    expect(service?.idleMs).toBeUndefined();
  });

  it('reaches the flows: a flow takes its service timeout, another the table default', () => {
    let now = 0;
    const flows = new FlowTable({ now: () => now });
    const route = (dst: string) => {
      const s = table.resolve(dst);
      if (!s) throw new Error(`${dst} is not routed`);
      // The proxy's Route for a service: ready set, a pick, the service's idle timeout.
      return { ready: new Set(['x']), pick: () => 'x', idleMs: s.idleMs };
    };
    flows.lookup('10.60.0.2:4000', '10.96.7.4:7777', route('10.96.7.4:7777'));
    flows.lookup('10.60.0.2:4001', '10.96.7.12:7777', route('10.96.7.12:7777'));
    now = 1_000;
    expect(flows.sweep()).toBe(1);
    expect(flows.get('10.60.0.2:4000', '10.96.7.4:7777')).toBeUndefined();
    expect(flows.get('10.60.0.2:4001', '10.96.7.12:7777')?.idleMs).toBe(DEFAULT_IDLE_MS);
  });
});
