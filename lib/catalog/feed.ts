/**
 * The catalog feed's body (after `EDGEMESH/1 FEED <revision>\n`, lib/gateway-protocol.ts):
 * newline-delimited JSON, one object per line, UTF-8.
 *
 *   {"type":"snapshot","catalog":{...}}                         always the first line
 *   {"type":"service","revision":N,"key":"ns/name","entry":{...}|null}
 *   {"type":"pod","revision":N,"ip":"10.244.1.7","pod":{...}|null}
 *   {"type":"node","revision":N,"name":"edge-a","node":{...}|null}
 *   {"type":"keepalive","revision":N}                           every KEEPALIVE_INTERVAL_MS
 *
 * Increments carry the revision they produce (previous + 1). A keepalive carries the
 * gateway's current revision: a receiver whose catalog is behind it missed an update. A
 * receiver that sees a gap, an invalid line, or silence for FEED_IDLE_TIMEOUT_MS drops the
 * connection and asks again (and gets a new snapshot). Lines are at most MAX_FEED_LINE_BYTES.
 */
import type { CatalogUpdate } from './types.ts';
import { validateUpdate } from './validate.ts';

export const MAX_FEED_LINE_BYTES = 32 * 1024 * 1024;
export const KEEPALIVE_INTERVAL_MS = 15_000;
/** Three missed keepalives: the gateway (or the path to it) is gone. */
export const FEED_IDLE_TIMEOUT_MS = 45_000;

export type Keepalive = { type: 'keepalive'; revision: number };
export type FeedLine = CatalogUpdate | Keepalive;

export const encodeFeedLine = (line: FeedLine): string => `${JSON.stringify(line)}\n`;

/** Parses and validates one line (without its "\n"); throws an Error that says what is wrong. */
export function decodeFeedLine(text: string): FeedLine {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`feed line is not JSON: ${(err as Error).message}`);
  }
  const o = doc as Record<string, unknown>;
  if (typeof doc === 'object' && doc !== null && o.type === 'keepalive') {
    const keys = Object.keys(o);
    const revision = o.revision;
    if (
      keys.length !== 2 ||
      typeof revision !== 'number' ||
      !Number.isSafeInteger(revision) ||
      revision < 0
    ) {
      throw new Error('keepalive line must be {"type":"keepalive","revision":N}');
    }
    return { type: 'keepalive', revision };
  }
  return validateUpdate(doc);
}

/**
 * Splits a byte stream into lines without holding more than `maxBytes` of one line: a peer
 * that never sends a newline cannot make us buffer forever.
 */
export class LineSplitter {
  readonly #maxBytes: number;
  #chunks: Buffer[] = [];
  #length = 0;

  constructor(maxBytes = MAX_FEED_LINE_BYTES) {
    this.#maxBytes = maxBytes;
  }

  /** Returns the complete lines in `chunk` (with what was buffered before); throws when a line is too long. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    let nl = chunk.indexOf(0x0a);
    while (nl !== -1) {
      if (this.#length + (nl - start) > this.#maxBytes)
        throw new Error(`feed line longer than ${this.#maxBytes} bytes`);
      if (this.#chunks.length === 0) {
        // The whole line is in this chunk (the usual case): decode it where it lies.
        lines.push(chunk.toString('utf8', start, nl));
      } else {
        this.#chunks.push(chunk.subarray(start, nl));
        lines.push(Buffer.concat(this.#chunks).toString('utf8'));
        this.#chunks = [];
        this.#length = 0;
      }
      start = nl + 1;
      nl = chunk.indexOf(0x0a, start);
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.#length += rest.length;
      if (this.#length > this.#maxBytes) throw new Error(`feed line longer than ${this.#maxBytes} bytes`);
      this.#chunks.push(rest);
    }
    return lines;
  }
}
