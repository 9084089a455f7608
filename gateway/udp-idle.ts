/**
 * The far gateway's idle timeout for a UDP flow to a local endpoint: the Service's own
 * (`edgemesh.io/udp-idle-timeout`, catalog `Service.udpIdleTimeoutMs`), so a flow the sidecar
 * keeps for its Service's 5 minutes is not ended here after the gateway's 30 s.
 *
 * Per catalog object (each revision is a new object), like local-endpoint.ts: "ip port" → the
 * longest timeout of the Services that list ip:port/UDP as an endpoint port. Only annotated
 * Services' endpoints are walked, so a catalog without the annotation costs one pass over its
 * services per revision and an empty map; a dial is then one map lookup.
 *
 * Several Services sharing an endpoint port: the longest wins. The far gateway cannot tell
 * which Service the opener addressed (the stream names the endpoint, not the Service), and
 * ending a flow that one of them still expects is worse than holding a socket a while longer.
 */
import type { Catalog } from '../lib/catalog/types.ts';

const indexes = new WeakMap<Catalog, Map<string, number>>();

function idleIndex(catalog: Catalog): Map<string, number> {
  let index = indexes.get(catalog);
  if (index) return index;
  index = new Map();
  for (const { service, endpoints } of Object.values(catalog.services)) {
    const ms = service.udpIdleTimeoutMs;
    if (ms === undefined) continue;
    for (const e of endpoints) {
      for (const p of e.ports) {
        if (p.protocol !== 'UDP') continue;
        const key = `${e.ip} ${p.port}`;
        if ((index.get(key) ?? 0) < ms) index.set(key, ms);
      }
    }
  }
  indexes.set(catalog, index);
  return index;
}

/**
 * The idle timeout (ms) the Services with endpoint ip:port/UDP ask for, the longest if several
 * do; undefined when none sets one (the caller's default). `ip` must be in canonical form.
 */
export function udpIdleFor(catalog: Catalog, ip: string, port: number): number | undefined {
  return idleIndex(catalog).get(`${ip} ${port}`);
}
