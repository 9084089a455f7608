/**
 * The C framing (sidecar/native/http1.c, through the l4 addon's test entry points) held to
 * parse.ts: both parsers read the same bytes and their answers are put in one shape, so a
 * test compares them with one toEqual. Used by the golden cases (../native-parse.test.ts) and
 * the differential fuzz (./fuzz.ts).
 */
import { loadAddon, type NativeHead } from '../../native-l4.ts';
import { ChunkedScanner, HttpError, parseRequestHead, parseResponseHead, rewriteHead } from '../parse.ts';

export type Kind = 'request' | 'response' | 'response-to-head';

/** One parser's answer: incomplete, refused (status + message), or the framing fields. */
export type Verdict =
  | 'incomplete'
  | { refused: string }
  | {
      method: string;
      target: string;
      status: number;
      minor: number;
      headEnd: number;
      contentLength: number;
      keepAliveMs: number;
      chunked: boolean;
      close: boolean;
      upgrade: boolean;
      untilClose: boolean;
      /** Dropped line ranges, sorted, each once: "start-end". */
      drop: string[];
      /** The forwarded head, hex. */
      forwarded: string;
    };

const ranges = (drop: readonly number[]): string[] => {
  const out = new Set<string>();
  for (let k = 0; k < drop.length; k += 2) out.add(`${drop[k]}-${drop[k + 1]}`);
  return [...out].sort((a, b) => Number(a.split('-')[0]) - Number(b.split('-')[0]));
};

export function jsVerdict(buf: Buffer, kind: Kind): Verdict {
  try {
    const head =
      kind === 'request'
        ? parseRequestHead(buf)
        : parseResponseHead(buf, kind === 'response' ? 'GET' : 'HEAD');
    if (!head) return 'incomplete';
    return {
      method: head.method,
      target: head.target,
      status: head.status,
      minor: head.minor,
      headEnd: head.headEnd,
      contentLength: head.contentLength,
      keepAliveMs: head.keepAliveMs,
      chunked: head.chunked,
      close: head.close,
      upgrade: head.upgrade,
      untilClose: head.untilClose,
      drop: ranges(head.drop),
      forwarded: rewriteHead(buf, head).toString('hex'),
    };
  } catch (err) {
    if (err instanceof HttpError) return { refused: `${err.status} ${err.message}` };
    throw err;
  }
}

type Addon = Exclude<ReturnType<typeof loadAddon>, Error>;

/** The addon, or the error saying why it is not built. */
export function nativeParser(): Addon {
  const addon = loadAddon();
  if (addon instanceof Error) throw addon;
  return addon;
}

export function nativeVerdict(addon: Addon, buf: Buffer, kind: Kind): Verdict {
  const h: NativeHead | undefined = addon.httpParse(buf, kind !== 'request', kind === 'response-to-head');
  if (h === undefined) return 'incomplete';
  if (h.error !== undefined) return { refused: `${h.status} ${h.error}` };
  return {
    method: h.method ?? '',
    target: h.target ?? '',
    status: h.status,
    minor: h.minor,
    headEnd: h.headEnd,
    contentLength: h.contentLength,
    keepAliveMs: h.keepAliveMs,
    chunked: h.chunked,
    close: h.close,
    upgrade: h.upgrade,
    untilClose: h.untilClose,
    drop: ranges(h.drop),
    forwarded: h.rewritten.toString('hex'),
  };
}

/** parse.ts's ChunkedScanner over `buf` fed in pieces ending at `cuts`: index past the end, -1, or the error. */
export function jsChunked(buf: Buffer, cuts: readonly number[]): number | string {
  const scanner = new ChunkedScanner(400);
  let at = 0;
  for (const cut of [...cuts, buf.length]) {
    const to = Math.min(buf.length, Math.max(at, cut));
    try {
      const end = scanner.feed(buf.subarray(at, to));
      if (end >= 0) return at + end;
    } catch (err) {
      if (err instanceof HttpError) return err.message;
      throw err;
    }
    at = to;
  }
  return -1;
}
