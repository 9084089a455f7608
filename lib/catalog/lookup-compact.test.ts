import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  compactAnswerHead,
  compactServiceTail,
  decodeCompactAnswer,
  escapeToken,
  parseFormatLine,
} from './lookup-compact.ts';
import { CATALOGS } from './testing/fuzz.ts';
import type { ServiceEntry } from './types.ts';
import { validateServiceEntry } from './validate.ts';

// The compact service answer (format 2 of the LOOKUP body). The golden file pins the wire
// form: a sidecar and a gateway built from different commits must read each other's lines.
// REFRESH_GOLDEN=1 rewrites it (a changed line is a protocol change: a new format number).
const GOLDEN = join(import.meta.dirname, 'testdata', 'lookup-compact.golden.txt');
const refresh = process.env.REFRESH_GOLDEN === '1';

const entries = (): [string, ServiceEntry][] =>
  CATALOGS.flatMap((c) => Object.entries(c.services)).sort(([a], [b]) => a.localeCompare(b));
const line = (id: number, revision: number, key: string, e: ServiceEntry) =>
  compactAnswerHead(id, revision) + compactServiceTail(key, e);
/** One line, with or without its "\n" (the reader gets it without, as the splitter gives it). */
const decode = (text: string) => {
  const b = Buffer.from(text.replace(/\n$/, ''));
  return decodeCompactAnswer(b, 0, b.length);
};

describe('compact service answer (lib/catalog/lookup-compact.ts)', () => {
  it('writes the golden lines for every service of the golden catalogs', () => {
    const text = entries()
      .map(([key, e], i) => line(i + 1, 40 + i, key, e))
      .join('');
    if (refresh) writeFileSync(GOLDEN, text);
    expect(text).toBe(readFileSync(GOLDEN, 'utf8'));
  });

  it('reads the golden lines back to the catalogs’ entries (validated, canonical)', () => {
    const lines = readFileSync(GOLDEN, 'utf8').split('\n').filter(Boolean);
    const want = entries();
    expect(lines).toHaveLength(want.length);
    lines.forEach((l, i) => {
      const got = decode(l);
      expect(got).toEqual({
        id: i + 1,
        revision: 40 + i,
        key: want[i][0],
        entry: validateServiceEntry(structuredClone(want[i][1])),
      });
    });
  });

  it('shares one port array between endpoints with equal ports, as the sidecar holds them', () => {
    const e = entries().find(([, x]) => x.endpoints.length > 1 && x.endpoints[0].ports.length > 0);
    expect(e).toBeDefined();
    const [key, entry] = e!;
    const got = decode(line(1, 1, key, entry)).entry;
    expect(got.endpoints[1].ports).toBe(got.endpoints[0].ports);
  });

  it('escapes what is not a plain token, and reads it back', () => {
    expect(escapeToken('kubernetes.io/h2c')).toBe('kubernetes.io%2Fh2c');
    expect(escapeToken('a b\n%é')).toBe('a%20b%0A%25%C3%A9');
    const [key, entry] = entries()[0];
    const e = structuredClone(entry);
    e.service.hashHeader = 'x-user';
    e.service.ports = [{ name: 'web', port: 80, protocol: 'TCP', appProtocol: 'kubernetes.io/h2c' }];
    const got = decode(line(3, 4, key, e)).entry;
    expect(got.service.hashHeader).toBe('x-user');
    expect(got.service.ports).toEqual(e.service.ports);
  });

  it('refuses bad lines with an error that says what is wrong', () => {
    const [key, entry] = entries()[0];
    const good = line(7, 9, key, entry).slice(0, -1);
    const cases: [string, RegExp][] = [
      ['', /marker missing/],
      ['X 1 1 a/b', /must start with "S "/],
      [good.replace('S 7 ', 'S 0 '), /id must be 1\.\./],
      [good.replace('S 7 ', 'S 07 '), /id is not a decimal integer/],
      [good.replace('S 7 9 ', 'S 7 -1 '), /revision is not a decimal/],
      [`${good} extra`, /tokens after the last endpoint/],
      [good.replace(` ${key} `, ' nokey '), /namespace/],
      [good.replace(` ${key} `, ' a/b/c '), /name/],
      [good.replace(` ${key} `, `  ${key} `), /is empty/],
      [`S 7 9 ${key} Q - - - r - - - - 0`, /type is not one of C N L E/],
      [`S 7 9 ${key} C - hh - r - - - - 0`, /flags must be letters/],
      [`S 7 9 ${key} C - - - r x - - - 0`, /externalName must be - or =<value>/],
      [`S 7 9 ${key} C - - - r - - - ^ 0`, /ports is \^ with no previous list/],
      [`S 7 9 ${key} C - - - r - - - web/80/Q 0`, /protocol must be T, U or S/],
      [`S 7 9 ${key} C - - - r - - - web/80 0`, /name\/port\/protocol/],
      [`S 7 9 ${key} C - - - r - - - - 1 10.0.0.1 rs`, /endpoint ports missing/],
      [`S 7 9 ${key} C - - - r - - - - 1 10.0.0.1 rs - =%ZZ - -`, /bad %-escape/],
      [`S 7 9 ${key} C - - - r - - - - 1 999.0.0.1 rs - - - -`, /ip/],
      [`S 7 9 ${key} C - - - r - - - - 3 10.0.0.1 rs - - - -`, /endpoint count must be 0\.\.1/],
      [`S 7 9 ${key} C - - - r - - - - 10001 10.0.0.1 rs - - - -`, /endpoint count must be/],
    ];
    for (const [text, message] of cases) expect(() => decode(text), text).toThrow(message);
    const b = Buffer.from(`${good.slice(0, 12)}\u00e9${good.slice(12)}`);
    expect(() => decodeCompactAnswer(b, 0, b.length)).toThrow(/0x7f|escape|key|not/);
  });

  it('reads a line in the middle of a buffer, strings not views of it', () => {
    const [key, entry] = entries()[0];
    const text = line(5, 6, key, entry);
    const b = Buffer.from(`junk\n${text}more`);
    const got = decodeCompactAnswer(b, 5, 5 + text.length - 1);
    expect(got.key).toBe(key);
    b.fill(0x7a);
    expect(got.entry).toEqual(validateServiceEntry(structuredClone(entry)));
  });

  it('parses the format line', () => {
    expect(parseFormatLine('F 2')).toBe(2);
    expect(parseFormatLine('F 1')).toBe(1);
    for (const bad of ['F', 'F 0', 'F 100', 'F 2 ', 'F x', '{"type":"keepalive"}'])
      expect(() => parseFormatLine(bad)).toThrow(/format line must be/);
  });
});
