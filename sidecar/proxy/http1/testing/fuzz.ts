/**
 * Differential fuzz of the native engine's HTTP/1.1 framing (sidecar/native/http1.c) against
 * parse.ts: the same mutated heads (requests, responses, responses to HEAD) and chunked bodies
 * go to both; any difference in what they accept, refuse (status and message), frame or
 * forward is a finding. The C parser runs inside this process through the addon, so a read
 * past a buffer or a hang is seen too (the sanitizer build: EDGEMESH_L4_ADDON). CI runs a
 * bounded count (../native-parse.fuzz.test.ts); `node bench/fuzz.ts http1-native` a long one.
 */
import { isDeepStrictEqual } from 'node:util';
import { check, type FuzzTarget, mutateBytes, type Rng } from '../../../../test/harness/fuzz.ts';
import { jsChunked, jsVerdict, type Kind, nativeParser, nativeVerdict } from './native-compare.ts';

const b = (s: string) => Buffer.from(s, 'latin1');

const REQUESTS = [
  'GET / HTTP/1.1\r\nHost: web\r\n\r\n',
  '\r\nPOST /p?q=1 HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\nhello',
  'PUT /u HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nTE: trailers\r\nKeep-Alive: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  'GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nProxy-Connection: x\r\n\r\n',
  'GET /old HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0, 0\r\n\r\n',
  'DELETE /x HTTP/1.1\r\nte: deflate\r\nconnection: close, te\r\n\r\n',
].map(b);
const RESPONSES = [
  'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5, max=100\r\n\r\nok',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n2\r\nok\r\n0\r\n\r\n',
  'HTTP/1.0 404 Not Found\r\nKeep-Alive: max=3; timeout="7"\r\n\r\n',
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n',
  'HTTP/1.1 304\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n',
].map(b);
const BODIES = [
  '5\r\nhello\r\n0\r\n\r\n',
  '1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: v\r\n\r\nNEXT',
  'A \r\n0123456789\r\n0;x\r\n\r\n',
].map(b);
const KINDS: Kind[] = ['request', 'response', 'response-to-head'];

export interface HeadInput {
  kind: Kind;
  bytes: Buffer;
}

/** Heads: both parsers must give the same verdict, field for field. */
export const headTarget: FuzzTarget<HeadInput> = {
  name: 'http1-native',
  input(rng: Rng) {
    const kind = rng.pick(KINDS);
    return { kind, bytes: mutateBytes(rng, kind === 'request' ? REQUESTS : RESPONSES) };
  },
  parse(input) {
    return nativeVerdict(nativeParser(), input.bytes, input.kind);
  },
  verify(input, outcome) {
    const js = jsVerdict(input.bytes, input.kind);
    check(
      isDeepStrictEqual(outcome.value, js),
      () => `C ${JSON.stringify(outcome.value)} vs JS ${JSON.stringify(js)}`,
    );
  },
  expected: () => false,
  show: (input) => `${input.kind} ${input.bytes.toString('hex')}`,
};

export interface BodyInput {
  bytes: Buffer;
  cuts: number[];
}

/** Chunked bodies fed in random pieces: the same end (or refusal) from both scanners. */
export const chunkedTarget: FuzzTarget<BodyInput> = {
  name: 'http1-native-chunked',
  input(rng: Rng) {
    const bytes = mutateBytes(rng, BODIES);
    const cuts: number[] = [];
    for (let n = rng.int(4); n > 0; n--) cuts.push(rng.int(bytes.length + 1));
    return { bytes, cuts: cuts.sort((x, y) => x - y) };
  },
  parse(input) {
    return nativeParser().httpChunked(input.bytes, input.cuts);
  },
  verify(input, outcome) {
    const js = jsChunked(input.bytes, input.cuts);
    check(outcome.value === js, () => `C ${JSON.stringify(outcome.value)} vs JS ${JSON.stringify(js)}`);
  },
  expected: () => false,
  show: (input) => `${input.bytes.toString('hex')} cuts ${input.cuts.join(',')}`,
};
