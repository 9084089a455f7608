import type net from 'node:net';
import { splice as joinStreams } from '../../lib/splice.ts';

/**
 * A pod's connection joined with its upstream (lib/splice.ts: backpressure, half-close, a
 * reset on either side ends both) plus the proxy's idle timeout. Both are TCP sockets, so a
 * FIN that can go by close(2) does. `onClose` runs once when both are closed or destroyed.
 *
 * Upstream → client is usually done already by the dialer (`upstreamSinked`, dialer.ts
 * forwardInto); then only its FIN is carried here.
 */
export function splice(
  client: net.Socket,
  upstream: net.Socket,
  idleMs: number,
  onClose?: () => void,
  /** The upstream's bytes already flow into `client` (dialer.ts forwardInto): carry only its FIN. */
  upstreamSinked = false,
): void {
  const sweeper = idleMs > 0 ? idleSweeper(idleMs) : undefined;
  const watched = sweeper?.add(client, upstream);
  if (watched) client.once('close', () => sweeper?.delete(watched));
  joinStreams(client, upstream, { onEnd: onClose, bSinked: upstreamSinked, finByClose: true });
}

/**
 * Open connections in an array with swap-remove: O(1) add and remove, each entry knowing its
 * slot. Not a Set or Map: a long-lived hash table that keeps taking and dropping young sockets
 * made V8's scavenges keep ~20% of all allocation alive (3–10 MB per scavenge, pauses of
 * 5–13 ms instead of under 1 ms, measured with --trace-gc-nvp at ~8k connections/s): the GC
 * then cost more than the rest of the connection's JavaScript.
 */
export class SlotList<T extends { slot: number }> {
  readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  add(item: T): void {
    item.slot = this.items.length;
    this.items.push(item);
  }

  /** Idempotent. The last entry moves into the freed slot. */
  remove(item: T): void {
    const slot = item.slot;
    if (slot < 0) return;
    item.slot = -1;
    const last = this.items.pop() as T;
    if (last !== item) {
      this.items[slot] = last;
      last.slot = slot;
    }
  }
}

/**
 * Idle timeout by a coarse sweep instead of a timer per socket (which Node re-arms on every
 * read and write): every idleMs / 4 the sweep compares each connection's byte count (the
 * client socket sees every byte of both directions) with the previous sweep's; four sweeps
 * without a change close it. A connection is closed after idleMs to 1.25 × idleMs without a
 * byte either way. No timer runs while no connection is open.
 */
function idleSweeper(idleMs: number): IdleSweeper {
  let sweeper = sweepers.get(idleMs);
  if (!sweeper) {
    sweeper = new IdleSweeper(idleMs);
    sweepers.set(idleMs, sweeper);
  }
  return sweeper;
}

const QUIET_SWEEPS = 4;
const sweepers = new Map<number, IdleSweeper>();

interface Watched {
  client: net.Socket;
  upstream: net.Socket;
  bytes: number;
  quiet: number;
  slot: number;
}

class IdleSweeper {
  readonly #periodMs: number;
  readonly #conns = new SlotList<Watched>();
  #timer: NodeJS.Timeout | undefined;

  constructor(idleMs: number) {
    this.#periodMs = Math.max(1, Math.ceil(idleMs / QUIET_SWEEPS));
  }

  add(client: net.Socket, upstream: net.Socket): Watched {
    // bytes -1: the first sweep counts as activity, so a silent connection also gets the full idleMs.
    const watched: Watched = { client, upstream, bytes: -1, quiet: 0, slot: -1 };
    this.#conns.add(watched);
    if (!this.#timer) {
      this.#timer = setInterval(() => this.#sweep(), this.#periodMs);
      this.#timer.unref();
    }
    return watched;
  }

  delete(watched: Watched): void {
    this.#conns.remove(watched);
  }

  #sweep(): void {
    const items = this.#conns.items;
    if (items.length === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    // Backwards: a removal moves the last entry (already visited) into the freed slot.
    for (let i = items.length - 1; i >= 0; i--) {
      const w = items[i];
      const bytes = w.client.bytesRead + w.client.bytesWritten;
      if (bytes !== w.bytes) {
        w.bytes = bytes;
        w.quiet = 0;
      } else if (++w.quiet >= QUIET_SWEEPS) {
        this.#conns.remove(w);
        w.client.destroy();
        w.upstream.destroy();
      }
    }
  }
}
