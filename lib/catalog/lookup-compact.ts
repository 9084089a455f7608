/**
 * The on-demand catalog's compact service answer (format 2 of the LOOKUP body,
 * lookup-protocol.ts): the answer to `Q <id> SVC <ns>/<name>` — every first DNS query for a
 * service name — as one line of tokens the sidecar turns into the entry it holds straight from
 * the socket's bytes. The JSON answer made the sidecar decode a ~2 KB line into a string, parse
 * it into an object tree and then share the endpoints' repeated port lists; this form has no
 * field names, writes a port list once for the endpoints that share it, and is read without a
 * string of the whole line (docs/scale.md, round 10).
 *
 * Negotiation, after the `EDGEMESH/1 LOOKUP` header:
 *
 *   sidecar → gateway   F <n>        the highest format it reads (1..99); before its queries
 *   gateway → sidecar   F <m>        the format it will answer in: 2 if n ≥ 2, else 1
 *
 * A gateway that predates this refuses `F 2` as a bad line ({"type":"error","id":null,...})
 * and closes the connection; the sidecar then connects again without asking and reads JSON
 * (on-demand.ts). A sidecar that never asks gets JSON, as before. In format 2 only a found
 * service's answer to an SVC query changes; not-found answers, IP and NS answers, pushes,
 * errors and keepalives stay JSON lines (they start with `{`).
 *
 * The line (ASCII, tokens separated by one space, no trailing space):
 *
 *   S <id> <revision> <ns>/<name> <type> <clusterIPs> <flags> <affinity> <lbPolicy>
 *     <externalName> <hashHeader> <udpIdleTimeoutMs> <ports> <n> (<ip> <epFlags> <ports> <hostname> <nodeName> <podName>){n}
 *
 *   type         C ClusterIP, N NodePort, L LoadBalancer, E ExternalName
 *   clusterIPs   - or the addresses joined by ','
 *   flags        - or h (headless) and/or p (publishNotReadyAddresses)
 *   affinity     - (None) or ClientIP's timeoutSeconds
 *   lbPolicy     r round-robin, a random, l least-connections, c consistent-hash
 *   optional     - absent, or = followed by the value (a string: escaped; a number: decimal)
 *   ports        - (none), ^ (the previous endpoint's list: the same array), or
 *                name/port/protocol[/appProtocol] joined by ','; protocol T, U or S
 *   epFlags      - or r (ready), s (serving), t (terminating), in that order
 *
 * Strings are written with every byte outside [A-Za-z0-9._:-] as %XX (UTF-8), so no value
 * holds a separator. The decoded entry goes through checkServiceEntry (validate.ts): the same
 * checks as a JSON answer's, in one place.
 */
import type {
  Endpoint,
  EndpointPort,
  LbPolicy,
  Protocol,
  Service,
  ServiceEntry,
  ServicePort,
} from './types.ts';
import { checkServiceEntry, LIMITS } from './validate.ts';

/** The format this code reads and writes besides JSON (format 1). */
export const COMPACT_FORMAT = 2;

const TYPES: Record<string, Service['type']> = {
  C: 'ClusterIP',
  N: 'NodePort',
  L: 'LoadBalancer',
  E: 'ExternalName',
};
const TYPE_CODES: Record<Service['type'], string> = {
  ClusterIP: 'C',
  NodePort: 'N',
  LoadBalancer: 'L',
  ExternalName: 'E',
};
const POLICIES: Record<string, LbPolicy> = {
  r: 'round-robin',
  a: 'random',
  l: 'least-connections',
  c: 'consistent-hash',
};
const POLICY_CODES: Record<LbPolicy, string> = {
  'round-robin': 'r',
  random: 'a',
  'least-connections': 'l',
  'consistent-hash': 'c',
};
const PROTOCOLS: Record<string, Protocol> = { T: 'TCP', U: 'UDP', S: 'SCTP' };
const PROTOCOL_CODES: Record<Protocol, string> = { TCP: 'T', UDP: 'U', SCTP: 'S' };

const PLAIN = /^[A-Za-z0-9._:-]*$/;

/** A string as a token's text: unchanged when it is plain (every name the catalog holds). */
export function escapeToken(s: string): string {
  if (PLAIN.test(s)) return s;
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(b);
    out += b < 0x80 && PLAIN.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * Writes a line's text into one reused byte buffer and returns it as one string: the tail of a
 * 10-endpoint service is ~400 bytes written from ~130 pieces, and joining them as strings left
 * a cons string per piece for the gateway's collector (docs/scale.md, round 10). Tokens are
 * ASCII (escapeToken), so latin1 is their bytes.
 */
class LineWriter {
  static #scratch = Buffer.allocUnsafe(16 * 1024);
  #b = LineWriter.#scratch;
  #n = 0;

  #room(bytes: number): void {
    if (this.#n + bytes <= this.#b.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.#b.length * 2, this.#n + bytes));
    this.#b.copy(bigger, 0, 0, this.#n);
    this.#b = bigger;
  }

  /** An ASCII text (a code, a separator, an escaped token). */
  text(t: string): this {
    this.#room(t.length);
    this.#n += this.#b.write(t, this.#n, 'latin1');
    return this;
  }

  byte(c: number): this {
    this.#room(1);
    this.#b[this.#n++] = c;
    return this;
  }

  number(v: number): this {
    return this.text(String(v));
  }

  token(v: string): this {
    return this.text(escapeToken(v));
  }

  /** ' -' when absent, ' =<value>' when present. */
  optional(v: string | number | undefined): this {
    if (v === undefined) return this.text(' -');
    this.text(' =');
    return typeof v === 'number' ? this.number(v) : this.token(v);
  }

  ports(ports: readonly (ServicePort | EndpointPort)[]): this {
    if (ports.length === 0) return this.byte(0x2d);
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i];
      if (i > 0) this.byte(0x2c);
      this.token(p.name).byte(0x2f).number(p.port).byte(0x2f).text(PROTOCOL_CODES[p.protocol]);
      if (p.appProtocol !== undefined) this.byte(0x2f).token(p.appProtocol);
    }
    return this;
  }

  done(): string {
    const line = this.#b.toString('latin1', 0, this.#n);
    // A grown buffer is kept for the next line only up to 1 MiB (a huge entry is rare).
    if (this.#b.length <= 1024 * 1024) LineWriter.#scratch = this.#b;
    return line;
  }
}

/** Whether two endpoints' port lists are equal entry by entry (the compact line writes `^` for a repeat). */
export function samePorts(a: readonly EndpointPort[], b: readonly EndpointPort[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const p = a[i];
    const q = b[i];
    if (
      p.port !== q.port ||
      p.name !== q.name ||
      p.protocol !== q.protocol ||
      p.appProtocol !== q.appProtocol
    )
      return false;
  }
  return true;
}

/**
 * A found service's answer line (with its "\n") after `S <id> <revision> ` — the part that
 * depends only on the entry, so the gateway keeps it per entry as it keeps the JSON tail.
 */
export function compactServiceTail(key: string, entry: ServiceEntry): string {
  const s = entry.service;
  const w = new LineWriter();
  const slash = key.indexOf('/');
  if (slash < 0) w.token(key);
  else
    w.token(key.slice(0, slash))
      .byte(0x2f)
      .token(key.slice(slash + 1));
  w.byte(0x20).text(TYPE_CODES[s.type]).byte(0x20);
  if (s.clusterIPs.length === 0) w.byte(0x2d);
  for (let i = 0; i < s.clusterIPs.length; i++) (i > 0 ? w.byte(0x2c) : w).token(s.clusterIPs[i]);
  w.byte(0x20);
  if (!s.headless && !s.publishNotReadyAddresses) w.byte(0x2d);
  if (s.headless) w.byte(0x68);
  if (s.publishNotReadyAddresses) w.byte(0x70);
  w.byte(0x20);
  if (s.sessionAffinity.type === 'None') w.byte(0x2d);
  else w.number(s.sessionAffinity.timeoutSeconds);
  w.byte(0x20).text(POLICY_CODES[s.lbPolicy]);
  w.optional(s.externalName).optional(s.hashHeader).optional(s.udpIdleTimeoutMs);
  w.byte(0x20).ports(s.ports).byte(0x20).number(entry.endpoints.length);
  let prev: EndpointPort[] | undefined;
  for (let i = 0; i < entry.endpoints.length; i++) {
    const ep = entry.endpoints[i];
    w.byte(0x20).token(ep.ip).byte(0x20);
    if (!ep.ready && !ep.serving && !ep.terminating) w.byte(0x2d);
    if (ep.ready) w.byte(0x72);
    if (ep.serving) w.byte(0x73);
    if (ep.terminating) w.byte(0x74);
    w.byte(0x20);
    if (prev !== undefined && samePorts(prev, ep.ports)) w.byte(0x5e);
    else w.ports(ep.ports);
    prev = ep.ports;
    w.optional(ep.hostname).optional(ep.nodeName).optional(ep.podName);
  }
  return w.byte(0x0a).done();
}

export const compactAnswerHead = (id: number, revision: number): string => `S ${id} ${revision} `;

export interface CompactAnswer {
  id: number;
  revision: number;
  key: string;
  entry: ServiceEntry;
}

const SP = 0x20;
const MAX_ID = 2 ** 31 - 1;

/** Reads one compact line's tokens from bytes; every failure throws an Error saying where. */
class Reader {
  readonly #b: Buffer;
  readonly #end: number;
  #pos: number;
  /** The end of the token #next returned. */
  #tokenEnd = 0;

  constructor(b: Buffer, start: number, end: number) {
    this.#b = b;
    this.#pos = start;
    this.#end = end;
  }

  /** The next token's [start, end) (the cursor moves past it and its space). */
  #next(what: string): number {
    const start = this.#pos;
    if (start >= this.#end) throw new Error(`compact answer: ${what} missing`);
    let sp = this.#b.indexOf(SP, start);
    if (sp < 0 || sp > this.#end) sp = this.#end;
    if (sp === start) throw new Error(`compact answer: ${what} is empty`);
    this.#pos = sp + 1;
    this.#tokenEnd = sp;
    return start;
  }

  get done(): boolean {
    return this.#pos >= this.#end;
  }

  /** Bytes not read yet (with the separator before the next token). */
  get left(): number {
    return Math.max(0, this.#end - this.#pos + 1);
  }

  /** A decimal integer in [min, max]. */
  integer(what: string, min: number, max: number): number {
    const start = this.#next(what);
    return this.#digits(start, this.#tokenEnd, what, min, max);
  }

  #digits(start: number, end: number, what: string, min: number, max: number): number {
    const b = this.#b;
    if (end - start > 15 || (end - start > 1 && b[start] === 0x30))
      throw new Error(`compact answer: ${what} is not a decimal integer`);
    let n = 0;
    for (let i = start; i < end; i++) {
      const d = b[i] - 0x30;
      if (d < 0 || d > 9) throw new Error(`compact answer: ${what} is not a decimal integer`);
      n = n * 10 + d;
    }
    if (n < min || n > max) throw new Error(`compact answer: ${what} must be ${min}..${max}`);
    return n;
  }

  /** A one-letter code of `table`. */
  code<T>(what: string, table: Record<string, T>): T {
    const start = this.#next(what);
    const letter = String.fromCharCode(this.#b[start]);
    if (this.#tokenEnd - start !== 1 || !Object.hasOwn(table, letter))
      throw new Error(`compact answer: ${what} is not one of ${Object.keys(table).join(' ')}`);
    return table[letter];
  }

  /** '-' (None: undefined) or ClientIP's timeoutSeconds. */
  affinity(): number | undefined {
    const start = this.#next('affinity');
    if (this.#tokenEnd - start === 1 && this.#b[start] === 0x2d) return undefined;
    return this.#digits(start, this.#tokenEnd, 'affinity', 0, Number.MAX_SAFE_INTEGER);
  }

  /** Flag letters from `allowed`, in that order, each at most once; '-' for none. Bit i: allowed[i]. */
  flags(what: string, allowed: string): number {
    const start = this.#next(what);
    const end = this.#tokenEnd;
    if (end - start === 1 && this.#b[start] === 0x2d) return 0;
    let bits = 0;
    let at = 0;
    for (let i = start; i < end; i++) {
      const k = allowed.indexOf(String.fromCharCode(this.#b[i]), at);
      if (k < 0) throw new Error(`compact answer: ${what} must be letters of "${allowed}" in order, or -`);
      bits |= 1 << k;
      at = k + 1;
    }
    return bits;
  }

  string(what: string): string {
    const start = this.#next(what);
    return this.#text(start, this.#tokenEnd, what);
  }

  /** The one-letter marker that starts the line. */
  marker(letter: number): void {
    const start = this.#next('marker');
    if (this.#tokenEnd - start !== 1 || this.#b[start] !== letter)
      throw new Error(`compact answer must start with "${String.fromCharCode(letter)} "`);
  }

  /** '-' (undefined) or '=' and a string. */
  optionalString(what: string): string | undefined {
    const start = this.#next(what);
    return this.#optional(start, what) ? this.#text(start + 1, this.#tokenEnd, what) : undefined;
  }

  optionalInteger(what: string, min: number, max: number): number | undefined {
    const start = this.#next(what);
    return this.#optional(start, what) ? this.#digits(start + 1, this.#tokenEnd, what, min, max) : undefined;
  }

  #optional(start: number, what: string): boolean {
    const c = this.#b[start];
    if (c === 0x2d && this.#tokenEnd - start === 1) return false;
    if (c !== 0x3d) throw new Error(`compact answer: ${what} must be - or =<value>`);
    return true;
  }

  /** The list's strings, split on ','; '-' is none. */
  list(what: string): string[] {
    const start = this.#next(what);
    const end = this.#tokenEnd;
    if (end - start === 1 && this.#b[start] === 0x2d) return [];
    // Exact size: held as long as the service (push from [] reserves 17 slots).
    let n = 1;
    for (let i = start; i < end; i++) if (this.#b[i] === 0x2c) n++;
    const out = new Array<string>(n);
    let s = start;
    for (let k = 0; k < n; k++) {
      let comma = this.#b.indexOf(0x2c, s);
      if (comma < 0 || comma > end) comma = end;
      if (comma === s) throw new Error(`compact answer: ${what} has an empty item`);
      out[k] = this.#text(s, comma, what);
      s = comma + 1;
    }
    return out;
  }

  /** A port list token; '^' is `prev` (the same array), when there is one. */
  ports(what: string, prev: EndpointPort[] | undefined): EndpointPort[] {
    const start = this.#next(what);
    const end = this.#tokenEnd;
    const b = this.#b;
    if (end - start === 1 && b[start] === 0x5e) {
      if (!prev) throw new Error(`compact answer: ${what} is ^ with no previous list`);
      return prev;
    }
    if (end - start === 1 && b[start] === 0x2d) return [];
    // Exact size: held as long as the service (push from [] reserves 17 slots).
    let n = 1;
    for (let i = start; i < end; i++) if (b[i] === 0x2c) n++;
    const out = new Array<EndpointPort>(n);
    let s = start;
    for (let k = 0; k < n; k++) {
      let comma = b.indexOf(0x2c, s);
      if (comma < 0 || comma > end) comma = end;
      out[k] = this.#port(s, comma, what);
      s = comma + 1;
    }
    return out;
  }

  /** name/port/protocol[/appProtocol] in [start, end). */
  #port(start: number, end: number, what: string): EndpointPort {
    const b = this.#b;
    let cut1 = -1;
    let cut2 = -1;
    let cut3 = -1;
    let cuts = 0;
    for (let i = start; i < end; i++) {
      if (b[i] !== 0x2f) continue;
      if (++cuts === 1) cut1 = i;
      else if (cuts === 2) cut2 = i;
      else if (cuts === 3) cut3 = i;
    }
    if (cuts !== 2 && cuts !== 3)
      throw new Error(`compact answer: ${what} item must be name/port/protocol[/appProtocol]`);
    const protoEnd = cuts === 3 ? cut3 : end;
    const letter = String.fromCharCode(b[cut2 + 1]);
    if (protoEnd - cut2 !== 2 || !Object.hasOwn(PROTOCOLS, letter))
      throw new Error(`compact answer: ${what} protocol must be T, U or S`);
    const p: EndpointPort = {
      name: cut1 === start ? '' : this.#text(start, cut1, what),
      port: this.#digits(cut1 + 1, cut2, `${what} port`, 1, 65535),
      protocol: PROTOCOLS[letter],
    };
    if (cuts === 3) p.appProtocol = this.#text(cut3 + 1, end, what);
    return p;
  }

  /** A string token (or item); %XX escapes decoded, any other byte outside 0x21..0x7e refused. */
  #text(start: number, end: number, what: string): string {
    const b = this.#b;
    for (let i = start; i < end; i++) {
      const c = b[i];
      if (c === 0x25) return unescapeToken(b.toString('latin1', start, end), what);
      if (c < 0x21 || c > 0x7e) throw new Error(`compact answer: ${what} holds a byte that must be escaped`);
    }
    return b.toString('latin1', start, end);
  }
}

function unescapeToken(t: string, what: string): string {
  if (!t.includes('%')) {
    if (!/^[\x21-\x7e]*$/.test(t))
      throw new Error(`compact answer: ${what} holds a byte that must be escaped`);
    return t;
  }
  const bytes: number[] = [];
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c === 0x25) {
      const hex = t.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw new Error(`compact answer: ${what} has a bad %-escape`);
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else if (c < 0x21 || c > 0x7e)
      throw new Error(`compact answer: ${what} holds a byte that must be escaped`);
    else bytes.push(c);
  }
  const out = Buffer.from(bytes).toString('utf8');
  if (out.includes('\uFFFD')) throw new Error(`compact answer: ${what} is not UTF-8`);
  return out;
}

/** Whether a line (its first byte) is a compact answer rather than a JSON line or `F`. */
export const isCompactAnswer = (b: Buffer, start: number): boolean => b[start] === 0x53; // 'S'

/** The format a gateway's `F <m>` line grants; throws when it is not one. */
export function parseFormatLine(text: string): number {
  const m = /^F ([1-9]\d?)$/.exec(text);
  if (!m) throw new Error(`format line must be "F <1..99>", got ${JSON.stringify(text.slice(0, 40))}`);
  return Number(m[1]);
}

/**
 * Parses and validates one compact answer (bytes [start, end) of `b`, without its "\n");
 * throws an Error that says what is wrong. Strings are fresh (not views of the line).
 */
export function decodeCompactAnswer(b: Buffer, start: number, end: number): CompactAnswer {
  const r = new Reader(b, start, end);
  r.marker(0x53);
  const id = r.integer('id', 1, MAX_ID);
  const revision = r.integer('revision', 0, Number.MAX_SAFE_INTEGER);
  const key = r.string('key');
  const type = r.code('type', TYPES);
  const clusterIPs = r.list('clusterIPs');
  const flags = r.flags('flags', 'hp');
  const affinity = r.affinity();
  const lbPolicy = r.code('lbPolicy', POLICIES);
  const externalName = r.optionalString('externalName');
  const hashHeader = r.optionalString('hashHeader');
  const udpIdleTimeoutMs = r.optionalInteger('udpIdleTimeoutMs', 0, Number.MAX_SAFE_INTEGER);
  const ports = r.ports('ports', undefined) as ServicePort[];
  const slash = key.indexOf('/');
  const service: Service = {
    namespace: slash < 0 ? '' : key.slice(0, slash),
    name: key.slice(slash + 1),
    type,
    clusterIPs,
    headless: (flags & 1) !== 0,
    ports,
    sessionAffinity:
      affinity === undefined ? { type: 'None' } : { type: 'ClientIP', timeoutSeconds: affinity },
    lbPolicy,
    publishNotReadyAddresses: (flags & 2) !== 0,
  };
  if (externalName !== undefined) service.externalName = externalName;
  if (hashHeader !== undefined) service.hashHeader = hashHeader;
  if (udpIdleTimeoutMs !== undefined) service.udpIdleTimeoutMs = udpIdleTimeoutMs;
  // At most the catalog's limit, and no more than the rest of the line can hold (an endpoint
  // is six tokens, at least 12 bytes): a lying count allocates nothing.
  const n = r.integer('endpoint count', 0, Math.min(LIMITS.endpointsPerService, Math.floor(r.left / 12)));
  const endpoints = new Array<Endpoint>(n);
  let prev: EndpointPort[] | undefined;
  for (let i = 0; i < n; i++) {
    const ip = r.string('endpoint ip');
    const epFlags = r.flags('endpoint flags', 'rst');
    prev = r.ports('endpoint ports', prev);
    const hostname = r.optionalString('endpoint hostname');
    const nodeName = r.optionalString('endpoint nodeName');
    const podName = r.optionalString('endpoint podName');
    const ep: Endpoint = {
      ip,
      ready: (epFlags & 1) !== 0,
      serving: (epFlags & 2) !== 0,
      terminating: (epFlags & 4) !== 0,
      ports: prev,
    };
    if (hostname !== undefined) ep.hostname = hostname;
    if (nodeName !== undefined) ep.nodeName = nodeName;
    if (podName !== undefined) ep.podName = podName;
    endpoints[i] = ep;
  }
  if (!r.done) throw new Error('compact answer: tokens after the last endpoint');
  // The service's namespace and name are the key's halves (not sent twice), so the key names
  // its entry by construction; the checks make both DNS labels (a key without one '/' fails).
  const entry = checkServiceEntry({ service, endpoints });
  return { id, revision, key, entry };
}

/**
 * Splits a byte stream into lines handed over as byte ranges, so a compact answer is read
 * without a string of the whole line (feed.ts's LineSplitter decodes each line to a string).
 * A line longer than `maxBytes` throws.
 */
export class ByteLines {
  readonly #maxBytes: number;
  #chunks: Buffer[] = [];
  #length = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Calls `onLine` for each complete line in `chunk` (with what was buffered before), in order. */
  push(chunk: Buffer, onLine: (b: Buffer, start: number, end: number) => void): void {
    let start = 0;
    let nl = chunk.indexOf(0x0a);
    while (nl !== -1) {
      if (this.#length + (nl - start) > this.#maxBytes)
        throw new Error(`line longer than ${this.#maxBytes} bytes`);
      if (this.#chunks.length === 0) onLine(chunk, start, nl);
      else {
        this.#chunks.push(chunk.subarray(start, nl));
        const line = Buffer.concat(this.#chunks);
        this.#chunks = [];
        this.#length = 0;
        onLine(line, 0, line.length);
      }
      start = nl + 1;
      nl = chunk.indexOf(0x0a, start);
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.#length += rest.length;
      if (this.#length > this.#maxBytes) throw new Error(`line longer than ${this.#maxBytes} bytes`);
      this.#chunks.push(rest);
    }
  }
}
