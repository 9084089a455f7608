import { describe, expect, it } from 'vitest';
import { jsChunked, jsVerdict, type Kind, nativeParser, nativeVerdict } from './testing/native-compare.ts';

// The native engine's HTTP/1.1 framing (sidecar/native/http1.c) must read every head as
// parse.ts does: each case names what both must answer, and the two must agree field by field.
const addon = nativeParser();
const b = (s: string) => Buffer.from(s, 'latin1');

const CASES: [string, Kind, string, string | Record<string, unknown>][] = [
  [
    'plain GET',
    'request',
    'GET /a HTTP/1.1\r\nHost: w\r\n\r\n',
    { method: 'GET', contentLength: -1, drop: [] },
  ],
  ['incomplete', 'request', 'GET /a HTTP/1.1\r\nHost: w\r\n', 'incomplete'],
  ['leading CRLFs', 'request', '\r\n\r\nGET / HTTP/1.1\r\n\r\n', { method: 'GET', headEnd: 22 }],
  [
    'Content-Length list',
    'request',
    'POST / HTTP/1.1\r\nContent-Length: 4 , 4\r\n\r\n',
    { contentLength: 4 },
  ],
  ['chunked', 'request', 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n', { chunked: true }],
  [
    'hop-by-hop lines',
    'request',
    'GET / HTTP/1.1\r\nConnection: close, X-A\r\nX-A: 1\r\nTE: gzip\r\nTE: trailers\r\nProxy-Connection: k\r\n\r\n',
    { close: true, drop: ['16-40', '40-48', '48-58', '72-93'] },
  ],
  ['upgrade', 'request', 'GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n', { upgrade: true }],
  ['HTTP/1.0 closes', 'request', 'GET / HTTP/1.0\r\n\r\n', { minor: 0, close: true }],
  [
    'HTTP/1.0 keep-alive',
    'request',
    'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n',
    { minor: 0, close: false },
  ],
  [
    'CL + TE',
    'request',
    'POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n',
    { refused: '400 both Content-Length and Transfer-Encoding' },
  ],
  [
    'TE not chunked last',
    'request',
    'POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n',
    { refused: '400 Transfer-Encoding after chunked' },
  ],
  [
    'TE gzip only',
    'request',
    'POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n',
    { refused: '400 Transfer-Encoding without chunked last' },
  ],
  [
    'TE on 1.0',
    'request',
    'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n',
    { refused: '400 Transfer-Encoding in an HTTP/1.0 request' },
  ],
  [
    'two lengths',
    'request',
    'POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n',
    { refused: '400 bad Content-Length' },
  ],
  [
    'NBSP in a length',
    'request',
    'POST / HTTP/1.1\r\nContent-Length: \xa03\r\n\r\n',
    { refused: '400 bad Content-Length' },
  ],
  [
    '16 digits',
    'request',
    'POST / HTTP/1.1\r\nContent-Length: 1234567890123456\r\n\r\n',
    { refused: '400 bad Content-Length' },
  ],
  [
    'obs-fold',
    'request',
    'GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n',
    { refused: '400 obs-fold (folded header line)' },
  ],
  ['space before colon', 'request', 'GET / HTTP/1.1\r\nHost : w\r\n\r\n', { refused: '400 bad header name' }],
  [
    'bare LF',
    'request',
    'GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n',
    { refused: '400 bad character in a header value' },
  ],
  ['bad version', 'request', 'GET / HTTP/2.0\r\n\r\n', { refused: '400 bad request line (version)' }],
  [
    'CONNECT',
    'request',
    'CONNECT a:443 HTTP/1.1\r\n\r\n',
    { refused: '405 CONNECT is not proxied on service ports' },
  ],
  [
    'head too large',
    'request',
    `GET / HTTP/1.1\r\nA: ${'x'.repeat(33_000)}`,
    { refused: '431 request head too large' },
  ],
  [
    'too many fields',
    'request',
    `GET / HTTP/1.1\r\n${'A: b\r\n'.repeat(101)}\r\n`,
    { refused: '431 too many header fields' },
  ],
  [
    'response with length',
    'response',
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5, max=9\r\n\r\nok',
    { status: 200, contentLength: 2, keepAliveMs: 5000 },
  ],
  ['response until close', 'response', 'HTTP/1.1 200 OK\r\n\r\n', { untilClose: true, close: true }],
  [
    'response TE + CL',
    'response',
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n',
    { chunked: true, close: true, contentLength: -1 },
  ],
  [
    'response to HEAD',
    'response-to-head',
    'HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n',
    { contentLength: 0 },
  ],
  [
    '204',
    'response',
    'HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n',
    { contentLength: 0, chunked: false },
  ],
  [
    'quoted keep-alive',
    'response',
    'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nKeep-Alive: max=3; timeout="7"\r\n\r\n',
    { keepAliveMs: 7000 },
  ],
  ['bad status', 'response', 'HTTP/1.1 600 X\r\n\r\n', { refused: '502 bad status code' }],
  [
    'bad response field',
    'response',
    'HTTP/1.1 200 OK\r\nA : b\r\n\r\n',
    { refused: '502 bad response: bad header name' },
  ],
];

describe('native HTTP/1.1 heads (http1.c) read as parse.ts reads them', () => {
  it.each(CASES)('%s', (_name, kind, text, expected) => {
    const native = nativeVerdict(addon, b(text), kind);
    expect(native).toEqual(jsVerdict(b(text), kind));
    if (typeof expected === 'string') expect(native).toBe(expected);
    else expect(native).toMatchObject(expected);
  });

  it('forwards the head without its hop-by-hop lines', () => {
    const text = 'GET / HTTP/1.1\r\nConnection: x-a\r\nX-A: 1\r\nHost: w\r\n\r\n';
    const native = nativeVerdict(addon, b(text), 'request');
    expect(
      typeof native === 'object' && 'forwarded' in native && Buffer.from(native.forwarded, 'hex').toString(),
    ).toBe('GET / HTTP/1.1\r\nHost: w\r\n\r\n');
  });
});

describe('native chunked scanner', () => {
  it.each([
    ['5\r\nhello\r\n0\r\n\r\nNEXT', [], 15],
    ['5\r\nhello\r\n0\r\n\r\nNEXT', [1, 4, 9, 13], 15],
    ['5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n', [6], 25],
    ['5\r\nhello\r\n0\r\n', [], -1],
    ['5\r\nhelloX\r\n', [], 'bad chunked body: chunk data longer than its size'],
    ['g\r\n', [], 'bad chunked body: bad chunk size'],
    ['1234567890123\r\n', [], 'bad chunked body: chunk size too large'],
  ])('%j cut at %j', (text, cuts, expected) => {
    const native = addon.httpChunked(b(text), cuts);
    expect(native).toBe(expected);
    expect(native).toBe(jsChunked(b(text), cuts));
  });
});
