import { isIPv4, isIPv6 } from 'node:net';
import { EdgemeshError, ErrorCodes } from '../errors.ts';
import { formatIp, ipv4Bytes, ipv6Bytes } from '../ip.ts';

/**
 * The tunnel frame: every byte between two gateways (inside their end-to-end TLS) and on a
 * gateway's control connection to a tunnel-server is a sequence of these.
 *
 *    0               1               2               3
 *    0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
 *   +---------------+---------------+-------------------------------+
 *   |  version (1)  |     type      |        reserved (0, u16)      |
 *   +---------------+---------------+-------------------------------+
 *   |                     stream id (u32, big endian)               |
 *   +---------------------------------------------------------------+
 *   |                  payload length (u32, big endian)             |
 *   +---------------------------------------------------------------+
 *   |                  payload (length bytes) ...                   |
 *
 * Stream id 0 is the session itself (PING, PONG, GOAWAY, CONTROL); every other type needs a
 * non-zero id. The side that opened the TLS connection (TLS client) numbers its streams
 * odd, the other side even, so both can open streams without colliding.
 * A frame that breaks any rule here is a protocol error: the session closes, the process
 * does not.
 */
export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 12;
/** Largest DATA payload a sender may put in one frame. */
export const MAX_DATA = 64 * 1024;
/** Largest CONTROL payload (JSON). */
export const MAX_CONTROL = 64 * 1024;
export const MAX_REASON = 256;

export const FrameType = {
  /** payload: family u8 (4|6), port u16, address (4|16 bytes). Opens a stream to a target. */
  OPEN: 0x01,
  /** empty. The far end dialed the target; data may flow both ways. */
  ACCEPT: 0x02,
  /** 1..MAX_DATA bytes of stream data, counted against the receiver's window. */
  DATA: 0x03,
  /** payload: increment u32 > 0. The receiver consumed data: the sender may send more. */
  WINDOW: 0x04,
  /** empty. The sender will send no more data on this stream (half-close). */
  FIN: 0x05,
  /** payload: code u8, reason (UTF-8, ≤ MAX_REASON bytes). Aborts the stream both ways. */
  RESET: 0x06,
  /** stream 0, payload 8 opaque bytes, answered by PONG with the same bytes (RTT, liveness). */
  PING: 0x07,
  PONG: 0x08,
  /** stream 0, payload: reason (UTF-8). No new streams on this session; open ones finish. */
  GOAWAY: 0x09,
  /** stream 0, payload: one JSON object (tunnel-server control messages). */
  CONTROL: 0x0a,
  /**
   * OPEN's payload. Opens a datagram stream: the far end sends each datagram its DATA carries
   * (DatagramDecoder below) from a UDP socket connected to the target, and the target's
   * replies come back the same way. Sent only to a peer whose MuxSession announced the
   * `datagram` feature (mux.ts, MUX_FEATURES): an older peer's decoder refuses an unknown type
   * by closing the whole session, so it never sees one. Protocol version stays 1.
   */
  OPEN_DATAGRAM: 0x0b,
  /**
   * payload: token (RESUME_TOKEN_BYTES). Sent by a stream's opener right behind its OPEN: the
   * stream may outlive this session (RESUME below). Only to a peer that announced the `resume`
   * feature (mux.ts), as OPEN_DATAGRAM.
   */
  RESUMABLE: 0x0c,
  /**
   * payload: token, then the sender's position (ResumePosition: received u64, credited u64,
   * flags u8). On a new stream id of another session to the same peer: the opener asks to
   * carry on the stream `token` named, from where each side got to.
   */
  RESUME: 0x0d,
  /** payload: the answering side's ResumePosition. The stream carries on under this id. */
  RESUMED: 0x0e,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];
const TYPE_NAMES = new Map<number, string>(Object.entries(FrameType).map(([k, v]) => [v, k]));

export const ResetCode = {
  /** The far gateway does not allow this target (not a local pod endpoint). */
  REFUSED: 1,
  /** The target could not be dialed. */
  DIAL_FAILED: 2,
  /** The stream broke a protocol rule (e.g. sent past its window). */
  PROTOCOL: 3,
  /** The stream was abandoned by its user. */
  CANCELLED: 4,
  /** Too many streams on this session. */
  LIMIT: 5,
} as const;

/** A resumable stream's name across sessions: random, known only to the two gateways. */
export const RESUME_TOKEN_BYTES = 16;
const POSITION_BYTES = 17;

/**
 * Where one side of a resumable stream got to: bytes it received (all of them are safe: its
 * stream object outlives the session), bytes of those it credited back (WINDOW), and whether
 * its peer's FIN arrived. The other side resends from `received` and sets its send window
 * from `received - credited`.
 */
export interface ResumePosition {
  received: number;
  credited: number;
  finReceived: boolean;
}

export interface Target {
  ip: string;
  port: number;
  /** 'udp': a datagram stream (OPEN_DATAGRAM). Absent or 'tcp': a byte stream (OPEN). */
  transport?: 'tcp' | 'udp';
}

export type Frame =
  | { type: typeof FrameType.OPEN | typeof FrameType.OPEN_DATAGRAM; stream: number; target: Target }
  | { type: typeof FrameType.ACCEPT; stream: number }
  | { type: typeof FrameType.DATA; stream: number; data: Buffer }
  | { type: typeof FrameType.WINDOW; stream: number; increment: number }
  | { type: typeof FrameType.FIN; stream: number }
  | { type: typeof FrameType.RESET; stream: number; code: number; reason: string }
  | { type: typeof FrameType.PING | typeof FrameType.PONG; stream: 0; opaque: Buffer }
  | { type: typeof FrameType.GOAWAY; stream: 0; reason: string }
  | { type: typeof FrameType.CONTROL; stream: 0; message: Record<string, unknown> }
  | { type: typeof FrameType.RESUMABLE; stream: number; token: Buffer }
  | { type: typeof FrameType.RESUME; stream: number; token: Buffer; position: ResumePosition }
  | { type: typeof FrameType.RESUMED; stream: number; position: ResumePosition };

export class FrameError extends EdgemeshError {
  constructor(message: string) {
    super(ErrorCodes.TUNNEL_FRAME, message);
    this.name = 'FrameError';
  }
}

function header(type: number, stream: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES);
  h[0] = PROTOCOL_VERSION;
  h[1] = type;
  h.writeUInt16BE(0, 2);
  h.writeUInt32BE(stream, 4);
  h.writeUInt32BE(length, 8);
  return h;
}

/** Encodes one frame (header and payload in one buffer). Throws FrameError on bad input. */
export function encodeFrame(frame: Frame): Buffer {
  const payload = encodePayload(frame);
  return Buffer.concat([header(frame.type, frame.stream, payload.length), payload]);
}

/** DATA header alone, so a large payload is not copied just to prepend 12 bytes. */
export function dataHeader(stream: number, length: number): Buffer {
  return header(FrameType.DATA, stream, length);
}

function encodePayload(f: Frame): Buffer {
  switch (f.type) {
    case FrameType.OPEN:
    case FrameType.OPEN_DATAGRAM: {
      const { ip, port } = f.target;
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw new FrameError(`OPEN port ${port} out of range`);
      const v4 = isIPv4(ip);
      if (!v4 && !isIPv6(ip)) throw new FrameError(`OPEN target ${JSON.stringify(ip)} is not an IP address`);
      const addr = v4 ? ipv4Bytes(ip) : ipv6Bytes(ip);
      const p = Buffer.allocUnsafe(3 + addr.length);
      p[0] = v4 ? 4 : 6;
      p.writeUInt16BE(port, 1);
      addr.copy(p, 3);
      return p;
    }
    case FrameType.WINDOW: {
      if (!Number.isInteger(f.increment) || f.increment < 1 || f.increment > 0xffffffff)
        throw new FrameError('WINDOW increment must be 1..2^32-1');
      const p = Buffer.allocUnsafe(4);
      p.writeUInt32BE(f.increment);
      return p;
    }
    case FrameType.DATA:
      return f.data;
    case FrameType.RESET: {
      const reason = truncateUtf8(f.reason, MAX_REASON);
      return Buffer.concat([Buffer.from([f.code]), reason]);
    }
    case FrameType.PING:
    case FrameType.PONG:
      return f.opaque;
    case FrameType.GOAWAY:
      return truncateUtf8(f.reason, MAX_REASON);
    case FrameType.CONTROL:
      return Buffer.from(JSON.stringify(f.message));
    case FrameType.RESUMABLE:
      return tokenBytes(f.token);
    case FrameType.RESUME:
      return Buffer.concat([tokenBytes(f.token), positionBytes(f.position)]);
    case FrameType.RESUMED:
      return positionBytes(f.position);
    default:
      return Buffer.alloc(0);
  }
}

function tokenBytes(token: Buffer): Buffer {
  if (token.length !== RESUME_TOKEN_BYTES)
    throw new FrameError(`resume token must be ${RESUME_TOKEN_BYTES} bytes`);
  return token;
}

function positionBytes(p: ResumePosition): Buffer {
  const ok = (n: number) => Number.isSafeInteger(n) && n >= 0;
  if (!ok(p.received) || !ok(p.credited) || p.credited > p.received)
    throw new FrameError('resume position must be 0 <= credited <= received < 2^53');
  const b = Buffer.allocUnsafe(POSITION_BYTES);
  b.writeBigUInt64BE(BigInt(p.received), 0);
  b.writeBigUInt64BE(BigInt(p.credited), 8);
  b[16] = p.finReceived ? 1 : 0;
  return b;
}

function readPosition(p: Buffer, at: number, name: string): ResumePosition {
  const received = p.readBigUInt64BE(at);
  const credited = p.readBigUInt64BE(at + 8);
  const flags = p[at + 16];
  if (received > BigInt(Number.MAX_SAFE_INTEGER) || credited > received || flags > 1)
    throw new FrameError(`${name} position must be credited <= received < 2^53, flags 0 or 1`);
  return { received: Number(received), credited: Number(credited), finReceived: flags === 1 };
}

function truncateUtf8(text: string, max: number): Buffer {
  const b = Buffer.from(text);
  return b.length <= max ? b : b.subarray(0, max);
}

/** Checks a header and payload and builds the frame; throws FrameError naming the problem. */
export function decodeFrame(type: number, stream: number, p: Buffer): Frame {
  const name = TYPE_NAMES.get(type);
  if (!name) throw new FrameError(`unknown frame type 0x${type.toString(16)}`);
  const sessionLevel =
    type === FrameType.PING ||
    type === FrameType.PONG ||
    type === FrameType.GOAWAY ||
    type === FrameType.CONTROL;
  if (sessionLevel && stream !== 0) throw new FrameError(`${name} must be on stream 0, got ${stream}`);
  if (!sessionLevel && stream === 0) throw new FrameError(`${name} needs a stream id, got 0`);
  switch (type) {
    case FrameType.OPEN:
    case FrameType.OPEN_DATAGRAM: {
      const family = p[0];
      if (!((family === 4 && p.length === 7) || (family === 6 && p.length === 19)))
        throw new FrameError(`${name} payload must be family 4 + 6 bytes or family 6 + 18 bytes`);
      const port = p.readUInt16BE(1);
      if (port === 0) throw new FrameError(`${name} port 0`);
      const ip = family === 4 ? formatIp(p.subarray(3, 7)) : formatIp(p.subarray(3, 19));
      return type === FrameType.OPEN
        ? { type, stream, target: { ip, port } }
        : { type, stream, target: { ip, port, transport: 'udp' } };
    }
    case FrameType.ACCEPT:
    case FrameType.FIN:
      if (p.length !== 0) throw new FrameError(`${name} payload must be empty`);
      return { type, stream };
    case FrameType.DATA:
      if (p.length === 0) throw new FrameError('DATA payload must not be empty');
      return { type, stream, data: p };
    case FrameType.WINDOW: {
      if (p.length !== 4) throw new FrameError('WINDOW payload must be 4 bytes');
      const increment = p.readUInt32BE(0);
      if (increment === 0) throw new FrameError('WINDOW increment must not be 0');
      return { type, stream, increment };
    }
    case FrameType.RESET:
      if (p.length < 1 || p.length > 1 + MAX_REASON)
        throw new FrameError('RESET payload must be 1..257 bytes');
      return { type, stream, code: p[0], reason: p.subarray(1).toString('utf8') };
    case FrameType.PING:
    case FrameType.PONG:
      if (p.length !== 8) throw new FrameError(`${name} payload must be 8 bytes`);
      return { type, stream: 0, opaque: p };
    case FrameType.GOAWAY:
      if (p.length > MAX_REASON) throw new FrameError('GOAWAY reason too long');
      return { type, stream: 0, reason: p.toString('utf8') };
    case FrameType.RESUMABLE:
      if (p.length !== RESUME_TOKEN_BYTES)
        throw new FrameError(`RESUMABLE payload must be ${RESUME_TOKEN_BYTES} bytes`);
      return { type, stream, token: Buffer.from(p) };
    case FrameType.RESUME:
      if (p.length !== RESUME_TOKEN_BYTES + POSITION_BYTES)
        throw new FrameError(`RESUME payload must be ${RESUME_TOKEN_BYTES + POSITION_BYTES} bytes`);
      return {
        type,
        stream,
        token: Buffer.from(p.subarray(0, RESUME_TOKEN_BYTES)),
        position: readPosition(p, RESUME_TOKEN_BYTES, 'RESUME'),
      };
    case FrameType.RESUMED:
      if (p.length !== POSITION_BYTES)
        throw new FrameError(`RESUMED payload must be ${POSITION_BYTES} bytes`);
      return { type, stream, position: readPosition(p, 0, 'RESUMED') };
    default: {
      let message: unknown;
      try {
        message = JSON.parse(p.toString('utf8'));
      } catch {
        throw new FrameError('CONTROL payload is not JSON');
      }
      if (typeof message !== 'object' || message === null || Array.isArray(message))
        throw new FrameError('CONTROL payload must be a JSON object');
      return { type: FrameType.CONTROL, stream: 0, message: message as Record<string, unknown> };
    }
  }
}

function maxPayload(type: number): number {
  if (type === FrameType.DATA) return MAX_DATA;
  if (type === FrameType.CONTROL) return MAX_CONTROL;
  return 1 + MAX_REASON;
}

/**
 * Received bytes not yet decoded: a FIFO of chunks (views of the reads) that hands out n bytes
 * at a time, as a view when they lie in one chunk, else as one copy. Shared by both decoders.
 */
class ByteQueue {
  chunks: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  take(n: number): Buffer {
    this.length -= n;
    const first = this.chunks[0];
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0];
      const want = n - filled;
      if (c.length <= want) {
        c.copy(out, filled);
        filled += c.length;
        this.chunks.shift();
      } else {
        c.copy(out, filled, 0, want);
        this.chunks[0] = c.subarray(want);
        filled += want;
      }
    }
    return out;
  }

  /** Everything held, when it is one chunk (the caller checks), and the queue empty again. */
  takeAll(): Buffer {
    const only = this.chunks[0];
    this.chunks = [];
    this.length = 0;
    return only;
  }

  /**
   * One exact copy of what is held instead of the read buffers its pieces are views of (each
   * pins its whole backing store).
   */
  compact(): void {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.length)];
  }
}

/**
 * Turns a byte stream into frames. Keeps incoming chunks in a list and joins them only
 * when a small frame spans chunks. A DATA frame is not joined: its payload comes out as one
 * or more DATA frames (same stream, pieces in order, each a view of an incoming chunk) as
 * the bytes arrive, so stream data is never copied here. The copy was measured to matter:
 * every 64 KiB join allocated a fresh ArrayBuffer, and at tunnel speeds that external
 * memory drove V8 into back-to-back major GCs (a quarter of a gateway's CPU in `perf`).
 * Throws FrameError on the first bad header: the caller closes the session.
 */
export class FrameDecoder {
  readonly #q = new ByteQueue();
  #header: { type: number; stream: number; length: number } | undefined;

  push(chunk: Buffer): Frame[] {
    this.#q.push(chunk);
    const out: Frame[] = [];
    for (;;) {
      if (!this.#header) {
        if (this.#q.length < HEADER_BYTES) break;
        const h = this.#q.take(HEADER_BYTES);
        if (h[0] !== PROTOCOL_VERSION)
          throw new FrameError(`unsupported protocol version ${h[0]} (expected ${PROTOCOL_VERSION})`);
        if (h.readUInt16BE(2) !== 0) throw new FrameError('reserved header bits must be 0');
        const type = h[1];
        const stream = h.readUInt32BE(4);
        const length = h.readUInt32BE(8);
        if (length > maxPayload(type))
          throw new FrameError(`frame of type 0x${type.toString(16)} too long: ${length} bytes`);
        // DATA's rules are all in its header, checked now: its payload is passed on as it comes.
        if (type === FrameType.DATA && stream === 0) throw new FrameError('DATA needs a stream id, got 0');
        if (type === FrameType.DATA && length === 0) throw new FrameError('DATA payload must not be empty');
        this.#header = { type, stream, length };
      }
      if (this.#header.type === FrameType.DATA) {
        if (this.#q.length === 0) break;
        const { stream } = this.#header;
        const first = this.#q.chunks[0];
        const n = Math.min(first.length, this.#header.length);
        out.push({ type: FrameType.DATA, stream, data: this.#q.take(n) });
        this.#header.length -= n;
        if (this.#header.length === 0) this.#header = undefined;
        continue;
      }
      if (this.#q.length < this.#header.length) {
        // Waiting for the rest of a non-DATA frame: keep one exact copy, not the TLS read
        // buffers the pieces are views of (each pins its whole backing store; an idle
        // stranger could hold several times the frame's 64 KiB this way).
        this.#q.compact();
        break;
      }
      const { type, stream, length } = this.#header;
      this.#header = undefined;
      out.push(decodeFrame(type, stream, length === 0 ? Buffer.alloc(0) : this.#q.take(length)));
    }
    return out;
  }

  /** Bytes buffered but not yet returned as frames. */
  get buffered(): number {
    return this.#q.length;
  }
}

/**
 * Datagrams on a datagram stream (OPEN_DATAGRAM). A stream is a byte stream — DATA frames
 * may be cut and joined anywhere on the way — so each datagram carries its length:
 *
 *    0               1               2
 *   +---------------+---------------+------------------------------
 *   |   length (u16, big endian)    |  payload (length bytes) ...
 *   +---------------+---------------+------------------------------
 *
 * 0..MAX_DATAGRAM bytes (a zero-length UDP datagram is valid and is carried). A length over
 * MAX_DATAGRAM is a protocol error on that stream (it is reset; the session carries on).
 */
export const DATAGRAM_HEADER_BYTES = 2;
/** The largest UDP payload over IPv4 (65,535 − 20 IP − 8 UDP); IPv6 allows 20 more, not used. */
export const MAX_DATAGRAM = 65_507;

/** One datagram as it goes on the stream: length prefix and payload in one buffer. */
export function encodeDatagram(payload: Uint8Array): Buffer {
  if (payload.length > MAX_DATAGRAM)
    throw new FrameError(`datagram of ${payload.length} bytes is over the ${MAX_DATAGRAM}-byte maximum`);
  const out = Buffer.allocUnsafe(DATAGRAM_HEADER_BYTES + payload.length);
  out.writeUInt16BE(payload.length, 0);
  out.set(payload, DATAGRAM_HEADER_BYTES);
  return out;
}

/**
 * Several datagrams as they go on the stream, in one buffer: one allocation and one write
 * for the datagrams of a batch (the same bytes as their encodeDatagram results joined).
 */
export function encodeDatagrams(payloads: readonly Uint8Array[]): Buffer {
  let total = 0;
  for (const p of payloads) {
    if (p.length > MAX_DATAGRAM)
      throw new FrameError(`datagram of ${p.length} bytes is over the ${MAX_DATAGRAM}-byte maximum`);
    total += DATAGRAM_HEADER_BYTES + p.length;
  }
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  for (const p of payloads) {
    out.writeUInt16BE(p.length, at);
    out.set(p, at + DATAGRAM_HEADER_BYTES);
    at += DATAGRAM_HEADER_BYTES + p.length;
  }
  return out;
}

/**
 * Bytes of a datagram stream → whole datagrams, however the bytes were cut. Holds at most
 * one partial datagram (≤ MAX_DATAGRAM + 2 bytes). Throws FrameError on a length over the
 * maximum, checked from the prefix before any payload is buffered.
 *
 * Datagrams wholly inside one chunk are views of it (no copy); only one cut across chunks
 * is copied together. `each` hands them to a callback without an array per chunk.
 */
export class DatagramDecoder {
  readonly #q = new ByteQueue();

  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    this.each(chunk, (d) => out.push(d));
    return out;
  }

  /** Calls `onDatagram` with each whole datagram, in order (the fast path of a carrier). */
  each(chunk: Buffer, onDatagram: (datagram: Buffer) => void): void {
    if (this.#q.length === 0) {
      // Nothing held: walk the chunk in place, keeping only its cut tail.
      let at = 0;
      while (chunk.length - at >= DATAGRAM_HEADER_BYTES) {
        const size = chunk.readUInt16BE(at);
        if (size > MAX_DATAGRAM)
          throw new FrameError(`datagram length ${size} is over the ${MAX_DATAGRAM}-byte maximum`);
        const end = at + DATAGRAM_HEADER_BYTES + size;
        if (end > chunk.length) break;
        onDatagram(chunk.subarray(at + DATAGRAM_HEADER_BYTES, end));
        at = end;
      }
      if (at < chunk.length) {
        this.#q.push(at === 0 ? chunk : chunk.subarray(at)); // (a tail with its length was checked above)
      }
      return;
    }
    if (chunk.length > 0) {
      this.#q.push(chunk);
    }
    while (this.#q.length >= DATAGRAM_HEADER_BYTES) {
      const first = this.#q.chunks[0];
      const size =
        first.length >= 2 ? first.readUInt16BE(0) : (first[0] << 8) | (this.#q.chunks[1] as Buffer)[0];
      if (size > MAX_DATAGRAM)
        throw new FrameError(`datagram length ${size} is over the ${MAX_DATAGRAM}-byte maximum`);
      if (this.#q.length < DATAGRAM_HEADER_BYTES + size) break;
      this.#q.take(DATAGRAM_HEADER_BYTES);
      onDatagram(size === 0 ? Buffer.alloc(0) : this.#q.take(size));
      if (this.#q.length > 0 && this.#q.chunks.length === 1) {
        // What is left is one chunk's tail: the in-place walk above takes it from here.
        const rest = this.#q.takeAll();
        this.each(rest, onDatagram);
        return;
      }
    }
  }

  /** Bytes of a partial datagram held (a stream that ends with some was cut mid-datagram). */
  get buffered(): number {
    return this.#q.length;
  }
}
