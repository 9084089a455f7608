/**
 * Fuzz targets for the tunnel's wire (test/harness/fuzz.ts runs them): frames and the
 * decoder, control messages and raw lines, and the mux state machine driven as a real pair.
 * The CI tests (frame.fuzz.test.ts, control.fuzz.test.ts, mux.fuzz.test.ts) run a bounded
 * count; bench/fuzz.ts runs each a million times or more.
 */
import { type Duplex, duplexPair } from 'node:stream';
import { isDeepStrictEqual } from 'node:util';
import { check, type FuzzTarget, mutateBytes, mutateJson, type Rng } from '../../../test/harness/fuzz.ts';
import { canonicalIP } from '../../catalog/validate.ts';
import { EdgemeshError, ErrorCodes } from '../../errors.ts';
import { parseRawLine, parseToGateway, parseToServer } from '../control.ts';
import {
  DatagramDecoder,
  decodeFrame,
  encodeDatagram,
  encodeFrame,
  type Frame,
  FrameDecoder,
  FrameError,
  FrameType,
  MAX_DATA,
  MAX_REASON,
  PROTOCOL_VERSION,
  RESUME_TOKEN_BYTES,
} from '../frame.ts';
import { MuxSession, type MuxStream } from '../mux.ts';
import { ResumeBook } from '../resume.ts';

const isFrameError = (err: Error) => err instanceof FrameError;

/** Header offsets a mutation can make lie: type, stream id, payload length. */
const FRAME_FIELDS = [
  { offset: 1, size: 1 },
  { offset: 4, size: 4 },
  { offset: 8, size: 4 },
] as const;

function randomIp(rng: Rng): string {
  if (rng.chance(0.5))
    return Array.from({ length: 4 }, () => rng.pick([0, 1, 10, 127, 255, rng.int(256)])).join('.');
  const groups = Array.from({ length: 8 }, () => (rng.chance(0.5) ? 0 : rng.int(0x10000)).toString(16));
  if (rng.chance(0.2)) return `::ffff:${rng.int(256)}.${rng.int(256)}.0.${rng.int(256)}`;
  const text = groups.join(':');
  // Non-canonical spellings the encoder must accept: upper case, "::" anywhere.
  return rng.pick([text, text.toUpperCase(), text.replace(/(^|:)0(:0)+(:|$)/, '::')]);
}

const randomText = (rng: Rng, max: number) =>
  rng.pick([
    '',
    'bye',
    'é'.repeat(rng.int(max / 2)),
    'x'.repeat(rng.int(max + 1)),
    'dial refused: 10.0.0.1:80',
  ]);

/** A well-formed frame with random fields (the round-trip side of the target). */
export function randomFrame(rng: Rng): Frame {
  const stream = rng.pick([1, 2, 3, 0x7fffffff, 0xffffffff, 1 + rng.int(0xfffffffe)]);
  const position = () => {
    const received = rng.pick([0, 1, 2 ** 32, Number.MAX_SAFE_INTEGER, rng.int(2 ** 40)]);
    return { received, credited: rng.int(received + 1), finReceived: rng.chance(0.5) };
  };
  switch (rng.int(13)) {
    case 0:
      return { type: FrameType.OPEN, stream, target: { ip: randomIp(rng), port: 1 + rng.int(65535) } };
    case 1:
      return { type: FrameType.ACCEPT, stream };
    case 2:
      return { type: FrameType.DATA, stream, data: rng.bytes(1 + rng.length(MAX_DATA - 1)) };
    case 3:
      return {
        type: FrameType.WINDOW,
        stream,
        increment: rng.pick([1, 0xffffffff, 1 + rng.int(0xfffffffe)]),
      };
    case 4:
      return { type: FrameType.FIN, stream };
    case 5:
      return { type: FrameType.RESET, stream, code: rng.int(256), reason: randomText(rng, MAX_REASON) };
    case 6:
      return { type: FrameType.PING, stream: 0, opaque: rng.bytes(8) };
    case 7:
      return { type: FrameType.PONG, stream: 0, opaque: rng.bytes(8) };
    case 8:
      return { type: FrameType.GOAWAY, stream: 0, reason: randomText(rng, MAX_REASON) };
    case 9:
      return { type: FrameType.RESUMABLE, stream, token: rng.bytes(RESUME_TOKEN_BYTES) };
    case 10:
      return { type: FrameType.RESUME, stream, token: rng.bytes(RESUME_TOKEN_BYTES), position: position() };
    case 11:
      return { type: FrameType.RESUMED, stream, position: position() };
    default:
      return {
        type: FrameType.CONTROL,
        stream: 0,
        message: { t: 'signal', id: 'a1', n: rng.int(1e9), data: {} },
      };
  }
}

/** What decoding a valid frame's bytes must give back: the encoder canonicalises addresses. */
function canonical(f: Frame): Frame {
  return f.type === FrameType.OPEN
    ? { ...f, target: { ...f.target, ip: canonicalIP(f.target.ip) ?? '?' } }
    : f;
}

/** One valid encoding of every frame type: what the byte mutations start from. */
export const FRAME_CORPUS: readonly Buffer[] = [
  { type: FrameType.OPEN, stream: 1, target: { ip: '10.1.1.2', port: 8080 } },
  { type: FrameType.OPEN, stream: 2, target: { ip: 'fd00::1', port: 443 } },
  { type: FrameType.ACCEPT, stream: 3 },
  { type: FrameType.DATA, stream: 5, data: Buffer.from('hello') },
  { type: FrameType.WINDOW, stream: 5, increment: 65536 },
  { type: FrameType.FIN, stream: 7 },
  { type: FrameType.RESET, stream: 9, code: 1, reason: 'no' },
  { type: FrameType.PING, stream: 0, opaque: Buffer.alloc(8, 1) },
  { type: FrameType.PONG, stream: 0, opaque: Buffer.alloc(8, 2) },
  { type: FrameType.GOAWAY, stream: 0, reason: 'bye' },
  { type: FrameType.CONTROL, stream: 0, message: { t: 'register', lan: ['10.0.0.1'], port: 20006 } },
  { type: FrameType.RESUMABLE, stream: 1, token: Buffer.alloc(RESUME_TOKEN_BYTES, 3) },
  {
    type: FrameType.RESUME,
    stream: 3,
    token: Buffer.alloc(RESUME_TOKEN_BYTES, 3),
    position: { received: 70000, credited: 65536, finReceived: false },
  },
  { type: FrameType.RESUMED, stream: 4, position: { received: 5, credited: 0, finReceived: true } },
].map((f) => encodeFrame(f as Frame));

/**
 * The frames a byte stream decodes to, as text, with a DATA frame's pieces joined: how a
 * decoder splits DATA depends on the chunks it was given, what it delivers must not.
 */
function transcript(frames: Frame[], into: string[]): void {
  for (const f of frames) {
    const last = into.length - 1;
    if (f.type === FrameType.DATA && into[last]?.startsWith(`D${f.stream}:`)) {
      into[last] += f.data.toString('hex');
    } else if (f.type === FrameType.DATA) {
      into.push(`D${f.stream}:${f.data.toString('hex')}`);
    } else {
      into.push(
        JSON.stringify(f, (_k, v) => (v?.type === 'Buffer' ? Buffer.from(v.data).toString('hex') : v)),
      );
    }
  }
}

function decodeInChunks(bytes: Buffer, cuts: number[]): { text: string; error?: Error } {
  const decoder = new FrameDecoder();
  const out: string[] = [];
  let from = 0;
  try {
    for (const cut of [...cuts, bytes.length]) {
      if (cut < from) continue;
      transcript(decoder.push(bytes.subarray(from, cut)), out);
      from = cut;
    }
  } catch (err) {
    return { text: out.join('\n'), error: err as Error };
  }
  return { text: out.join('\n') };
}

export interface FrameInput {
  bytes: Buffer;
  /** Where the byte stream is cut into reads. */
  cuts: number[];
  /** A well-formed frame that must survive encode → decode. */
  valid: Frame;
}

/**
 * Frames and the stream decoder. Properties: only FrameError is thrown; a byte stream decodes
 * to the same frames however it is cut into reads (checked against one-byte reads, which see
 * every frame before an error); every frame decoded re-encodes to one that decodes the same;
 * decode(encode(x)) == x for a random well-formed x.
 */
export const frameTarget: FuzzTarget<FrameInput> = {
  name: 'tunnel frames (lib/tunnel/frame.ts)',
  input(rng) {
    const bytes = mutateBytes(rng, FRAME_CORPUS, FRAME_FIELDS);
    const cuts = Array.from({ length: rng.int(4) }, () => rng.int(bytes.length + 1)).sort((a, b) => a - b);
    return { bytes, cuts, valid: randomFrame(rng) };
  },
  parse: ({ bytes }) => new FrameDecoder().push(bytes),
  verify({ bytes, cuts, valid }, outcome) {
    const encoded = encodeFrame(valid);
    const [back] = new FrameDecoder().push(encoded);
    check(
      isDeepStrictEqual(back, canonical(valid)),
      () => `round trip of ${JSON.stringify(valid)} gave ${JSON.stringify(back)}`,
    );
    const oneByOne = decodeInChunks(
      bytes,
      Array.from({ length: bytes.length }, (_, i) => i),
    );
    const chunked = decodeInChunks(bytes, cuts);
    check(
      oneByOne.text.startsWith(chunked.text) &&
        !!chunked.error === !!oneByOne.error &&
        !!outcome.error === !!oneByOne.error,
      () => `chunking changed the frames: cuts ${cuts}\n${chunked.text}\nvs\n${oneByOne.text}`,
    );
    if (!chunked.error) check(chunked.text === oneByOne.text, () => `chunking lost frames at cuts ${cuts}`);
    for (const f of (outcome.value ?? []) as Frame[]) {
      // Reasons are cut to MAX_REASON bytes on encode (U+FFFD for a bad byte takes three);
      // JSON numbers such as 1e400 come back as null. Both are checked where they are used.
      if (f.type === FrameType.RESET || f.type === FrameType.GOAWAY || f.type === FrameType.CONTROL) continue;
      const again = decodeFrame(f.type, f.stream, encodeFrame(f).subarray(12));
      check(isDeepStrictEqual(again, f), () => `re-encoding ${JSON.stringify(f)} changed it`);
    }
  },
  expected: isFrameError,
  show: (i) => `${i.bytes.toString('hex')} cuts=${i.cuts.join(',')}`,
};

/** Valid control messages both ways: what the JSON mutations start from. */
const CONTROL_CORPUS: readonly Record<string, unknown>[] = [
  { t: 'register', lan: ['10.0.0.1', 'fd00::1'], port: 20006 },
  { t: 'connect', id: 'c1', peer: 'edge-b' },
  { t: 'punch', id: 'p-2', peer: 'edge-b.example' },
  { t: 'signal', id: 's_3', peer: 'edge-c', data: { sdp: 'v=0', candidates: ['a', 'b'] } },
  { t: 'registered', server: 'ts-0', observed: { ip: '203.0.113.7', port: 40000 } },
  {
    t: 'relay',
    id: 'r1',
    peer: 'edge-b',
    token: '0123456789abcdef0123456789abcdef',
    role: 'client',
    info: { lan: ['192.168.1.2'], port: 20006, observed: { ip: '198.51.100.2', port: 1 } },
  },
  { t: 'probe', id: 'q', peer: 'edge-b', token: 'ffffffffffffffffffffffffffffffff' },
  { t: 'punch-go', id: 'g', peer: 'edge-b', addr: { ip: '::1', port: 65535 }, role: 'server' },
  { t: 'error', id: 'e', code: 'EDGEMESH_ERR_UNAVAILABLE', message: 'no such peer' },
  { t: 'error', code: 'X', message: '' },
];
const RAW_LINES = [
  'EMT1 RELAY 0123456789abcdef0123456789abcdef',
  'EMT1 PROBE ffffffffffffffffffffffffffffffff',
];

export type ControlInput = { json: string; side: 'server' | 'gateway' } | { line: string };

const PARSERS = { server: parseToServer, gateway: parseToGateway } as const;

/**
 * Control messages (what a CONTROL frame's JSON object is checked by, on either side) and the
 * raw RELAY/PROBE line. Properties: only FrameError; what is accepted is accepted again,
 * equal, after a JSON round trip.
 */
export const controlTarget: FuzzTarget<ControlInput> = {
  name: 'control messages (lib/tunnel/control.ts)',
  input(rng) {
    if (rng.chance(0.15))
      return {
        line: mutateBytes(
          rng,
          RAW_LINES.map((l) => Buffer.from(l)),
        ).toString('latin1'),
      };
    return { json: mutateJson(rng, rng.pick(CONTROL_CORPUS)), side: rng.chance(0.5) ? 'server' : 'gateway' };
  },
  parse(input) {
    if ('line' in input) return parseRawLine(input.line);
    // The frame layer passes only JSON objects on (decodeFrame).
    const m = JSON.parse(input.json) as unknown;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) return undefined;
    return PARSERS[input.side](m as Record<string, unknown>);
  },
  verify(input, { value }) {
    if (value === undefined) return;
    if ('line' in input) {
      const r = value as ReturnType<typeof parseRawLine>;
      check(
        `EMT1 ${r.kind} ${r.token}` === input.line,
        () => `raw line ${input.line} parsed as ${JSON.stringify(r)}`,
      );
      return;
    }
    const again = PARSERS[input.side](JSON.parse(JSON.stringify(value)));
    check(isDeepStrictEqual(again, value), () => `round trip changed ${JSON.stringify(value)}`);
  },
  expected: isFrameError,
  show: (i) => ('line' in i ? JSON.stringify(i.line) : `${i.side} ${i.json}`),
};

// ---------------------------------------------------------------------------------------
// The mux state machine: a real client/server MuxSession pair over an in-memory duplex.

/** A frame the receiver must refuse as a protocol error whatever state it is in. */
function mustReject(rng: Rng, receiver: 'client' | 'server'): Buffer {
  const frame = (type: number, stream: number, payload: Buffer, version = PROTOCOL_VERSION, reserved = 0) => {
    const h = Buffer.alloc(12);
    h[0] = version;
    h[1] = type;
    h.writeUInt16BE(reserved, 2);
    h.writeUInt32BE(stream >>> 0, 4);
    h.writeUInt32BE(payload.length, 8);
    return Buffer.concat([h, payload]);
  };
  const streamId = () => 1 + rng.int(0xfffffffe);
  // The receiver numbers its own streams odd (client) or even (server).
  const ownId = 1 + 2 * rng.int(1000) + (receiver === 'client' ? 0 : 1);
  const open = (v4: boolean) => {
    const p = Buffer.alloc(v4 ? 7 : 19);
    p[0] = v4 ? 4 : 6;
    p.writeUInt16BE(80, 1);
    return p;
  };
  const long = (type: number) => {
    const h = Buffer.alloc(12);
    h[0] = PROTOCOL_VERSION;
    h[1] = type;
    h.writeUInt32BE(
      (type === FrameType.DATA || type === FrameType.CONTROL ? MAX_DATA : 1 + MAX_REASON) + 1 + rng.int(1000),
      8,
    );
    return h; // rejected at the header: no payload follows
  };
  switch (rng.int(17)) {
    case 0:
      return frame(FrameType.PING, 0, Buffer.alloc(8), rng.pick([0, 2, 0xff]));
    case 1:
      return frame(FrameType.PING, 0, Buffer.alloc(8), PROTOCOL_VERSION, 1 + rng.int(0xffff));
    case 2:
      return frame(
        rng.pick([0, 0x0b, 0x7f, 0xff, 0x0b + rng.int(0xf4)]),
        rng.int(5),
        rng.bytes(rng.int(258)),
      );
    case 3:
      return long(rng.pick(Object.values(FrameType)));
    case 4:
      return frame(FrameType.DATA, 0, rng.bytes(1 + rng.int(10)));
    case 5:
      return frame(FrameType.DATA, streamId(), Buffer.alloc(0));
    case 6:
      return frame(rng.pick([FrameType.PING, FrameType.PONG]), streamId(), Buffer.alloc(8));
    case 7:
      return frame(rng.pick([FrameType.GOAWAY, FrameType.CONTROL]), streamId(), Buffer.from('{}'));
    case 8:
      return frame(rng.pick([FrameType.OPEN, FrameType.ACCEPT, FrameType.FIN]), 0, Buffer.alloc(0));
    case 9:
      return frame(rng.pick([FrameType.WINDOW, FrameType.RESET]), 0, Buffer.from([0, 0, 0, 1]));
    case 10: {
      // OPEN with a bad family, port 0, or cut short.
      const v4 = rng.chance(0.5);
      const p = open(v4);
      const bad = rng.int(3);
      if (bad === 0) p[0] = rng.pick([0, 5, 7, v4 ? 6 : 4]);
      else if (bad === 1) p.writeUInt16BE(0, 1);
      return frame(FrameType.OPEN, streamId(), bad === 2 ? p.subarray(0, rng.int(p.length)) : p);
    }
    case 11:
      return frame(rng.pick([FrameType.ACCEPT, FrameType.FIN]), streamId(), rng.bytes(1 + rng.int(8)));
    case 12:
      return frame(
        FrameType.WINDOW,
        streamId(),
        rng.chance(0.5) ? Buffer.alloc(4) : rng.bytes(rng.pick([0, 3, 5, 8])),
      );
    case 13:
      return frame(FrameType.RESET, streamId(), Buffer.alloc(0));
    case 14:
      return frame(rng.pick([FrameType.PING, FrameType.PONG]), 0, rng.bytes(rng.pick([0, 7, 9, 16])));
    case 15:
      return frame(
        FrameType.CONTROL,
        0,
        Buffer.from(rng.pick(['', 'nul', '[]', '1', 'null', '"x"', '{"a":', '{}}'])),
      );
    default:
      // An OPEN with an id of the receiver's own parity: it can only be a reused or forged id.
      return frame(FrameType.OPEN, ownId, open(true));
  }
}

export type MuxStep =
  | { kind: 'write'; stream: number; bytes: number }
  | { kind: 'end'; stream: number }
  | { kind: 'ping' }
  | { kind: 'hostile'; bytes: Buffer };

export interface MuxScript {
  /**
   * 'reject': one frame the receiver must refuse; it closes with a FrameError and no stream
   * gets a byte that is not its own. 'garbage': mutated frames (which may be valid); only
   * the error kinds and crash-freedom are checked, since a lying header may legitimately
   * frame the honest bytes behind it as its payload.
   */
  mode: 'reject' | 'garbage';
  /** Which side the attacker's bytes go to. */
  victim: 'client' | 'server';
  window: number;
  streams: number;
  steps: MuxStep[];
}

/** Honest bytes of stream i: its own letter, so a byte delivered to the wrong stream shows. */
const letter = (i: number) => 0x41 + i;

function muxScript(rng: Rng): MuxScript {
  const mode = rng.chance(0.5) ? 'reject' : 'garbage';
  const victim = rng.chance(0.5) ? 'client' : 'server';
  const streams = 1 + rng.int(4);
  const steps: MuxStep[] = [];
  const n = 2 + rng.int(12);
  const hostileAt = new Set(
    mode === 'reject' ? [rng.int(n)] : Array.from({ length: 1 + rng.int(3) }, () => rng.int(n)),
  );
  for (let i = 0; i < n; i++) {
    if (hostileAt.has(i)) {
      steps.push({
        kind: 'hostile',
        bytes: mode === 'reject' ? mustReject(rng, victim) : mutateBytes(rng, FRAME_CORPUS, FRAME_FIELDS),
      });
      continue;
    }
    const r = rng.int(10);
    if (r < 7) steps.push({ kind: 'write', stream: rng.int(streams), bytes: 1 + rng.length(3000) });
    else if (r < 9) steps.push({ kind: 'end', stream: rng.int(streams) });
    else steps.push({ kind: 'ping' });
  }
  return { mode, victim, window: rng.pick([4096, 65536]), streams, steps };
}

/** Event-loop turns until `done` (or a cap: windows and echoes take a few round trips). */
async function settle(done: () => boolean, turns: number): Promise<void> {
  for (let i = 0; i < turns && !done(); i++) await new Promise((r) => setImmediate(r));
}

const isPrefix = (got: Buffer, of: Buffer) =>
  got.length <= of.length && of.subarray(0, got.length).equals(got);

/** What one scripted run saw, for `verify`. */
interface MuxRun {
  stallMs: number;
  victimClosed: boolean;
  victimError: Error | undefined;
  sent: Buffer[];
  atServer: Buffer[];
  echoed: Buffer[];
  problems: string[];
}

/** Times every 'data' event a socket delivers: the synchronous work a read costs the session. */
function timeReads(socket: Duplex, into: { stallMs: number }): void {
  const emit = socket.emit.bind(socket);
  socket.emit = (event: string | symbol, ...args: unknown[]) => {
    if (event !== 'data') return emit(event, ...args);
    const t0 = performance.now();
    const r = emit(event, ...args);
    into.stallMs = Math.max(into.stallMs, performance.now() - t0);
    return r;
  };
}

/**
 * The mux as two real sessions over an in-memory duplex. The client opens streams and writes
 * each its own letter; the server echoes. The attacker writes frames straight into one
 * side's socket, between the honest frames. Properties: a session closes only with a
 * FrameError (or the peer's loss, EDGEMESH_ERR_UNAVAILABLE); in 'reject' mode the victim
 * closes with a FrameError and every stream, on both sides, received a prefix of what its
 * writer sent — never bytes of another stream; nothing throws out of an event handler.
 * Timed: the longest synchronous handling of one read on either side.
 */
export const muxTarget: FuzzTarget<MuxScript> = {
  name: 'mux state machine (lib/tunnel/mux.ts)',
  input: muxScript,
  async parse(script): Promise<MuxRun> {
    const [a, b] = duplexPair();
    const timing = { stallMs: 0 };
    timeReads(a, timing);
    timeReads(b, timing);
    const opts = { window: script.window, pingIntervalMs: 60_000, openTimeoutMs: 60_000 };
    // With resume books: hostile RESUMABLE / RESUME / RESUMED frames meet the code that acts on them.
    const client = new MuxSession(a, { ...opts, role: 'client', peer: 'server', resume: new ResumeBook() });
    const server = new MuxSession(b, { ...opts, role: 'server', peer: 'client', resume: new ResumeBook() });
    const sent: Buffer[][] = [];
    const atServer = new Map<number, Buffer[]>(); // by target port: 1000 + the client's index
    const echoed: Buffer[][] = [];
    const problems: string[] = [];
    server.on('stream', (stream: MuxStream, target) => {
      stream.on('error', () => undefined);
      stream.accept();
      const got = atServer.get(target.port) ?? [];
      atServer.set(target.port, got);
      stream.on('data', (d: Buffer) => {
        got.push(d);
        stream.write(d);
      });
      stream.on('end', () => stream.end());
    });
    for (const s of [client, server]) {
      s.on('control', () => undefined);
      s.on('close', (err) => {
        if (
          err &&
          !(err instanceof FrameError) &&
          !(err instanceof EdgemeshError && err.code === ErrorCodes.UNAVAILABLE)
        )
          problems.push(`${s.role} closed with ${err.name}: ${err.message}`);
      });
    }
    const victim = script.victim === 'server' ? server : client;
    try {
      const streams = await Promise.all(
        Array.from({ length: script.streams }, (_, i) =>
          client.openStream({ ip: '10.0.0.1', port: 1000 + i }),
        ),
      );
      streams.forEach((s, i) => {
        sent.push([]);
        echoed.push([]);
        s.on('error', () => undefined);
        s.on('data', (d: Buffer) => echoed[i].push(d));
      });
      for (const step of script.steps) {
        if (step.kind === 'hostile') (script.victim === 'server' ? a : b).write(step.bytes);
        else if (step.kind === 'ping') client.ping(60_000).catch(() => undefined);
        else if (step.kind === 'end') streams[step.stream].end();
        else if (!streams[step.stream].writableEnded) {
          const chunk = Buffer.alloc(step.bytes, letter(step.stream));
          sent[step.stream].push(chunk);
          streams[step.stream].write(chunk);
        }
      }
      await settle(() => script.mode === 'reject' && victim.closed, script.mode === 'reject' ? 200 : 20);
      return {
        stallMs: timing.stallMs,
        victimClosed: victim.closed,
        victimError: victim.closeError,
        sent: sent.map((x) => Buffer.concat(x)),
        atServer: sent.map((_, i) => Buffer.concat(atServer.get(1000 + i) ?? [])),
        echoed: echoed.map((x) => Buffer.concat(x)),
        problems,
      };
    } finally {
      client.close();
      server.close();
    }
  },
  verify(script, outcome) {
    const run = outcome.value as MuxRun;
    check(run.problems.length === 0, () => run.problems.join('; '));
    if (script.mode !== 'reject') return;
    check(
      run.victimClosed && run.victimError instanceof FrameError,
      () =>
        `${script.victim} survived a frame it must refuse (closed: ${run.victimClosed}, ${run.victimError?.message})`,
    );
    run.sent.forEach((mine, i) => {
      check(isPrefix(run.atServer[i], mine), () => `server stream ${i} got bytes that are not stream ${i}'s`);
      check(isPrefix(run.echoed[i], mine), () => `client stream ${i} got bytes that are not stream ${i}'s`);
    });
  },
  // Sessions report what they refuse by closing; a throw out of parse is a crash.
  expected: () => false,
  show: (s) =>
    JSON.stringify({
      ...s,
      steps: s.steps.map((x) => (x.kind === 'hostile' ? { hostile: x.bytes.toString('hex') } : x)),
    }),
};

/**
 * Datagram framing: arbitrary bytes cut anywhere decode to the same datagrams (or fail the
 * same way), only FrameError is thrown, and what decodes re-encodes to the bytes it came from.
 */
const DATAGRAM_CORPUS = [
  Buffer.from('0000', 'hex'),
  Buffer.from('000141', 'hex'),
  Buffer.from('0003616263000178', 'hex'),
  Buffer.concat([Buffer.from('012c', 'hex'), Buffer.alloc(300, 7)]),
];
export const datagramTarget: FuzzTarget<{ bytes: Buffer; cuts: number[] }> = {
  name: 'datagram framing (lib/tunnel/frame.ts)',
  input(rng) {
    const bytes = mutateBytes(rng, DATAGRAM_CORPUS, [{ offset: 0, size: 2 }]);
    const cuts = Array.from({ length: rng.int(4) }, () => rng.int(bytes.length + 1)).sort((a, b) => a - b);
    return { bytes, cuts };
  },
  parse: ({ bytes }) => new DatagramDecoder().push(bytes),
  verify({ bytes, cuts }, outcome) {
    const dec = new DatagramDecoder();
    const pieces: Buffer[] = [];
    let error: unknown;
    try {
      let at = 0;
      for (const cut of [...cuts, bytes.length]) {
        pieces.push(...dec.push(bytes.subarray(at, cut)));
        at = cut;
      }
    } catch (err) {
      error = err;
    }
    check(!!error === !!outcome.error, () => `cuts ${cuts} changed the outcome`);
    // each() (the carriers' path, in place when nothing is held) agrees with push().
    const viaEach: Buffer[] = [];
    let eachError: unknown;
    try {
      const dec2 = new DatagramDecoder();
      let at = 0;
      for (const cut of [...cuts, bytes.length]) {
        dec2.each(bytes.subarray(at, cut), (d) => viaEach.push(d));
        at = cut;
      }
    } catch (err) {
      eachError = err;
    }
    check(!!eachError === !!error, () => `cuts ${cuts}: each() and push() disagree on failing`);
    if (error) return;
    const whole = (outcome.value ?? []) as Buffer[];
    check(isDeepStrictEqual(pieces, whole), () => `cuts ${cuts} changed the datagrams`);
    check(isDeepStrictEqual(viaEach, whole), () => `cuts ${cuts}: each() changed the datagrams`);
    const again = Buffer.concat(whole.map((d) => encodeDatagram(d)));
    check(again.equals(bytes.subarray(0, again.length)), () => 're-encoding changed the bytes');
    check(again.length + dec.buffered === bytes.length, () => 'bytes lost between datagrams');
  },
  expected: (err) => err instanceof FrameError,
  show: (i) => `${i.bytes.subarray(0, 64).toString('hex')}… (${i.bytes.length} B) cuts=${i.cuts.join(',')}`,
};
