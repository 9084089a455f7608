import type net from 'node:net';

/**
 * Joins two sockets both ways. `pipe` gives backpressure (a slow reader pauses the fast
 * writer) and carries a FIN across (source 'end' → destination end()), while both sockets
 * are half-open capable so the other direction keeps flowing after one side is done. An
 * error or reset on either side destroys both. `idleMs` without a byte either way closes
 * both (the client socket's timer sees traffic in both directions, since all of it passes
 * through that socket). `onClose` runs once when both are closed.
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
  client.once('close', (hadError) => {
    // The client vanished while upstream still had data to send: nobody would read it.
    if (hadError || !client.readableEnded) upstream.destroy();
    closed();
  });
  upstream.once('close', (hadError) => {
    if (hadError || !upstream.readableEnded) client.destroy();
    closed();
  });
  if (idleMs > 0) {
    client.setTimeout(idleMs, destroyBoth);
  }
  client.pipe(upstream);
  client.resume();
  if (upstreamSinked) {
    upstream.once('end', () => client.end());
  } else {
    upstream.pipe(client);
    upstream.resume();
  }
}
