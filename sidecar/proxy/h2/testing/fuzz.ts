/**
 * Fuzz targets for the h2c frame relay's parsers (test/harness/fuzz.ts runs them): the HPACK
 * decoder, the frame reader with its payload checks, and one whole connection leg (Conn) fed
 * hostile bytes. The CI tests (../fuzz.test.ts) run a bounded count; `node bench/fuzz.ts`-style
 * long runs can import these targets as they are.
 */
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import { check, type FuzzTarget, mutateBytes, type Rng } from '../../../../test/harness/fuzz.ts';
import { Conn, type ConnHooks } from '../conn.ts';
import {
  contentRange,
  FrameReader,
  frameHeader,
  H2Error,
  headersFrames,
  PREFACE,
  parseSettings,
  pingAck,
  rstStream,
  settingsFrame,
  T_DATA,
  T_GOAWAY,
  T_HEADERS,
  T_SETTINGS,
  windowUpdate,
} from '../frames.ts';
import { encodeBlock, HpackDecoder, HpackError } from '../hpack.ts';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Valid blocks: RFC 7541 Appendix C (C.3, C.4, C.6) and our encoder's output. */
const HPACK_CORPUS = [
  hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'),
  hex('8286 84be 5808 6e6f 2d63 6163 6865'),
  hex('8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65'),
  hex('8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff'),
  hex('8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf'),
  hex(
    '4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3',
  ),
  hex('3fe11f 82 20'),
  encodeBlock([':method', 'POST', ':path', '/pkg.S/M', 'content-type', 'application/grpc', 'te', 'trailers']),
];

/** The decoder over a block after a valid one (so dynamic indexes exist); round trip of what it accepts. */
export const hpackTarget: FuzzTarget<Buffer> = {
  name: 'h2-hpack',
  input: (rng: Rng) => mutateBytes(rng, HPACK_CORPUS, [{ offset: 1, size: 1 }]),
  parse(input) {
    // C.3.1 → C.3.3 in order: C.3.3 names dynamic entries the first two add (decoded alone
    // it throws, and then no input would ever reach the decoder).
    const d = new HpackDecoder();
    for (const block of HPACK_CORPUS.slice(0, 3)) d.decode(block as Buffer);
    return d.decode(input);
  },
  verify(_input, outcome) {
    const fields = outcome.value as string[] | undefined;
    if (!fields) return;
    check(fields.length % 2 === 0, () => 'odd field list');
    const again = new HpackDecoder().decode(encodeBlock(fields));
    check(isDeepStrictEqual(again, fields), () => 'encodeBlock(decoded) does not decode to the same fields');
  },
  expected: (err) => err instanceof HpackError,
};

/** Frames of every type our peers send, valid. */
const FRAME_CORPUS = [
  settingsFrame([
    [3, 100],
    [4, 65535],
  ]),
  headersFrames(1, HPACK_CORPUS[0] as Buffer, false),
  headersFrames(3, HPACK_CORPUS[7] as Buffer, true, 16384),
  Buffer.concat([frameHeader(5, T_DATA, 1, 1), Buffer.from('hello')]),
  Buffer.concat([frameHeader(8, T_DATA, 0x8, 1), Buffer.from([2, 1, 2, 3, 4, 5, 0, 0])]),
  pingAck(Buffer.alloc(8, 7)),
  rstStream(1, 8),
  windowUpdate(0, 1000),
  windowUpdate(1, 1),
  Buffer.concat([frameHeader(8, T_GOAWAY, 0, 0), Buffer.alloc(8)]),
];
const FRAME_FIELDS = [
  { offset: 0, size: 4 },
  { offset: 3, size: 1 },
  { offset: 4, size: 1 },
  { offset: 5, size: 4 },
] as const;

interface Seen {
  frames: string[];
  error?: string;
}

function readAll(input: Buffer, cuts: number[]): Seen {
  const reader = new FrameReader();
  const seen: Seen = { frames: [] };
  try {
    let at = 0;
    for (const cut of [...cuts, input.length]) {
      reader.push(input.subarray(at, Math.max(at, cut)), (type, flags, stream, payload) => {
        let extra = '';
        if (type === T_DATA || type === T_HEADERS) extra = contentRange(type, flags, payload).join('-');
        else if (type === T_SETTINGS && !(flags & 1)) extra = JSON.stringify(parseSettings(payload));
        seen.frames.push(`${type}/${flags}/${stream}/${payload.toString('hex')}/${extra}`);
      });
      at = Math.max(at, cut);
    }
  } catch (err) {
    if (!(err instanceof H2Error)) throw err;
    seen.error = err.message;
  }
  return seen;
}

/** The frame reader and payload checks: only H2Error, and the same frames however the bytes are cut. */
export const frameTarget: FuzzTarget<{ bytes: Buffer; cuts: number[] }> = {
  name: 'h2-frames',
  input(rng) {
    const bytes =
      rng.int(3) === 0
        ? Buffer.concat([mutateBytes(rng, FRAME_CORPUS, FRAME_FIELDS), rng.pick(FRAME_CORPUS)])
        : mutateBytes(rng, FRAME_CORPUS, FRAME_FIELDS);
    const cuts = Array.from({ length: rng.int(4) }, () => rng.int(bytes.length + 1)).sort((a, b) => a - b);
    return { bytes, cuts };
  },
  parse(input) {
    const whole = readAll(input.bytes, []);
    if (whole.error) throw new H2Error(1, whole.error);
    return whole;
  },
  verify(input, outcome) {
    const whole = outcome.value ?? readAll(input.bytes, []);
    const cut = readAll(input.bytes, input.cuts);
    check(isDeepStrictEqual(cut, whole), () => 'frames differ when the bytes come in pieces');
  },
  expected: (err) => err instanceof H2Error,
  show: (input) => `${input.bytes.toString('hex')} cuts ${input.cuts.join(',')}`,
};

/** A socket stand-in: what Conn calls, with the bytes it writes kept. */
class FakeSocket extends EventEmitter {
  written: Buffer[] = [];
  writableLength = 0;
  destroyed = false;
  ended = false;
  setNoDelay() {}
  pause() {}
  resume() {}
  cork() {}
  uncork() {}
  write(b: Buffer) {
    this.written.push(b);
    return true;
  }
  end() {
    this.ended = true;
  }
  destroy() {
    this.destroyed = true;
  }
}

/** Hooks that accept everything a client may open, like the relay's, without routing. */
function hooks(): ConnHooks & { last: number; bugs: unknown[] } {
  const h = {
    last: 0,
    bugs: [] as unknown[],
    bug: (err: unknown) => {
      h.bugs.push(err);
    },
    known: (id: number) => id % 2 === 1 && id <= h.last,
    headers: (id: number) => {
      if (id > h.last) h.last = id;
    },
    data: () => undefined,
    rst: () => undefined,
    window: () => undefined,
    goaway: () => undefined,
    settings: () => undefined,
    closed: () => undefined,
  };
  return h;
}

/**
 * One client leg fed a valid preface and SETTINGS, then hostile frames: nothing but a GOAWAY
 * and a close may come of it (an exception escaping Conn would crash the sidecar).
 */
export const connTarget: FuzzTarget<Buffer> = {
  name: 'h2-conn',
  input: (rng) =>
    Buffer.concat([PREFACE, FRAME_CORPUS[0] as Buffer, mutateBytes(rng, FRAME_CORPUS, FRAME_FIELDS)]),
  parse(input) {
    const socket = new FakeSocket();
    const conn = new Conn(socket as unknown as net.Socket, 'server');
    const h = hooks();
    conn.start(h, [[3, 256]], input);
    conn.flush();
    return { closed: conn.closed, out: Buffer.concat(socket.written), bugs: h.bugs };
  },
  verify(_input, outcome) {
    const v = outcome.value as { closed: boolean; out: Buffer; bugs: unknown[] } | undefined;
    check(!v || v.bugs.length === 0, () => `unexpected exception: ${String(v?.bugs[0])}`);
    if (!v?.closed) return;
    // A failed connection said why: its last frame is a GOAWAY.
    const frames: number[] = [];
    new FrameReader(1 << 24).push(v.out, (type) => frames.push(type));
    check(frames.at(-1) === T_GOAWAY, () => `closed without GOAWAY (frames ${frames.join(',')})`);
  },
  expected: () => false,
};
