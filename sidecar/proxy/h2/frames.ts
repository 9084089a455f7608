/**
 * HTTP/2 framing (RFC 9113 §4, §6): the frame reader and the frames the relay writes itself.
 *
 *   +-----------------------------------------------+
 *   |                 Length (24)                   |
 *   +---------------+---------------+---------------+
 *   |   Type (8)    |   Flags (8)   |
 *   +-+-------------+---------------+-------------------------------+
 *   |R|                 Stream Identifier (31)                      |
 *   +=+=============================================================+
 *   |                   Frame Payload (0...)                      ...
 *   +---------------------------------------------------------------+
 *
 * Frames are handed on as the bytes they came in (a DATA payload is a subarray of the read,
 * never copied here); a frame split across reads is joined once.
 */

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
export const HEADER_LEN = 9;

export const T_DATA = 0x0;
export const T_HEADERS = 0x1;
export const T_PRIORITY = 0x2;
export const T_RST_STREAM = 0x3;
export const T_SETTINGS = 0x4;
export const T_PUSH_PROMISE = 0x5;
export const T_PING = 0x6;
export const T_GOAWAY = 0x7;
export const T_WINDOW_UPDATE = 0x8;
export const T_CONTINUATION = 0x9;

export const F_END_STREAM = 0x1;
export const F_ACK = 0x1;
export const F_END_HEADERS = 0x4;
export const F_PADDED = 0x8;
export const F_PRIORITY = 0x20;

// Error codes (§7).
export const NO_ERROR = 0x0;
export const PROTOCOL_ERROR = 0x1;
export const INTERNAL_ERROR = 0x2;
export const FLOW_CONTROL_ERROR = 0x3;
export const STREAM_CLOSED = 0x5;
export const FRAME_SIZE_ERROR = 0x6;
export const REFUSED_STREAM = 0x7;
export const CANCEL = 0x8;
export const COMPRESSION_ERROR = 0x9;
export const ENHANCE_YOUR_CALM = 0xb;

// Settings (§6.5.2).
export const S_HEADER_TABLE_SIZE = 0x1;
export const S_ENABLE_PUSH = 0x2;
export const S_MAX_CONCURRENT_STREAMS = 0x3;
export const S_INITIAL_WINDOW_SIZE = 0x4;
export const S_MAX_FRAME_SIZE = 0x5;
export const S_MAX_HEADER_LIST_SIZE = 0x6;

/** The protocol's default frame and window sizes (§6.5.2). */
export const DEFAULT_MAX_FRAME = 16_384;
export const DEFAULT_WINDOW = 65_535;
export const MAX_WINDOW = 0x7fffffff;

/** A connection error (§5.4.1): the connection ends with GOAWAY carrying `code`. */
export class H2Error extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(`HTTP/2: ${message}`);
    this.name = 'H2Error';
    this.code = code;
  }
}

export type FrameHandler = (type: number, flags: number, stream: number, payload: Buffer) => void;

/**
 * Cuts a byte stream into frames. `maxFrame` is our SETTINGS_MAX_FRAME_SIZE: a longer frame is
 * a connection FRAME_SIZE_ERROR (§4.2), found from its header before its payload is buffered.
 */
export class FrameReader {
  #rest: Buffer | undefined;
  readonly #maxFrame: number;
  /** Set by the owner when the connection failed: the rest of a read is not parsed. */
  stopped = false;

  constructor(maxFrame = DEFAULT_MAX_FRAME) {
    this.#maxFrame = maxFrame;
  }

  push(chunk: Buffer, onFrame: FrameHandler): void {
    const buf = this.#rest ? Buffer.concat([this.#rest, chunk]) : chunk;
    this.#rest = undefined;
    let p = 0;
    const n = buf.length;
    while (n - p >= HEADER_LEN && !this.stopped) {
      const len = ((buf[p] as number) << 16) | ((buf[p + 1] as number) << 8) | (buf[p + 2] as number);
      if (len > this.#maxFrame)
        throw new H2Error(FRAME_SIZE_ERROR, `frame of ${len} octets, above the ${this.#maxFrame} allowed`);
      if (n - p - HEADER_LEN < len) break;
      const stream = buf.readUInt32BE(p + 5) & 0x7fffffff; // the reserved bit is ignored (§4.1)
      onFrame(
        buf[p + 3] as number,
        buf[p + 4] as number,
        stream,
        buf.subarray(p + HEADER_LEN, p + HEADER_LEN + len),
      );
      p += HEADER_LEN + len;
    }
    if (p < n && !this.stopped) this.#rest = buf.subarray(p);
  }

  /** Octets held for an incomplete frame. */
  get buffered(): number {
    return this.#rest?.length ?? 0;
  }
}

/**
 * The content of a DATA or HEADERS payload without its padding (and HEADERS' priority
 * fields): [start, end) in `payload`. Padding that covers the whole payload is a
 * PROTOCOL_ERROR (§6.1, §6.2).
 */
export function contentRange(type: number, flags: number, payload: Buffer): [number, number] {
  let start = 0;
  let end = payload.length;
  if (flags & F_PADDED) {
    if (end < 1) throw new H2Error(FRAME_SIZE_ERROR, 'padded frame without a pad length');
    const pad = payload[0] as number;
    start = 1;
    if (pad > end - start - (type === T_HEADERS && flags & F_PRIORITY ? 5 : 0))
      throw new H2Error(PROTOCOL_ERROR, `padding of ${pad} octets longer than the frame's payload`);
    end -= pad;
  }
  if (type === T_HEADERS && flags & F_PRIORITY) {
    if (end - start < 5) throw new H2Error(FRAME_SIZE_ERROR, 'HEADERS too short for its priority fields');
    start += 5;
  }
  return [start, end];
}

export function frameHeader(len: number, type: number, flags: number, stream: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_LEN);
  h[0] = len >>> 16;
  h[1] = (len >>> 8) & 0xff;
  h[2] = len & 0xff;
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return h;
}

export function settingsFrame(entries: readonly (readonly [number, number])[]): Buffer {
  const b = Buffer.allocUnsafe(HEADER_LEN + 6 * entries.length);
  frameHeader(6 * entries.length, T_SETTINGS, 0, 0).copy(b);
  entries.forEach(([id, value], i) => {
    b.writeUInt16BE(id, HEADER_LEN + 6 * i);
    b.writeUInt32BE(value, HEADER_LEN + 6 * i + 2);
  });
  return b;
}

export const SETTINGS_ACK = frameHeader(0, T_SETTINGS, F_ACK, 0);

export function pingAck(payload: Buffer): Buffer {
  return Buffer.concat([frameHeader(8, T_PING, F_ACK, 0), payload]);
}

export function rstStream(stream: number, code: number): Buffer {
  const b = frameHeader(4, T_RST_STREAM, 0, stream);
  return Buffer.concat([b, u32(code)]);
}

export function windowUpdate(stream: number, increment: number): Buffer {
  return Buffer.concat([frameHeader(4, T_WINDOW_UPDATE, 0, stream), u32(increment)]);
}

export function goaway(lastStream: number, code: number, debug = ''): Buffer {
  const text = Buffer.from(debug.slice(0, 200), 'utf8');
  return Buffer.concat([frameHeader(8 + text.length, T_GOAWAY, 0, 0), u32(lastStream), u32(code), text]);
}

/** A header block as HEADERS plus CONTINUATION frames of at most `maxFrame` octets each. */
export function headersFrames(
  stream: number,
  block: Buffer,
  endStream: boolean,
  maxFrame = DEFAULT_MAX_FRAME,
): Buffer {
  const flags = endStream ? F_END_STREAM : 0;
  if (block.length <= maxFrame)
    return Buffer.concat([frameHeader(block.length, T_HEADERS, flags | F_END_HEADERS, stream), block]);
  const parts: Buffer[] = [];
  for (let p = 0; p < block.length; p += maxFrame) {
    const piece = block.subarray(p, p + maxFrame);
    const last = p + maxFrame >= block.length;
    const type = p === 0 ? T_HEADERS : T_CONTINUATION;
    parts.push(
      frameHeader(piece.length, type, (p === 0 ? flags : 0) | (last ? F_END_HEADERS : 0), stream),
      piece,
    );
  }
  return Buffer.concat(parts);
}

function u32(v: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

/** SETTINGS payload → [id, value] pairs, validated (§6.5, §6.5.2); unknown ids are kept (and ignored). */
export function parseSettings(payload: Buffer): [number, number][] {
  if (payload.length % 6 !== 0)
    throw new H2Error(FRAME_SIZE_ERROR, `SETTINGS of ${payload.length} octets (not a multiple of 6)`);
  const out: [number, number][] = [];
  for (let p = 0; p < payload.length; p += 6) {
    const id = payload.readUInt16BE(p);
    const value = payload.readUInt32BE(p + 2);
    if (id === S_ENABLE_PUSH && value > 1) throw new H2Error(PROTOCOL_ERROR, `SETTINGS_ENABLE_PUSH ${value}`);
    if (id === S_INITIAL_WINDOW_SIZE && value > MAX_WINDOW)
      throw new H2Error(FLOW_CONTROL_ERROR, `SETTINGS_INITIAL_WINDOW_SIZE ${value} above 2^31-1`);
    if (id === S_MAX_FRAME_SIZE && (value < DEFAULT_MAX_FRAME || value > 0xffffff))
      throw new H2Error(PROTOCOL_ERROR, `SETTINGS_MAX_FRAME_SIZE ${value} outside 2^14..2^24-1`);
    out.push([id, value]);
  }
  return out;
}
