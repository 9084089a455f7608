/**
 * What this gateway last learnt of each peer's addresses, kept in the state directory
 * (`peers.json`) so that a gateway restarted while no tunnel-server answers (a cloud cut)
 * still finds its peers: same-site peers on their LAN addresses, and peers whose public
 * address accepts a direct dial (no NAT, or a port forward) there. Without it a restarted
 * gateway knows peers only from the rendezvous (and, on a cloud node, from Node objects),
 * and answered "no tunnel-server is reachable" for peers it had paths to a minute before.
 *
 * The file is ours but read as untrusted input (a corrupt or hand-edited file must not
 * crash the gateway or make it dial anything that is not an address): every field is
 * validated, and what fails is dropped with a warning. Records older than MAX_AGE_MS are
 * forgotten (a node gone for a month has other addresses, if it exists at all).
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { canonicalIP } from '../../lib/ip.ts';
import { type Logger, silentLogger } from '../../lib/log.ts';
import { isDnsSubdomain } from '../../lib/names.ts';
import type { PeerInfo } from '../../lib/tunnel/control.ts';
import { lanAddressProblem } from '../../lib/tunnel/peer-address.ts';

export interface PeerRecord {
  /** The peer's LAN addresses as it registered them. */
  lan: string[];
  /** Its tunnel listener port. */
  port: number;
  /** Its public address as the tunnel-server saw it (the NAT's outside), if any. */
  public?: string;
  /** When we last heard (ms epoch). */
  seenAt: number;
}

export const MAX_PEERS = 10_000;
export const MAX_ADDRESSES = 8;
export const MAX_AGE_MS = 30 * 24 * 3600_000;
const SAVE_DELAY_MS = 1_000;

function address(value: unknown): string | undefined {
  const ip = typeof value === 'string' && value.length <= 45 ? canonicalIP(value) : undefined;
  // Never an address no peer can be reached on (loopback, link-local, multicast, …): the
  // same rule the tunnel-server applies to registrations.
  return ip && lanAddressProblem(ip) === undefined ? ip : undefined;
}

/** Pure: the records in `text`, and what was dropped and why. */
export function parsePeerBook(
  text: string,
  now = Date.now(),
): { peers: Map<string, PeerRecord>; dropped: string[] } {
  const peers = new Map<string, PeerRecord>();
  const dropped: string[] = [];
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { peers, dropped: ['not JSON'] };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    return { peers, dropped: ['not an object'] };
  for (const [node, value] of Object.entries(raw as Record<string, unknown>)) {
    if (peers.size >= MAX_PEERS) {
      dropped.push(`more than ${MAX_PEERS} peers`);
      break;
    }
    const r = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
    const lan = Array.isArray(r.lan) ? r.lan.slice(0, MAX_ADDRESSES).map(address) : [];
    const port = r.port;
    const seenAt = r.seenAt;
    if (!isDnsSubdomain(node)) dropped.push(`${JSON.stringify(node).slice(0, 80)}: not a node name`);
    else if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)
      dropped.push(`${node}: port must be 1..65535`);
    else if (typeof seenAt !== 'number' || !Number.isFinite(seenAt)) dropped.push(`${node}: no seenAt`);
    else if (now - seenAt > MAX_AGE_MS) dropped.push(`${node}: older than ${MAX_AGE_MS / 86_400_000} days`);
    else {
      const pub = r.public === undefined ? undefined : address(r.public);
      peers.set(node, {
        lan: lan.filter((a): a is string => a !== undefined),
        port,
        ...(pub ? { public: pub } : {}),
        seenAt,
      });
    }
  }
  return { peers, dropped };
}

export class PeerBook {
  readonly #file: string | undefined;
  readonly #log: Logger;
  readonly #peers: Map<string, PeerRecord>;
  #timer: NodeJS.Timeout | undefined;
  #saving: Promise<void> = Promise.resolve();

  constructor(peers = new Map<string, PeerRecord>(), file?: string, log: Logger = silentLogger) {
    this.#peers = peers;
    this.#file = file;
    this.#log = log;
  }

  /** The book in `file` (none yet, unreadable or corrupt: an empty one, said in the log). */
  static async load(file: string, log: Logger = silentLogger): Promise<PeerBook> {
    const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT')
        log.warn({ file, err: err.message }, 'peer book unreadable: starting without it');
      return undefined;
    });
    if (text === undefined) return new PeerBook(new Map(), file, log);
    const { peers, dropped } = parsePeerBook(text);
    if (dropped.length > 0)
      log.warn({ file, dropped: dropped.slice(0, 5), count: dropped.length }, 'peer book: records dropped');
    log.info(
      { file, peers: peers.size },
      'peer book loaded: known peers are tried directly without a tunnel-server',
    );
    return new PeerBook(peers, file, log);
  }

  get size(): number {
    return this.#peers.size;
  }

  get(node: string): PeerRecord | undefined {
    return this.#peers.get(node);
  }

  /** What the rendezvous said of `node`; saved soon after. */
  remember(node: string, info: Pick<PeerInfo, 'lan' | 'port'> & { observed?: PeerInfo['observed'] }): void {
    const lan = info.lan
      .map(address)
      .filter((a): a is string => a !== undefined)
      .slice(0, MAX_ADDRESSES);
    const pub = address(info.observed?.ip);
    this.#peers.set(node, { lan, port: info.port, ...(pub ? { public: pub } : {}), seenAt: Date.now() });
    if (this.#peers.size > MAX_PEERS) {
      const oldest = [...this.#peers].sort((a, b) => a[1].seenAt - b[1].seenAt)[0];
      if (oldest) this.#peers.delete(oldest[0]);
    }
    this.#scheduleSave();
  }

  /** Addresses to dial `node` at without the rendezvous: its LAN ones, then its public one. */
  candidates(node: string): { addresses: string[]; port: number } | undefined {
    const r = this.#peers.get(node);
    if (!r) return undefined;
    return { addresses: [...r.lan, ...(r.public ? [r.public] : [])], port: r.port };
  }

  async close(): Promise<void> {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#save();
    }
    await this.#saving;
  }

  #scheduleSave(): void {
    if (!this.#file || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#save();
    }, SAVE_DELAY_MS);
    this.#timer.unref();
  }

  #save(): void {
    const file = this.#file;
    if (!file) return;
    const text = JSON.stringify(Object.fromEntries(this.#peers));
    // Write then rename: a crash mid-write leaves the last whole book.
    this.#saving = this.#saving
      .then(async () => {
        await mkdir(dirname(file), { recursive: true });
        await writeFile(`${file}.tmp`, text, { mode: 0o600 });
        await rename(`${file}.tmp`, file);
      })
      .catch((err: Error) => this.#log.warn({ file, err: err.message }, 'peer book not saved'));
  }
}
