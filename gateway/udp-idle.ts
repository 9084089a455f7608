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
 *
 * Open flows follow a change (followUdpIdle): a catalog update that touches an annotated
 * Service (annotation set, changed or removed; its endpoints changed while annotated) re-reads
 * the timeout of the open flows to that Service's endpoint ports, old and new (found by the
 * sweeper's index by target, not by walking every flow); the next sweep measures them against
 * it. Updates of Services without the annotation, before and after, cost one map lookup; a
 * datagram's path does no extra work.
 */
import type { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog, ServiceEntry } from '../lib/catalog/types.ts';
import { DEFAULT_UDP_IDLE_MS, type FlowSweeper, sharedSweeper, type UdpFlow } from './udp-flow.ts';

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

/** "ip port" of each UDP endpoint port of an annotated Service; undefined when it is not annotated. */
function annotatedPorts(entry: ServiceEntry | null | undefined): Set<string> | undefined {
  if (entry?.service.udpIdleTimeoutMs === undefined) return undefined;
  const ports = new Set<string>();
  for (const e of entry.endpoints) {
    for (const p of e.ports) if (p.protocol === 'UDP') ports.add(`${e.ip} ${p.port}`);
  }
  return ports;
}

function annotatedServices(catalog: Catalog | undefined): Map<string, Set<string>> {
  const all = new Map<string, Set<string>>();
  for (const [key, entry] of Object.entries(catalog?.services ?? {})) {
    const ports = annotatedPorts(entry);
    if (ports) all.set(key, ports);
  }
  return all;
}

/**
 * Gives the open flows to each of `ports` ("ip port"; `flowsTo` finds them) the timeout
 * `catalog` has for that port, or `fallback` (the dialer's default) when no Service there
 * sets one. Returns how many flows it set.
 */
export function retimeUdpFlows(
  catalog: Catalog,
  flowsTo: (port: string) => Iterable<Pick<UdpFlow, 'target' | 'retime'>> | undefined,
  ports: Iterable<string>,
  fallback: number,
): number {
  let retimed = 0;
  for (const key of ports) {
    const flows = flowsTo(key);
    if (!flows) continue;
    for (const flow of flows) {
      flow.retime(udpIdleFor(catalog, flow.target.ip, flow.target.port) ?? fallback);
      retimed++;
    }
  }
  return retimed;
}

/**
 * Keeps the open flows of `sweeper` (default: the process's) on their Service's current
 * timeout as `store` changes; `defaultIdleMs` is the dialer's default (LocalDialer's
 * `udp.idleMs`, 30 s unless set), for a flow whose Service dropped the annotation. Returns
 * the unsubscribe.
 */
export function followUdpIdle(
  store: CatalogStore,
  opts: { sweeper?: FlowSweeper; defaultIdleMs?: number } = {},
): () => void {
  const sweeper = opts.sweeper ?? sharedSweeper();
  const fallback = opts.defaultIdleMs ?? DEFAULT_UDP_IDLE_MS;
  // Annotated Services' endpoint ports as of the last catalog: an update's old ports are here
  // (the store may have changed the previous catalog's records in place).
  let annotated = annotatedServices(store.current);
  return store.subscribe((catalog, update) => {
    const touched = new Set<string>();
    if (update.type === 'snapshot') {
      const next = annotatedServices(catalog);
      for (const ports of [...annotated.values(), ...next.values()]) for (const p of ports) touched.add(p);
      annotated = next;
    } else if (update.type === 'service') {
      const before = annotated.get(update.key);
      const after = annotatedPorts(update.entry);
      if (!before && !after) return; // not annotated before or after: no flow's timeout changed
      if (after) annotated.set(update.key, after);
      else annotated.delete(update.key);
      for (const p of before ?? []) touched.add(p);
      for (const p of after ?? []) touched.add(p);
    }
    if (touched.size > 0 && sweeper.size > 0)
      retimeUdpFlows(catalog, (port) => sweeper.flowsTo(port), touched, fallback);
  });
}
