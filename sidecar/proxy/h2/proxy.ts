/**
 * The h2c path's entry: which of the two implementations serves h2c clients.
 *
 *   frames  relay.ts: HTTP/2 frames relayed by our own framing and HPACK (the default)
 *   node    node-streams.ts: an in-process node:http2 server and client sessions
 *
 * Chosen by `h2Path`, else the sidecar container's env EDGEMESH_H2_PATH (`node` or `frames`),
 * read once per proxy, as EDGEMESH_HTTP1_PATH is for HTTP/1.1.
 */
import type net from 'node:net';
import type { ConnContext } from '../http-proxy.ts';
import type { RouteTable } from '../route.ts';
import { type H2ProxyOptions, NodeStreamsProxy } from './node-streams.ts';
import { FrameRelay } from './relay.ts';

export type { H2ProxyOptions };
export type H2Path = 'frames' | 'node';

/** EDGEMESH_H2_PATH's value as a path; anything else is refused by name. */
export function h2PathFrom(value: string | undefined): H2Path {
  if (value === undefined || value === '' || value === 'frames') return 'frames';
  if (value === 'node') return 'node';
  throw new Error(`EDGEMESH_H2_PATH=${JSON.stringify(value)}: expected "frames" or "node"`);
}

export class H2Proxy {
  readonly #impl: FrameRelay | NodeStreamsProxy;
  readonly path: H2Path;

  constructor(opts: H2ProxyOptions & { h2Path?: H2Path }) {
    this.path = opts.h2Path ?? h2PathFrom(process.env.EDGEMESH_H2_PATH);
    this.#impl = this.path === 'frames' ? new FrameRelay(opts) : new NodeStreamsProxy(opts);
  }

  /** Takes over a client connection whose first bytes (`buffered`) were the h2c preface. */
  handle(client: net.Socket, ctx: ConnContext, buffered: Buffer): void {
    this.#impl.handle(client, ctx, buffered);
  }

  /** Stop taking new streams: every client connection gets GOAWAY and closes after its streams. */
  drain(): void {
    this.#impl.drain();
  }

  /** Upstream connections of endpoints no longer in the catalog are closed. */
  prune(table: RouteTable): void {
    this.#impl.prune(table);
  }

  close(): void {
    this.#impl.close();
  }
}
