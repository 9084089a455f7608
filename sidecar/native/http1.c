/*
 * HTTP/1.1 framing for the native engine: see http1.h. A line-for-line port of
 * sidecar/proxy/http1/parse.ts (same checks in the same order, same messages), so a
 * differential fuzz can hold the two to the same answers. Reads never pass `len`: a byte past
 * it reads as 256, which no character class holds (as `buf[i]` past a Buffer's end is
 * undefined in the JavaScript).
 */
#include "http1.h"

#include <string.h>

/* 1 = tchar (RFC 9110 §5.6.2), 2 = field value (VCHAR, SP, HTAB, obs-text), 4 = request target (VCHAR). */
static uint8_t CLASS[257];
static int class_ready;

static void classes(void) {
  if (class_ready) return;
  for (int c = 0; c < 256; c++) {
    int alnum = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    if (alnum || (c && strchr("!#$%&'*+-.^_`|~", c))) CLASS[c] |= 1;
    if ((c >= 0x20 && c != 0x7f) || c == 0x09) CLASS[c] |= 2;
    if (c > 0x20 && c < 0x7f) CLASS[c] |= 4;
  }
  class_ready = 1; /* idempotent: two threads racing here write the same bytes */
}

#define AT(i) ((size_t)(i) < len ? (int)buf[(i)] : 256)
#define CR 13
#define LF 10

static int fail(h1_head_t *h, int status, const char *why) {
  h->status = status;
  h->error = why;
  return H1_ERROR;
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* buf[a, b) equals the lower-case ASCII `word`, case-insensitively. */
static int ieq(const uint8_t *buf, size_t a, size_t b, const char *word) {
  size_t n = strlen(word);
  if (b - a != n) return 0;
  for (size_t k = 0; k < n; k++)
    if (lower(buf[a + k]) != word[k]) return 0;
  return 1;
}

static int ows(int c) { return c == ' ' || c == '\t'; }

/* The comma-separated element [a, b) trimmed of SP/HTAB. */
static void trim(const uint8_t *buf, size_t *a, size_t *b) {
  while (*a < *b && ows(buf[*a])) (*a)++;
  while (*b > *a && ows(buf[*b - 1])) (*b)--;
}

/* -1 while incomplete, -2 when it cannot fit (431), else the index past CRLF CRLF. */
static int64_t head_end(const uint8_t *buf, size_t len, size_t start) {
  for (size_t i = start; i + 3 < len; i++) {
    if (buf[i] == CR && buf[i + 1] == LF && buf[i + 2] == CR && buf[i + 3] == LF) {
      if (i - start + 4 > H1_MAX_HEAD) return -2;
      return (int64_t)i + 4;
    }
  }
  return len - start > H1_MAX_HEAD ? -2 : -1;
}

static int version(const uint8_t *buf, size_t len, size_t i) {
  if (AT(i) != 'H' || AT(i + 1) != 'T' || AT(i + 2) != 'T' || AT(i + 3) != 'P' || AT(i + 4) != '/' ||
      AT(i + 5) != '1' || AT(i + 6) != '.')
    return -1;
  int m = AT(i + 7);
  return m == '1' ? 1 : m == '0' ? 0 : -1;
}

/* 1*DIGIT (at most 15 digits); a list of equal values is one value. -1 when invalid. */
static int64_t parse_length(const uint8_t *buf, size_t a, size_t b) {
  int64_t value = -1;
  size_t p = a;
  for (;;) {
    size_t q = p;
    while (q < b && buf[q] != ',') q++;
    size_t s = p, e = q;
    trim(buf, &s, &e);
    if (e == s || e - s > 15) return -1;
    int64_t n = 0;
    for (size_t k = s; k < e; k++) {
      if (buf[k] < '0' || buf[k] > '9') return -1;
      n = n * 10 + (buf[k] - '0');
    }
    if (value >= 0 && n != value) return -1;
    value = n;
    if (q >= b) return value;
    p = q + 1;
  }
}

/* `timeout=N` of a Keep-Alive value in ms, or -1; parse.ts's regular expression
 * /(?:^|[,;])[ \t]*timeout[ \t]*=[ \t]*"?(\d{1,6})"?[ \t]*(?:[,;]|$)/i at its leftmost match. */
static int32_t keep_alive_timeout(const uint8_t *buf, size_t a, size_t b) {
  for (size_t p = a; p < b || p == a; p++) {
    for (int alt = 0; alt < 2; alt++) {
      size_t q;
      if (alt == 0) {
        if (p != a) continue;
        q = p;
      } else {
        if (p >= b || (buf[p] != ',' && buf[p] != ';')) continue;
        q = p + 1;
      }
      while (q < b && ows(buf[q])) q++;
      if (b - q < 7 || !ieq(buf, q, q + 7, "timeout")) continue;
      q += 7;
      while (q < b && ows(buf[q])) q++;
      if (q >= b || buf[q] != '=') continue;
      q++;
      while (q < b && ows(buf[q])) q++;
      if (q < b && buf[q] == '"') q++;
      size_t d0 = q;
      while (q < b && q - d0 < 6 && buf[q] >= '0' && buf[q] <= '9') q++;
      if (q == d0) continue;
      size_t d1 = q;
      if (q < b && buf[q] == '"') q++;
      while (q < b && ows(buf[q])) q++;
      if (q < b && buf[q] != ',' && buf[q] != ';') continue;
      int32_t n = 0;
      for (size_t k = d0; k < d1; k++) n = n * 10 + (buf[k] - '0');
      return n * 1000;
    }
    if (p >= b) break;
  }
  return -1;
}

static void drop(h1_head_t *h, size_t s, size_t e) {
  if (h->ndrop + 2 > 2 * H1_MAX_DROP) return; /* cannot happen: bounded by the field count */
  h->drop[h->ndrop++] = (uint32_t)s;
  h->drop[h->ndrop++] = (uint32_t)e;
}

/* Does any Connection value ([cv[k], cv[k+1]) ranges) list the (lower-cased) name buf[a, b)?
 * close, keep-alive, upgrade and empty elements are not "listed"; content-length,
 * transfer-encoding and host are never dropped. */
static int listed(const uint8_t *buf, const uint32_t *cv, uint32_t ncv, size_t a, size_t b) {
  if (ieq(buf, a, b, "content-length") || ieq(buf, a, b, "transfer-encoding") || ieq(buf, a, b, "host"))
    return 0;
  for (uint32_t k = 0; k < ncv; k += 2) {
    size_t p = cv[k], end = cv[k + 1];
    for (;;) {
      size_t q = p;
      while (q < end && buf[q] != ',') q++;
      size_t s = p, e = q;
      trim(buf, &s, &e);
      if (e - s == b - a) {
        size_t i = 0;
        while (i < b - a && lower(buf[s + i]) == lower(buf[a + i])) i++;
        if (i == b - a) return 1;
      }
      if (q >= end) break;
      p = q + 1;
    }
  }
  return 0;
}

/* A field error: requests answer `st` with the message; responses 502, "bad response: ...". */
#define FAIL(st, msg) return fail(h, request ? (st) : 502, request ? msg : "bad response: " msg)

static int fields(const uint8_t *buf, size_t len, size_t i, size_t end, int request, h1_head_t *h) {
  size_t first = i;
  int count = 0, saw_te = 0, has_upgrade = 0, connection_upgrade = 0, any_listed = 0;
  uint32_t cv[2 * H1_MAX_HEADERS];
  uint32_t ncv = 0;
  size_t last = end - 2;
  while (i < last) {
    if (++count > H1_MAX_HEADERS) FAIL(431, "too many header fields");
    size_t line = i;
    int c = AT(i);
    if (c == ' ' || c == '\t') FAIL(400, "obs-fold (folded header line)");
    while (CLASS[AT(i)] & 1) i++;
    if (i == line || AT(i) != ':') FAIL(400, "bad header name");
    size_t name_end = i;
    i++;
    while (AT(i) == ' ' || AT(i) == '\t') i++;
    size_t v0 = i;
    while (CLASS[AT(i)] & 2) i++;
    if (AT(i) != CR || AT(i + 1) != LF) FAIL(400, "bad character in a header value");
    size_t v1 = i;
    while (v1 > v0 && ows(buf[v1 - 1])) v1--;
    i += 2;
    switch (name_end - line) {
    case 14:
      if (ieq(buf, line, name_end, "content-length")) {
        int64_t n = parse_length(buf, v0, v1);
        if (n < 0 || (h->saw_length && n != h->content_length)) FAIL(400, "bad Content-Length");
        h->content_length = n;
        h->saw_length = 1;
      }
      break;
    case 17:
      if (ieq(buf, line, name_end, "transfer-encoding")) {
        size_t p = v0;
        for (;;) {
          size_t q = p;
          while (q < v1 && buf[q] != ',') q++;
          size_t s = p, e = q;
          trim(buf, &s, &e);
          if (e > s) {
            if (h->chunked) FAIL(400, "Transfer-Encoding after chunked");
            if (ieq(buf, s, e, "chunked")) h->chunked = 1;
          }
          if (q >= v1) break;
          p = q + 1;
        }
        saw_te = 1;
      }
      break;
    case 10:
      if (ieq(buf, line, name_end, "connection")) {
        size_t p = v0;
        for (;;) {
          size_t q = p;
          while (q < v1 && buf[q] != ',') q++;
          size_t s = p, e = q;
          trim(buf, &s, &e);
          if (ieq(buf, s, e, "close")) h->close = 1;
          else if (ieq(buf, s, e, "keep-alive")) h->keep_alive10 = 1;
          else if (ieq(buf, s, e, "upgrade")) connection_upgrade = 1;
          else if (e > s) any_listed = 1;
          if (q >= v1) break;
          p = q + 1;
        }
        cv[ncv++] = (uint32_t)v0;
        cv[ncv++] = (uint32_t)v1;
        drop(h, line, i);
      } else if (ieq(buf, line, name_end, "keep-alive")) {
        if (!request) h->keep_alive_ms = keep_alive_timeout(buf, v0, v1);
        drop(h, line, i);
      }
      break;
    case 7:
      if (ieq(buf, line, name_end, "upgrade")) {
        has_upgrade = 1;
        drop(h, line, i);
      }
      break;
    case 2:
      /* gRPC needs `te: trailers` end to end. */
      if (ieq(buf, line, name_end, "te") && !ieq(buf, v0, v1, "trailers")) drop(h, line, i);
      break;
    case 16:
      if (ieq(buf, line, name_end, "proxy-connection")) drop(h, line, i);
      break;
    }
  }
  if (saw_te && !h->chunked) {
    if (request) return fail(h, 400, "Transfer-Encoding without chunked last");
    h->until_close = 1;
  }
  if (request && saw_te && h->saw_length) return fail(h, 400, "both Content-Length and Transfer-Encoding");
  h->upgrade = request && has_upgrade && connection_upgrade;
  if (any_listed) {
    /* Fields the Connection header names (rare): a second pass over the validated lines. */
    size_t p = first;
    while (p < end - 2) {
      size_t colon = p, eol = p;
      while (buf[colon] != ':') colon++;
      while (buf[eol] != LF) eol++;
      if (listed(buf, cv, ncv, p, colon)) drop(h, p, eol + 1);
      p = eol + 1;
    }
  }
  return H1_DONE;
}
#undef FAIL

static void init_head(h1_head_t *h, size_t end) {
  memset(h, 0, offsetof(h1_head_t, drop));
  h->minor = 1;
  h->head_end = (uint32_t)end;
  h->content_length = -1;
  h->keep_alive_ms = -1;
  h->error = NULL;
}

int h1_parse_request(const uint8_t *buf, size_t len, h1_head_t *h) {
  classes();
  size_t start = 0;
  while (start + 1 < len && buf[start] == CR && buf[start + 1] == LF) start += 2;
  int64_t end = head_end(buf, len, start);
  init_head(h, end > 0 ? (size_t)end : 0);
  if (end == -1) return H1_INCOMPLETE;
  if (end == -2) return fail(h, 431, "request head too large");
  h->start = (uint32_t)start;
  size_t i = start;
  while (CLASS[AT(i)] & 1) i++;
  if (i == start || AT(i) != ' ') return fail(h, 400, "bad request line (method)");
  h->method_len = (uint32_t)(i - start);
  size_t t0 = ++i;
  while (CLASS[AT(i)] & 4) i++;
  if (i == t0 || AT(i) != ' ') return fail(h, 400, "bad request line (target)");
  h->target_off = (uint32_t)t0;
  h->target_len = (uint32_t)(i - t0);
  i++;
  int minor = version(buf, len, i);
  if (minor < 0 || AT(i + 8) != CR || AT(i + 9) != LF) return fail(h, 400, "bad request line (version)");
  if (fields(buf, len, i + 10, (size_t)end, 1, h) != H1_DONE) return H1_ERROR;
  h->minor = minor;
  if (h->method_len == 7 && memcmp(buf + start, "CONNECT", 7) == 0)
    return fail(h, 405, "CONNECT is not proxied on service ports");
  if (h->chunked && minor == 0) return fail(h, 400, "Transfer-Encoding in an HTTP/1.0 request");
  if (minor == 0 && !h->keep_alive10) h->close = 1;
  return H1_DONE;
}

int h1_parse_response(const uint8_t *buf, size_t len, int head_request, h1_head_t *h) {
  classes();
  int64_t end = head_end(buf, len, 0);
  init_head(h, end > 0 ? (size_t)end : 0);
  if (end == -1) return H1_INCOMPLETE;
  if (end == -2) return fail(h, 431, "request head too large");
  int minor = version(buf, len, 0);
  if (minor < 0 || AT(8) != ' ') return fail(h, 502, "bad status line");
  int d0 = AT(9) - '0', d1 = AT(10) - '0', d2 = AT(11) - '0';
  if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return fail(h, 502, "bad status code");
  int status = d0 * 100 + d1 * 10 + d2;
  size_t i = 12;
  if (AT(i) == ' ') {
    i++;
    while (CLASS[AT(i)] & 2) i++;
  }
  if (AT(i) != CR || AT(i + 1) != LF) return fail(h, 502, "bad status line");
  if (fields(buf, len, i + 2, (size_t)end, 0, h) != H1_DONE) return H1_ERROR;
  h->status = status;
  h->minor = minor;
  if (minor == 0 && !h->keep_alive10) h->close = 1;
  if (status < 200 || status == 204 || status == 304 || head_request) {
    h->content_length = 0;
    h->chunked = 0;
  } else if (h->chunked) {
    /* TE and CL together in a response: TE wins and the connection is not reused (§6.3 item 3). */
    if (h->saw_length) h->close = 1;
    h->content_length = -1;
  } else if (h->content_length < 0) {
    h->until_close = 1;
    h->close = 1;
  }
  return H1_DONE;
}

static int hex_value(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* States as parse.ts's ChunkedScanner: 0 size digits, 1 extension, 2 LF after size line,
 * 3 data, 4 CR after data, 5 LF after data, 6 trailer line start, 7 trailer line, 8 LF ending
 * a trailer line, 9 LF ending the body. */
int64_t h1_chunked_feed(h1_chunked_t *s, const uint8_t *buf, size_t len, const char **error) {
  classes();
  size_t i = 0;
#define BAD(msg)                                                                                      \
  do {                                                                                                \
    *error = "bad chunked body: " msg;                                                                \
    return -2;                                                                                        \
  } while (0)
  while (i < len) {
    if (s->state == 3) {
      uint64_t take = s->remaining < len - i ? s->remaining : len - i;
      s->remaining -= take;
      i += take;
      if (s->remaining == 0) s->state = 4;
      continue;
    }
    int c = buf[i++];
    switch (s->state) {
    case 0: {
      int d = hex_value(c);
      if (d >= 0) {
        if (++s->digits > 12) BAD("chunk size too large");
        s->size = s->size * 16 + (uint64_t)d;
      } else if (s->digits == 0) BAD("bad chunk size");
      else if (c == ';' || c == ' ' || c == '\t') s->state = 1;
      else if (c == CR) s->state = 2;
      else BAD("bad chunk size");
      break;
    }
    case 1:
      if (c == CR) s->state = 2;
      else if (!(CLASS[c] & 2)) BAD("bad chunk extension");
      else if (++s->trailer_bytes > H1_MAX_HEAD) BAD("chunk extension too long");
      break;
    case 2:
      if (c != LF) BAD("bare CR in chunk size line");
      s->trailer_bytes = 0;
      if (s->size == 0) s->state = 6;
      else {
        s->remaining = s->size;
        s->state = 3;
      }
      s->size = 0;
      s->digits = 0;
      break;
    case 4:
      if (c != CR) BAD("chunk data longer than its size");
      s->state = 5;
      break;
    case 5:
      if (c != LF) BAD("bare CR after chunk data");
      s->state = 0;
      break;
    case 6:
      if (c == CR) s->state = 9;
      else if (CLASS[c] & 1) s->state = 7;
      else BAD("bad trailer field");
      break;
    case 7:
      if (c == CR) s->state = 8;
      else if (!(CLASS[c] & 2)) BAD("bad trailer field");
      else if (++s->trailer_bytes > H1_MAX_HEAD) BAD("trailer section too large");
      break;
    case 8:
      if (c != LF) BAD("bare CR in trailer");
      s->state = 6;
      break;
    case 9:
      if (c != LF) BAD("bare CR ending the body");
      s->state = 0;
      s->trailer_bytes = 0;
      return (int64_t)i;
    }
  }
#undef BAD
  return -1;
}

size_t h1_rewrite(const uint8_t *buf, const h1_head_t *h, const char *extra, size_t extra_len, uint8_t *out) {
  /* Dropped ranges in order (insertion sort: a handful at most), a range listed twice once. */
  uint32_t order[2 * H1_MAX_DROP];
  uint32_t n = h->ndrop;
  memcpy(order, h->drop, n * sizeof(uint32_t));
  for (uint32_t a = 2; a < n; a += 2) {
    uint32_t s = order[a], e = order[a + 1], b = a;
    while (b >= 2 && order[b - 2] > s) {
      order[b] = order[b - 2];
      order[b + 1] = order[b - 1];
      b -= 2;
    }
    order[b] = s;
    order[b + 1] = e;
  }
  size_t o = 0, at = 0;
  for (uint32_t k = 0; k < n; k += 2) {
    if (order[k] < at) continue;
    memcpy(out + o, buf + at, order[k] - at);
    o += order[k] - at;
    at = order[k + 1];
  }
  memcpy(out + o, buf + at, h->head_end - 2 - at);
  o += h->head_end - 2 - at;
  if (extra_len) {
    memcpy(out + o, extra, extra_len);
    o += extra_len;
  }
  out[o++] = CR;
  out[o++] = LF;
  return o;
}
