import { readFile } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import type { Registry } from 'prom-client';
import { configError, describeError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Target } from '../../lib/tunnel/frame.ts';
import { loadOrEnrol } from './enrol.ts';
import { createTunnelManager, type TunnelManager } from './manager.ts';
import type { ServerAddress } from './server-link.ts';

/**
 * The gateway's one call: enrol (or reuse the key and certificate in `stateDir`), then run
 * the tunnel. Enrolment is retried with backoff (2 s doubling to 60 s) while no replica
 * answers, so a gateway that starts during a cloud outage keeps serving its node and joins
 * the mesh when it can; the promise resolves once the tunnel runs.
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
  /** Far end: dial only endpoints of pods on this node (throw DIAL_REFUSED otherwise). */
  dialTarget(target: Target): Promise<Duplex>;
  log: Logger;
  registry?: Registry;
}

/** Parses "host:port" / "[v6]:port" entries; errors name the flag. */
export function parseServers(list: string[], flag = '--tunnel-servers'): ServerAddress[] {
  return list.map((entry) => {
    const m = /^\[?([^\]\s]+?)\]?:(\d{1,5})$/.exec(entry);
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65535)
      throw configError(`${flag}: ${JSON.stringify(entry)} is not HOST:PORT`);
    return { host: m[1], port };
  });
}

export async function startGatewayTunnel(opts: GatewayTunnelOptions): Promise<TunnelManager> {
  const servers = parseServers(opts.servers);
  const caPem = await readFile(opts.caFile, 'utf8').catch((err: Error) => {
    throw configError(`mesh CA ${opts.caFile}: ${err.message}`);
  });
  let delay = 2000;
  for (;;) {
    try {
      const identity = await loadOrEnrol({
        nodeName: opts.nodeName,
        stateDir: opts.stateDir,
        caPem,
        servers,
        token: async () => (await readFile(opts.tokenFile, 'utf8')).trim(),
        log: opts.log,
      });
      return await createTunnelManager({
        nodeName: opts.nodeName,
        identity,
        tunnelServers: servers,
        lanAddresses: opts.lanAddresses,
        listenPort: opts.listenPort,
        dialTarget: opts.dialTarget,
        log: opts.log,
        registry: opts.registry,
      });
    } catch (err) {
      opts.log.warn({ err: describeError(err), retryInMs: delay }, 'tunnel not started yet');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(60_000, delay * 2);
    }
  }
}
