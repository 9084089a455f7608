/**
 * The relay path: a tunnel-server splices two raw TCP legs, one from each gateway, and the
 * gateways run their own TLS through it (the relay sees ciphertext only). One gateway asks
 * with `connect`; the server answers both with `relay` (a one-time token and the TLS role),
 * and each dials its leg with `EMT1 RELAY <token>`.
 */
import type { ToGateway } from '../../lib/tunnel/control.ts';
import type { MuxSession } from '../../lib/tunnel/mux.ts';
import type { ControlLink, Rendezvous } from './rendezvous.ts';
import type { Sessions } from './session.ts';
import { dialRelay } from './tcp.ts';

/** A replica that does not answer `connect` in 5 s is skipped for the next one. */
export const RELAY_REQUEST_TIMEOUT_MS = 5_000;

/** Asks `link` for a relay to `peer`; resolves once this end's leg is joined (joinRelay). */
export function requestRelay(rendezvous: Rendezvous, link: ControlLink, peer: string): Promise<unknown> {
  return rendezvous.request(link, { t: 'connect', peer }, RELAY_REQUEST_TIMEOUT_MS);
}

/** Handles a `relay` message: dial the leg, TLS, session. Both ends of a relay run this. */
export async function joinRelay(
  link: ControlLink,
  msg: Extract<ToGateway, { t: 'relay' }>,
  sessions: Sessions,
): Promise<{ session: MuxSession; via: string }> {
  const socket = await dialRelay({ ip: link.address.host, port: link.address.port }, msg.token);
  const session = await sessions.secure(socket, msg.peer, msg.role);
  return { session, via: link.serverName ?? link.label };
}
