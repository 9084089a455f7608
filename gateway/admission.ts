/**
 * Who may use the sidecar port (hostIP:15080): the pods of this node, and the node itself.
 *
 * The port listens on the host IP, so every host on the edge LAN reaches it; without this
 * check any of them could FEED the whole catalog and CONNECT through the tunnel to every
 * node's pods, past the sites' network boundaries (issue 16 item 1). The source address of
 * a TCP connection is the only identity the plain protocol has: a pod's traffic to the host
 * IP leaves its network namespace with its pod IP, which the catalog knows from this node's
 * Pod objects (gateway/watcher.ts watches Pods with spec.nodeName=<node>). This does not
 * tell one pod on the node from another (docs/threat-model.md).
 *
 * `decideSource` is the pure rule; `Admission` holds unknown sources while the catalog may
 * still be about to learn them (a pod that has just started can connect before its Pod
 * status, with its IP, reaches the gateway), bounded in time and count.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { CatalogStore } from '../lib/catalog/store.ts';
import type { Catalog } from '../lib/catalog/types.ts';
import { canonicalIP } from '../lib/catalog/validate.ts';

/**
 * How long an unknown source is held for a catalog update that makes it a pod of this node.
 * The kubelet reports a new pod's IP within about a second of the sandbox starting; the
 * sidecar retries a refused feed after 0.2 s doubling to 5 s, so a pod slower than this is
 * admitted on a later attempt.
 */
export const ADMISSION_HOLD_MS = 3_000;
/** Unknown sources held at once: a LAN host's attempts each cost a held socket until refused. */
export const MAX_HELD = 256;
/** Per source: a new pod needs a feed and a few streams; more is a flood. */
export const MAX_HELD_PER_SOURCE = 16;

/** Label values of edgemesh_gateway_refused_total{reason}. */
export type RefusalReason = 'not-a-local-pod' | 'hold-limit' | 'header-limit';

export type Decision =
  | { verdict: 'admit'; as: 'pod' | 'node' }
  | { verdict: 'wait' }
  | { verdict: 'refuse'; reason: RefusalReason; message: string };

export interface SourceContext {
  nodeName: string;
  /** Admit loopback sources and this node's own addresses (the node itself). */
  allowNodeLocal: boolean;
  /** The address the connection arrived on: a source equal to it is this host. */
  localAddress?: string;
}

/** The IP a socket reports, in the catalog's form (IPv4-mapped IPv6 as IPv4). */
export function sourceIP(address: string | undefined): string | undefined {
  if (!address) return undefined;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped && isIPv4(mapped[1])) return mapped[1];
  return canonicalIP(address);
}

const isLoopback = (ip: string): boolean => (isIPv4(ip) ? ip.startsWith('127.') : isIPv6(ip) && ip === '::1');

/**
 * Pure: what to do with a connection from `source` given the catalog. A pod on this node is
 * admitted; loopback and this node's addresses are admitted when allowNodeLocal; a source the
 * catalog places elsewhere (another node's pod, any node's address) is refused at once; an
 * unknown source (or no catalog yet) waits, since it may be a pod the catalog has not seen.
 */
export function decideSource(
  source: string | undefined,
  catalog: Catalog | undefined,
  ctx: SourceContext,
): Decision {
  const ip = sourceIP(source);
  const refuse = (message: string): Decision => ({ verdict: 'refuse', reason: 'not-a-local-pod', message });
  if (!ip) return refuse(`source ${source ?? '(none)'} is not an IP address`);
  const self = isLoopback(ip) || ip === sourceIP(ctx.localAddress);
  if (self && ctx.allowNodeLocal) return { verdict: 'admit', as: 'node' };
  const pod = catalog?.pods[ip];
  if (pod?.nodeName === ctx.nodeName) return { verdict: 'admit', as: 'pod' };
  const ownAddress = catalog?.nodes[ctx.nodeName]?.addresses.includes(ip) ?? false;
  if (ownAddress && ctx.allowNodeLocal) return { verdict: 'admit', as: 'node' };
  if (self || ownAddress) return refuse(`source ${ip} is this node and --allow-node-local is off`);
  if (pod) return refuse(`source ${ip} is a pod on node ${pod.nodeName}, not on ${ctx.nodeName}`);
  for (const [name, node] of Object.entries(catalog?.nodes ?? {})) {
    if (node.addresses.includes(ip))
      return refuse(`source ${ip} is node ${name}, not a pod on ${ctx.nodeName}`);
  }
  return { verdict: 'wait' };
}

export interface AdmissionOptions extends Omit<SourceContext, 'localAddress'> {
  holdMs?: number;
  maxHeld?: number;
  maxHeldPerSource?: number;
}

export type Final = Exclude<Decision, { verdict: 'wait' }>;

interface Waiter {
  source: string | undefined;
  key: string;
  localAddress: string | undefined;
  resolve: (d: Final) => void;
  timer: NodeJS.Timeout;
}

/**
 * Decides each new connection, holding the undecided ones until a catalog update decides
 * them or `holdMs` passes (then: refused as not a local pod). One store subscription for all
 * the held; each update re-decides them (a map lookup each, at most `maxHeld`).
 */
export class Admission {
  readonly #store: CatalogStore;
  readonly #opts: Required<AdmissionOptions>;
  readonly #held = new Set<Waiter>();
  readonly #heldPerSource = new Map<string, number>();
  readonly #unsubscribe: () => void;

  constructor(store: CatalogStore, opts: AdmissionOptions) {
    this.#store = store;
    this.#opts = {
      nodeName: opts.nodeName,
      allowNodeLocal: opts.allowNodeLocal,
      holdMs: opts.holdMs ?? ADMISSION_HOLD_MS,
      maxHeld: opts.maxHeld ?? MAX_HELD,
      maxHeldPerSource: opts.maxHeldPerSource ?? MAX_HELD_PER_SOURCE,
    };
    this.#unsubscribe = store.subscribe(() => this.#redecide());
  }

  get held(): number {
    return this.#held.size;
  }

  /**
   * The decision for a connection from `source` arriving on `localAddress`: at once when the
   * catalog decides it, else after a catalog update or the hold time. `cancel` (the socket
   * closed meanwhile) frees its slot and settles nothing.
   */
  decide(
    source: string | undefined,
    localAddress: string | undefined,
  ): { decision: Promise<Final>; cancel: () => void } {
    const first = this.#decideNow(source, localAddress);
    if (first.verdict !== 'wait') return { decision: Promise.resolve(first), cancel: () => {} };
    const key = sourceIP(source) ?? '';
    const perSource = this.#heldPerSource.get(key) ?? 0;
    if (this.#held.size >= this.#opts.maxHeld || perSource >= this.#opts.maxHeldPerSource) {
      const limit =
        this.#held.size >= this.#opts.maxHeld
          ? `${this.#opts.maxHeld} in all`
          : `${this.#opts.maxHeldPerSource} per source`;
      return {
        decision: Promise.resolve({
          verdict: 'refuse',
          reason: 'hold-limit',
          message: `source ${key} is not a known pod on ${this.#opts.nodeName}, and at most ${limit} unknown sources are held`,
        }),
        cancel: () => {},
      };
    }
    let resolve!: (d: Final) => void;
    const decision = new Promise<Final>((r) => {
      resolve = r;
    });
    const timer = setTimeout(() => {
      this.#release(w);
      resolve({
        verdict: 'refuse',
        reason: 'not-a-local-pod',
        message: `source ${key} is not a pod on node ${this.#opts.nodeName}`,
      });
    }, this.#opts.holdMs);
    timer.unref();
    const w: Waiter = { source, key, localAddress, resolve, timer };
    this.#held.add(w);
    this.#heldPerSource.set(key, perSource + 1);
    return { decision, cancel: () => this.#release(w) };
  }

  /** Refuses everything held (the gateway is closing). */
  close(): void {
    this.#unsubscribe();
    for (const w of [...this.#held]) {
      this.#release(w);
      w.resolve({ verdict: 'refuse', reason: 'not-a-local-pod', message: 'gateway is closing' });
    }
  }

  #decideNow(source: string | undefined, localAddress: string | undefined): Decision {
    return decideSource(source, this.#store.current, { ...this.#opts, localAddress });
  }

  #redecide(): void {
    for (const w of [...this.#held]) {
      const d = this.#decideNow(w.source, w.localAddress);
      if (d.verdict === 'wait') continue;
      this.#release(w);
      w.resolve(d);
    }
  }

  #release(w: Waiter): void {
    if (!this.#held.delete(w)) return;
    clearTimeout(w.timer);
    const left = (this.#heldPerSource.get(w.key) ?? 1) - 1;
    if (left > 0) this.#heldPerSource.set(w.key, left);
    else this.#heldPerSource.delete(w.key);
  }
}
