import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Registry } from 'prom-client';
import type { CertificateValidity } from '../../lib/certs.ts';
import { describeError, EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Target } from '../../lib/tunnel/frame.ts';
import type { CertificateMetrics, CertificateRenewer } from '../../lib/tunnel/renewer.ts';
import type { Tunnel, TunnelReadiness } from '../streams.ts';
import type { EnrolOptions } from './enrol.ts';
import type { TunnelManager, TunnelManagerOptions } from './manager.ts';
import { PeerBook } from './peer-book.ts';
import { parseServers, usableServers } from './servers.ts';
import type { RemotePath, TunnelStatus } from './status.ts';

export { parseServers, placeholderServers, usableServers } from './servers.ts';

/**
 * The gateway's one call: enrol (or reuse the key and certificate in `stateDir`), then run
 * the tunnel. Enrolment is retried with backoff (2 s doubling to 15 s while no replica
 * answers, to 60 s after a refusal or a configuration error; ±20 % jitter), so a gateway that starts during a cloud outage keeps serving its node and joins
 * the mesh when it can. While running, the node certificate is renewed before it expires
 * (lib/tunnel/renewer.ts; the CA and token files are read anew for each attempt) and new
 * TLS sessions use the new one. With the gateway's tunnel factory:
 *   tunnel: (dialer) => startGatewayTunnel({ ..., dialTarget: (t) => dialer.dial(t) })
 */
export interface GatewayTunnelOptions {
  nodeName: string;
  stateDir: string;
  /** Mesh CA certificate file (PEM). */
  caFile: string;
  /** Proof for enrolment: a projected service-account token file (re-read each attempt). */
  tokenFile: string;
  /** Tunnel-server replicas, "host:port" each. */
  servers: string[];
  lanAddresses: string[];
  listenPort?: number;
  techniques?: TunnelManagerOptions['techniques'];
  /** Peers' LAN addresses from the catalog (Node InternalIPs): direct dials without the cloud. */
  peerAddresses?(node: string): string[];
  /** Far end: dial only endpoints of pods on this node (throw DIAL_REFUSED otherwise). */
  dialTarget(target: Target): Promise<Duplex>;
  /** Gateway-to-gateway messages (gateway/streams.ts PeerMessages). */
  messages?: TunnelManagerOptions['messages'];
  log: Logger;
  registry?: Registry;
}

/**
 * The tunnel's own modules, loaded when the tunnel starts rather than with the gateway: they
 * bring node-forge (certificates, ~40 files), node-datachannel (a native addon) and the tunnel's
 * metrics, ~0.1 s of CPU that a restarting gateway would otherwise spend before it serves its
 * persisted catalog (docs/scale.md, round 5). startGatewayTunnel returns before they load.
 */
const tunnelModules = async () => {
  try {
    const [enrol, manager, renewer] = await Promise.all([
      import('./enrol.ts'),
      import('./manager.ts'),
      import('../../lib/tunnel/renewer.ts'),
    ]);
    return { ...enrol, ...manager, ...renewer };
  } catch (err) {
    // A broken install (the native addon missing): this node's setup, reported by readiness.
    throw new EdgemeshError(ErrorCodes.CONFIG, `cannot load the tunnel's modules: ${describeError(err)}`);
  }
};

/** Socket errors that mean this node's setup is wrong (the tunnel port), not the network. */
const LOCAL_SETUP_CODES = new Set(['EADDRINUSE', 'EADDRNOTAVAIL', 'EACCES', 'EPERM', 'EROFS', 'ENOSPC']);

/**
 * Why the tunnel did not start, as readiness sees it: `config` (this node's setup: fix and
 * restart), `refused` (a tunnel-server said no: an operator must act), `unreachable` (none
 * answered: the cloud may be away; retried with backoff, and the gateway stays Ready). Pure.
 */
export function startFailureKind(err: unknown): 'config' | 'refused' | 'unreachable' {
  if (err instanceof EdgemeshError) {
    if (err.code === ErrorCodes.CONFIG) return 'config';
    if (err.code === ErrorCodes.TUNNEL_AUTH) return 'refused';
    return 'unreachable';
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code && LOCAL_SETUP_CODES.has(code) ? 'config' : 'unreachable';
}

/**
 * Starts the tunnel in the background and returns at once, so a gateway whose cloud is out
 * of reach still starts and serves its node. Until enrolment succeeds, streams to other
 * nodes fail fast with UNAVAILABLE (the caller's usual error path).
 */
export function startGatewayTunnel(opts: GatewayTunnelOptions): GatewayTunnel {
  return new GatewayTunnel(opts);
}

export class GatewayTunnel implements Tunnel {
  #manager: TunnelManager | undefined;
  #renewer: CertificateRenewer | undefined;
  #closed = false;
  #book: PeerBook | undefined;
  #wake: (() => void) | undefined;
  /** Until running: why the last start attempt failed (readiness reports it). */
  #failure: { kind: 'config' | 'refused' | 'unreachable'; message: string; since: number } | undefined;
  /** Resolves with the running manager once enrolled (never, if closed first). */
  readonly ready: Promise<TunnelManager>;

  constructor(opts: GatewayTunnelOptions) {
    this.ready = this.#run(opts);
    this.ready.catch(() => undefined);
  }

  async openStream(peerNode: string, target: Target): Promise<{ stream: Duplex; path: RemotePath }> {
    if (!this.#manager)
      throw new EdgemeshError(
        ErrorCodes.UNAVAILABLE,
        'tunnel not ready yet (enrolling with a tunnel-server)',
      );
    return this.#manager.openStream(peerNode, target);
  }

  /** To every peer with a session now; nothing before enrolment (peers are greeted on connecting). */
  broadcast(message: Record<string, unknown>): void {
    this.#manager?.broadcast(message);
  }

  status(): TunnelStatus | undefined {
    return this.#manager?.status();
  }

  /** The tunnel's part of /ready (streams.ts TunnelReadiness has the rules). */
  readiness(): TunnelReadiness {
    if (this.#manager) {
      const servers = this.#manager.status().servers;
      const up = servers.filter((s) => s.up).length;
      const detail =
        up > 0
          ? `tunnel: running, ${up} of ${servers.length} tunnel-servers connected`
          : `tunnel: running, no tunnel-server reachable now (of ${servers.length}): serving this node's pods, peers dialled from the peer book`;
      return { state: 'running', ready: true, detail, serversUp: up, servers: servers.length };
    }
    const f = this.#failure;
    if (!f)
      return { state: 'starting', ready: true, detail: 'tunnel: starting (enrolling with a tunnel-server)' };
    const since = new Date(f.since).toISOString();
    if (f.kind === 'unreachable')
      return {
        state: 'unreachable',
        ready: true,
        detail: `tunnel: no tunnel-server reachable since ${since}, retrying: serving this node's pods (${f.message})`,
      };
    return {
      state: f.kind,
      ready: false,
      detail: `tunnel cannot start (${f.kind === 'config' ? "this node's configuration" : 'refused by the tunnel-server'}, since ${since}): ${f.message}`,
    };
  }

  /** The node certificate in use (serial, validity), once enrolled. */
  certificate(): CertificateValidity | undefined {
    return this.#renewer?.validity;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#renewer?.close();
    this.#wake?.();
    await this.#manager?.close();
    await this.#book?.close();
  }

  async #run(opts: GatewayTunnelOptions): Promise<TunnelManager> {
    const { servers, ignored: placeholders } = usableServers(parseServers(opts.servers));
    if (placeholders.length > 0 && servers.length > 0)
      opts.log.warn(
        { ignored: placeholders },
        'tunnel-servers: ignoring entries that never resolve (the shipped placeholder?)',
      );
    let delay = 2000;
    const enrolOptions = async (): Promise<EnrolOptions> => ({
      nodeName: opts.nodeName,
      stateDir: opts.stateDir,
      caPem: await readCa(opts.caFile),
      servers,
      token: async () => (await readNamed(opts.tokenFile, 'enrolment token')).trim(),
      log: opts.log,
    });
    // Read before the first rendezvous: with the cloud away it is all we know of our peers.
    this.#book = await PeerBook.load(join(opts.stateDir, 'peers.json'), opts.log);
    let certMetrics: CertificateMetrics | undefined;
    while (!this.#closed) {
      try {
        const {
          certFileOf,
          certificateMetrics,
          CertificateRenewer,
          createTunnelManager,
          loadOrEnrol,
          renewIdentity,
        } = await tunnelModules();
        // Registered once the tunnel's modules are loaded.
        certMetrics ??= certificateMetrics('edgemesh_gateway', opts.registry);
        if (servers.length === 0)
          throw new EdgemeshError(
            ErrorCodes.CONFIG,
            `the tunnel-servers setting holds ${placeholders.join(', ')}, a name that never resolves (the shipped placeholder?): set the tunnel-server's public HOST:PORT in the edgemesh-config ConfigMap`,
          );
        const identity = await loadOrEnrol(await enrolOptions());
        if (this.#closed) break;
        this.#manager = await createTunnelManager({
          nodeName: opts.nodeName,
          identity,
          tunnelServers: servers,
          lanAddresses: opts.lanAddresses,
          listenPort: opts.listenPort,
          techniques: opts.techniques,
          peerAddresses: opts.peerAddresses,
          dialTarget: opts.dialTarget,
          messages: opts.messages,
          peerBook: this.#book,
          log: opts.log,
          registry: opts.registry,
        });
        const manager = this.#manager;
        this.#renewer = new CertificateRenewer({
          what: `node certificate ${certFileOf(opts.stateDir)}`,
          current: identity,
          renew: async () => renewIdentity(await enrolOptions()),
          onRenewed: (id) => manager.setIdentity(id),
          metrics: certMetrics,
          log: opts.log,
        });
        this.#renewer.start();
        this.#failure = undefined;
        if (this.#closed) await this.close();
        return this.#manager;
      } catch (err) {
        const kind = startFailureKind(err);
        const message = describeError(err);
        if (this.#failure?.kind !== kind || this.#failure.message !== message)
          this.#failure = { kind, message, since: Date.now() };
        // Configuration and refusals are retried too (the CA and token files are read anew
        // each time: a fixed ConfigMap reaches the mounted volume), not Ready until then.
        const log = kind === 'unreachable' ? opts.log.warn.bind(opts.log) : opts.log.error.bind(opts.log);
        log(
          { err: message, cause: kind, retryInMs: delay },
          kind === 'unreachable'
            ? 'tunnel not started yet: no tunnel-server reachable'
            : 'tunnel cannot start',
        );
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
          setTimeout(resolve, delay * (0.8 + 0.4 * Math.random())).unref();
        });
        // Unreachable costs the tunnel-server nothing (a refused or unanswered connect): retried
        // within 15 s, since right after an install the gateways start tens of seconds before
        // the tunnel-server and a 60 s cap kept the last of them off the mesh for ~55 s (the
        // mesh e2e measured it). A refusal asked the API server (TokenReview): 60 s.
        delay = Math.min(kind === 'unreachable' ? 15_000 : 60_000, delay * 2);
      }
    }
    throw new EdgemeshError(ErrorCodes.UNAVAILABLE, 'tunnel closed');
  }
}

/** The mesh CA certificate: readable and a PEM certificate, else a CONFIG error naming the file. */
async function readCa(file: string): Promise<string> {
  const pem = await readNamed(file, 'mesh CA certificate');
  try {
    new X509Certificate(pem);
  } catch (err) {
    throw new EdgemeshError(
      ErrorCodes.CONFIG,
      `the mesh CA certificate ${file} is not a PEM certificate: ${(err as Error).message}`,
    );
  }
  return pem;
}

/** A file's text; the error names what the file is, the file and the cause. */
async function readNamed(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new EdgemeshError(ErrorCodes.CONFIG, `cannot read the ${what} ${file}: ${(err as Error).message}`);
  }
}
