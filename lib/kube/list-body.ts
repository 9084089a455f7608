/**
 * A LIST answer decoded item by item as its body streams in, so a gateway never holds a whole
 * body, its string and its parse at once. KubeEdge's edge API (and this repo's fake API)
 * ignore `limit` and answer 10,000 EndpointSlices in one ~35 MB page; read whole, that page,
 * its string, its parse and the catalog being built existed together, in one synchronous
 * stretch the heap budget (lib/heap.ts) cannot act inside (docs/scale.md, round 4).
 *
 *   {"kind":"EndpointSliceList","apiVersion":"…","metadata":{"resourceVersion":"7","continue":"…"},
 *    "items":[ITEM,ITEM,…]}          keys in any order; only `items` must be there
 *
 * Pure, byte by byte: a small scanner walks the top-level object and the `items` array, and
 * each value it meets (each ITEM, `metadata`, every other key's value, every key) is cut out
 * and handed to JSON.parse on its own, so JSON.parse still checks every byte of the body.
 * The scanner only counts brackets and quotes inside those values: every structural character
 * is ASCII and every byte of a multi-byte UTF-8 sequence is ≥ 0x80, so a chunk may end
 * anywhere, inside a string, an escape or a character. What is held at once is the value being
 * cut (at most `maxValueBytes`) and the chunks it spans.
 *
 * Errors are ListBodyErrors naming the resource, the problem and the byte offset in the body.
 */

export interface ListMeta {
  /** `metadata.resourceVersion` ('' when absent). */
  resourceVersion: string;
  /** `metadata.continue` ('' when absent: the last page). */
  continue: string;
  /** Elements of `items` handed over. */
  count: number;
}

/** A LIST body that is not a List: `problem` and `offset` (bytes from the body's start). */
export class ListBodyError extends Error {
  readonly resource: string;
  readonly problem: string;
  readonly offset: number;
  constructor(resource: string, problem: string, offset: number) {
    super(`LIST ${resource}: ${problem} at byte ${offset}`);
    this.name = 'ListBodyError';
    this.resource = resource;
    this.problem = problem;
    this.offset = offset;
  }
}

/**
 * One value larger than this is refused: the API server stores objects of 1.5 MiB at most
 * (etcd's default request limit), so 8 MiB leaves room without letting a body grow unbounded.
 */
export const MAX_VALUE_BYTES = 8 * 1024 * 1024;
/** A top-level key longer than this is not a List's. */
const MAX_KEY_BYTES = 1024;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

// Where the scanner is (outside a value being cut).
const BEFORE_BODY = 0; // expecting '{'
const KEY_OR_END = 1; // after '{': a key or '}'
const KEY = 2; // after ',': a key
const COLON_NEXT = 3; // after a key
const VALUE = 4; // after ':'
const AFTER_VALUE = 5; // ',' or '}'
const ITEM_OR_END = 6; // after "items":[ : an item or ']'
const ITEM = 7; // after ',' in items
const AFTER_ITEM = 8; // ',' or ']'
const DONE = 9; // after the closing '}': only whitespace
const CUTTING = 10; // inside a value being cut out
const FAILED = 11;

// What the value being cut is.
const CUT_KEY = 0;
const CUT_ITEM = 1;
const CUT_METADATA = 2;
const CUT_OTHER = 3;

const EXPECTED: Record<number, string> = {
  [BEFORE_BODY]: "expected '{' (a List object)",
  [KEY_OR_END]: "expected a key or '}'",
  [KEY]: 'expected a key',
  [COLON_NEXT]: "expected ':'",
  [AFTER_VALUE]: "expected ',' or '}'",
  [AFTER_ITEM]: "expected ',' or ']' in items",
  [DONE]: 'expected nothing after the List',
};

/** A byte as a person reads it in an error. */
const shown = (c: number) =>
  c >= 0x21 && c < 0x7f ? `'${String.fromCharCode(c)}'` : `byte 0x${c.toString(16)}`;

export class ListBodyDecoder {
  readonly #resource: string;
  readonly #onItem: (item: unknown) => void;
  readonly #maxValueBytes: number;
  /** Bytes of the body before the current chunk. */
  #base = 0;
  #state = BEFORE_BODY;
  #error: ListBodyError | undefined;
  #key = '';
  #sawItems = false;
  #sawMetadata = false;
  #metadata: unknown;
  #count = 0;

  // The value being cut: what it is, where it started, the pieces of earlier chunks it spans.
  #cut = CUT_OTHER;
  #cutStart = 0;
  #pieces: Buffer[] = [];
  #held = 0;
  #scalar = false;
  #depth = 0;
  #inString = false;
  #escaped = false;

  /** `resource` names the collection in errors (e.g. `/api/v1/services`). */
  constructor(resource: string, onItem: (item: unknown) => void, opts: { maxValueBytes?: number } = {}) {
    this.#resource = resource;
    this.#onItem = onItem;
    this.#maxValueBytes = opts.maxValueBytes ?? MAX_VALUE_BYTES;
  }

  /** Bytes held for the value being cut (the fuzz test's bound). */
  get held(): number {
    return this.#held;
  }

  /** The next piece of the body. Throws a ListBodyError (and every later call throws it too). */
  write(chunk: Buffer): void {
    if (this.#error) throw this.#error;
    const n = chunk.length;
    let i = 0;
    try {
      while (i < n) {
        if (this.#state === CUTTING) {
          i = this.#scan(chunk, i);
          continue;
        }
        const c = chunk[i];
        if (isSpace(c)) {
          i++;
          continue;
        }
        i = this.#step(chunk, i, c);
      }
      if (this.#state === CUTTING)
        this.#hold(chunk.subarray(this.#cutStart > this.#base ? this.#cutStart - this.#base : 0));
    } catch (err) {
      // An error of onItem's own is passed on as it is; the body is not read further either way.
      this.#error ??= new ListBodyError(
        this.#resource,
        'decoding stopped by an earlier error',
        this.#base + i,
      );
      this.#state = FAILED;
      this.#pieces = [];
      this.#held = 0;
      throw err;
    } finally {
      this.#base += n;
    }
  }

  /** The body ended: its metadata, or a ListBodyError when it was cut short or held no items. */
  end(): ListMeta {
    if (this.#error) throw this.#error;
    if (this.#state !== DONE) {
      const problem =
        this.#state === BEFORE_BODY
          ? 'the body is empty'
          : this.#state === CUTTING ||
              this.#state === ITEM ||
              this.#state === ITEM_OR_END ||
              this.#state === AFTER_ITEM
            ? `the body ends inside ${this.#where()} (truncated)`
            : 'the body ends before the List does (truncated)';
      throw this.#fail(problem, this.#base);
    }
    if (!this.#sawItems) throw this.#fail('not a list: no items', this.#base);
    const m = this.#metadata as { resourceVersion?: unknown; continue?: unknown } | null | undefined;
    const text = (v: unknown) => (typeof v === 'string' ? v : '');
    const isObject = typeof m === 'object' && m !== null;
    return {
      resourceVersion: isObject ? text(m.resourceVersion) : '',
      continue: isObject ? text(m.continue) : '',
      count: this.#count,
    };
  }

  #fail(problem: string, offset: number): ListBodyError {
    this.#error = new ListBodyError(this.#resource, problem, offset);
    this.#state = FAILED;
    return this.#error;
  }

  #where(): string {
    if (this.#state === CUTTING && this.#cut === CUT_KEY) return 'a key';
    if (this.#state === CUTTING && this.#cut !== CUT_ITEM) return `the value of ${JSON.stringify(this.#key)}`;
    if (this.#state === CUTTING) return `items[${this.#count}]`;
    return 'items';
  }

  /** One structural byte `c` at `chunk[i]` outside a value; returns the next index. */
  #step(chunk: Buffer, i: number, c: number): number {
    switch (this.#state) {
      case BEFORE_BODY:
        if (c !== OPEN_BRACE) break;
        this.#state = KEY_OR_END;
        return i + 1;
      case KEY_OR_END:
      case KEY:
        if (c === CLOSE_BRACE && this.#state === KEY_OR_END) {
          this.#state = DONE;
          return i + 1;
        }
        if (c !== QUOTE) break;
        return this.#begin(CUT_KEY, chunk, i);
      case COLON_NEXT:
        if (c !== COLON) break;
        this.#state = VALUE;
        return i + 1;
      case VALUE:
        if (this.#key === 'items') {
          if (this.#sawItems) throw this.#fail('items appears twice', this.#base + i);
          if (c !== OPEN_BRACKET)
            throw this.#fail(`items is not an array (starts with ${shown(c)})`, this.#base + i);
          this.#sawItems = true;
          this.#state = ITEM_OR_END;
          return i + 1;
        }
        if (this.#key === 'metadata') {
          if (this.#sawMetadata) throw this.#fail('metadata appears twice', this.#base + i);
          this.#sawMetadata = true;
          return this.#begin(CUT_METADATA, chunk, i);
        }
        return this.#begin(CUT_OTHER, chunk, i);
      case AFTER_VALUE:
        if (c === COMMA) this.#state = KEY;
        else if (c === CLOSE_BRACE) this.#state = DONE;
        else break;
        return i + 1;
      case ITEM_OR_END:
      case ITEM:
        if (c === CLOSE_BRACKET && this.#state === ITEM_OR_END) {
          this.#state = AFTER_VALUE;
          return i + 1;
        }
        if (c === CLOSE_BRACKET) throw this.#fail("expected an item after ',' in items", this.#base + i);
        return this.#begin(CUT_ITEM, chunk, i);
      case AFTER_ITEM:
        if (c === COMMA) this.#state = ITEM;
        else if (c === CLOSE_BRACKET) this.#state = AFTER_VALUE;
        else break;
        return i + 1;
    }
    throw this.#fail(`${EXPECTED[this.#state] ?? 'unexpected'}, found ${shown(c)}`, this.#base + i);
  }

  /** Starts cutting a value whose first byte is `chunk[i]`; returns the next index to scan. */
  #begin(cut: number, chunk: Buffer, i: number): number {
    const c = chunk[i];
    this.#state = CUTTING;
    this.#cut = cut;
    this.#cutStart = this.#base + i;
    this.#pieces = [];
    this.#held = 0;
    this.#depth = 0;
    this.#escaped = false;
    // A string, an object or an array ends at its closing byte; a number, true, false or null
    // (or garbage: JSON.parse says what is wrong) at the first delimiter after it.
    this.#inString = c === QUOTE;
    this.#scalar = !this.#inString && c !== OPEN_BRACE && c !== OPEN_BRACKET;
    return this.#inString ? i + 1 : i;
  }

  /** Scans the value being cut from `chunk[i]`; finishes it when it ends. Returns the next index. */
  #scan(chunk: Buffer, i: number): number {
    const n = chunk.length;
    let depth = this.#depth;
    let inString = this.#inString;
    let escaped = this.#escaped;
    let end = -1;
    if (this.#scalar) {
      for (; i < n; i++) {
        const c = chunk[i];
        if (c === COMMA || c === CLOSE_BRACE || c === CLOSE_BRACKET || isSpace(c)) {
          end = i;
          break;
        }
      }
    } else {
      for (; i < n; i++) {
        const c = chunk[i];
        if (inString) {
          if (escaped) escaped = false;
          else if (c === BACKSLASH) escaped = true;
          else if (c === QUOTE) {
            inString = false;
            if (depth === 0) {
              end = i + 1;
              break;
            }
          }
        } else if (c === QUOTE) inString = true;
        else if (c === OPEN_BRACE || c === OPEN_BRACKET) depth++;
        else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
          if (--depth === 0) {
            end = i + 1;
            break;
          }
        }
      }
    }
    this.#depth = depth;
    this.#inString = inString;
    this.#escaped = escaped;
    const size = (end < 0 ? n : end) + this.#base - this.#cutStart;
    const limit = this.#cut === CUT_KEY ? MAX_KEY_BYTES : this.#maxValueBytes;
    if (size > limit) throw this.#fail(`${this.#where()} is larger than ${limit} bytes`, this.#cutStart);
    if (end < 0) return n; // continues in the next chunk (write() keeps this one's part)
    this.#finish(chunk.subarray(Math.max(0, this.#cutStart - this.#base), end));
    return end;
  }

  /** Keeps the part of this chunk that belongs to the value being cut. */
  #hold(part: Buffer): void {
    this.#pieces.push(part);
    this.#held += part.length;
  }

  /** The value is whole: parse it and hand it on. `last` is its part in the current chunk. */
  #finish(last: Buffer): void {
    const bytes = this.#pieces.length === 0 ? last : Buffer.concat([...this.#pieces, last]);
    this.#pieces = [];
    this.#held = 0;
    let value: unknown;
    try {
      value = JSON.parse(bytes.toString('utf8'));
    } catch (err) {
      throw this.#fail(`${this.#where()} is not JSON (${(err as Error).message})`, this.#cutStart);
    }
    switch (this.#cut) {
      case CUT_KEY:
        this.#key = value as string;
        this.#state = COLON_NEXT;
        return;
      case CUT_ITEM:
        this.#state = AFTER_ITEM;
        this.#count++;
        this.#onItem(value);
        return;
      case CUT_METADATA:
        this.#metadata = value;
        this.#state = AFTER_VALUE;
        return;
      default:
        this.#state = AFTER_VALUE;
    }
  }
}
