/**
 * The sidecar ↔ gateway protocol on hostIP:15080 (TCP, plain: it never leaves the node).
 * A connection starts with one ASCII header line from the sidecar, at most
 * MAX_HEADER_BYTES including the "\n":
 *
 *   EDGEMESH/1 FEED <revision>\n                 catalog feed: the gateway answers with
 *                                                newline-delimited JSON CatalogUpdate lines
 *                                                (a snapshot first, then increments)
 *                                                and a {"type":"keepalive","revision":N}
 *                                                line every 15 s (lib/catalog/feed.ts;
 *                                                format in docs/catalog.md)
 *   EDGEMESH/1 CONNECT <node> <ip> <port>\n      a stream to <ip>:<port> on node <node>
 *   EDGEMESH/1 DGRAM <node> <ip> <port>\n        a UDP flow to <ip>:<port> on node <node>: after
 *                                                OK, datagrams both ways as on a tunnel datagram
 *                                                stream (u16 length + payload each,
 *                                                lib/tunnel/frame.ts encodeDatagram), so the
 *                                                gateway splices the connection to the stream
 *                                                (or to a local UdpFlow) without re-framing.
 *                                                Parsed only where the server says it serves it
 *                                                (parseRequest's `datagram`): a gateway that
 *                                                does not answers ERR, never a TCP stream.
 *   EDGEMESH/1 HELLO <namespace> <name> <uid>\n  the pod announces itself from its IP
 *                                                (gateway/pod-moves.ts); answered `OK local`
 *                                                once the gateway holds that IP as that pod
 *   EDGEMESH/1 LOOKUP\n                          the on-demand catalog: query lines from the
 *                                                sidecar, answers and pushes for what it
 *                                                subscribed as JSON lines from the gateway
 *                                                (lib/catalog/lookup-protocol.ts; docs/catalog.md)
 *
 * To CONNECT the gateway answers one line, then (on OK) the connection is a raw byte pipe
 * to the target, half-close carried both ways:
 *
 *   OK <path>\n          path: local | direct | punched | relay
 *   ERR <code> <text>\n  code: an EDGEMESH_ERR_* code; the gateway closes after it
 */
import { isIP } from 'node:net';
import { isDnsLabel, isDnsSubdomain, isUid } from './names.ts';

export const PROTOCOL_TAG = 'EDGEMESH/1';
export const MAX_HEADER_BYTES = 512;
export const GATEWAY_PORT = 15080;

export type PathKind = 'local' | 'direct' | 'punched' | 'relay';
const PATHS: readonly PathKind[] = ['local', 'direct', 'punched', 'relay'];

export type Request =
  | { kind: 'feed'; revision: number }
  | { kind: 'connect'; node: string; ip: string; port: number }
  | { kind: 'datagram'; node: string; ip: string; port: number }
  | { kind: 'hello'; namespace: string; name: string; uid: string }
  | { kind: 'lookup' };
export type Reply = { ok: true; path: PathKind } | { ok: false; code: string; message: string };

// RFC 1123 subdomain, as Kubernetes node names are.
const NODE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function formatRequest(req: Request): string {
  if (req.kind === 'hello') return `${PROTOCOL_TAG} HELLO ${req.namespace} ${req.name} ${req.uid}\n`;
  if (req.kind === 'lookup') return `${PROTOCOL_TAG} LOOKUP\n`;
  if (req.kind === 'datagram') return `${PROTOCOL_TAG} DGRAM ${req.node} ${req.ip} ${req.port}\n`;
  return req.kind === 'feed'
    ? `${PROTOCOL_TAG} FEED ${req.revision}\n`
    : `${PROTOCOL_TAG} CONNECT ${req.node} ${req.ip} ${req.port}\n`;
}

/**
 * Parses a header line (without its "\n"); throws an Error whose message says what is wrong.
 * `datagram`: the caller serves DGRAM. Off by default, so a server that routes every request
 * with a node, ip and port as CONNECT refuses DGRAM instead of opening a TCP stream for it.
 */
export function parseRequest(line: string, opts: { datagram?: boolean } = {}): Request {
  const parts = line.split(' ');
  if (parts[0] !== PROTOCOL_TAG) throw new Error(`expected ${PROTOCOL_TAG} header`);
  if (parts[1] === 'FEED' && parts.length === 3) {
    const revision = Number(parts[2]);
    if (!/^\d{1,15}$/.test(parts[2])) throw new Error('FEED revision must be a non-negative integer');
    return { kind: 'feed', revision };
  }
  if ((parts[1] === 'CONNECT' || parts[1] === 'DGRAM') && parts.length === 5) {
    const verb = parts[1];
    if (verb === 'DGRAM' && !opts.datagram)
      throw new Error('DGRAM (UDP flows to other nodes) is not served by this gateway');
    const [, , node, ip, portText] = parts;
    if (node.length > 253 || !NODE_NAME.test(node)) throw new Error(`${verb} node is not a valid node name`);
    if (isIP(ip) === 0) throw new Error(`${verb} target is not an IP address`);
    const port = Number(portText);
    if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535)
      throw new Error(`${verb} port must be 1..65535`);
    return { kind: verb === 'CONNECT' ? 'connect' : 'datagram', node, ip, port };
  }
  if (parts[1] === 'LOOKUP' && parts.length === 2) return { kind: 'lookup' };
  if (parts[1] === 'HELLO' && parts.length === 5) {
    const [, , namespace, name, uid] = parts;
    if (!isDnsLabel(namespace)) throw new Error('HELLO namespace is not a DNS label');
    if (!isDnsSubdomain(name)) throw new Error('HELLO pod name is not a DNS subdomain');
    if (!isUid(uid)) throw new Error('HELLO uid is not a Kubernetes uid');
    return { kind: 'hello', namespace, name, uid };
  }
  throw new Error(
    'unknown request; expected FEED <revision>, CONNECT <node> <ip> <port>, LOOKUP or HELLO <namespace> <name> <uid>',
  );
}

export function formatReply(reply: Reply): string {
  return reply.ok ? `OK ${reply.path}\n` : `ERR ${reply.code} ${reply.message.replace(/[\r\n]+/g, ' ')}\n`;
}

export function parseReply(line: string): Reply {
  if (line.startsWith('OK ')) {
    const path = line.slice(3) as PathKind;
    if (!PATHS.includes(path)) throw new Error(`unknown path ${JSON.stringify(path)} in gateway reply`);
    return { ok: true, path };
  }
  const m = /^ERR (EDGEMESH_ERR_[A-Z_]+) (.*)$/.exec(line);
  if (m) return { ok: false, code: m[1], message: m[2] };
  throw new Error('malformed gateway reply');
}

/**
 * Splits the first line off a growing buffer. Returns undefined while no "\n" has arrived,
 * and throws once the header would exceed MAX_HEADER_BYTES (a peer that never sends a
 * newline must not make us buffer forever).
 */
export function takeLine(buffer: Buffer): { line: string; rest: Buffer } | undefined {
  const nl = buffer.indexOf(0x0a);
  if (nl === -1) {
    if (buffer.length >= MAX_HEADER_BYTES)
      throw new Error(`header line longer than ${MAX_HEADER_BYTES} bytes`);
    return undefined;
  }
  if (nl + 1 > MAX_HEADER_BYTES) throw new Error(`header line longer than ${MAX_HEADER_BYTES} bytes`);
  const line = buffer.subarray(0, nl).toString('latin1').replace(/\r$/, '');
  if (!/^[\x20-\x7e]*$/.test(line)) throw new Error('header line has non-printable characters');
  return { line, rest: buffer.subarray(nl + 1) };
}
