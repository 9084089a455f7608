import { describe, expect, it } from 'vitest';
import {
  ChunkedScanner,
  HttpError,
  MAX_HEAD,
  parseRequestHead,
  parseResponseHead,
  rewriteHead,
} from './parse.ts';

const b = (s: string) => Buffer.from(s, 'latin1');

/** The parts of a Head a golden case compares (offsets as numbers, drops as the dropped text). */
function summary(text: string, kind: 'req' | 'resp', method = 'GET', pick?: string) {
  const buf = b(text);
  const head = kind === 'req' ? parseRequestHead(buf, pick) : parseResponseHead(buf, method);
  if (!head) return undefined;
  return {
    method: head.method,
    target: head.target,
    status: head.status,
    minor: head.minor,
    headEnd: head.headEnd,
    contentLength: head.contentLength,
    chunked: head.chunked,
    close: head.close,
    upgrade: head.upgrade,
    untilClose: head.untilClose,
    picked: head.picked,
    forwarded: rewriteHead(buf, head).toString('latin1'),
  };
}

function refusal(text: string, kind: 'req' | 'resp' = 'req'): string {
  try {
    if (kind === 'req') parseRequestHead(b(text));
    else parseResponseHead(b(text), 'GET');
  } catch (err) {
    if (err instanceof HttpError) return `${err.status} ${err.message}`;
    throw err;
  }
  return 'accepted';
}

describe('request heads (golden)', () => {
  it('a plain GET is forwarded byte for byte', () => {
    const text = 'GET /a?b=c HTTP/1.1\r\nHost: web\r\nAccept: */*\r\n\r\n';
    expect(summary(text, 'req')).toEqual({
      method: 'GET',
      target: '/a?b=c',
      status: 0,
      minor: 1,
      headEnd: text.length,
      contentLength: -1,
      chunked: false,
      close: false,
      upgrade: false,
      untilClose: false,
      picked: undefined,
      forwarded: text,
    });
  });

  it('incomplete heads wait; leading empty lines are skipped', () => {
    expect(summary('GET / HTTP/1.1\r\nHost: web\r\n', 'req')).toBeUndefined();
    expect(summary('\r\n\r\nGET / HTTP/1.1\r\n\r\n', 'req')?.target).toBe('/');
  });

  it('Content-Length, repeated equal values, a list of equal values', () => {
    expect(summary('POST / HTTP/1.1\r\ncontent-length: 12\r\n\r\n', 'req')?.contentLength).toBe(12);
    expect(
      summary('POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n', 'req')?.contentLength,
    ).toBe(5);
    expect(summary('POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\n', 'req')?.contentLength).toBe(5);
  });

  it('chunked, case-insensitive, after another coding', () => {
    expect(summary('POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n', 'req')?.chunked).toBe(true);
    expect(summary('POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n', 'req')?.chunked).toBe(true);
  });

  it('hop-by-hop lines are dropped, and the fields Connection names; te: trailers stays', () => {
    const s = summary(
      'GET / HTTP/1.1\r\nHost: w\r\nConnection: close, X-Foo\r\nKeep-Alive: 1\r\nX-Foo: a\r\nTE: trailers\r\nProxy-Connection: x\r\nX-Bar: b\r\n\r\n',
      'req',
    );
    expect(s?.close).toBe(true);
    expect(s?.forwarded).toBe('GET / HTTP/1.1\r\nHost: w\r\nTE: trailers\r\nX-Bar: b\r\n\r\n');
    expect(summary('GET / HTTP/1.1\r\nTE: gzip\r\n\r\n', 'req')?.forwarded).toBe('GET / HTTP/1.1\r\n\r\n');
  });

  it('Upgrade needs Connection: upgrade', () => {
    expect(
      summary('GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n', 'req')?.upgrade,
    ).toBe(true);
    expect(summary('GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n', 'req')?.upgrade).toBe(false);
  });

  it('HTTP/1.0 closes unless it asks for keep-alive', () => {
    expect(summary('GET / HTTP/1.0\r\n\r\n', 'req')?.close).toBe(true);
    expect(summary('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n', 'req')?.close).toBe(false);
  });

  it('the hash header is picked by name, whatever its case; values are trimmed', () => {
    expect(summary('GET / HTTP/1.1\r\nX-User:  alice \r\n\r\n', 'req', 'GET', 'x-user')?.picked).toBe(
      'alice',
    );
  });
});

describe('request heads refused', () => {
  const cases: [string, string][] = [
    [
      'POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n',
      '400 both Content-Length and Transfer-Encoding',
    ],
    [
      'POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 1\r\n\r\n',
      '400 both Content-Length and Transfer-Encoding',
    ],
    ['POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n', '400 bad Content-Length'],
    ['POST / HTTP/1.1\r\ncontent-length: 1, 2\r\n\r\n', '400 bad Content-Length'],
    ['POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n', '400 bad Content-Length'],
    ['POST / HTTP/1.1\r\ncontent-length: 0x10\r\n\r\n', '400 bad Content-Length'],
    ['POST / HTTP/1.1\r\ncontent-length: 1234567890123456\r\n\r\n', '400 bad Content-Length'],
    ['POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n', '400 Transfer-Encoding after chunked'],
    [
      'POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n',
      '400 Transfer-Encoding after chunked',
    ],
    ['POST / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n', '400 Transfer-Encoding without chunked last'],
    ['POST / HTTP/1.1\r\ntransfer-encoding: xchunked\r\n\r\n', '400 Transfer-Encoding without chunked last'],
    ['POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n', '400 Transfer-Encoding in an HTTP/1.0 request'],
    ['GET / HTTP/1.1\r\nx: a\r\n b\r\n\r\n', '400 obs-fold (folded header line)'],
    ['GET / HTTP/1.1\r\n\tx: a\r\n\r\n', '400 obs-fold (folded header line)'],
    ['GET / HTTP/1.1\r\nx: a\rb\r\n\r\n', '400 bad character in a header value'],
    ['GET / HTTP/1.1\r\nx: a\nb: c\r\n\r\n', '400 bad character in a header value'],
    ['GET / HTTP/1.1\r\nx: a\x00\r\n\r\n', '400 bad character in a header value'],
    ['GET / HTTP/1.1\r\nx : a\r\n\r\n', '400 bad header name'],
    ['GET / HTTP/1.1\r\n: a\r\n\r\n', '400 bad header name'],
    ['GET / HTTP/1.1\r\nno colon\r\n\r\n', '400 bad header name'],
    ['GET  / HTTP/1.1\r\n\r\n', '400 bad request line (target)'],
    ['GET /\r HTTP/1.1\r\n\r\n', '400 bad request line (target)'],
    ['GET / HTTP/2.0\r\n\r\n', '400 bad request line (version)'],
    ['GET / HTTP/1.1 \r\n\r\n', '400 bad request line (version)'],
    ['G(T / HTTP/1.1\r\n\r\n', '400 bad request line (method)'],
    ['CONNECT a:443 HTTP/1.1\r\n\r\n', '405 CONNECT is not proxied on service ports'],
    [`GET / HTTP/1.1\r\n${'a: b\r\n'.repeat(101)}\r\n`, '431 too many header fields'],
    [`GET / HTTP/1.1\r\nx: ${'a'.repeat(MAX_HEAD)}\r\n\r\n`, '431 request head too large'],
    [`GET / HTTP/1.1\r\nx: ${'a'.repeat(MAX_HEAD)}`, '431 request head too large'],
  ];
  for (const [text, why] of cases) {
    it(JSON.stringify(text.slice(0, 60)), () => expect(refusal(text)).toBe(why));
  }
  it('100 header fields are accepted', () => {
    expect(refusal(`GET / HTTP/1.1\r\n${'a: b\r\n'.repeat(100)}\r\n`)).toBe('accepted');
  });
});

describe('response heads', () => {
  it("the server's Keep-Alive timeout hint, in ms (-1 when absent or unreadable); the line is still dropped", () => {
    const hint = (value: string) =>
      parseResponseHead(b(`HTTP/1.1 200 OK\r\ncontent-length: 0\r\nkeep-alive: ${value}\r\n\r\n`), 'GET')
        ?.keepAliveMs;
    expect(hint('timeout=5')).toBe(5000);
    expect(hint('timeout=5, max=1000')).toBe(5000);
    expect(hint('max=100, Timeout = 15')).toBe(15000);
    expect(hint('max=100')).toBe(-1);
    expect(hint('timeout=abc')).toBe(-1);
    expect(hint('timeout=5x')).toBe(-1);
    expect(parseResponseHead(b('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n'), 'GET')?.keepAliveMs).toBe(-1);
    const text = 'HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\ncontent-length: 0\r\n\r\n';
    expect(summary(text, 'resp')?.forwarded).toBe('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
  });

  it('framing by status and method (RFC 9112 §6.3)', () => {
    const r = (text: string, method = 'GET') => {
      const s = summary(text, 'resp', method);
      return (
        s && {
          status: s.status,
          cl: s.contentLength,
          chunked: s.chunked,
          untilClose: s.untilClose,
          close: s.close,
        }
      );
    };
    expect(r('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n')).toEqual({
      status: 200,
      cl: 5,
      chunked: false,
      untilClose: false,
      close: false,
    });
    expect(r('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n', 'HEAD')).toMatchObject({ cl: 0 });
    expect(r('HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n')).toMatchObject({
      cl: 0,
      chunked: false,
    });
    expect(r('HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n')).toMatchObject({ cl: 0 });
    expect(r('HTTP/1.1 100 Continue\r\n\r\n')).toMatchObject({ status: 100, cl: 0 });
    expect(r('HTTP/1.1 200 OK\r\n\r\n')).toMatchObject({ untilClose: true, close: true });
    expect(r('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n')).toMatchObject({
      chunked: true,
      close: true,
    });
    expect(r('HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n')).toMatchObject({
      untilClose: true,
      close: true,
    });
    expect(r('HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n')).toMatchObject({ close: true });
    expect(r('HTTP/1.1 200\r\ncontent-length: 1\r\n\r\n')).toMatchObject({ status: 200 });
  });

  it('Connection and Keep-Alive are dropped from what the client gets', () => {
    const s = summary(
      'HTTP/1.1 200 OK\r\nServer: n\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\ncontent-length: 0\r\n\r\n',
      'resp',
    );
    expect(s?.forwarded).toBe('HTTP/1.1 200 OK\r\nServer: n\r\ncontent-length: 0\r\n\r\n');
  });

  it('malformed responses are 502', () => {
    expect(refusal('HTTP/1.1 20 OK\r\n\r\n', 'resp')).toBe('502 bad status code');
    expect(refusal('HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n', 'resp')).toBe(
      '502 bad response: obs-fold (folded header line)',
    );
    expect(refusal('HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n', 'resp')).toBe(
      '502 bad response: bad Content-Length',
    );
    expect(refusal('SSH-2.0-OpenSSH\r\n\r\n', 'resp')).toBe('502 bad status line');
  });
});

describe('chunked scanner', () => {
  /** Feeds `text` split at every position into two pieces; each must find the same end. */
  function endAt(text: string): number[] {
    const ends = new Set<number>();
    for (let cut = 0; cut <= text.length; cut++) {
      const s = new ChunkedScanner();
      const first = s.feed(b(text.slice(0, cut)));
      ends.add(first >= 0 ? first : cut + s.feed(b(text.slice(cut))));
    }
    return [...ends];
  }

  it('finds the end at any split: sizes, extensions, uppercase hex, trailers, what follows', () => {
    expect(endAt('5\r\nhello\r\n0\r\n\r\nGET')).toEqual([15]);
    expect(endAt('A;name=val;x\r\n0123456789\r\n0\r\n\r\n')).toEqual([31]);
    expect(endAt('1\r\nx\r\n0\r\nx-sum: 1\r\nx-b: 2\r\n\r\nrest')).toEqual([29]);
    expect(endAt('0\r\n\r\n')).toEqual([5]);
    expect(endAt('3 \r\nabc\r\n0\r\n\r\n')).toEqual([14]);
  });

  it('data bytes are never looked at: a chunk may carry CRLFs and zeros', () => {
    expect(endAt('6\r\n0\r\n\r\n!\r\n0\r\n\r\nX')).toEqual([16]);
  });

  it('a body spread over many feeds', () => {
    const s = new ChunkedScanner();
    expect(s.feed(b('4\r\nab'))).toBe(-1);
    expect(s.feed(b('cd\r'))).toBe(-1);
    expect(s.feed(b('\n0\r\n'))).toBe(-1);
    expect(s.feed(b('\r\nnext'))).toBe(2);
  });

  const bad: [string, string][] = [
    ['zz\r\n', 'bad chunk size'],
    ['\r\n', 'bad chunk size'],
    ['-1\r\n', 'bad chunk size'],
    ['1000000000000\r\n', 'chunk size too large'],
    ['2\r\nabc\r\n', 'chunk data longer than its size'],
    ['1\nx\r\n', 'bad chunk size'],
    ['1\r\rx', 'bare CR in chunk size line'],
    ['1\r\nx\rx', 'bare CR after chunk data'],
    ['1;a\x01\r\n', 'bad chunk extension'],
    ['0\r\n bad\r\n\r\n', 'bad trailer field'],
    ['0\r\n\rx', 'bare CR ending the body'],
  ];
  for (const [text, why] of bad) {
    it(`refuses ${JSON.stringify(text)}`, () => {
      expect(() => new ChunkedScanner().feed(b(text))).toThrow(`bad chunked body: ${why}`);
    });
  }
});
