/**
 * Pods that moved to a new IP while the API could not say so (issue 12: a pod restarted
 * during a cloud cut gets a new sandbox and IP; the kubelet cannot report it, so every
 * catalog on the site still points at the old IP).
 *
 * Two sources of moves, one rule for each:
 * - **Own node**: the sidecar of the restarted pod announces itself (`HELLO <ns> <name>
 *   <uid>`, lib/gateway-protocol.ts) from its new IP. The claim is taken when the pod is a
 *   pod of this node with that uid (the Pod watch, or the persisted catalog while the API is
 *   away), the source is not known as anything else, and the kernel routes the source to
 *   this node's pod side (claim.ts `podSide`): a LAN host cannot move a pod to itself.
 * - **Peers**: each gateway sends its own node's moves to the peers it has a tunnel session
 *   with (a CONTROL frame `{t:'pod-moves'}`, sent again on every change and whenever a
 *   session comes up). A peer's word is taken only for endpoints that name that peer as
 *   their node: its TLS identity proves the node, and a node can already answer for its own
 *   pods' traffic.
 *
 * Moves are a layer between the watcher and the store (`rewrite`): every update the watcher
 * applies has moved pods' endpoints re-addressed, so a replayed or re-listed old object does
 * not bring the old IP back. The layer also numbers the updates (it inserts its own), so the
 * watcher's builder and the store never disagree on revisions. A move ends when the API
 * reports the pod at that IP (or a new pod under the name): the layer then has nothing to
 * change. Dropped moves are not "undone": the API's next word for the service is applied
 * as it is.
 */
import { podsFromObject } from '../lib/catalog/from-objects.ts';
import type { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog, CatalogUpdate, PodInfo, ServiceEntry } from '../lib/catalog/types.ts';
import { canonicalIP } from '../lib/ip.ts';
import type { Logger } from '../lib/log.ts';
import { isDnsLabel, isDnsSubdomain, isUid } from '../lib/names.ts';
import { MAX_CONTROL } from '../lib/tunnel/frame.ts';
import { sourceIP } from './admission.ts';
import { isPodSide } from './pod-side.ts';

export interface PodMove {
  namespace: string;
  name: string;
  uid: string;
  ip: string;
}

/** Moves of one node, by `namespace/name`. */
export type NodeMoves = ReadonlyMap<string, PodMove>;

export const podKey = (namespace: string, name: string): string => `${namespace}/${name}`;

/** At most this many moves per node are kept or sent (a node runs ~110 pods by default). */
export const MAX_MOVES_PER_NODE = 256;

/** Validates one move from outside (a HELLO or a peer's message); throws saying what is wrong. */
export function validateMove(raw: unknown): PodMove {
  const m = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  const { namespace, name, uid, ip } = m;
  if (typeof namespace !== 'string' || !isDnsLabel(namespace))
    throw new Error('pod move: namespace is not a DNS label');
  if (typeof name !== 'string' || !isDnsSubdomain(name))
    throw new Error('pod move: name is not a DNS subdomain');
  if (typeof uid !== 'string' || !isUid(uid)) throw new Error('pod move: uid is not a Kubernetes uid');
  const canonical = typeof ip === 'string' ? canonicalIP(ip) : undefined;
  if (!canonical) throw new Error('pod move: ip is not an IP address');
  return { namespace, name, uid, ip: canonical };
}

/** Pure: the entry with the endpoints of `node`'s moved pods re-addressed (same object if none). */
export function moveEndpoints(entry: ServiceEntry, node: string, moves: NodeMoves): ServiceEntry {
  if (moves.size === 0) return entry;
  const ns = entry.service.namespace;
  let changed = false;
  const endpoints = entry.endpoints.map((e) => {
    if (e.nodeName !== node || !e.podName) return e;
    const move = moves.get(podKey(ns, e.podName));
    if (!move || move.ip === e.ip) return e;
    changed = true;
    return { ...e, ip: move.ip };
  });
  return changed ? { ...entry, endpoints } : entry;
}

/**
 * Pure: what a pod-table update becomes under the moves. A moved pod's old IP is gone; its
 * new IP is the moved pod (whatever the update said of that IP).
 */
export function movePod(
  ip: string,
  pod: PodInfo | null,
  moves: ReadonlyMap<string, NodeMoves>,
): PodInfo | null {
  for (const [node, byPod] of moves) {
    for (const m of byPod.values())
      if (m.ip === ip) return { ip, namespace: m.namespace, name: m.name, nodeName: node };
    if (pod && pod.nodeName === node) {
      const m = byPod.get(podKey(pod.namespace, pod.name));
      if (m && m.ip !== ip) return null;
    }
  }
  return pod;
}

/** Pure: the whole catalog under the moves. */
export function moveCatalog(catalog: Catalog, moves: ReadonlyMap<string, NodeMoves>): Catalog {
  if (moves.size === 0) return catalog;
  const services: Catalog['services'] = {};
  for (const [key, entry] of Object.entries(catalog.services)) {
    let e = entry;
    for (const [node, byPod] of moves) e = moveEndpoints(e, node, byPod);
    services[key] = e;
  }
  const pods: Catalog['pods'] = {};
  for (const [ip, pod] of Object.entries(catalog.pods)) {
    const moved = movePod(ip, pod, moves);
    if (moved) pods[ip] = moved;
  }
  for (const [node, byPod] of moves)
    for (const m of byPod.values())
      pods[m.ip] = { ip: m.ip, namespace: m.namespace, name: m.name, nodeName: node };
  return { ...catalog, services, pods };
}

/** What the store needs to look like after `node`'s moves change: the updates, unnumbered. */
function updatesFor(
  catalog: Catalog,
  node: string,
  byPod: NodeMoves,
  all: ReadonlyMap<string, NodeMoves>,
): CatalogUpdate[] {
  const out: CatalogUpdate[] = [];
  for (const [key, entry] of Object.entries(catalog.services)) {
    const moved = moveEndpoints(entry, node, byPod);
    if (moved !== entry) out.push({ type: 'service', revision: 0, key, entry: moved });
  }
  const ips = new Set<string>();
  for (const m of byPod.values()) ips.add(m.ip);
  for (const [ip, pod] of Object.entries(catalog.pods))
    if (pod.nodeName === node && byPod.has(podKey(pod.namespace, pod.name))) ips.add(ip);
  for (const ip of ips) {
    const next = movePod(ip, catalog.pods[ip] ?? null, all);
    if (!samePod(catalog.pods[ip], next)) out.push({ type: 'pod', revision: 0, ip, pod: next });
  }
  return out;
}

const samePod = (a: PodInfo | undefined, b: PodInfo | null): boolean =>
  (!a && !b) || (!!a && !!b && a.namespace === b.namespace && a.name === b.name && a.nodeName === b.nodeName);

/** The store side of the watcher (gateway/watcher.ts): what it applies and reads. */
export interface CatalogSink {
  readonly current: Catalog | undefined;
  apply(update: CatalogUpdate): boolean;
}

/**
 * Holds the moves of this node and of its peers, rewrites what the watcher applies, and
 * applies the updates a change of moves needs. `onLocalChange` hears this node's moves
 * (to send them to peers).
 */
export class PodMoves implements CatalogSink {
  readonly #store: CatalogStore;
  readonly #nodeName: string;
  readonly #moves = new Map<string, Map<string, PodMove>>();
  readonly #onLocalChange: (moves: PodMove[]) => void;
  readonly #podSide: (ip: string, localAddress: string | undefined) => Promise<boolean>;
  /** This node's Pods as the API last said: `namespace/name` → uid. */
  readonly #apiUids = new Map<string, string>();
  /** Old IPs of this node's moved pods → `namespace/name` (translate). */
  readonly #oldIps = new Map<string, string>();

  constructor(
    store: CatalogStore,
    opts: {
      nodeName: string;
      onLocalChange?: (moves: PodMove[]) => void;
      /** Default: the kernel's routes (pod-side.ts); tests pass their own. */
      podSide?: (ip: string, localAddress: string | undefined) => Promise<boolean>;
    },
  ) {
    this.#store = store;
    this.#nodeName = opts.nodeName;
    this.#onLocalChange = opts.onLocalChange ?? (() => {});
    this.#podSide = opts.podSide ?? isPodSide;
  }

  get current(): Catalog | undefined {
    return this.#store.current;
  }

  /** This node's moves (what peers are told). */
  get local(): PodMove[] {
    return [...(this.#moves.get(this.#nodeName)?.values() ?? [])];
  }

  /** Moves held, by node (metrics, status). */
  get counts(): Record<string, number> {
    return Object.fromEntries([...this.#moves].map(([node, m]) => [node, m.size]));
  }

  /** The watcher's updates, rewritten and numbered for the store. */
  apply(update: CatalogUpdate): boolean {
    const current = this.#store.current;
    if (update.type === 'snapshot')
      return this.#store.apply({ type: 'snapshot', catalog: moveCatalog(update.catalog, this.#moves) });
    if (!current) return this.#store.apply(update);
    const revision = current.revision + 1;
    switch (update.type) {
      case 'service':
        return this.#store.apply({
          ...update,
          revision,
          entry: update.entry && this.#moveEntry(update.entry),
        });
      case 'pod':
        return this.#store.apply({ ...update, revision, pod: movePod(update.ip, update.pod, this.#moves) });
      default:
        return this.#store.apply({ ...update, revision });
    }
  }

  /** Records that this node's pod `move` now has its IP (a verified HELLO). */
  moveLocal(move: PodMove): boolean {
    const mine = this.#moves.get(this.#nodeName);
    const old = mine?.get(podKey(move.namespace, move.name));
    if (old && old.ip === move.ip && old.uid === move.uid) return false;
    const key = podKey(move.namespace, move.name);
    for (const [ip, pod] of Object.entries(this.#store.current?.pods ?? {}))
      if (ip !== move.ip && pod.nodeName === this.#nodeName && podKey(pod.namespace, pod.name) === key)
        this.#oldIps.set(ip, key);
    const next = new Map(mine ?? []);
    next.set(key, move);
    this.#set(this.#nodeName, next);
    this.#onLocalChange(this.local);
    return true;
  }

  /**
   * The API reports this node's Pod `key` (its uid and IPs; undefined when deleted): the
   * uid is what a HELLO must match, and a move the API confirms or overtakes (another
   * uid, or gone) ends.
   */
  apiPod(key: string, pod: { uid: string; ips: string[] } | undefined): void {
    if (pod?.uid) this.#apiUids.set(key, pod.uid);
    else this.#apiUids.delete(key);
    const mine = this.#moves.get(this.#nodeName);
    const move = mine?.get(key);
    if (!mine || !move) return;
    if (pod && pod.uid === move.uid && !pod.ips.includes(move.ip)) return; // the API is still behind
    const next = new Map(mine);
    next.delete(key);
    for (const [ip, k] of this.#oldIps) if (k === key) this.#oldIps.delete(ip);
    this.#set(this.#nodeName, next);
    this.#onLocalChange(this.local);
  }

  /**
   * Where a stream for `ip` on this node goes: a moved pod's old IP leads to its new one. A
   * peer whose catalog has not heard of the move yet still reaches the pod.
   */
  translate(ip: string): string {
    const key = this.#oldIps.get(ip);
    return (key && this.#moves.get(this.#nodeName)?.get(key)?.ip) || ip;
  }

  /**
   * A `HELLO` from `source` (arrived on `localAddress`): moves the pod to the source when the
   * claim holds (see the file comment). Returns why not, or undefined when the gateway now
   * holds the source as that pod.
   */
  async claim(
    source: string | undefined,
    localAddress: string | undefined,
    hello: { namespace: string; name: string; uid: string },
  ): Promise<string | undefined> {
    const ip = sourceIP(source);
    const catalog = this.#store.current;
    if (!ip) return `source ${source ?? '(none)'} is not an IP address`;
    if (!catalog) return 'the gateway has no catalog yet';
    const key = podKey(hello.namespace, hello.name);
    const known = catalog.pods[ip];
    if (known) {
      if (known.nodeName === this.#nodeName && podKey(known.namespace, known.name) === key) return undefined;
      return `source ${ip} is pod ${known.namespace}/${known.name} on ${known.nodeName}`;
    }
    for (const [name, node] of Object.entries(catalog.nodes))
      if (node.addresses.includes(ip)) return `source ${ip} is node ${name}`;
    const apiUid = this.#apiUids.get(key);
    if (apiUid !== undefined && apiUid !== hello.uid)
      return `pod ${key} on ${this.#nodeName} has uid ${apiUid}, not ${hello.uid}`;
    if (apiUid === undefined) {
      // The API has not listed this node's Pods since the gateway started (cut off): the
      // persisted catalog must know the pod here; its uid cannot be checked.
      const here = Object.values(catalog.pods).some(
        (p) => p.nodeName === this.#nodeName && podKey(p.namespace, p.name) === key,
      );
      if (!here) return `pod ${key} is not a pod of node ${this.#nodeName}`;
    }
    if (!(await this.#podSide(ip, localAddress)))
      return `source ${ip} is not routed to this node's pods (it is reached like the LAN)`;
    this.moveLocal({ ...hello, ip });
    return undefined;
  }

  /** A peer's moves (its whole current set), validated; returns what was refused. */
  fromPeer(node: string, raw: unknown): string[] {
    if (node === this.#nodeName) return ['a peer named like this node'];
    const problems: string[] = [];
    const next = new Map<string, PodMove>();
    const list = Array.isArray(raw) ? raw.slice(0, MAX_MOVES_PER_NODE) : [];
    if (!Array.isArray(raw)) problems.push('moves is not a list');
    else if (raw.length > MAX_MOVES_PER_NODE) problems.push(`more than ${MAX_MOVES_PER_NODE} moves`);
    for (const item of list) {
      try {
        const m = validateMove(item);
        next.set(podKey(m.namespace, m.name), m);
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    this.#set(node, next);
    return problems;
  }

  #set(node: string, next: Map<string, PodMove>): void {
    if (next.size === 0) this.#moves.delete(node);
    else this.#moves.set(node, next);
    const current = this.#store.current;
    if (!current || next.size === 0) return;
    for (const u of updatesFor(current, node, next, this.#moves)) {
      const revision = (this.#store.current?.revision ?? 0) + 1;
      this.#store.apply({ ...u, revision } as CatalogUpdate);
    }
  }

  #moveEntry(entry: ServiceEntry): ServiceEntry {
    let e = entry;
    for (const [node, byPod] of this.#moves) e = moveEndpoints(e, node, byPod);
    return e;
  }
}

/** The CONTROL message telling peers this node's moves (its whole set; empty ends them). */
export function podMovesMessage(moves: readonly PodMove[]): Record<string, unknown> {
  // Newest last; what does not fit one CONTROL frame is left out (a node has ~110 pods).
  const list = moves.slice(-MAX_MOVES_PER_NODE);
  let message = { t: 'pod-moves', moves: list };
  while (message.moves.length > 0 && Buffer.byteLength(JSON.stringify(message)) > MAX_CONTROL - 64)
    message = { t: 'pod-moves', moves: message.moves.slice(Math.ceil(message.moves.length / 4)) };
  return message;
}

/** A peer's CONTROL message: pod moves are taken (for its own pods), anything else ignored. */
export function receivePodMoves(
  moves: PodMoves,
  peer: string,
  message: Record<string, unknown>,
  log: Logger,
): void {
  if (message.t !== 'pod-moves') return;
  const problems = moves.fromPeer(peer, message.moves);
  if (problems.length > 0)
    log.warn({ peer, problems: problems.slice(0, 5) }, 'pod moves from a peer partly refused');
  else
    log.info(
      { peer, moves: Array.isArray(message.moves) ? message.moves.length : 0 },
      'pod moves from a peer',
    );
}

/** A Pod object's uid and IPs (for PodMoves.apiPod); the IPs are those the catalog takes. */
export function podIdentity(obj: unknown): { uid: string; ips: string[] } {
  const meta = (obj as { metadata?: { uid?: unknown } } | null)?.metadata;
  return { uid: typeof meta?.uid === 'string' ? meta.uid : '', ips: podsFromObject(obj).map((p) => p.ip) };
}
