/**
 * Go-style durations ("120s", "1m30s", "1.5h", "500ms"), the syntax of Go's time.ParseDuration
 * that Kubernetes users already write in annotations and flags. Pure.
 *
 *   duration = [sign] (number unit)+ | "0"
 *   number   = digits [ "." digits ] | "." digits
 *   unit     = "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h"
 *
 * As Go: a unit is required after every number (a bare "30" is refused, so nobody is left to
 * guess seconds or milliseconds), "0" alone is allowed, spaces are not. Unlike Go the result is
 * a float in milliseconds (callers range-check and round), and a negative duration is parsed
 * (the caller's range refuses it with the value in the message).
 */

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3, // U+00B5 micro sign
  μs: 1e-3, // U+03BC Greek small letter mu
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
};

/** One `number unit` term, anchored at the current position (sticky). */
const TERM = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
/** Longer than any sane duration: refused before the regex walks it. */
const MAX_TEXT = 64;

/** `text` as milliseconds, or undefined when it is not a Go duration. */
export function parseGoDuration(text: string): number | undefined {
  if (typeof text !== 'string' || text.length === 0 || text.length > MAX_TEXT) return undefined;
  let pos = 0;
  let sign = 1;
  if (text[0] === '-' || text[0] === '+') {
    sign = text[0] === '-' ? -1 : 1;
    pos = 1;
  }
  if (text.slice(pos) === '0') return 0;
  if (pos === text.length) return undefined;
  let total = 0;
  while (pos < text.length) {
    TERM.lastIndex = pos;
    const m = TERM.exec(text);
    if (!m) return undefined;
    total += Number(m[1]) * UNIT_MS[m[2]];
    pos = TERM.lastIndex;
  }
  return sign * total;
}
