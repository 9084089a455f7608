/**
 * HPACK (RFC 7541), as much as a relay needs: a full decoder (static + dynamic table, Huffman)
 * because every header block a peer sends changes the decoding context whether or not we look
 * at it, and a stateless encoder (literal without indexing, no Huffman; an indexed name where
 * the static table has it), so our side keeps no encoding context and a block we send never
 * depends on one sent earlier.
 *
 * Header fields are carried as a flat array [name0, value0, name1, value1, …] of latin1
 * strings: one string per octet, so a field goes back on the wire byte for byte.
 *
 *   integer      N-bit prefix, then 7 bits per byte, LSB group first (§5.1)
 *   string       H bit, 7-bit-prefix length, octets or Huffman code (§5.2)
 *   1xxxxxxx     indexed field (§6.1)
 *   01xxxxxx     literal, incremental indexing (§6.2.1)
 *   0000xxxx     literal without indexing (§6.2.2)
 *   0001xxxx     literal never indexed (§6.2.3)
 *   001xxxxx     dynamic table size update, only at the start of a block (§6.3, §4.2)
 */

/** A block we cannot decode: the connection must end with COMPRESSION_ERROR (RFC 9113 §4.3). */
export class HpackError extends Error {
  constructor(message: string) {
    super(`HPACK: ${message}`);
    this.name = 'HpackError';
  }
}

/** RFC 7541 Appendix A. Index 1 is STATIC[0]. */
export const STATIC: readonly (readonly [string, string])[] = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];

/**
 * Code lengths in bits of symbols 0–256 (256 = EOS), RFC 7541 Appendix B. The code is
 * canonical (codes of one length are consecutive, in symbol order; shorter codes first), so
 * the lengths alone define it: the codes are derived below, and the golden tests of
 * Appendix C (C.4, C.6) check the result.
 */
const HUFFMAN_LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28,
  28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7,
  8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19,
  13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13,
  28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21,
  22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23,
  22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25,
  25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];
const EOS = 256;

/** The canonical codes of HUFFMAN_LENGTHS (MSB-first, right-aligned). */
export function huffmanCodes(): number[] {
  const order = HUFFMAN_LENGTHS.map((_, i) => i).sort(
    (a, b) => (HUFFMAN_LENGTHS[a] as number) - (HUFFMAN_LENGTHS[b] as number) || a - b,
  );
  const codes = new Array<number>(HUFFMAN_LENGTHS.length).fill(0);
  let code = 0;
  let len = HUFFMAN_LENGTHS[order[0] as number] as number;
  for (const sym of order) {
    const l = HUFFMAN_LENGTHS[sym] as number;
    code *= 2 ** (l - len); // up to 30 bits: multiply, not <<, to stay clear of the sign bit
    len = l;
    codes[sym] = code;
    code++;
  }
  return codes;
}

/**
 * Byte-at-a-time Huffman decoding: a state is an inner node of the code tree (0 = root); for
 * each state and input byte, one entry of TRANSITIONS says where the walk ends and which
 * symbols (0–2: the shortest code is 5 bits) it passed. Built once, on the first Huffman
 * string (65,536 entries, a few ms).
 *
 *   bits 0–7 next state · 8–9 symbol count · 10–17 first symbol · 18–25 second · 26 failed (EOS seen)
 *
 * ACCEPTING[state]: the walk may stop here — fewer than 8 bits into a code, all of them 1
 * (a prefix of EOS): the only padding §5.2 allows.
 */
let TRANSITIONS: Int32Array | undefined;
let ACCEPTING: Uint8Array | undefined;

function buildHuffmanDecoder(): void {
  const codes = huffmanCodes();
  // Tree: node n has children at kids[2n], kids[2n+1]; a leaf is stored as -(symbol + 1).
  const kids: number[] = [0, 0];
  let nodes = 1;
  for (let sym = 0; sym <= EOS; sym++) {
    const len = HUFFMAN_LENGTHS[sym] as number;
    const code = codes[sym] as number;
    let node = 0;
    for (let b = len - 1; b >= 0; b--) {
      const bit = Math.floor(code / 2 ** b) % 2;
      const slot = 2 * node + bit;
      if (b === 0) kids[slot] = -(sym + 1);
      else {
        if (!kids[slot]) {
          kids[slot] = nodes++;
          kids.push(0, 0);
        }
        node = kids[slot] as number;
      }
    }
  }
  const accepting = new Uint8Array(nodes);
  // All-ones paths from the root of depth < 8.
  let n = 0;
  for (let depth = 0; depth < 8; depth++) {
    accepting[n] = 1;
    const next = kids[2 * n + 1] as number;
    if (next <= 0) break;
    n = next;
  }
  const table = new Int32Array(nodes * 256);
  for (let state = 0; state < nodes; state++) {
    for (let byte = 0; byte < 256; byte++) {
      let node = state;
      let count = 0;
      let syms = 0;
      let failed = 0;
      for (let b = 7; b >= 0; b--) {
        const next = kids[2 * node + ((byte >> b) & 1)] as number;
        if (next < 0) {
          const sym = -next - 1;
          if (sym === EOS) failed = 1;
          else syms |= sym << (8 * count++);
          node = 0;
        } else node = next;
      }
      table[state * 256 + byte] = node | (count << 8) | (syms << 10) | (failed << 26);
    }
  }
  TRANSITIONS = table;
  ACCEPTING = accepting;
}

/** Decodes a Huffman string (§5.2) to latin1; throws HpackError on EOS, bad or long padding. */
export function huffmanDecode(src: Buffer, start: number, end: number): string {
  if (!TRANSITIONS) buildHuffmanDecoder();
  const table = TRANSITIONS as Int32Array;
  let state = 0;
  let out = '';
  for (let i = start; i < end; i++) {
    const t = table[state * 256 + (src[i] as number)] as number;
    if (t & (1 << 26)) throw new HpackError('Huffman string contains EOS');
    const count = (t >> 8) & 3;
    if (count > 0) {
      out += String.fromCharCode((t >> 10) & 0xff);
      if (count > 1) out += String.fromCharCode((t >> 18) & 0xff);
    }
    state = t & 0xff;
  }
  if (!(ACCEPTING as Uint8Array)[state])
    throw new HpackError('Huffman string padding is not a prefix of EOS (or is 8 bits or more)');
  return out;
}

/** Decoding context of one direction of one connection (§2.3.2). */
export class HpackDecoder {
  /** Entries newest last: index 62 is the last element. */
  readonly #table: string[] = [];
  #size = 0;
  /** The size the decoder currently allows (changed by size updates, ≤ #limit). */
  #max: number;
  /** SETTINGS_HEADER_TABLE_SIZE we advertised: the most a size update may ask for. */
  readonly #limit: number;
  /** Decoded list size (§4.1 of RFC 9113's SETTINGS_MAX_HEADER_LIST_SIZE) of the last block. */
  listSize = 0;
  /**
   * Decoded size at which a block is refused outright: one octet may name a 4 KiB table entry,
   * so a small block can decode to gigabytes (an "HPACK bomb"); decoding stops there.
   */
  readonly #maxList: number;

  constructor(limit = 4096, maxList = Number.POSITIVE_INFINITY) {
    this.#limit = limit;
    this.#max = limit;
    this.#maxList = maxList;
  }

  /** Decodes one complete header block. Throws HpackError: the connection is then unusable. */
  decode(block: Buffer): string[] {
    const out: string[] = [];
    let p = 0;
    const end = block.length;
    let size = 0;
    let fieldSeen = false;
    // Integer with an N-bit prefix (§5.1); at most 2^31 here (more is an attack, not a header).
    const int = (prefix: number): number => {
      const mask = (1 << prefix) - 1;
      let v = (block[p++] as number) & mask;
      if (v < mask) return v;
      let shift = 0;
      for (;;) {
        if (p >= end) throw new HpackError('integer truncated');
        const b = block[p++] as number;
        v += (b & 0x7f) * 2 ** shift;
        if ((b & 0x80) === 0) break;
        shift += 7;
        if (shift > 28) throw new HpackError('integer too large');
      }
      if (v > 0x7fffffff) throw new HpackError('integer too large');
      return v;
    };
    const str = (): string => {
      if (p >= end) throw new HpackError('string truncated');
      const huff = ((block[p] as number) & 0x80) !== 0;
      const len = int(7);
      if (len > end - p) throw new HpackError('string longer than the block');
      const s = huff ? huffmanDecode(block, p, p + len) : block.toString('latin1', p, p + len);
      p += len;
      return s;
    };
    const entry = (index: number, nameOnly: boolean): [string, string] => {
      if (index === 0) throw new HpackError('index 0');
      if (index <= STATIC.length) {
        const e = STATIC[index - 1] as readonly [string, string];
        return [e[0], nameOnly ? '' : e[1]];
      }
      const i = this.#table.length / 2 - 1 - (index - STATIC.length - 1);
      if (i < 0) throw new HpackError(`index ${index} beyond the dynamic table`);
      return [this.#table[2 * i] as string, this.#table[2 * i + 1] as string];
    };
    while (p < end) {
      const b = block[p] as number;
      let name: string;
      let value: string;
      if (b & 0x80) {
        [name, value] = entry(int(7), false);
      } else if (b & 0x40) {
        const index = int(6);
        name = index === 0 ? str() : entry(index, true)[0];
        value = str();
        this.#add(name, value);
      } else if (b & 0x20) {
        if (fieldSeen) throw new HpackError('table size update after a field');
        const max = int(5);
        if (max > this.#limit)
          throw new HpackError(`table size update to ${max} above the ${this.#limit} allowed`);
        this.#max = max;
        this.#evict(0);
        continue;
      } else {
        const index = int(4);
        name = index === 0 ? str() : entry(index, true)[0];
        value = str();
      }
      fieldSeen = true;
      size += name.length + value.length + 32;
      if (size > this.#maxList) throw new HpackError(`header list above ${this.#maxList} octets decoded`);
      out.push(name, value);
    }
    this.listSize = size;
    return out;
  }

  #add(name: string, value: string): void {
    const size = name.length + value.length + 32;
    this.#evict(size);
    if (size > this.#max) return; // §4.4: a too-large entry empties the table and is not added
    this.#table.push(name, value);
    this.#size += size;
  }

  /** Drops the oldest entries until `room` more fits under the maximum (§4.4). */
  #evict(room: number): void {
    let drop = 0;
    while (this.#size + room > this.#max && drop < this.#table.length) {
      this.#size -= (this.#table[drop] as string).length + (this.#table[drop + 1] as string).length + 32;
      drop += 2;
    }
    if (drop > 0) this.#table.splice(0, drop);
  }

  /** For tests: the dynamic table's size in octets (§4.1). */
  get size(): number {
    return this.#size;
  }
}

/** Static-table index of each name (first occurrence), for literal fields with an indexed name. */
const NAME_INDEX = new Map<string, number>();
for (let i = STATIC.length - 1; i >= 0; i--)
  NAME_INDEX.set((STATIC[i] as readonly [string, string])[0], i + 1);

function intLength(v: number, prefix: number): number {
  const mask = (1 << prefix) - 1;
  if (v < mask) return 1;
  let n = 2;
  for (v -= mask; v >= 128; v = Math.floor(v / 128)) n++;
  return n;
}

function writeInt(out: Buffer, p: number, v: number, prefix: number, flags: number): number {
  const mask = (1 << prefix) - 1;
  if (v < mask) {
    out[p++] = flags | v;
    return p;
  }
  out[p++] = flags | mask;
  for (v -= mask; v >= 128; v = Math.floor(v / 128)) out[p++] = (v % 128) | 0x80;
  out[p++] = v;
  return p;
}

/**
 * Encodes fields ([name, value, …], latin1) as literals without indexing (§6.2.2), no
 * Huffman: stateless, so blocks on one connection may be sent in any order.
 */
export function encodeBlock(fields: readonly string[]): Buffer {
  let len = 0;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const value = fields[i + 1] as string;
    const index = NAME_INDEX.get(name);
    len += index === undefined ? 1 + intLength(name.length, 7) + name.length : intLength(index, 4);
    len += intLength(value.length, 7) + value.length;
  }
  const out = Buffer.allocUnsafe(len);
  let p = 0;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const value = fields[i + 1] as string;
    const index = NAME_INDEX.get(name);
    if (index === undefined) {
      out[p++] = 0;
      p = writeInt(out, p, name.length, 7, 0);
      p += out.write(name, p, 'latin1');
    } else p = writeInt(out, p, index, 4, 0);
    p = writeInt(out, p, value.length, 7, 0);
    p += out.write(value, p, 'latin1');
  }
  return out;
}
