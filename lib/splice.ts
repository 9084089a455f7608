/**
 * The mesh's one splice: joins two byte streams both ways. The sidecar joins a pod's
 * connection with its upstream (sidecar/proxy/splice.ts adds the idle timeout), the gateway a
 * local connection with a tunnel stream, the tunnel-server's relay two gateways' legs (with
 * byte counts and a per-node rate limit through `onChunk`).
 *
 * What every one of them needs, and gets here:
 * - backpressure: a full destination pauses its source until it drains;
 * - half-close: a side's FIN is carried to the other while the other direction keeps flowing;
 * - a reset (an error, or a close without a clean end) on either side destroys both;
 * - once one side is closed and the other has flushed everything sent to it, nothing more can
 *   flow either way: the other is destroyed too (a half-open peer cannot hold it);
 * - `onEnd` runs once, when both sides are closed or destroyed.
 *
 * Plain 'data' handlers rather than pipe(): pipe registers and later removes seven listeners
 * and an unpipe path per stream, which showed at thousands of short connections per second.
 */
import type { Duplex } from 'node:stream';

export interface SpliceOptions {
  /** Runs once when both sides are closed or destroyed. */
  onEnd?: () => void;
  /**
   * `b`'s bytes already flow into `a` by other means (the sidecar's dialer forwards the
   * upstream's first bytes itself): only `b`'s FIN is carried to `a`.
   */
  bSinked?: boolean;
  /**
   * Each chunk read from a side (`from`: 'a' or 'b'), e.g. to count bytes or charge a rate
   * limit; returns how long (ms) to pause that side's reading, 0 for not at all. A pause
   * never cuts the stream.
   */
  onChunk?: (from: 'a' | 'b', bytes: number) => number;
  /**
   * Send a FIN by closing the socket when it has already read its peer's FIN and has nothing
   * queued (close(2) sends the same FIN and saves the shutdown(2) and its callback). Only for
   * TCP sockets on both sides: a tunnel stream's destroy is a reset, not a FIN.
   */
  finByClose?: boolean;
}

export function splice(a: Duplex, b: Duplex, opts: SpliceOptions = {}): void {
  let done = 0;
  let aDone = false;
  let bDone = false;
  const end = (side: 'a' | 'b') => {
    if (side === 'a' ? aDone : bDone) return;
    if (side === 'a') aDone = true;
    else bDone = true;
    if (++done === 2) opts.onEnd?.();
  };
  const destroyBoth = () => {
    a.destroy();
    b.destroy();
    end('a');
    end('b');
  };
  a.on('error', destroyBoth);
  b.on('error', destroyBoth);
  const onClose = (side: 'a' | 'b', self: Duplex, other: Duplex) => (hadError?: boolean) => {
    end(side);
    // A reset takes the other down; so does a clean close once the other has flushed what it
    // was sent (it can neither send to this side nor be sent anything more).
    if (hadError === true || !self.readableEnded || other.writableFinished) {
      other.destroy();
      end(side === 'a' ? 'b' : 'a');
    }
  };
  a.once('close', onClose('a', a, b));
  b.once('close', onClose('b', b, a));
  forward(a, b, 'a', opts);
  if (opts.bSinked) carryFinAfterEnd(b, a, opts.finByClose === true);
  else forward(b, a, 'b', opts);
}

/** Resolves once both sides are closed or destroyed (splice's `onEnd`). */
export function spliceUntilEnd(a: Duplex, b: Duplex, opts: Omit<SpliceOptions, 'onEnd'> = {}): Promise<void> {
  return new Promise((resolve) => splice(a, b, { ...opts, onEnd: resolve }));
}

/**
 * Bytes from `from` written to `to`. Reading pauses while `to` is full (until 'drain') or
 * while `onChunk` asked for a pause; it resumes when neither holds.
 */
function forward(from: Duplex, to: Duplex, side: 'a' | 'b', opts: SpliceOptions): void {
  let draining = false;
  let limited = false;
  const resume = () => {
    if (!draining && !limited) from.resume();
  };
  const drained = () => {
    draining = false;
    resume();
  };
  const unlimit = () => {
    limited = false;
    resume();
  };
  const onChunk = opts.onChunk;
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk) && !draining) {
      draining = true;
      from.pause();
      to.once('drain', drained);
    }
    if (onChunk) {
      const wait = onChunk(side, chunk.length);
      if (wait > 0 && !limited) {
        limited = true;
        from.pause();
        setTimeout(unlimit, wait).unref();
      }
    }
  });
  carryFinAfterEnd(from, to, opts.finByClose === true);
  from.resume();
}

/**
 * Carries `from`'s FIN to `to` when `from` ends. A source that already ended (an upgraded HTTP
 * client that sent its FIN while the upstream was being dialled) has no 'end' left to emit:
 * its FIN goes now, as pipe() does.
 */
function carryFinAfterEnd(from: Duplex, to: Duplex, finByClose: boolean): void {
  if (from.readableEnded) carryFin(to, finByClose);
  else from.once('end', () => carryFin(to, finByClose));
}

function carryFin(to: Duplex, finByClose: boolean): void {
  if (finByClose && to.readableEnded && to.writableLength === 0) to.destroy();
  else to.end();
}
