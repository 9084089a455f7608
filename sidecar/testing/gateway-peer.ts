/**
 * A minimal peer that speaks the sidecar ↔ gateway protocol (lib/gateway-protocol.ts) for
 * tests: CONNECT to a node in `nodes` dials the target from here and answers `OK <path>`;
 * any other node gets `ERR EDGEMESH_ERR_DIAL_REFUSED`. Every request is reported to
 * `onRequest` (as a script: one JSON line on stdout) so a test can see the hop happened.
 * With `feedFile` it also serves `FEED`: the catalog in that file as the snapshot, then
 * keepalives, as the node's gateway feeds a pod's sidecar; and `LOOKUP` from the same catalog
 * with the gateway's own hub (gateway/lookup.ts), as a pod's on-demand sidecar asks.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { LookupHub } from '../../gateway/lookup.ts';
import { encodeFeedLine, KEEPALIVE_INTERVAL_MS } from '../../lib/catalog/feed.ts';
import { CatalogStore } from '../../lib/catalog/store.ts';
import type { Catalog } from '../../lib/catalog/types.ts';
import { formatReply, parseRequest, type Request, takeLine } from '../../lib/gateway-protocol.ts';

export interface GatewayPeerOptions {
  host: string;
  port: number;
  nodes: string[];
  onRequest?: (req: Request | { error: string }) => void;
  /** Reply with this raw text instead (to test a misbehaving gateway). */
  rawReply?: string;
  /** A catalog JSON file to serve to `FEED` requests. */
  feedFile?: string;
}

function serveFeed(socket: net.Socket, feedFile: string): void {
  const catalog = JSON.parse(readFileSync(feedFile, 'utf8')) as Catalog;
  socket.write(encodeFeedLine({ type: 'snapshot', catalog }));
  const keepalive = setInterval(
    () => socket.write(encodeFeedLine({ type: 'keepalive', revision: catalog.revision })),
    KEEPALIVE_INTERVAL_MS,
  );
  socket.on('close', () => clearInterval(keepalive));
  socket.resume(); // the sidecar sends nothing more; read to see it close
}

export function startGatewayPeer(opts: GatewayPeerOptions): Promise<net.Server> {
  let lookup: LookupHub | undefined;
  const lookupHub = (feedFile: string) => {
    if (!lookup) {
      const store = new CatalogStore();
      store.apply({ type: 'snapshot', catalog: JSON.parse(readFileSync(feedFile, 'utf8')) as Catalog });
      lookup = new LookupHub(store);
    }
    return lookup;
  };
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    let buffer: Buffer = Buffer.alloc(0);
    socket.on('error', () => socket.destroy());
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      let taken: ReturnType<typeof takeLine>;
      let req: Request;
      try {
        taken = takeLine(buffer);
        if (!taken) return;
        req = parseRequest(taken.line);
      } catch (err) {
        opts.onRequest?.({ error: (err as Error).message });
        socket.end(
          formatReply({ ok: false, code: 'EDGEMESH_ERR_BAD_REQUEST', message: (err as Error).message }),
        );
        return;
      }
      socket.removeListener('data', onData);
      socket.pause();
      opts.onRequest?.(req);
      if (opts.rawReply !== undefined) {
        socket.end(opts.rawReply);
        return;
      }
      if (req.kind === 'feed' && opts.feedFile) {
        serveFeed(socket, opts.feedFile);
        return;
      }
      if (req.kind === 'lookup' && opts.feedFile) {
        lookupHub(opts.feedFile).attach(socket, 'lab', taken.rest);
        return;
      }
      if (req.kind !== 'connect' || !opts.nodes.includes(req.node)) {
        socket.end(
          formatReply({ ok: false, code: 'EDGEMESH_ERR_DIAL_REFUSED', message: 'node not reachable' }),
        );
        return;
      }
      const rest = taken.rest;
      const upstream = net.connect({ host: req.ip, port: req.port, allowHalfOpen: true });
      let connected = false;
      upstream.once('error', () => {
        if (connected) socket.destroy();
        else
          socket.end(
            formatReply({ ok: false, code: 'EDGEMESH_ERR_DIAL_REFUSED', message: 'connect refused' }),
          );
      });
      upstream.once('connect', () => {
        connected = true;
        socket.write(formatReply({ ok: true, path: 'relay' }));
        if (rest.length) upstream.write(rest);
        socket.pipe(upstream);
        upstream.pipe(socket);
        socket.resume();
      });
    };
    socket.on('data', onData);
  });
  return new Promise((resolve) => server.listen(opts.port, opts.host, () => resolve(server)));
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      nodes: { type: 'string' },
      feed: { type: 'string' },
      /** A JSON string: the raw text to answer every request with (a misbehaving gateway). */
      'raw-reply': { type: 'string' },
    },
  });
  await startGatewayPeer({
    host: values.host ?? '127.0.0.1',
    port: Number(values.port ?? 15080),
    nodes: (values.nodes ?? '').split(',').filter(Boolean),
    feedFile: values.feed,
    rawReply: values['raw-reply'] === undefined ? undefined : (JSON.parse(values['raw-reply']) as string),
    onRequest: (req) => process.stdout.write(`${JSON.stringify(req)}\n`),
  });
  process.stdout.write('ready\n');
}
