/**
 * The listener on hostIP:15080 for the node's sidecars (protocol: lib/gateway-protocol.ts).
 * Admits only this node's pods and the node itself (admission.ts); reads one header line
 * (bounded size, HEADER_TIMEOUT_MS from accept, MAX_HEADER_PENDING_PER_SOURCE per source),
 * then hands the connection to the feed hub (FEED), the lookup hub (LOOKUP, lookup.ts) or
 * carries a stream (CONNECT): to a pod
 * on this node via the LocalDialer (`OK local`), to a pod on another node via the tunnel
 * manager (`OK direct|punched|relay`). DGRAM is the same with a UDP port and a datagram
 * stream (length-framed datagrams both ways, lib/tunnel/frame.ts): spliced unchanged to the
 * tunnel's datagram stream or, same node, to the LocalDialer's UDP flow (udp-flow.ts).
 * Every refusal is answered `ERR <code> <text>` and
 * logged (refused sources rate-limited); nothing a client sends can crash or stall the gateway.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { CatalogStore } from '../lib/catalog/store.ts';
import { canonicalIP } from '../lib/catalog/validate.ts';
import { describeError, EdgemeshError, ErrorCodes } from '../lib/errors.ts';
import { formatReply, type PathKind, parseRequest, type Request, takeLine } from '../lib/gateway-protocol.ts';
import type { Logger } from '../lib/log.ts';
import { LogGate } from '../lib/log-gate.ts';
import { spliceUntilEnd } from '../lib/splice.ts';
import { type Admission, type RefusalReason, sourceIP } from './admission.ts';
import type { FeedHub } from './feed.ts';
import { isEndpointOnNode } from './local-endpoint.ts';
import type { LookupHub } from './lookup.ts';
import type { GatewayMetrics } from './metrics.ts';
import type { PodMoves } from './pod-moves.ts';
import type { LocalDialer, Tunnel } from './streams.ts';

/** Absolute, from accept: a header trickled in a byte at a time does not extend it. */
export const HEADER_TIMEOUT_MS = 10_000;
export const MAX_CONNECTIONS = 20_000;
/**
 * Connections from one source still in the header phase (held for admission or not yet
 * sent their header). A sidecar sends its header with the connection, so a pod has few at
 * any instant; one source held 14,250 before (issue 16 item 6).
 */
export const MAX_HEADER_PENDING_PER_SOURCE = 64;
/** At most one log line per this for refused sources (anyone on the LAN can cause them). */
export const REFUSAL_LOG_INTERVAL_MS = 10_000;

export interface SidecarServerOptions {
  host: string;
  port: number;
  nodeName: string;
  store: CatalogStore;
  feed: FeedHub;
  /** The on-demand catalog (LOOKUP); absent: LOOKUP is refused. */
  lookup?: LookupHub;
  dialer: LocalDialer;
  tunnel: Tunnel;
  /** Who may use the port (admission.ts). */
  admission: Admission;
  /** Takes HELLOs (a pod's new IP while the API is away); absent: HELLO only confirms. */
  podMoves?: Pick<PodMoves, 'claim'>;
  log: Logger;
  metrics: GatewayMetrics;
  headerTimeoutMs?: number;
  maxHeaderPendingPerSource?: number;
}

interface ListenerState {
  /** Source IP → connections in the header phase. */
  pending: Map<string, number>;
  refusalLog: LogGate;
}

export async function startSidecarServer(opts: SidecarServerOptions): Promise<net.Server> {
  const state: ListenerState = { pending: new Map(), refusalLog: new LogGate(REFUSAL_LOG_INTERVAL_MS) };
  const server = net.createServer({ allowHalfOpen: true }, (socket) => handle(socket, opts, state));
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

type Header = { request: Request; rest: Buffer } | { error: string };

function handle(socket: net.Socket, opts: SidecarServerOptions, state: ListenerState): void {
  const peer = `${socket.remoteAddress}:${socket.remotePort}`;
  const source = sourceIP(socket.remoteAddress) ?? String(socket.remoteAddress);
  socket.on('error', () => {}); // a reset before the header is complete: nothing to do

  let buffered: Buffer = Buffer.alloc(0);
  let header: Header | undefined;
  let admitted = false;
  let inHeaderPhase = true;
  let deadline: NodeJS.Timeout | undefined;

  const leaveHeaderPhase = () => {
    if (!inHeaderPhase) return;
    inHeaderPhase = false;
    clearTimeout(deadline);
    const left = (state.pending.get(source) ?? 1) - 1;
    if (left > 0) state.pending.set(source, left);
    else state.pending.delete(source);
  };

  const answer = (code: string, message: string) => {
    leaveHeaderPhase();
    socket.removeListener('data', onData);
    socket.end(formatReply({ ok: false, code, message }));
    // Do not wait forever for the peer to read the reply.
    setTimeout(() => socket.destroy(), 2_000).unref();
  };
  // A request from an admitted source that cannot be served: logged each time.
  const refuse = (code: string, message: string) => {
    opts.metrics.errors.inc({ code });
    opts.log.info({ peer, code, reason: message }, 'request refused');
    answer(code, message);
  };
  // A source that may not use the port (or floods it): counted each, logged rate-limited.
  const deny = (reason: RefusalReason, code: string, message: string) => {
    opts.metrics.refused.inc({ reason });
    const gate = state.refusalLog.pass();
    if (gate.log)
      opts.log.warn({ source, reason, message, suppressed: gate.suppressed }, 'connection refused');
    answer(code, message);
  };

  // A declaration (hoisted): answer() removes it, and may run before this point is reached.
  function onData(chunk: Buffer): void {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    try {
      const taken = takeLine(buffered);
      if (!taken) return;
      header = { request: parseRequest(taken.line, { datagram: true }), rest: taken.rest };
    } catch (err) {
      header = { error: (err as Error).message };
    }
    // Nothing more is read until the request is served (CONNECT: the stream takes the rest).
    socket.removeListener('data', onData);
    socket.pause();
    buffered = Buffer.alloc(0);
    // A HELLO from a source not admitted yet may be a pod that moved while the API was away:
    // a claim that holds puts it in the catalog, which admits the held connection.
    if (!admitted && 'request' in header && header.request.kind === 'hello' && opts.podMoves) {
      const hello = header.request;
      opts.podMoves.claim(socket.remoteAddress, socket.localAddress, hello).then(
        (refusal) => {
          if (refusal)
            opts.log.info({ peer, pod: `${hello.namespace}/${hello.name}`, refusal }, 'HELLO not taken');
        },
        (err: unknown) => opts.log.warn({ peer, err: describeError(err) }, 'HELLO failed'),
      );
    }
    serve();
  }

  const pending = state.pending.get(source) ?? 0;
  if (pending >= (opts.maxHeaderPendingPerSource ?? MAX_HEADER_PENDING_PER_SOURCE)) {
    inHeaderPhase = false; // never counted
    deny('header-limit', ErrorCodes.UNAVAILABLE, `too many connections from ${source} without a header`);
    return;
  }
  state.pending.set(source, pending + 1);
  socket.once('close', leaveHeaderPhase);
  deadline = setTimeout(
    () => refuse(ErrorCodes.BAD_REQUEST, 'no header in time'),
    opts.headerTimeoutMs ?? HEADER_TIMEOUT_MS,
  );
  deadline.unref();
  // Finds sidecars that vanished without a FIN (pod deleted, node rebooted) on long streams.
  socket.setKeepAlive(true, 60_000);

  // Serves the request once both the header and the admission are in, admission first: a
  // source that may not use the port learns nothing from how its header would be answered.
  const serve = () => {
    if (!admitted || !header || !inHeaderPhase) return;
    if ('error' in header) return refuse(ErrorCodes.BAD_REQUEST, header.error);
    leaveHeaderPhase();
    const { request, rest } = header;
    if (request.kind === 'feed') {
      const tooMany = opts.feed.refusal(socket.remoteAddress ?? '');
      if (tooMany) return refuse(ErrorCodes.UNAVAILABLE, tooMany);
      socket.resume();
      opts.feed.attach(socket, peer);
      return;
    }
    if (request.kind === 'hello') {
      const pod = opts.store.current?.pods[source];
      if (pod?.nodeName !== opts.nodeName || pod.namespace !== request.namespace || pod.name !== request.name)
        return refuse(
          ErrorCodes.DIAL_REFUSED,
          `source ${source} is not pod ${request.namespace}/${request.name} here`,
        );
      socket.end(formatReply({ ok: true, path: 'local' }));
      return;
    }
    if (request.kind === 'lookup') {
      if (!opts.lookup) return refuse(ErrorCodes.BAD_REQUEST, 'this gateway does not serve LOOKUP');
      const tooMany = opts.lookup.refusal(socket.remoteAddress ?? '');
      if (tooMany) return refuse(ErrorCodes.UNAVAILABLE, tooMany);
      opts.lookup.attach(socket, peer, rest);
      return;
    }
    connect(socket, request, rest, peer, opts).catch((err: unknown) => {
      const code = err instanceof EdgemeshError ? err.code : ErrorCodes.INTERNAL;
      refuse(code, describeMessage(err));
    });
  };

  const { decision, cancel } = opts.admission.decide(socket.remoteAddress, socket.localAddress);
  socket.once('close', cancel);
  decision.then((d) => {
    if (!inHeaderPhase || socket.destroyed) return;
    if (d.verdict === 'refuse') return deny(d.reason, ErrorCodes.DIAL_REFUSED, d.message);
    admitted = true;
    serve();
  });

  socket.on('data', onData);
}

const describeMessage = (err: unknown): string =>
  err instanceof EdgemeshError ? err.message : describeError(err);

async function connect(
  socket: net.Socket,
  req: { kind: 'connect' | 'datagram'; node: string; ip: string; port: number },
  early: Buffer,
  peer: string,
  opts: SidecarServerOptions,
): Promise<void> {
  // DGRAM: a UDP port, carried as a datagram stream (the far end checks UDP ports only).
  const udp = req.kind === 'datagram';
  const target = {
    ip: canonicalIP(req.ip) ?? req.ip,
    port: req.port,
    ...(udp ? { transport: 'udp' as const } : {}),
  };
  let stream: Duplex;
  let path: PathKind;
  if (req.node === opts.nodeName) {
    stream = await opts.dialer.dial(target);
    path = 'local';
  } else {
    // Ask the tunnel only for what the catalog says is there; the far end checks again.
    const catalog = opts.store.current;
    if (!catalog) throw new EdgemeshError(ErrorCodes.UNAVAILABLE, 'gateway has no catalog yet');
    const lookup = opts.lookup;
    const at = lookup && ((ip: string) => lookup.servicesAt(ip));
    if (!isEndpointOnNode(catalog, req.node, target.ip, target.port, udp ? 'UDP' : 'TCP', at)) {
      throw new EdgemeshError(
        ErrorCodes.DIAL_REFUSED,
        `${target.ip}:${target.port}${udp ? '/udp' : ''} is not an endpoint of a pod on node ${req.node}`,
      );
    }
    ({ stream, path } = await opts.tunnel.openStream(req.node, target));
  }
  if (socket.destroyed) {
    stream.destroy();
    return;
  }
  opts.metrics.streams.inc({ path });
  opts.log.info({ peer, node: req.node, ip: target.ip, port: target.port, udp, path }, 'stream opened');
  socket.write(formatReply({ ok: true, path }));
  if (early.length > 0) stream.write(early);
  const started = Date.now();
  await spliceUntilEnd(socket, stream);
  opts.log.debug({ peer, ip: target.ip, port: target.port, path, ms: Date.now() - started }, 'stream closed');
}
