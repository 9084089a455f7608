/**
 * The listener on hostIP:15080 for the node's sidecars (protocol: lib/gateway-protocol.ts).
 * Reads one header line (bounded size, HEADER_TIMEOUT_MS), then hands the connection to the
 * feed hub (FEED) or carries a stream (CONNECT): to a pod on this node via the LocalDialer
 * (`OK local`), to a pod on another node via the tunnel manager (`OK direct|punched|relay`).
 * Every refusal is answered `ERR <code> <text>` and logged; nothing a client sends can crash
 * or stall the gateway.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { CatalogStore } from '../lib/catalog/store.ts';
import { canonicalIP } from '../lib/catalog/validate.ts';
import { describeError, EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import { formatReply, type PathKind, parseRequest, type Request, takeLine } from '../lib/gateway-protocol.ts';
import type { Logger } from '../lib/log.ts';
import type { FeedHub } from './feed.ts';
import { isEndpointOnNode } from './local-endpoint.ts';
import type { GatewayMetrics } from './metrics.ts';
import { type LocalDialer, splice, type TunnelManager } from './streams.ts';

export const HEADER_TIMEOUT_MS = 10_000;
export const MAX_CONNECTIONS = 20_000;

export interface SidecarServerOptions {
  host: string;
  port: number;
  nodeName: string;
  store: CatalogStore;
  feed: FeedHub;
  dialer: LocalDialer;
  tunnel: TunnelManager;
  log: Logger;
  metrics: GatewayMetrics;
  headerTimeoutMs?: number;
}

export async function startSidecarServer(opts: SidecarServerOptions): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => handle(socket, opts));
  server.maxConnections = MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => opts.log.error({ err }, 'sidecar listener error'));
  return server;
}

function handle(socket: net.Socket, opts: SidecarServerOptions): void {
  const peer = `${socket.remoteAddress}:${socket.remotePort}`;
  let buffered: Buffer = Buffer.alloc(0);
  // Finds sidecars that vanished without a FIN (pod deleted, node rebooted) on long streams.
  socket.setKeepAlive(true, 60_000);
  socket.setTimeout(opts.headerTimeoutMs ?? HEADER_TIMEOUT_MS, () =>
    refuse(ErrorCodes.BAD_REQUEST, 'no header in time'),
  );
  socket.on('error', () => {}); // a reset before the header is complete: nothing to do

  const refuse = (code: string, message: string) => {
    opts.metrics.errors.inc({ code });
    opts.log.info({ peer, code, reason: message }, 'request refused');
    socket.setTimeout(0);
    socket.removeListener('data', onData);
    socket.end(formatReply({ ok: false, code, message }));
    // Do not wait forever for the peer to read the reply.
    setTimeout(() => socket.destroy(), 2_000).unref();
  };

  const onData = (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    let taken: ReturnType<typeof takeLine>;
    let request: Request;
    try {
      taken = takeLine(buffered);
      if (!taken) return;
      request = parseRequest(taken.line);
    } catch (err) {
      return refuse(ErrorCodes.BAD_REQUEST, (err as Error).message);
    }
    socket.removeListener('data', onData);
    socket.setTimeout(0);
    if (request.kind === 'feed') {
      const tooMany = opts.feed.refusal(socket.remoteAddress ?? '');
      if (tooMany) return refuse(ErrorCodes.UNAVAILABLE, tooMany);
      opts.feed.attach(socket, peer);
      return;
    }
    socket.pause();
    connect(socket, request, taken.rest, peer, opts).catch((err: unknown) => {
      const code = err instanceof EdgemeshError ? err.code : ErrorCodes.INTERNAL;
      refuse(code, describeMessage(err));
    });
  };
  socket.on('data', onData);
}

const describeMessage = (err: unknown): string =>
  err instanceof EdgemeshError ? err.message : describeError(err);

async function connect(
  socket: net.Socket,
  req: { node: string; ip: string; port: number },
  early: Buffer,
  peer: string,
  opts: SidecarServerOptions,
): Promise<void> {
  const target = { ip: canonicalIP(req.ip) ?? req.ip, port: req.port };
  let stream: Duplex;
  let path: PathKind;
  if (req.node === opts.nodeName) {
    stream = await opts.dialer.dial(target);
    path = 'local';
  } else {
    // Ask the tunnel only for what the catalog says is there; the far end checks again.
    const catalog = opts.store.current;
    if (!catalog) throw new EdgemeshError(ErrorCodes.UNAVAILABLE, 'gateway has no catalog yet');
    if (!isEndpointOnNode(catalog, req.node, target.ip, target.port)) {
      throw new EdgemeshError(
        ErrorCodes.DIAL_REFUSED,
        `${target.ip}:${target.port} is not an endpoint of a pod on node ${req.node}`,
      );
    }
    ({ stream, path } = await opts.tunnel.openStream(req.node, target));
  }
  if (socket.destroyed) {
    stream.destroy();
    return;
  }
  opts.metrics.streams.inc({ path });
  opts.log.info({ peer, node: req.node, ip: target.ip, port: target.port, path }, 'stream opened');
  socket.write(formatReply({ ok: true, path }));
  if (early.length > 0) stream.write(early);
  const started = Date.now();
  await splice(socket, stream);
  opts.log.debug({ peer, ip: target.ip, port: target.port, path, ms: Date.now() - started }, 'stream closed');
}
