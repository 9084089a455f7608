/**
 * Fuzz target for the gateway's header line (lib/gateway-protocol.ts; test/harness/fuzz.ts
 * runs it): the first bytes any pod on the node — and, before the source check, anyone on
 * the edge LAN — sends to hostIP:15080, and the reply line a sidecar reads back.
 */
import { isDeepStrictEqual } from 'node:util';
import { check, type FuzzTarget, mutateBytes, type Rng } from '../../test/harness/fuzz.ts';
import {
  formatReply,
  formatRequest,
  parseReply,
  parseRequest,
  type Reply,
  type Request,
  takeLine,
} from '../gateway-protocol.ts';

const CORPUS = [
  'EDGEMESH/1 FEED 0\n',
  'EDGEMESH/1 FEED 123456789012345\n',
  'EDGEMESH/1 CONNECT edge-a 10.244.1.7 8080\n',
  'EDGEMESH/1 CONNECT node-1.example.com fd00::1:2 65535\r\n',
  'OK relay\n',
  'ERR EDGEMESH_ERR_DIAL_REFUSED source 10.0.0.9 is not a pod on this node\n',
  'EDGEMESH/1 CONNECT a 1.2.3.4 1\nstream bytes follow',
].map((l) => Buffer.from(l));

function randomRequest(rng: Rng): Request {
  if (rng.chance(0.3)) return { kind: 'feed', revision: rng.pick([0, 1, 999_999_999_999_999, rng.int(1e9)]) };
  const label = () => rng.pick(['a', 'edge-1', 'n0', 'x'.repeat(1 + rng.int(63))]);
  const node =
    Array.from({ length: 1 + rng.int(3) }, label)
      .join('.')
      .slice(0, 253)
      .replace(/[.-]+$/, '') || 'a';
  const ip = rng.chance(0.5)
    ? `10.${rng.int(256)}.${rng.int(256)}.${rng.int(256)}`
    : `fd00::${rng.int(0x10000).toString(16)}`;
  return { kind: 'connect', node, ip, port: 1 + rng.int(65535) };
}

export interface HeaderInput {
  bytes: Buffer;
  valid: Request;
  reply: Reply;
}

/**
 * takeLine, then the request and reply parsers, as the gateway and the sidecar use them.
 * Properties: only plain Errors that say what is wrong (no TypeError); what parses re-formats
 * to a line that parses equal; parse(format(x)) == x for random valid requests and replies.
 */
export const headerTarget: FuzzTarget<HeaderInput> = {
  name: 'gateway header line (lib/gateway-protocol.ts)',
  input: (rng) => ({
    bytes: mutateBytes(rng, CORPUS),
    valid: randomRequest(rng),
    reply: rng.chance(0.5)
      ? { ok: true, path: rng.pick(['local', 'direct', 'punched', 'relay'] as const) }
      : { ok: false, code: 'EDGEMESH_ERR_UNAVAILABLE', message: rng.pick(['', 'no route', 'a\r\nb']) },
  }),
  parse({ bytes }) {
    const taken = takeLine(bytes);
    if (!taken) return undefined;
    const { line } = taken;
    return line.startsWith('EDGEMESH/') ? parseRequest(line) : parseReply(line);
  },
  verify({ valid, reply }, { value }) {
    const again = parseRequest(formatRequest(valid).slice(0, -1));
    check(
      isDeepStrictEqual(again, valid),
      () => `request round trip: ${JSON.stringify(valid)} → ${JSON.stringify(again)}`,
    );
    const back = parseReply(formatReply(reply).slice(0, -1));
    const want = reply.ok ? reply : { ...reply, message: reply.message.replace(/[\r\n]+/g, ' ') };
    check(
      isDeepStrictEqual(back, want),
      () => `reply round trip: ${JSON.stringify(reply)} → ${JSON.stringify(back)}`,
    );
    if (value === undefined) return;
    const parsed = value as Request | Reply;
    const text = 'kind' in parsed ? formatRequest(parsed) : formatReply(parsed);
    const reparsed = 'kind' in parsed ? parseRequest(text.slice(0, -1)) : parseReply(text.slice(0, -1));
    check(isDeepStrictEqual(reparsed, parsed), () => `${JSON.stringify(parsed)} did not survive formatting`);
  },
  // The parsers document "an Error whose message says what is wrong": a plain Error.
  expected: (err) => err.constructor === Error && err.message.length > 0,
  show: (i) => i.bytes.toString('hex'),
};
