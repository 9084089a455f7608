/*
 * HTTP/1.1 framing in C: the same rules as sidecar/proxy/http1/parse.ts (the JavaScript fast
 * path's parser), so the native engine can find request and response boundaries without
 * JavaScript. Pure: no I/O, no allocation; the caller owns every buffer.
 *
 * What a head parse yields is framing only: where the head ends, the body's length
 * (Content-Length, chunked, or until close for responses), whether the sender closes, and the
 * byte ranges of hop-by-hop lines a proxy drops. Refusals mirror parse.ts (RFC 9112: CL + TE
 * in a request, differing or non-digit CL, TE not ending in chunked, TE on 1.0, obs-fold,
 * space before the colon, bare CR/LF, control characters, heads over H1_MAX_HEAD → 431, more
 * than H1_MAX_HEADERS fields → 431). The differential fuzz (sidecar/proxy/http1/testing/
 * fuzz.ts) feeds both parsers the same bytes and compares every field.
 */
#ifndef EDGEMESH_HTTP1_H
#define EDGEMESH_HTTP1_H
#include <stddef.h>
#include <stdint.h>

#define H1_MAX_HEAD (32 * 1024)
#define H1_MAX_HEADERS 100
/* Dropped line ranges: every field may be one (at most H1_MAX_HEADERS), plus lines the
 * Connection field names (each line at most once more). */
#define H1_MAX_DROP (2 * H1_MAX_HEADERS)

enum { H1_INCOMPLETE = 0, H1_DONE = 1, H1_ERROR = -1 };

typedef struct {
  int status; /* responses: the status code; requests: 0. On H1_ERROR: the status to answer */
  int minor;  /* 0: HTTP/1.0, 1: HTTP/1.1 */
  uint32_t start;    /* requests: where the request line starts (after leading empty lines) */
  uint32_t head_end; /* index just past CRLF CRLF */
  int64_t content_length; /* -1: not framed by Content-Length */
  uint8_t chunked, close, upgrade, until_close, keep_alive10, saw_length;
  uint32_t method_len; /* requests: the method is buf[start, start + method_len) */
  uint32_t target_off, target_len;
  int32_t keep_alive_ms; /* responses: Keep-Alive timeout=N in ms, or -1 */
  uint32_t ndrop;        /* entries in drop: start, end, start, end, ... (may overlap: a line twice) */
  uint32_t drop[2 * H1_MAX_DROP];
  const char *error; /* on H1_ERROR: why (static text) */
} h1_head_t;

/* A request head at the start of buf (leading CRLFs skipped). */
int h1_parse_request(const uint8_t *buf, size_t len, h1_head_t *h);
/* A response head; head_request: the request's method was HEAD (no body). */
int h1_parse_response(const uint8_t *buf, size_t len, int head_request, h1_head_t *h);

/* Chunked body scanner: only chunk-size lines, CRLFs after data and trailers are read. */
typedef struct {
  uint8_t state;
  uint8_t digits;
  uint64_t size, remaining;
  uint32_t trailer_bytes;
} h1_chunked_t;
/* Index in buf just past the body's end, -1 while the body goes on, -2 on bad framing (*error). */
int64_t h1_chunked_feed(h1_chunked_t *s, const uint8_t *buf, size_t len, const char **error);

/* The head without its dropped lines, plus `extra` (whole CRLF-terminated lines) before the
 * final CRLF, written to out (at least head_end + extra_len bytes). Returns the length. */
size_t h1_rewrite(const uint8_t *buf, const h1_head_t *h, const char *extra, size_t extra_len, uint8_t *out);

#endif
