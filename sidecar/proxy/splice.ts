import type net from 'node:net';

/**
 * Joins two sockets both ways, with backpressure (a full destination pauses its source until
 * it drains), half-close (a FIN is carried across while the other direction keeps flowing:
 * both sockets are half-open capable) and an idle timeout. An error or reset on either side
 * destroys both. `onClose` runs once when both are closed.
 *
 * Client → upstream is a plain 'data' handler rather than `pipe()`: pipe registers and later
 * removes seven listeners and an unpipe path per connection, which showed at thousands of
 * short connections per second. Upstream → client is usually done already by the dialer
 * (`upstreamSinked`, dialer.ts forwardInto); then only its FIN is carried here.
 */
export function splice(
  client: net.Socket,
  upstream: net.Socket,
  idleMs: number,
  onClose?: () => void,
  /** The upstream's bytes already flow into `client` (dialer.ts forwardInto): carry only its FIN. */
  upstreamSinked = false,
): void {
  let open = 2;
  const closed = () => {
    if (--open === 0) onClose?.();
  };
  const destroyBoth = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', destroyBoth);
  upstream.on('error', destroyBoth);
  const sweeper = idleMs > 0 ? idleSweeper(idleMs) : undefined;
  const watched = sweeper?.add(client, upstream);
  client.once('close', (hadError) => {
    if (watched) sweeper?.delete(watched);
    // The client vanished while upstream still had data to send: nobody would read it.
    if (hadError || !client.readableEnded) upstream.destroy();
    closed();
  });
  upstream.once('close', (hadError) => {
    if (hadError || !upstream.readableEnded) client.destroy();
    closed();
  });
  forward(client, upstream);
  if (upstreamSinked) carryFinAfterEnd(upstream, client);
  else forward(upstream, client);
}

/** Bytes from `from` written to `to`; a full `to` pauses `from` until 'drain'. */
function forward(from: net.Socket, to: net.Socket): void {
  const resume = () => from.resume();
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) {
      from.pause();
      to.once('drain', resume);
    }
  });
  carryFinAfterEnd(from, to);
  from.resume();
}

/**
 * Carries `from`'s FIN to `to` when `from` ends. A source that already ended (an upgraded HTTP
 * client that sent its FIN while the upstream was being dialled) has no 'end' left to emit:
 * its FIN goes now, as pipe() does.
 */
function carryFinAfterEnd(from: net.Socket, to: net.Socket): void {
  if (from.readableEnded) carryFin(to);
  else from.once('end', () => carryFin(to));
}

/**
 * Sends a FIN on `to`. When `to` has already read its peer's FIN and holds no unsent bytes,
 * close(2) sends the same FIN (after whatever the kernel still has queued; nothing unread can
 * arrive after the peer's FIN, so no RST) and saves the shutdown(2) and its callback: for a
 * request/response connection, one of the two FINs goes this way.
 */
function carryFin(to: net.Socket): void {
  if (to.readableEnded && to.writableLength === 0) to.destroy();
  else to.end();
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
