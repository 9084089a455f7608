import { MAX_SITE_PEERS, type PeerInfo, type SitePeer, type ToGateway } from '../lib/tunnel/control.ts';

/** What the registry needs of a control link (a MuxSession in the server, a fake in tests). */
export interface ControlLink {
  sendControl(message: Record<string, unknown>): void;
  close(err?: Error): void;
  goAway(reason: string): void;
}

/** One registered gateway: created by its `register` message, gone with its control link. */
export interface Registration {
  /** Its TLS control session (certificate = node identity). */
  link: ControlLink;
  /** LAN addresses and listener port it registered, and the address its session came from. */
  info: PeerInfo;
  /** Newer messages it understands (control.ts FEATURES): only those are sent to it. */
  features: readonly string[];
}

/**
 * The gateways registered at this replica, by node name: at most one each (a new registration
 * replaces the old one, whose link the caller closes). A registration lives exactly as long as
 * its control link: no timeout of its own, because the link has one (MuxSession: no frame in
 * 30 s, three missed PINGs, closes it) and its close removes the entry (`leave`).
 */
export class GatewayRegistry {
  /** node → its registration; insertion order is registration order (site-peers order). */
  readonly #byNode = new Map<string, Registration>();

  get size(): number {
    return this.#byNode.size;
  }

  get(node: string): Registration | undefined {
    return this.#byNode.get(node);
  }

  names(): string[] {
    return [...this.#byNode.keys()];
  }

  links(): ControlLink[] {
    return [...this.#byNode.values()].map((r) => r.link);
  }

  set(node: string, registration: Registration): void {
    this.#byNode.set(node, registration);
  }

  /** Removes `node` if `link` is still its registered link (not a newer one); true if removed. */
  leave(node: string, link: ControlLink): boolean {
    if (this.#byNode.get(node)?.link !== link) return false;
    this.#byNode.delete(node);
    return true;
  }

  /** Sends to `node` if it is registered (a message for a gateway that left is dropped). */
  send(node: string, msg: ToGateway): void {
    this.#byNode.get(node)?.link.sendControl(msg as unknown as Record<string, unknown>);
  }

  /**
   * What to tell when `node` has just registered: the gateways behind the same public address
   * (its site, as far as this server can tell) learn about it, and it about them, so same-site
   * peers know each other's LAN addresses before they need them and find each other there
   * while the cloud is away. Only LAN addresses of gateways behind the same NAT are shared, and
   * only to gateways that declared 'site-peers'. In send order: each old peer as it is found,
   * then the new node's list in messages of at most MAX_SITE_PEERS.
   */
  siteIntroductions(node: string): { to: string; msg: ToGateway }[] {
    const self = this.#byNode.get(node);
    if (!self) return [];
    const out: { to: string; msg: ToGateway }[] = [];
    const site: SitePeer[] = [];
    for (const [name, g] of this.#byNode) {
      if (name === node || g.info.observed.ip !== self.info.observed.ip) continue;
      site.push({ node: name, lan: g.info.lan, port: g.info.port });
      if (g.features.includes('site-peers'))
        out.push({
          to: name,
          msg: { t: 'site-peers', peers: [{ node, lan: self.info.lan, port: self.info.port }] },
        });
    }
    if (!self.features.includes('site-peers')) return out;
    for (let i = 0; i < site.length; i += MAX_SITE_PEERS)
      out.push({ to: node, msg: { t: 'site-peers', peers: site.slice(i, i + MAX_SITE_PEERS) } });
    return out;
  }
}
