/**
 * HTTP/1.1 framing for the L7 fast path (fast.ts): finds where a request or a response head
 * ends and how long its body is, validates what a smuggling attack would bend, and says which
 * header lines a proxy must drop (hop-by-hop). Nothing is re-serialised: the caller forwards
 * the head's bytes as they came, minus the dropped lines (`rewriteHead`).
 *
 * Refused (RFC 9112): a request with both Content-Length and Transfer-Encoding (§6.3 item 3:
 * 400 here rather than "TE wins"), Content-Length values that differ or are not digits, a
 * Transfer-Encoding whose last coding is not chunked (§6.3 item 4), Transfer-Encoding on
 * HTTP/1.0, obs-fold (a header line starting with SP/HTAB, §5.2), whitespace before the colon
 * (§5.1), a bare CR or a bare LF anywhere in the head (§2.2), control characters in values,
 * heads over MAX_HEAD bytes (431) and more than MAX_HEADERS fields (431).
 */

export const MAX_HEAD = 32 * 1024;
export const MAX_HEADERS = 100;

export class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export interface Head {
  /** Requests: the method; responses: ''. */
  method: string;
  /** Requests: the request target. */
  target: string;
  /** Responses: the status code; requests: 0. */
  status: number;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  /** Index just past the head's final CRLF CRLF. */
  headEnd: number;
  /** Body length when framed by Content-Length; -1 otherwise. */
  contentLength: number;
  chunked: boolean;
  /** The sender wants the connection closed after this message (Connection: close, or 1.0 without keep-alive). */
  close: boolean;
  /** Request with `Upgrade` and `Connection: upgrade`. */
  upgrade: boolean;
  /** Responses: no Content-Length and not chunked, so the body runs until the connection closes. */
  untilClose: boolean;
  /** [start, end) byte ranges of whole header lines a proxy drops (hop-by-hop). Empty: forward as is. */
  drop: number[];
  /** Value of the header asked for by name (the consistent-hash key), if present. */
  picked: string | undefined;
  /**
   * Responses: the server's `Keep-Alive: timeout=N` hint in ms (how long it keeps an idle
   * connection open); -1 when absent or unreadable.
   */
  keepAliveMs: number;
}

// Character classes: 1 = tchar (RFC 9110 §5.6.2), 2 = allowed in a field value (VCHAR, SP,
// HTAB, obs-text), 4 = allowed in a request target (VCHAR).
const CLASS = new Uint8Array(256);
for (let c = 0; c < 256; c++) {
  const isAlnum = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
  if (isAlnum || "!#$%&'*+-.^_`|~".includes(String.fromCharCode(c))) CLASS[c] |= 1;
  if ((c >= 0x20 && c !== 0x7f) || c === 0x09) CLASS[c] |= 2;
  if (c > 0x20 && c < 0x7f) CLASS[c] |= 4;
}
const latin1 = (buf: Buffer, start: number, end: number): string => buf.toString('latin1', start, end);
const CR = 13;
const LF = 10;
const CRLFCRLF = Buffer.from('\r\n\r\n');

/**
 * Parses a request head at the start of `buf` (leading empty lines skipped, RFC 9112 §2.2).
 * Undefined when the head is not complete yet; throws HttpError when it is malformed or,
 * incomplete, already longer than MAX_HEAD.
 */
export function parseRequestHead(buf: Buffer, pickHeader?: string): Head | undefined {
  let start = 0;
  while (start + 1 < buf.length && buf[start] === CR && buf[start + 1] === LF) start += 2;
  const end = findHeadEnd(buf, start);
  if (end < 0) return undefined;
  // Request line: method SP target SP HTTP/1.x CRLF
  let i = start;
  while (CLASS[buf[i]] & 1) i++;
  if (i === start || buf[i] !== 0x20) throw new HttpError(400, 'bad request line (method)');
  const method = latin1(buf, start, i);
  const t0 = ++i;
  while (CLASS[buf[i]] & 4) i++;
  if (i === t0 || buf[i] !== 0x20) throw new HttpError(400, 'bad request line (target)');
  const target = latin1(buf, t0, i);
  i++;
  const minor = version(buf, i);
  if (minor < 0 || buf[i + 8] !== CR || buf[i + 9] !== LF)
    throw new HttpError(400, 'bad request line (version)');
  const head = fields(buf, i + 10, end, true, pickHeader);
  head.method = method;
  head.target = target;
  head.minor = minor;
  if (method === 'CONNECT') throw new HttpError(405, 'CONNECT is not proxied on service ports');
  if (head.chunked && minor === 0) throw new HttpError(400, 'Transfer-Encoding in an HTTP/1.0 request');
  if (minor === 0 && !head.keepAlive10) head.close = true;
  return head;
}

/**
 * Parses a response head. `method` is the request's: a HEAD request's response has no body.
 * Undefined when incomplete; HttpError (status 502) when malformed.
 */
export function parseResponseHead(buf: Buffer, method: string): Head | undefined {
  const end = findHeadEnd(buf, 0);
  if (end < 0) return undefined;
  const minor = version(buf, 0);
  if (minor < 0 || buf[8] !== 0x20) throw new HttpError(502, 'bad status line');
  const d0 = buf[9] - 0x30;
  const d1 = buf[10] - 0x30;
  const d2 = buf[11] - 0x30;
  if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) throw new HttpError(502, 'bad status code');
  const status = d0 * 100 + d1 * 10 + d2;
  let i = 12;
  if (buf[i] === 0x20) {
    i++;
    while (CLASS[buf[i]] & 2) i++;
  }
  if (buf[i] !== CR || buf[i + 1] !== LF) throw new HttpError(502, 'bad status line');
  let head: ParsedHead;
  try {
    head = fields(buf, i + 2, end, false, undefined);
  } catch (err) {
    if (err instanceof HttpError) throw new HttpError(502, `bad response: ${err.message}`);
    throw err;
  }
  head.status = status;
  head.minor = minor;
  if (minor === 0 && !head.keepAlive10) head.close = true;
  if (status < 200 || status === 204 || status === 304 || method === 'HEAD') {
    head.contentLength = 0;
    head.chunked = false;
  } else if (head.chunked) {
    // TE and CL together in a response: TE wins and the connection is not reused (§6.3 item 3).
    if (head.sawLength) head.close = true;
    head.contentLength = -1;
  } else if (head.contentLength < 0) {
    head.untilClose = true;
    head.close = true;
  }
  return head;
}

/** -1 while incomplete; throws once the head cannot fit. The index past CRLF CRLF otherwise. */
function findHeadEnd(buf: Buffer, start: number): number {
  const at = buf.indexOf(CRLFCRLF, start);
  if (at < 0) {
    if (buf.length - start > MAX_HEAD) throw new HttpError(431, 'request head too large');
    return -1;
  }
  if (at - start + 4 > MAX_HEAD) throw new HttpError(431, 'request head too large');
  return at + 4;
}

/** 0 or 1 for "HTTP/1.0" / "HTTP/1.1" at `i`, -1 otherwise. */
function version(buf: Buffer, i: number): number {
  if (
    buf[i] !== 0x48 ||
    buf[i + 1] !== 0x54 ||
    buf[i + 2] !== 0x54 ||
    buf[i + 3] !== 0x50 ||
    buf[i + 4] !== 0x2f ||
    buf[i + 5] !== 0x31 ||
    buf[i + 6] !== 0x2e
  )
    return -1;
  const m = buf[i + 7];
  return m === 0x31 ? 1 : m === 0x30 ? 0 : -1;
}

type ParsedHead = Head & { keepAlive10: boolean; sawLength: boolean };

/** The header fields from `i` to `end` (the head's end, past CRLF CRLF). */
function fields(buf: Buffer, i: number, end: number, request: boolean, pick: string | undefined): ParsedHead {
  const status = request ? 400 : 502;
  const hop: number[] = []; // [start, end, ...] of hop-by-hop lines
  const head: ParsedHead = {
    method: '',
    target: '',
    status: 0,
    minor: 1,
    headEnd: end,
    contentLength: -1,
    chunked: false,
    close: false,
    upgrade: false,
    untilClose: false,
    drop: hop,
    picked: undefined,
    keepAliveMs: -1,
    keepAlive10: false,
    sawLength: false,
  };
  const first = i;
  let count = 0;
  let sawTe = false;
  let hasUpgradeHeader = false;
  let connectionUpgrade = false;
  const listed: string[] = [];
  const last = end - 2; // the final empty line's CR
  while (i < last) {
    if (++count > MAX_HEADERS) throw new HttpError(request ? 431 : 502, 'too many header fields');
    const lineStart = i;
    const c = buf[i];
    if (c === 0x20 || c === 0x09) throw new HttpError(status, 'obs-fold (folded header line)');
    while (CLASS[buf[i]] & 1) i++;
    if (i === lineStart || buf[i] !== 0x3a) throw new HttpError(status, 'bad header name');
    const nameEnd = i;
    i++;
    while (buf[i] === 0x20 || buf[i] === 0x09) i++;
    const v0 = i;
    while (CLASS[buf[i]] & 2) i++;
    if (buf[i] !== CR || buf[i + 1] !== LF) throw new HttpError(status, 'bad character in a header value');
    let v1 = i;
    while (v1 > v0 && (buf[v1 - 1] === 0x20 || buf[v1 - 1] === 0x09)) v1--;
    i += 2;
    const nameLength = nameEnd - lineStart;
    // Only names whose length matches one we act on are compared (no string per header otherwise).
    if (
      nameLength === 2 ||
      nameLength === 7 ||
      nameLength === 10 ||
      nameLength === 14 ||
      nameLength === 16 ||
      nameLength === 17 ||
      (pick !== undefined && nameLength === pick.length)
    ) {
      const name = latin1(buf, lineStart, nameEnd).toLowerCase();
      if (pick !== undefined && name === pick && head.picked === undefined) head.picked = latin1(buf, v0, v1);
      switch (name) {
        case 'content-length': {
          const n = parseLength(latin1(buf, v0, v1));
          if (n < 0 || (head.sawLength && n !== head.contentLength))
            throw new HttpError(status, 'bad Content-Length');
          head.contentLength = n;
          head.sawLength = true;
          break;
        }
        case 'transfer-encoding': {
          const codings = latin1(buf, v0, v1).toLowerCase().split(',');
          for (const coding of codings) {
            const t = trimOws(coding);
            if (t === '') continue;
            // Anything after chunked (or chunked twice) leaves the body's end undefined.
            if (head.chunked) throw new HttpError(status, 'Transfer-Encoding after chunked');
            if (t === 'chunked') head.chunked = true;
          }
          sawTe = true;
          break;
        }
        case 'connection': {
          for (const token of latin1(buf, v0, v1).toLowerCase().split(',')) {
            const t = trimOws(token);
            if (t === 'close') head.close = true;
            else if (t === 'keep-alive') head.keepAlive10 = true;
            else if (t === 'upgrade') connectionUpgrade = true;
            else if (t !== '') listed.push(t);
          }
          hop.push(lineStart, i);
          break;
        }
        case 'upgrade':
          hasUpgradeHeader = true;
          hop.push(lineStart, i);
          break;
        case 'te':
          // gRPC needs `te: trailers` end to end.
          if (latin1(buf, v0, v1).toLowerCase() !== 'trailers') hop.push(lineStart, i);
          break;
        case 'keep-alive':
          if (!request) head.keepAliveMs = keepAliveTimeout(latin1(buf, v0, v1));
          hop.push(lineStart, i);
          break;
        case 'proxy-connection':
          hop.push(lineStart, i);
          break;
      }
    }
  }
  if (sawTe && !head.chunked) {
    if (request) throw new HttpError(400, 'Transfer-Encoding without chunked last');
    head.untilClose = true;
  }
  if (request && sawTe && head.sawLength)
    throw new HttpError(400, 'both Content-Length and Transfer-Encoding');
  head.upgrade = request && hasUpgradeHeader && connectionUpgrade;
  if (listed.length > 0) {
    // Headers the Connection field names (rare): a second pass finds their lines.
    const never = listed.filter((n) => n !== 'content-length' && n !== 'transfer-encoding' && n !== 'host');
    if (never.length > 0) head.drop.push(...lineRanges(buf, first, head.headEnd, never));
  }
  return head;
}

/**
 * `timeout=N` of a Keep-Alive field (RFC 2068 §19.7.1.1; what nginx, Apache httpd and Node's
 * server send, e.g. `timeout=5, max=100`) in ms, or -1.
 */
function keepAliveTimeout(value: string): number {
  const m = /(?:^|[,;])[ \t]*timeout[ \t]*=[ \t]*"?(\d{1,6})"?[ \t]*(?:[,;]|$)/i.exec(value);
  return m ? Number(m[1]) * 1000 : -1;
}

/** Lines of the (validated) fields from `i` whose lower-cased names are in `names`: start, end, … */
function lineRanges(buf: Buffer, i: number, end: number, names: string[]): number[] {
  const out: number[] = [];
  while (i < end - 2) {
    const lineEnd = buf.indexOf(LF, i) + 1;
    const colon = buf.indexOf(0x3a, i);
    if (names.includes(latin1(buf, i, colon).toLowerCase())) out.push(i, lineEnd);
    i = lineEnd;
  }
  return out;
}

/**
 * A list element without the optional whitespace around it: SP and HTAB only (RFC 9110 §5.6.1).
 * Not String.trim, which also strips NBSP (0xA0, obs-text): `Content-Length: \xA05` is refused,
 * as the native engine's parser (sidecar/native/http1.c) refuses it.
 */
function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 0x20 || s.charCodeAt(a) === 0x09)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 0x20 || s.charCodeAt(b - 1) === 0x09)) b--;
  return s.slice(a, b);
}

/** 1*DIGIT (at most 15 digits); a list of equal values ("5, 5") is one value. -1 when invalid. */
function parseLength(text: string): number {
  let value = -1;
  for (const part of text.split(',')) {
    const t = trimOws(part);
    if (!/^\d{1,15}$/.test(t)) return -1;
    const n = Number(t);
    if (value >= 0 && n !== value) return -1;
    value = n;
  }
  return value;
}

/**
 * The head's bytes with the dropped lines left out and `extra` (whole lines, CRLF-terminated)
 * added before the final CRLF, then `tail` (body bytes sent with it) in the same Buffer. The
 * head itself when nothing changes and there is no tail.
 */
export function rewriteHead(buf: Buffer, head: Head, extra?: string, tail?: Buffer): Buffer {
  const drop = head.drop;
  if (drop.length === 0 && !extra && !tail?.length) return buf.subarray(0, head.headEnd);
  const pairs: [number, number][] = [];
  for (let k = 0; k < drop.length; k += 2) pairs.push([drop[k], drop[k + 1]]);
  pairs.sort((a, b) => a[0] - b[0]);
  const parts: Buffer[] = [];
  let at = 0;
  for (const [s, e] of pairs) {
    if (s < at) continue; // a line listed twice
    parts.push(buf.subarray(at, s));
    at = e;
  }
  parts.push(buf.subarray(at, head.headEnd - 2));
  if (extra) parts.push(Buffer.from(extra, 'latin1'));
  parts.push(buf.subarray(head.headEnd - 2, head.headEnd));
  if (tail?.length) parts.push(tail);
  return Buffer.concat(parts);
}

/**
 * Finds the end of a chunked body without touching its data: only chunk-size lines, the CRLF
 * after each chunk and the trailer section are read. `feed` returns the index in `chunk` just
 * past the body's end, or -1 when the body goes on; HttpError on bad framing.
 */
export class ChunkedScanner {
  /** 0 size digits, 1 extension, 2 LF after size line, 3 data, 4 CR after data, 5 LF after data, 6 trailer line start, 7 trailer line, 8 LF ending a trailer line, 9 LF ending the body */
  #state = 0;
  #size = 0;
  #digits = 0;
  #remaining = 0;
  #trailerBytes = 0;
  readonly #status: number;

  constructor(status = 400) {
    this.#status = status;
  }

  feed(chunk: Buffer, from = 0): number {
    let i = from;
    const n = chunk.length;
    while (i < n) {
      const state = this.#state;
      if (state === 3) {
        const take = Math.min(this.#remaining, n - i);
        this.#remaining -= take;
        i += take;
        if (this.#remaining === 0) this.#state = 4;
        continue;
      }
      const c = chunk[i++];
      switch (state) {
        case 0: {
          const d = hexValue(c);
          if (d >= 0) {
            if (++this.#digits > 12) throw this.#bad('chunk size too large');
            this.#size = this.#size * 16 + d;
          } else if (this.#digits === 0) {
            throw this.#bad('bad chunk size');
          } else if (c === 0x3b || c === 0x20 || c === 0x09) {
            this.#state = 1;
          } else if (c === CR) {
            this.#state = 2;
          } else throw this.#bad('bad chunk size');
          break;
        }
        case 1:
          if (c === CR) this.#state = 2;
          else if (!(CLASS[c] & 2)) throw this.#bad('bad chunk extension');
          else if (++this.#trailerBytes > MAX_HEAD) throw this.#bad('chunk extension too long');
          break;
        case 2:
          if (c !== LF) throw this.#bad('bare CR in chunk size line');
          this.#trailerBytes = 0;
          if (this.#size === 0) {
            this.#state = 6;
          } else {
            this.#remaining = this.#size;
            this.#state = 3;
          }
          this.#size = 0;
          this.#digits = 0;
          break;
        case 4:
          if (c !== CR) throw this.#bad('chunk data longer than its size');
          this.#state = 5;
          break;
        case 5:
          if (c !== LF) throw this.#bad('bare CR after chunk data');
          this.#state = 0;
          break;
        case 6:
          if (c === CR) this.#state = 9;
          else if (CLASS[c] & 1) this.#state = 7;
          else throw this.#bad('bad trailer field');
          break;
        case 7:
          if (c === CR) this.#state = 8;
          else if (!(CLASS[c] & 2)) throw this.#bad('bad trailer field');
          else if (++this.#trailerBytes > MAX_HEAD) throw this.#bad('trailer section too large');
          break;
        case 8:
          if (c !== LF) throw this.#bad('bare CR in trailer');
          this.#state = 6;
          break;
        case 9:
          if (c !== LF) throw this.#bad('bare CR ending the body');
          this.#state = 0;
          this.#trailerBytes = 0;
          return i;
      }
    }
    return -1;
  }

  #bad(why: string): HttpError {
    return new HttpError(this.#status, `bad chunked body: ${why}`);
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
