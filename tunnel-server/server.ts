import type { Registry } from 'prom-client';
import type { Logger } from '../lib/log.ts';
import type { TlsIdentity } from '../lib/tunnel/identity.ts';
import { acceptControl } from './control.ts';
import type { EnrolmentVerifier } from './enrol.ts';
import { acceptEnrolment } from './enrol-session.ts';
import { type ConnectionLimits, DEFAULT_CONNECTION_LIMITS, type RelayLimits } from './limits.ts';
import { startListener } from './listener.ts';
import { busiest, limitMetrics, serverMetrics } from './metrics.ts';
import { NoisyLog } from './noisy-log.ts';
import { readRawLine } from './raw-line.ts';
import { GatewayRegistry } from './registry.ts';
import { Relay } from './relay.ts';
import { Rendezvous } from './rendezvous.ts';
import { startStun } from './stun-socket.ts';

export { type ConnectionLimits, DEFAULT_CONNECTION_LIMITS, type RelayLimits } from './limits.ts';
export { NOISY_LOG_INTERVAL_MS } from './noisy-log.ts';

/**
 * The tunnel-server: one TCP port carries
 *   - TLS control sessions from enrolled gateways (certificate = node identity): the registry
 *     and rendezvous (observed addresses, punch coordination, ICE signalling);
 *   - TLS enrolment from gateways without a certificate yet (CSR + proof → certificate);
 *   - raw relay legs and punch probes ("EMT1 ..." line, single-use token from a control
 *     session). Relay legs are spliced byte for byte: what flows is the gateways' own TLS.
 * and the same UDP port answers STUN binding requests (server-reflexive addresses for ICE).
 *
 * This file only composes the parts, each with its state and timeouts documented beside it:
 *
 *   listener.ts      the TCP port: connection caps (admission.ts), first byte 10 s, TLS vs raw,
 *                    TLS handshake 10 s, client certificate → control or enrolment
 *   control.ts       an enrolled gateway's session (30 s without a frame closes it): typed
 *                    messages, register → registry.ts, requests → rendezvous.ts
 *   registry.ts      registered gateways (one per node, as long as its session), site peers
 *   rendezvous.ts    signal / connect / punch between two registered gateways; pending.ts
 *                    caps what each node has waiting
 *   relay.ts         relay-pairs.ts (legs by pair id, 10 s for both), relay-splice.ts
 *                    (backpressure, half-close, rate-limit.ts per node), the per-node cap
 *   punch.ts         probe tokens → observed mappings → punch-go, 5 s for both probes
 *   raw-line.ts      a raw connection's "EMT1 RELAY|PROBE <token>" line, 5 s
 *   enrol-session.ts a certificate-less session: one enrol message, 30 s from the handshake
 *   stun-socket.ts   the UDP port (stun.ts answers)
 *
 * State, by owner (all in memory, none survives a restart: gateways re-register at another
 * replica or at this one when it is back, and retry what was pending):
 *
 *   owner            data                              lives                      bounded by
 *   admission.ts     open connections, per source IP   accept → close             --max-connections(-per-ip)
 *   registry.ts      node → registration               register → session close   enrolled nodes (certificates)
 *   pending.ts       node → requests pending           request → paired/timeout   64 per node
 *   relay-pairs.ts   pair id → two legs; token → leg   connect → spliced or 10 s  pending cap
 *   punch.ts         probe token → punch               punch → both probes or 5 s pending cap
 *   relay-splice.ts  node → relayed sessions now       splice → either leg ends   nodes; --relay-max-sessions each
 *   rate-limit.ts    node → token bucket               first relayed byte → exit  enrolled nodes
 *   noisy-log.ts     warning kind → log gate           process                    kinds in the code
 *
 * Everything here is reachable from the internet without a certificate, so every resource an
 * unauthenticated peer can hold is bounded: connections (total and per source IP), the bytes
 * queued towards each peer (a peer that does not read is cut), and the time before enrolling.
 */
export interface TunnelServerOptions {
  name: string;
  host: string;
  port: number;
  /** The mesh CA certificate, handed to enrolled gateways. */
  caPem: string;
  identity: TlsIdentity;
  /**
   * Signs a verified node's CSR: with a local mesh CA key (`--signer=local`), or through the
   * Kubernetes CSR API and the in-cluster edgemesh signer (`--signer=kubernetes`, no key here).
   */
  signNode(csrPem: string, node: string): Promise<string>;
  verifier?: EnrolmentVerifier;
  limits: RelayLimits;
  connections?: ConnectionLimits;
  log: Logger;
  registry: Registry;
}

export interface TunnelServer {
  port: number;
  /** Names of the gateways registered now. */
  gateways(): string[];
  /** A renewed serving certificate: new handshakes use it, established sessions keep theirs. */
  setIdentity(identity: TlsIdentity): void;
  close(): Promise<void>;
}

export async function startTunnelServer(opts: TunnelServerOptions): Promise<TunnelServer> {
  const { log } = opts;
  const connections = opts.connections ?? DEFAULT_CONNECTION_LIMITS;
  const metrics = serverMetrics(opts.registry);
  const noisy = new NoisyLog(log);
  const registry = new GatewayRegistry();
  const relay = new Relay({ limits: opts.limits, metrics, log });
  const rendezvous = new Rendezvous({ name: opts.name, registry, relay, metrics });
  limitMetrics(opts.registry, { connections, relays: opts.limits }, () => busiest(relay.activeByNode));

  const badToken = (socket: { destroy(): void }) => {
    metrics.refused.inc({ reason: 'bad-token' });
    socket.destroy();
  };
  const listener = await startListener({
    host: opts.host,
    port: opts.port,
    identity: opts.identity,
    connections,
    onControl: (node, socket) =>
      acceptControl(node, socket, {
        name: opts.name,
        registry,
        onRequest: (n, msg) => rendezvous.request(n, msg),
        metrics,
        log,
      }),
    onEnrol: (socket) =>
      acceptEnrolment(socket, {
        verifier: opts.verifier,
        signNode: opts.signNode,
        caPem: opts.caPem,
        metrics,
        noisy,
        log,
      }),
    onRaw: (socket) =>
      readRawLine(
        socket,
        (kind, token) => {
          const ok = kind === 'PROBE' ? rendezvous.probe(socket, token) : relay.arrive(token, socket);
          if (!ok) badToken(socket);
        },
        () => {
          metrics.refused.inc({ reason: 'bad-raw' });
        },
      ),
    metrics,
    noisy,
    log,
  });
  const stun = await startStun(opts.host, listener.port, log);
  log.info(
    { listen: `${opts.host}:${listener.port}`, name: opts.name, limits: opts.limits, connections },
    'tunnel-server ready',
  );

  return {
    port: listener.port,
    gateways: () => registry.names(),
    setIdentity: (identity) => listener.setIdentity(identity),
    close: async () => {
      for (const link of registry.links()) link.goAway('server shutting down');
      stun.close();
      await listener.close();
    },
  };
}
