/*
 * The sidecar's UDP data path (issue 18, docs/udp.md): the transparent sockets Node's dgram
 * cannot make, one epoll thread that reads them, and the reply direction kept here.
 *
 *   app ──sendto(ClusterIP:port)──▶ TPROXY ──▶ listener :15006 (IP_TRANSPARENT,
 *       IP_RECVORIGDSTADDR): recvmmsg, the original destination from each datagram's cmsg
 *       ├─ a known flow (app address + original destination in this file's flow index):
 *       │    sent here on the flow's upstream socket — the hot path never enters JS
 *       └─ else ──batch──▶ JS (sidecar/proxy/udp/proxy.ts): flow table, route, balancer;
 *            JS makes the flow's upstream (a connected UDP socket, indexed here) and sends
 *   endpoint ──reply──▶ upstream fd: read on this thread and sent straight back from the
 *       flow's reply socket (IP_TRANSPARENT, bound to ClusterIP:port) to the app's address,
 *       so the app sees the address it sent to; the replies of one epoll round's upstreams
 *       that share a reply socket go out in one sendmmsg.
 *   JS is told, at most twice a second per flow, which flows were active (its idle
 *   timeouts), and reads the datagram counters when /metrics is scraped.
 *
 * Flows whose endpoint is on another node (docs/udp.md "Across nodes") are carried here too:
 * JS opens the flow's TCP connection to the node's gateway (`EDGEMESH/1 DGRAM ...`), reads
 * its `OK`, and hands the connected fd over (gatewayFlow below; the addon keeps a dup). The
 * flow is then indexed like a direct one, but its "upstream" is that framed TCP fd:
 *   app datagrams of one recvmmsg burst ──▶ `len u16 BE | payload` each, one writev per flow
 *       (never queued: EAGAIN drops them, counted gateway-full; a frame the kernel took in
 *       part is finished later from a per-flow tail of at most one frame, later frames of
 *       the burst dropped)
 *   bytes from the gateway ──▶ deframed here (a partial frame kept per flow, at most one
 *       frame long) ──sendmmsg──▶ the app, from the flow's reply socket
 *   EOF, an error or a length over MAX_FRAMED ──▶ REC_CLOSED to JS (nothing more is read or
 *       written on it); JS closes the fd and opens a new connection on the flow's next
 *       datagram, so the app keeps its address and source port.
 *
 * Why the split: decisions (routing, balancing, flow lifetime, re-picks when endpoints
 * change) stay in JavaScript next to the TCP proxy's, one code for both; the per-datagram
 * work is C. Measured (bench/udp.ts): with every datagram through JS the sidecar carried
 * 0.23x of direct's datagrams/s; see docs/udp.md for the numbers with this fast path.
 *
 * Records handed to JS, flattened into one array (6 slots each) beside one Buffer with the
 * payloads:
 *   REC_DATAGRAM  listener fd, payload offset, payload length, "src ip:port", "dst ip:port"
 *   REC_ACTIVE    upstream fd (a datagram either way; at most once per 500 ms tick), 0, gen, -, -
 *   REC_ERROR     upstream fd, errno (e.g. ECONNREFUSED from an ICMP port unreachable), gen, -, -
 *   REC_CLOSED    gateway fd, errno (0: the gateway ended it; EPROTO: a bad frame length), gen, -, -
 * Addresses are "a.b.c.d:port" or "[v6]:port" (inet_ntop: RFC 5952 form, as the catalog's).
 *
 * Generations: an fd number names a flow only while it is open, and the kernel hands a
 * closed number to the next socket. A report about a flow is made on this thread (its
 * generation, numbered per hand-over by upstream/gatewayFlow, read under the lock), and JS
 * may close that flow and open another on the same number before the report arrives. So
 * call_js, on the JS thread (where flows are opened and closed), drops a report whose
 * generation is not that of the flow now on its fd: JS never sees it, and needs no table of
 * its own (simpler than stamping generations into JS's flows, and as exact, since JS's view
 * of which flow holds an fd only changes on that thread). A flow JS closes while it is
 * handling a batch is covered in JS (native-udp.ts: the batch's later reports of that fd).
 *
 * Threads: the JS thread opens and closes sockets (sync calls below); this thread reads and
 * sends. The upstream table (by fd) and the flow index (by app address + destination) are
 * shared under one mutex, taken once per burst (and once per run of upstream events in an
 * epoll round, while their replies are gathered); never held while calling into JS (a full
 * queue would then wait on a JS thread waiting on the mutex). Backpressure: the call into JS blocks when 8
 * batches are queued, the kernel's socket buffers fill, and the kernel drops (counted by it,
 * as for any UDP socket); stop() aborts the queue first so a blocked call returns.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <node_api.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IP_RECVORIGDSTADDR
#define IP_RECVORIGDSTADDR 20
#endif
#ifndef IP_ORIGDSTADDR
#define IP_ORIGDSTADDR 20
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef IPV6_RECVORIGDSTADDR
#define IPV6_RECVORIGDSTADDR 74
#endif
#ifndef IPV6_ORIGDSTADDR
#define IPV6_ORIGDSTADDR 74
#endif

enum { KIND_WAKE = 0, KIND_LISTENER = 1, KIND_UPSTREAM = 2, KIND_GATEWAY = 3 };
enum { REC_DATAGRAM = 1, REC_ACTIVE = 2, REC_ERROR = 3, REC_CLOSED = 4 };

#define MAX_EVENTS 64
/* Datagrams per recvmmsg: one syscall for a burst; 16 x 64 KiB of scratch, touched only as
 * far as datagrams are long. */
#define RECV_BATCH 16
#define MAX_DATAGRAM 65536
/* Busy-poll after a round with events, before sleeping (wait_events): off. Measured on the
 * shared 2-core VM (docs/udp.md "Round 2"), 20 µs cost 25-35 µs more CPU per datagram at
 * 1,000/s and lowered the added p50 in one of three alternated pairs only; 50 µs cost more,
 * 100 µs took the cores the app and the backend needed. EDGEMESH_UDP_SPIN_US turns it on
 * for a machine with a core to spare. */
#define SPIN_US 0
/* Replies gathered from the upstreams of one epoll round before their sendmmsg. */
#define REPLY_BATCH 64
/* One batch to JS: flushed when either fills, and at the end of every epoll round. */
#define BATCH_BYTES (256 * 1024)
#define BATCH_RECORDS 1024
#define ADDR_TEXT 56 /* "[" + INET6_ADDRSTRLEN + "]:65535" */
#define JS_QUEUE 8
/* A flow is reported active to JS at most once per tick: its idle timeout is seconds long,
 * and a report per epoll round would wake the JS thread for every burst. */
#define ACTIVITY_TICK_MS 500
/* Asked of the kernel for the listeners (SO_RCVBUFFORCE: the sidecar holds NET_ADMIN);
 * a burst from the app waits here while the JS thread routes the previous one. */
#define LISTENER_RCVBUF (4 * 1024 * 1024)
/* Gateway connections: a frame is `len u16 BE | payload`, len at most MAX_FRAMED (the
 * largest IPv4 UDP payload, lib/tunnel/frame.ts MAX_DATAGRAM); a larger length is a
 * protocol error that ends the connection. */
#define FRAME_HEADER 2
#define MAX_FRAMED 65507
/* The kernel's send buffer of a gateway connection (it doubles the value asked): about the
 * 256 KiB of unsent data the JS carrier allowed before dropping. Without it the buffer
 * autotunes to megabytes, a second of queue at these rates (docs/udp.md "Across nodes"). */
#define GATEWAY_SNDBUF (128 * 1024)

typedef struct {
  int kind;
  int fd;
  uint32_t a; /* offset, count or errno */
  uint32_t b; /* length */
  char src[ADDR_TEXT];
  char dst[ADDR_TEXT];
} record_t;

typedef struct {
  size_t used;
  size_t count;
  uint64_t born_ms; /* when its first record was made (the thread's coarse clock) */
  uint8_t data[BATCH_BYTES];
  record_t recs[BATCH_RECORDS];
} batch_t;

/* A flow's identity as the kernel reports it: app address and original destination. */
typedef struct {
  uint16_t family;
  uint16_t client_port;
  uint16_t dst_port;
  uint16_t pad;
  uint8_t client[16];
  uint8_t dst[16];
} flowkey_t;

typedef struct upstream {
  int fd;
  int reply_fd;
  uint32_t reported; /* the activity tick it was last reported active in */
  uint32_t gen;      /* this hand-over of the fd number (never 0): reports carry it */
  /* A gateway flow: fd is a framed TCP connection to the node's gateway (else a connected
   * UDP socket). The fields below are a gateway flow's, under the engine's lock. */
  int gateway;
  int dead;        /* EOF, error or bad frame seen and told to JS: not read or written */
  uint8_t *tx;     /* the unsent tail of a frame the kernel took in part (EPOLLOUT armed) */
  size_t tx_len, tx_off;
  uint8_t *rx;     /* a partial frame from the last read, FRAME_HEADER + MAX_FRAMED at most */
  size_t rx_len;
  socklen_t client_len;
  struct sockaddr_storage client;
  flowkey_t key;
  struct upstream *next; /* flow index chain */
} upstream_t;

typedef struct {
  int epfd;
  int wakefd;
  pthread_t thread;
  int started;
  atomic_int stopping;
  napi_threadsafe_function tsfn;
  pthread_mutex_t lock;
  upstream_t **ups; /* by fd, under lock */
  size_t ups_cap;
  upstream_t **index; /* by flow key (chained), under lock */
  size_t index_cap;   /* a power of two */
  size_t index_count;
  uint32_t gens; /* the last generation given to a flow (under lock) */
  /* This thread's coarse clock (ACTIVITY_TICK_MS steps, and in ms), read once per epoll round. */
  uint32_t tick;
  uint64_t now_ms;
  /* Busy-poll after a round with events before sleeping (EDGEMESH_UDP_SPIN_US, 0: never). */
  int spin_us;
  /* Datagrams this thread sent itself (and failed to), for /metrics. */
  atomic_uint_fast64_t fast_out;
  atomic_uint_fast64_t replies;
  atomic_uint_fast64_t fast_failed;
  /* Gateway flows' datagrams dropped here: connection full (EAGAIN) / ended or broken. */
  atomic_uint_fast64_t gw_full;
  atomic_uint_fast64_t gw_down;
  /* Reports dropped on arrival because their flow had left the fd (call_js, "Generations"). */
  atomic_uint_fast64_t stale;
  batch_t *batch; /* this thread's */
  /* scratch for recvmmsg, this thread's */
  struct mmsghdr msgs[RECV_BATCH];
  struct iovec iov[RECV_BATCH];
  struct sockaddr_storage names[RECV_BATCH];
  char control[RECV_BATCH][64];
  uint8_t *bufs;
  /* Replies gathered over one epoll round (read_upstream), this thread's: REPLY_BATCH slots
   * of MAX_DATAGRAM (touched only as far as replies are long), all for reply_fd. */
  struct mmsghdr reply_msgs[REPLY_BATCH];
  struct iovec reply_iov[REPLY_BATCH];
  uint8_t *reply_bufs;
  unsigned reply_count;
  int reply_fd;
  /* Records of a run of upstream reads, made once the lock is released (at most one
   * activity and one error per event). */
  record_t later[2 * MAX_EVENTS];
  unsigned n_later;
} engine_t;

/* ---------- addresses ---------- */

static void fmt_addr(const struct sockaddr *sa, char *out) {
  char ip[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    snprintf(out, ADDR_TEXT, "[%s]:%u", ip, ntohs(s6->sin6_port));
  } else {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    snprintf(out, ADDR_TEXT, "%s:%u", ip, ntohs(s4->sin_port));
  }
}

/* "a.b.c.d:port" or "[v6]:port" → sockaddr; 0 on a malformed text. */
static int parse_addr(const char *text, struct sockaddr_storage *out, socklen_t *len) {
  char ip[INET6_ADDRSTRLEN + 1];
  const char *colon;
  memset(out, 0, sizeof *out);
  if (text[0] == '[') {
    const char *end = strchr(text, ']');
    if (!end || end[1] != ':' || (size_t)(end - text - 1) >= sizeof ip) return 0;
    memcpy(ip, text + 1, (size_t)(end - text - 1));
    ip[end - text - 1] = 0;
    colon = end + 1;
  } else {
    colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof ip) return 0;
    memcpy(ip, text, (size_t)(colon - text));
    ip[colon - text] = 0;
  }
  char *endp;
  long port = strtol(colon + 1, &endp, 10);
  if (*endp || port < 1 || port > 65535 || colon[1] == 0) return 0;
  struct sockaddr_in *s4 = (struct sockaddr_in *)out;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof *s4;
    return 1;
  }
  if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    *len = sizeof *s6;
    return 1;
  }
  return 0;
}

static void make_key(const struct sockaddr *client, const struct sockaddr *dst, flowkey_t *k) {
  memset(k, 0, sizeof *k);
  k->family = client->sa_family;
  if (client->sa_family == AF_INET6) {
    const struct sockaddr_in6 *c = (const struct sockaddr_in6 *)client, *d = (const struct sockaddr_in6 *)dst;
    memcpy(k->client, &c->sin6_addr, 16);
    memcpy(k->dst, &d->sin6_addr, 16);
    k->client_port = c->sin6_port;
    k->dst_port = d->sin6_port;
  } else {
    const struct sockaddr_in *c = (const struct sockaddr_in *)client, *d = (const struct sockaddr_in *)dst;
    memcpy(k->client, &c->sin_addr, 4);
    memcpy(k->dst, &d->sin_addr, 4);
    k->client_port = c->sin_port;
    k->dst_port = d->sin_port;
  }
}

static size_t key_hash(const flowkey_t *k) {
  /* FNV-1a over the key: flows differ mostly in the client port and address. */
  const uint8_t *p = (const uint8_t *)k;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ull;
  return (size_t)(h ^ (h >> 32));
}

/* Under the lock. */
static upstream_t *index_find(engine_t *e, const flowkey_t *k) {
  if (!e->index_cap) return NULL;
  for (upstream_t *u = e->index[key_hash(k) & (e->index_cap - 1)]; u; u = u->next)
    if (memcmp(&u->key, k, sizeof *k) == 0) return u;
  return NULL;
}

static int index_add(engine_t *e, upstream_t *u) {
  if (e->index_count + 1 > e->index_cap / 2) {
    size_t cap = e->index_cap ? e->index_cap * 2 : 1024;
    upstream_t **grown = calloc(cap, sizeof *grown);
    if (!grown) return 0;
    for (size_t i = 0; i < e->index_cap; i++) {
      for (upstream_t *v = e->index[i], *next; v; v = next) {
        next = v->next;
        size_t b = key_hash(&v->key) & (cap - 1);
        v->next = grown[b];
        grown[b] = v;
      }
    }
    free(e->index);
    e->index = grown;
    e->index_cap = cap;
  }
  size_t b = key_hash(&u->key) & (e->index_cap - 1);
  u->next = e->index[b];
  e->index[b] = u;
  e->index_count++;
  return 1;
}

static void index_remove(engine_t *e, upstream_t *u) {
  if (!e->index_cap) return;
  for (upstream_t **p = &e->index[key_hash(&u->key) & (e->index_cap - 1)]; *p; p = &(*p)->next) {
    if (*p == u) {
      *p = u->next;
      e->index_count--;
      return;
    }
  }
}

/* ---------- the thread ---------- */

static void batch_flush(engine_t *e) {
  if (!e->batch || e->batch->count == 0) return;
  if (napi_call_threadsafe_function(e->tsfn, e->batch, napi_tsfn_blocking) == napi_ok) {
    e->batch = NULL;
  } else {
    e->batch->count = 0; /* closing: nobody to tell */
    e->batch->used = 0;
  }
}

static record_t *record(engine_t *e, size_t bytes) {
  if (e->batch && (e->batch->count == BATCH_RECORDS || e->batch->used + bytes > BATCH_BYTES)) batch_flush(e);
  if (!e->batch) {
    e->batch = malloc(sizeof(batch_t));
    if (!e->batch) return NULL;
    e->batch->used = e->batch->count = 0;
    e->batch->born_ms = e->now_ms;
  }
  return &e->batch->recs[e->batch->count++];
}

static int recv_burst(engine_t *e, int fd, int with_control) {
  for (int i = 0; i < RECV_BATCH; i++) {
    e->iov[i].iov_base = e->bufs + (size_t)i * MAX_DATAGRAM;
    e->iov[i].iov_len = MAX_DATAGRAM;
    struct msghdr *h = &e->msgs[i].msg_hdr;
    memset(h, 0, sizeof *h);
    h->msg_iov = &e->iov[i];
    h->msg_iovlen = 1;
    h->msg_name = &e->names[i];
    h->msg_namelen = sizeof e->names[i];
    if (with_control) {
      h->msg_control = e->control[i];
      h->msg_controllen = sizeof e->control[i];
    }
  }
  return recvmmsg(fd, e->msgs, RECV_BATCH, MSG_DONTWAIT, NULL);
}

/* The original destination TPROXY kept in the datagram's cmsg. */
static const struct sockaddr *orig_dst(struct msghdr *h) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
    if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_ORIGDSTADDR) ||
        (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR))
      return (const struct sockaddr *)CMSG_DATA(c);
  }
  return NULL;
}

static void active(engine_t *e, int fd, uint32_t gen) {
  record_t *r = record(e, 0);
  if (!r) return;
  r->kind = REC_ACTIVE;
  r->fd = fd;
  r->a = 0;
  r->b = gen;
}

/* Under the lock: the next generation for a flow taking an fd number (never 0, which no
 * flow has: a wrapped counter skips it). */
static uint32_t next_gen(engine_t *e) {
  if (++e->gens == 0) e->gens = 1;
  return e->gens;
}

/* ---------- gateway flows: framed TCP to the node's gateway (under the lock) ---------- */

static void up_free(upstream_t *u) {
  free(u->tx);
  free(u->rx);
  free(u);
}

static void gw_arm(engine_t *e, upstream_t *u, int out) {
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0u),
                           .data.u64 = ((uint64_t)KIND_GATEWAY << 32) | (uint32_t)u->fd};
  epoll_ctl(e->epfd, EPOLL_CTL_MOD, u->fd, &ev);
}

/* Sends the tail of a frame the kernel took in part; 1 when none is left. An error is left
 * to the read side, which sees it too and reports the connection closed. */
static int gw_flush_tail(engine_t *e, upstream_t *u) {
  if (!u->tx) return 1;
  ssize_t n = send(u->fd, u->tx + u->tx_off, u->tx_len - u->tx_off, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n < 0) return 0;
  u->tx_off += (size_t)n;
  if (u->tx_off < u->tx_len) return 0;
  free(u->tx);
  u->tx = NULL;
  u->tx_len = u->tx_off = 0;
  gw_arm(e, u, 0);
  return 1;
}

/* `frames` datagrams as (header, payload) iovec pairs in one writev. Returns how many went
 * out (a frame taken in part counts: its tail follows on EPOLLOUT before anything else);
 * the others are added to *full (the connection takes no more now: dropped, never queued)
 * or *down (the connection ended or broke; JS is told and reopens). */
static int gw_write(engine_t *e, upstream_t *u, struct iovec *iov, int frames, uint64_t *full, uint64_t *down) {
  if (u->dead) {
    *down += (uint64_t)frames;
    return 0;
  }
  if (!gw_flush_tail(e, u)) {
    *full += (uint64_t)frames;
    return 0;
  }
  struct msghdr h = {.msg_iov = iov, .msg_iovlen = (size_t)frames * 2};
  ssize_t n = sendmsg(u->fd, &h, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) *full += (uint64_t)frames;
    else *down += (uint64_t)frames;
    return 0;
  }
  size_t done = (size_t)n;
  for (int k = 0; k < frames; k++) {
    size_t size = iov[2 * k].iov_len + iov[2 * k + 1].iov_len;
    if (done >= size) {
      done -= size;
      continue;
    }
    if (done == 0) { /* frames k.. not begun: dropped */
      *full += (uint64_t)(frames - k);
      return k;
    }
    /* Frame k went in part: the stream is mid-frame until its tail is sent. */
    u->tx = malloc(size - done);
    if (!u->tx) { /* cannot finish the frame: end the connection (the read side reports it) */
      shutdown(u->fd, SHUT_RDWR);
      *down += (uint64_t)(frames - k);
      return k;
    }
    uint8_t *to = u->tx;
    for (int part = 0; part < 2; part++) {
      struct iovec *v = &iov[2 * k + part];
      if (done >= v->iov_len) {
        done -= v->iov_len;
        continue;
      }
      memcpy(to, (uint8_t *)v->iov_base + done, v->iov_len - done);
      to += v->iov_len - done;
      done = 0;
    }
    u->tx_len = (size_t)(to - u->tx);
    u->tx_off = 0;
    gw_arm(e, u, 1);
    *full += (uint64_t)(frames - k - 1);
    return k + 1;
  }
  return frames;
}

/* One datagram as a frame (JS's send on a gateway fd): 0, EAGAIN (full) or EPIPE (ended). */
static int gw_send_one(engine_t *e, upstream_t *u, const uint8_t *data, size_t len) {
  uint8_t hdr[FRAME_HEADER] = {(uint8_t)(len >> 8), (uint8_t)len};
  struct iovec iov[2] = {{hdr, FRAME_HEADER}, {(void *)data, len}};
  uint64_t full = 0, down = 0;
  if (gw_write(e, u, iov, 1, &full, &down) == 1) return 0;
  return full ? EAGAIN : EPIPE;
}

/* Replies from the gateway: read, deframed in the read buffer (after the partial frame kept
 * from the last read) and sent to the app from the flow's reply socket with sendmmsg. */
static void read_gateway(engine_t *e, int fd, uint32_t events) {
  int closed = -1; /* the errno to report the connection closed with (0: EOF), or -1 */
  int sent = 0, report = 0;
  uint32_t gen;
  pthread_mutex_lock(&e->lock);
  upstream_t *u = (size_t)fd < e->ups_cap ? e->ups[fd] : NULL;
  if (!u || !u->gateway || u->dead) {
    pthread_mutex_unlock(&e->lock);
    return;
  }
  gen = u->gen; /* the reports below are this flow's even if JS closes it once unlocked */
  if (events & EPOLLOUT) gw_flush_tail(e, u);
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
    uint8_t *buf = e->bufs;
    size_t cap = (size_t)RECV_BATCH * MAX_DATAGRAM;
    if (u->rx_len) memcpy(buf, u->rx, u->rx_len);
    ssize_t n = recv(fd, buf + u->rx_len, cap - u->rx_len, MSG_DONTWAIT);
    if (n == 0) closed = 0;
    else if (n < 0) closed = errno == EAGAIN || errno == EINTR ? -1 : errno;
    else {
      size_t total = u->rx_len + (size_t)n, pos = 0;
      unsigned m = 0;
      while (total - pos >= FRAME_HEADER) {
        size_t len = ((size_t)buf[pos] << 8) | buf[pos + 1];
        if (len > MAX_FRAMED) {
          closed = EPROTO;
          break;
        }
        if (total - pos - FRAME_HEADER < len) break;
        e->iov[m].iov_base = buf + pos + FRAME_HEADER;
        e->iov[m].iov_len = len;
        struct msghdr *h = &e->msgs[m].msg_hdr;
        memset(h, 0, sizeof *h);
        h->msg_iov = &e->iov[m];
        h->msg_iovlen = 1;
        h->msg_name = &u->client;
        h->msg_namelen = u->client_len;
        pos += FRAME_HEADER + len;
        if (++m == RECV_BATCH) {
          int s = sendmmsg(u->reply_fd, e->msgs, m, MSG_DONTWAIT);
          if (s > 0) sent += s;
          m = 0;
        }
      }
      if (m) {
        int s = sendmmsg(u->reply_fd, e->msgs, m, MSG_DONTWAIT);
        if (s > 0) sent += s;
      }
      size_t left = closed < 0 ? total - pos : 0; /* < FRAME_HEADER + MAX_FRAMED */
      if (left && !u->rx && !(u->rx = malloc(FRAME_HEADER + MAX_FRAMED))) closed = ENOMEM, left = 0;
      if (left) memmove(u->rx, buf + pos, left);
      u->rx_len = left;
      report = u->reported != e->tick;
      if (report) u->reported = e->tick;
    }
  }
  if (closed >= 0) {
    u->dead = 1;
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
  }
  pthread_mutex_unlock(&e->lock);
  if (sent > 0) atomic_fetch_add(&e->replies, (uint64_t)sent);
  if (report) active(e, fd, gen);
  if (closed < 0) return;
  record_t *r = record(e, 0);
  if (!r) return;
  r->kind = REC_CLOSED;
  r->fd = fd;
  r->a = (uint32_t)closed;
  r->b = gen;
}

/* One recvmmsg burst; returns how many datagrams it read. */
static int read_listener(engine_t *e, int fd) {
  int n = recv_burst(e, fd, 1);
  if (n <= 0) return 0;
  const struct sockaddr *dsts[RECV_BATCH];
  int to_js[RECV_BATCH], n_js = 0, touched[RECV_BATCH], n_touched = 0;
  uint32_t touched_gen[RECV_BATCH];
  upstream_t *gw[RECV_BATCH]; /* the gateway flow of datagram i, written after the pass */
  upstream_t *up[RECV_BATCH]; /* the direct flow of datagram i, sent after the pass */
  uint64_t sent = 0, failed = 0, gw_full = 0, gw_down = 0;
  /* Pass 1, under the lock: datagrams of known flows go out here. */
  pthread_mutex_lock(&e->lock);
  for (int i = 0; i < n; i++) {
    struct msghdr *h = &e->msgs[i].msg_hdr;
    gw[i] = up[i] = NULL;
    dsts[i] = orig_dst(h);
    if (!dsts[i] || (h->msg_flags & (MSG_TRUNC | MSG_CTRUNC))) continue; /* cannot be routed */
    flowkey_t k;
    make_key((const struct sockaddr *)&e->names[i], dsts[i], &k);
    upstream_t *u = index_find(e, &k);
    if (!u) {
      to_js[n_js++] = i;
      continue;
    }
    if (!u->gateway) up[i] = u;
    else if (e->msgs[i].msg_len > MAX_FRAMED) failed++; /* no frame holds it (IPv6 only) */
    else gw[i] = u;
    if (u->reported != e->tick) {
      u->reported = e->tick;
      touched_gen[n_touched] = u->gen;
      touched[n_touched++] = u->fd;
    }
  }
  /* Direct flows: each flow's datagrams of this burst in one sendmmsg on its connected
   * socket (in order), a lone datagram in one send. */
  for (int i = 0; i < n; i++) {
    upstream_t *u = up[i];
    if (!u) continue;
    struct mmsghdr out[RECV_BATCH];
    unsigned m = 0;
    for (int j = i; j < n; j++) {
      if (up[j] != u) continue;
      up[j] = NULL;
      e->iov[j].iov_len = e->msgs[j].msg_len;
      memset(&out[m].msg_hdr, 0, sizeof out[m].msg_hdr);
      out[m].msg_hdr.msg_iov = &e->iov[j];
      out[m].msg_hdr.msg_iovlen = 1;
      m++;
    }
    if (m == 1) {
      if (send(u->fd, out[0].msg_hdr.msg_iov->iov_base, out[0].msg_hdr.msg_iov->iov_len, MSG_DONTWAIT) < 0) failed++;
      else sent++;
      continue;
    }
    int s = sendmmsg(u->fd, out, m, MSG_DONTWAIT);
    /* An error stops the call at that datagram; the rest of this flow's are counted failed
     * (as one send each would mostly have: EAGAIN, ECONNREFUSED persist for the burst). */
    if (s < 0) s = 0;
    sent += (uint64_t)s;
    failed += (uint64_t)(m - (unsigned)s);
  }
  /* Gateway flows: each flow's datagrams of this burst framed in one writev. */
  uint8_t hdr[RECV_BATCH][FRAME_HEADER];
  struct iovec v[RECV_BATCH * 2];
  for (int i = 0; i < n; i++) {
    upstream_t *u = gw[i];
    if (!u) continue;
    int frames = 0;
    for (int j = i; j < n; j++) {
      if (gw[j] != u) continue;
      gw[j] = NULL;
      size_t len = e->msgs[j].msg_len;
      hdr[j][0] = (uint8_t)(len >> 8);
      hdr[j][1] = (uint8_t)len;
      v[2 * frames] = (struct iovec){hdr[j], FRAME_HEADER};
      v[2 * frames + 1] = (struct iovec){e->iov[j].iov_base, len};
      frames++;
    }
    sent += (uint64_t)gw_write(e, u, v, frames, &gw_full, &gw_down);
  }
  pthread_mutex_unlock(&e->lock);
  if (sent) atomic_fetch_add(&e->fast_out, sent);
  if (failed) atomic_fetch_add(&e->fast_failed, failed);
  if (gw_full) atomic_fetch_add(&e->gw_full, gw_full);
  if (gw_down) atomic_fetch_add(&e->gw_down, gw_down);
  /* Pass 2: the rest to JS, and the flows that were active. */
  for (int t = 0; t < n_touched; t++) active(e, touched[t], touched_gen[t]);
  for (int j = 0; j < n_js; j++) {
    int i = to_js[j];
    size_t len = e->msgs[i].msg_len;
    record_t *r = record(e, len);
    if (!r) return n;
    r->kind = REC_DATAGRAM;
    r->fd = fd;
    r->a = (uint32_t)e->batch->used;
    r->b = (uint32_t)len;
    memcpy(e->batch->data + e->batch->used, e->iov[i].iov_base, len);
    e->batch->used += len;
    fmt_addr((const struct sockaddr *)&e->names[i], r->src);
    fmt_addr(dsts[i], r->dst);
  }
  return n;
}

/* Replies: straight back to the app from the flow's reply socket. The replies read in one
 * epoll round are gathered (one recvmmsg per upstream) and sent with one sendmmsg per run of
 * flows sharing a reply socket (one per ClusterIP:port): with many flows each reply wake-up
 * then costs a recvmmsg, not a recvmmsg and a sendmmsg. The engine's lock is held from the
 * first upstream read of a run to its flush (reply_end), so neither a flow (its client
 * address is the pending message's name) nor a reply fd is closed under the pending batch. */
static void reply_flush(engine_t *e) {
  unsigned off = 0, n = e->reply_count;
  uint64_t sent = 0;
  while (off < n) {
    int s = sendmmsg(e->reply_fd, e->reply_msgs + off, n - off, MSG_DONTWAIT);
    if (s < 0) {
      /* One reply refused (its message stops the call): skip it, unless the socket is full
       * (then the rest would fail too: dropped, as the kernel drops for any full socket). */
      if (errno == EAGAIN || errno == ENOBUFS) break;
      off++;
      continue;
    }
    off += (unsigned)s;
    sent += (uint64_t)s;
  }
  if (sent) atomic_fetch_add(&e->replies, sent);
  e->reply_count = 0;
}

/* Under the lock (taken by the caller for a run of upstream events). */
static void read_upstream(engine_t *e, int fd) {
  upstream_t *u = (size_t)fd < e->ups_cap ? e->ups[fd] : NULL;
  if (!u || u->gateway) return; /* closed, or an event from before the fd was reused for a gateway flow */
  if (e->reply_count && (e->reply_fd != u->reply_fd || REPLY_BATCH - e->reply_count < RECV_BATCH)) reply_flush(e);
  e->reply_fd = u->reply_fd;
  unsigned at = e->reply_count;
  for (unsigned i = at; i < at + RECV_BATCH; i++) {
    e->reply_iov[i].iov_base = e->reply_bufs + (size_t)i * MAX_DATAGRAM;
    e->reply_iov[i].iov_len = MAX_DATAGRAM;
    struct msghdr *h = &e->reply_msgs[i].msg_hdr;
    memset(h, 0, sizeof *h);
    h->msg_iov = &e->reply_iov[i];
    h->msg_iovlen = 1;
  }
  int n = recvmmsg(fd, e->reply_msgs + at, RECV_BATCH, MSG_DONTWAIT, NULL);
  int err = n < 0 ? errno : 0;
  for (int i = 0; i < n; i++) {
    struct msghdr *h = &e->reply_msgs[at + (unsigned)i].msg_hdr;
    e->reply_iov[at + (unsigned)i].iov_len = e->reply_msgs[at + (unsigned)i].msg_len;
    h->msg_name = &u->client;
    h->msg_namelen = u->client_len;
  }
  if (n > 0) e->reply_count += (unsigned)n;
  if (n > 0 && u->reported != e->tick) {
    u->reported = e->tick;
    e->later[e->n_later++] = (record_t){.kind = REC_ACTIVE, .fd = fd, .b = u->gen};
  }
  if (err && err != EAGAIN && err != EINTR)
    e->later[e->n_later++] = (record_t){.kind = REC_ERROR, .fd = fd, .a = (uint32_t)err, .b = u->gen};
}

/* Ends a run of upstream reads: the gathered replies sent, the lock released, and then (never
 * under the lock: a full JS queue blocks) the flows' activity and errors recorded for JS. */
static void reply_end(engine_t *e) {
  if (e->reply_count) reply_flush(e);
  pthread_mutex_unlock(&e->lock);
  for (unsigned i = 0; i < e->n_later; i++) {
    record_t *r = record(e, 0);
    if (!r) break;
    *r = e->later[i];
  }
  e->n_later = 0;
}

/* Whether a batch must reach JS now: a datagram, an error or a closed connection does; a
 * batch of activity reports only can wait (below). */
static int batch_urgent(const batch_t *b) {
  for (size_t i = 0; i < b->count; i++)
    if (b->recs[i].kind != REC_ACTIVE) return 1;
  return 0;
}

static uint64_t mono_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* epoll_wait, busy-polled for up to spin_us first when `spin` (the last round had events):
 * a reply due a few tens of µs after a send is then read without this thread sleeping and
 * being woken (a context switch each way, the largest cost per datagram at low rates on the
 * VMs measured, docs/udp.md "Round 2"). Never spins when idle: only after events. */
static int wait_events(engine_t *e, struct epoll_event *evs, int timeout_ms, int spin) {
  if (spin && e->spin_us > 0) {
    uint64_t until = mono_ns() + (uint64_t)e->spin_us * 1000u;
    do {
      int n = epoll_wait(e->epfd, evs, MAX_EVENTS, 0);
      if (n != 0) return n;
    } while (mono_ns() < until && !atomic_load(&e->stopping));
  }
  return epoll_wait(e->epfd, evs, MAX_EVENTS, timeout_ms);
}

static void *thread_main(void *arg) {
  engine_t *e = arg;
  struct epoll_event evs[MAX_EVENTS];
  int timeout_ms = -1, spin = 0;
  while (!atomic_load(&e->stopping)) {
    int n = wait_events(e, evs, timeout_ms, spin);
    if (n < 0 && errno != EINTR) break;
    spin = n > 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    e->now_ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
    /* Never 0 (a new flow's `reported` is 0 and must be reported on its first datagram). */
    e->tick = (uint32_t)(e->now_ms / ACTIVITY_TICK_MS) | 1u;
    int in_replies = 0; /* the lock is held for a run of upstream events (read_upstream) */
    for (int i = 0; i < n && !atomic_load(&e->stopping); i++) {
      int kind = (int)(evs[i].data.u64 >> 32);
      int fd = (int)(uint32_t)evs[i].data.u64;
      if (kind == KIND_UPSTREAM) {
        if (!in_replies) pthread_mutex_lock(&e->lock);
        in_replies = 1;
        read_upstream(e, fd);
        continue;
      }
      if (in_replies) reply_end(e);
      in_replies = 0;
      /* A full burst: more may wait; up to 8 bursts before the other fds get their turn. */
      if (kind == KIND_LISTENER)
        for (int k = 0; k < 8 && read_listener(e, fd) == RECV_BATCH; k++) {
        }
      else if (kind == KIND_GATEWAY) read_gateway(e, fd, evs[i].events);
    }
    if (in_replies) reply_end(e);
    if (atomic_load(&e->stopping)) break;
    /* Activity reports alone wait up to ACTIVITY_TICK_MS for company: at one datagram per
     * wake-up each report was a wake-up of the JS thread of its own (64 flows: 128/s). JS
     * then sees a flow's activity up to one tick late, so it lives up to that much longer. */
    timeout_ms = -1;
    if (e->batch && e->batch->count) {
      uint64_t due = e->batch->born_ms + ACTIVITY_TICK_MS;
      if (e->now_ms >= due || batch_urgent(e->batch)) batch_flush(e);
      else timeout_ms = (int)(due - e->now_ms);
    }
  }
  free(e->batch);
  e->batch = NULL;
  return NULL;
}

/* ---------- JS side ---------- */

/* On the JS thread: drops the batch's reports whose flow is gone from its fd (closed, or the
 * number handed to a newer flow: its generation differs) since the report was made, keeping
 * the others in order. Datagrams of new flows name the listener, not a flow: all kept. */
static void drop_stale(engine_t *e, batch_t *b) {
  size_t kept = 0;
  int locked = 0;
  for (size_t i = 0; i < b->count; i++) {
    record_t *r = &b->recs[i];
    if (r->kind != REC_DATAGRAM) {
      if (!locked) pthread_mutex_lock(&e->lock);
      locked = 1;
      upstream_t *u = (size_t)r->fd < e->ups_cap ? e->ups[r->fd] : NULL;
      if (!u || u->gen != r->b) continue;
    }
    if (kept != i) b->recs[kept] = *r;
    kept++;
  }
  if (locked) pthread_mutex_unlock(&e->lock);
  if (kept < b->count) atomic_fetch_add(&e->stale, (uint64_t)(b->count - kept));
  b->count = kept;
}

static void call_js(napi_env env, napi_value callback, void *context, void *data) {
  batch_t *b = data;
  /* env is NULL when the queue is emptied at teardown: the engine may be freed by then. */
  if (env && callback) drop_stale(context, b);
  if (env && callback && b->count) {
    napi_value buffer, recs, undefined, v;
    void *copy;
    napi_get_undefined(env, &undefined);
    napi_create_buffer_copy(env, b->used, b->data, &copy, &buffer);
    napi_create_array_with_length(env, b->count * 6, &recs);
    for (size_t i = 0; i < b->count; i++) {
      record_t *r = &b->recs[i];
      uint32_t at = (uint32_t)(i * 6);
      napi_create_int32(env, r->kind, &v);
      napi_set_element(env, recs, at, v);
      napi_create_int32(env, r->fd, &v);
      napi_set_element(env, recs, at + 1, v);
      napi_create_uint32(env, r->a, &v);
      napi_set_element(env, recs, at + 2, v);
      napi_create_uint32(env, r->b, &v);
      napi_set_element(env, recs, at + 3, v);
      if (r->kind == REC_DATAGRAM) {
        napi_create_string_latin1(env, r->src, NAPI_AUTO_LENGTH, &v);
        napi_set_element(env, recs, at + 4, v);
        napi_create_string_latin1(env, r->dst, NAPI_AUTO_LENGTH, &v);
        napi_set_element(env, recs, at + 5, v);
      }
    }
    napi_value argv[2] = {buffer, recs};
    napi_call_function(env, undefined, callback, 2, argv, NULL);
  }
  free(b);
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  char code[32];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  snprintf(code, sizeof code, "errno %d", err);
  napi_throw_error(env, code, msg);
  return NULL;
}

#define ARGS(n)                                                            \
  size_t argc = n;                                                         \
  napi_value argv[n];                                                      \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) { \
    napi_throw_type_error(env, NULL, "expected " #n " arguments");         \
    return NULL;                                                           \
  }

static engine_t *get_engine(napi_env env, napi_value v) {
  engine_t *e = NULL;
  if (napi_get_value_external(env, v, (void **)&e) != napi_ok || !e || atomic_load(&e->stopping)) {
    napi_throw_error(env, NULL, "udp engine: not an engine, or stopped");
    return NULL;
  }
  return e;
}

static int get_int(napi_env env, napi_value v, int lo, int hi, const char *what, int *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok || *out < lo || *out > hi) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be an integer in %d..%d", what, lo, hi);
    napi_throw_range_error(env, NULL, msg);
    return 0;
  }
  return 1;
}

static int get_addr(napi_env env, napi_value v, const char *what, struct sockaddr_storage *out, socklen_t *len) {
  char text[ADDR_TEXT];
  size_t n = 0;
  if (napi_get_value_string_latin1(env, v, text, sizeof text, &n) != napi_ok || !parse_addr(text, out, len)) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be \"ip:port\" or \"[ipv6]:port\"", what);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  return 1;
}

static napi_value int_value(napi_env env, int n) {
  napi_value v;
  napi_create_int32(env, n, &v);
  return v;
}

static int set_transparent(int fd, int family) {
  int one = 1;
  if (family == AF_INET6) return setsockopt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, &one, sizeof one);
  return setsockopt(fd, IPPROTO_IP, IP_TRANSPARENT, &one, sizeof one);
}

static int watch(engine_t *e, int fd, int kind) {
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)kind << 32) | (uint32_t)fd};
  return epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void engine_stop(engine_t *e) {
  if (atomic_exchange(&e->stopping, 1)) return;
  uint64_t one = 1;
  if (write(e->wakefd, &one, sizeof one) < 0) { /* the thread also sees `stopping` on its next wake */
  }
  /* A blocked call into JS returns napi_closing once the queue is aborted. */
  napi_release_threadsafe_function(e->tsfn, napi_tsfn_abort);
  if (e->started) pthread_join(e->thread, NULL);
  pthread_mutex_lock(&e->lock);
  for (size_t fd = 0; fd < e->ups_cap; fd++) {
    if (e->ups[fd]) {
      up_free(e->ups[fd]);
      e->ups[fd] = NULL;
      close((int)fd);
    }
  }
  free(e->index);
  e->index = NULL;
  e->index_cap = e->index_count = 0;
  pthread_mutex_unlock(&e->lock);
  close(e->epfd);
  close(e->wakefd);
}

/* At environment teardown, before the threadsafe function's own hook (hooks run in reverse
 * order of registration, and it was registered first): the thread must not call into it. */
static void engine_cleanup_hook(void *data) { engine_stop(data); }

static void engine_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  engine_t *e = data;
  napi_remove_env_cleanup_hook(env, engine_cleanup_hook, e);
  engine_stop(e);
  free(e->ups);
  free(e->bufs);
  free(e->reply_bufs);
  pthread_mutex_destroy(&e->lock);
  free(e);
}

/* create(onBatch(buffer, records)) → engine: starts the thread. */
static napi_value js_create(napi_env env, napi_callback_info info) {
  ARGS(1)
  engine_t *e = calloc(1, sizeof(engine_t));
  if (!e) return throw_errno(env, "udp engine", ENOMEM);
  e->bufs = malloc((size_t)RECV_BATCH * MAX_DATAGRAM);
  e->reply_bufs = malloc((size_t)REPLY_BATCH * MAX_DATAGRAM);
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  e->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  pthread_mutex_init(&e->lock, NULL);
  if (!e->bufs || !e->reply_bufs || e->epfd < 0 || e->wakefd < 0) {
    int err = e->bufs && e->reply_bufs ? errno : ENOMEM;
    if (e->epfd >= 0) close(e->epfd);
    if (e->wakefd >= 0) close(e->wakefd);
    free(e->bufs);
    free(e->reply_bufs);
    free(e);
    return throw_errno(env, "udp engine: epoll/eventfd", err);
  }
  watch(e, e->wakefd, KIND_WAKE);
  /* Read once here: a knob for measuring (docs/udp.md "Round 2"), not a flag; 0 turns the
   * busy-poll off, an unusable value leaves the default. */
  const char *spin = getenv("EDGEMESH_UDP_SPIN_US");
  e->spin_us = SPIN_US;
  if (spin && *spin) {
    char *end;
    long v = strtol(spin, &end, 10);
    if (!*end && v >= 0 && v <= 1000) e->spin_us = (int)v;
  }
  napi_value name;
  napi_create_string_utf8(env, "edgemesh-udp", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, JS_QUEUE, 1, NULL, NULL, e, call_js, &e->tsfn) !=
      napi_ok) {
    close(e->epfd);
    close(e->wakefd);
    free(e->bufs);
    free(e->reply_bufs);
    free(e);
    napi_throw_type_error(env, NULL, "onBatch must be a function");
    return NULL;
  }
  /* The thread must not keep the process alive by itself: the JS owner decides. */
  napi_unref_threadsafe_function(env, e->tsfn);
  napi_value external;
  napi_create_external(env, e, engine_finalize, NULL, &external);
  napi_add_env_cleanup_hook(env, engine_cleanup_hook, e);
  if (pthread_create(&e->thread, NULL, thread_main, e) != 0) return throw_errno(env, "pthread_create", errno);
  e->started = 1;
  return external;
}

/* listen(engine, family 4|6, port) → fd: the transparent socket TPROXY delivers to, bound to
 * the wildcard address (IPv6-only for 6), each datagram with its original destination. */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  ARGS(3)
  engine_t *e = get_engine(env, argv[0]);
  int family, port;
  if (!e || !get_int(env, argv[1], 4, 6, "family", &family) || !get_int(env, argv[2], 1, 65535, "port", &port))
    return NULL;
  int af = family == 6 ? AF_INET6 : AF_INET;
  int fd = socket(af, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "udp listener: socket", errno);
  int one = 1, rcvbuf = LISTENER_RCVBUF;
  struct sockaddr_storage addr;
  memset(&addr, 0, sizeof addr);
  socklen_t len;
  int ok;
  if (af == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&addr;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    s6->sin6_addr = in6addr_any;
    len = sizeof *s6;
    ok = setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, &one, sizeof one) == 0;
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&addr;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    s4->sin_addr.s_addr = htonl(INADDR_ANY);
    len = sizeof *s4;
    ok = setsockopt(fd, IPPROTO_IP, IP_RECVORIGDSTADDR, &one, sizeof one) == 0;
  }
  if (ok && set_transparent(fd, af) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "udp listener: IP_TRANSPARENT (the sidecar needs NET_ADMIN)", err);
  }
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (!ok || bind(fd, (struct sockaddr *)&addr, len) != 0 || watch(e, fd, KIND_LISTENER) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "udp listener: bind", err);
  }
  return int_value(env, fd);
}

/* replySocket(engine, "ip:port") → fd: a transparent socket bound to an original destination
 * (ClusterIP:port) that replies are sent from. Not read: unconnected, so TPROXY's socket
 * lookup (established, connected sockets only) never hands it the app's datagrams. */
static napi_value js_reply_socket(napi_env env, napi_callback_info info) {
  ARGS(2)
  engine_t *e = get_engine(env, argv[0]);
  struct sockaddr_storage addr;
  socklen_t len;
  if (!e || !get_addr(env, argv[1], "reply address", &addr, &len)) return NULL;
  int fd = socket(addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "udp reply socket: socket", errno);
  int one = 1, small = 4096;
  if (addr.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small); /* never read */
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (set_transparent(fd, addr.ss_family) != 0 || bind(fd, (struct sockaddr *)&addr, len) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "udp reply socket: IP_TRANSPARENT bind", err);
  }
  return int_value(env, fd);
}

/* upstream(engine, "endpoint", replyFd, "client", "dst") → fd: a UDP socket connected to
 * the endpoint whose replies this thread sends to `client` from replyFd; from now on the
 * app's datagrams from `client` to `dst` are sent on it by this thread. */
static napi_value js_upstream(napi_env env, napi_callback_info info) {
  ARGS(5)
  engine_t *e = get_engine(env, argv[0]);
  struct sockaddr_storage to, client, dst;
  socklen_t to_len, client_len, dst_len;
  int reply_fd;
  if (!e || !get_addr(env, argv[1], "endpoint", &to, &to_len) ||
      !get_int(env, argv[2], 0, 1 << 30, "reply fd", &reply_fd) ||
      !get_addr(env, argv[3], "client", &client, &client_len) || !get_addr(env, argv[4], "dst", &dst, &dst_len))
    return NULL;
  if (client.ss_family != dst.ss_family) {
    napi_throw_type_error(env, NULL, "client and dst must be of one address family");
    return NULL;
  }
  upstream_t *u = calloc(1, sizeof *u);
  if (!u) return throw_errno(env, "udp upstream", ENOMEM);
  u->reply_fd = reply_fd;
  u->client = client;
  u->client_len = client_len;
  make_key((struct sockaddr *)&client, (struct sockaddr *)&dst, &u->key);
  int fd = socket(to.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&to, to_len) != 0) {
    int err = errno;
    if (fd >= 0) close(fd);
    free(u);
    return throw_errno(env, "udp upstream: connect", err);
  }
  pthread_mutex_lock(&e->lock);
  if ((size_t)fd >= e->ups_cap) {
    size_t cap = e->ups_cap ? e->ups_cap : 256;
    while (cap <= (size_t)fd) cap *= 2;
    upstream_t **grown = realloc(e->ups, cap * sizeof *grown);
    if (!grown) {
      pthread_mutex_unlock(&e->lock);
      close(fd);
      free(u);
      return throw_errno(env, "udp upstream", ENOMEM);
    }
    memset(grown + e->ups_cap, 0, (cap - e->ups_cap) * sizeof *grown);
    e->ups = grown;
    e->ups_cap = cap;
  }
  u->fd = fd;
  u->gen = next_gen(e);
  if (index_find(e, &u->key) || !index_add(e, u)) {
    pthread_mutex_unlock(&e->lock);
    close(fd);
    free(u);
    return throw_errno(env, "udp upstream: flow index (a flow with this key exists, or no memory)", EEXIST);
  }
  e->ups[fd] = u;
  pthread_mutex_unlock(&e->lock);
  if (watch(e, fd, KIND_UPSTREAM) != 0) {
    int err = errno;
    pthread_mutex_lock(&e->lock);
    e->ups[fd] = NULL;
    index_remove(e, u);
    pthread_mutex_unlock(&e->lock);
    close(fd);
    free(u);
    return throw_errno(env, "udp upstream: epoll", err);
  }
  return int_value(env, fd);
}

/* retarget(engine, fd, "endpoint"): the flow's endpoint changed; connect() again (a UDP
 * socket may), so the flow keeps its socket and the app its address. */
static napi_value js_retarget(napi_env env, napi_callback_info info) {
  ARGS(3)
  engine_t *e = get_engine(env, argv[0]);
  int fd;
  struct sockaddr_storage to;
  socklen_t to_len;
  if (!e || !get_int(env, argv[1], 0, 1 << 30, "fd", &fd) || !get_addr(env, argv[2], "endpoint", &to, &to_len))
    return NULL;
  if (connect(fd, (struct sockaddr *)&to, to_len) != 0) return throw_errno(env, "udp upstream: re-connect", errno);
  return NULL;
}

/* send(engine, fd, buffer, offset, length) → 0 or the errno (EAGAIN: the socket buffer is
 * full, ECONNREFUSED: an earlier datagram drew an ICMP port unreachable). On a gateway flow's
 * fd the datagram is framed and written as this thread writes (EAGAIN: the connection takes
 * no more now; EPIPE: it ended): a datagram that reached JS while the flow was handed over. */
static napi_value js_send(napi_env env, napi_callback_info info) {
  ARGS(5)
  int fd, offset, length;
  void *data;
  size_t size;
  engine_t *e = get_engine(env, argv[0]);
  if (!e || !get_int(env, argv[1], 0, 1 << 30, "fd", &fd) ||
      napi_get_buffer_info(env, argv[2], &data, &size) != napi_ok ||
      !get_int(env, argv[3], 0, 1 << 30, "offset", &offset) || !get_int(env, argv[4], 0, 65535, "length", &length))
    return NULL;
  if ((size_t)offset + (size_t)length > size) {
    napi_throw_range_error(env, NULL, "offset + length beyond the buffer");
    return NULL;
  }
  pthread_mutex_lock(&e->lock);
  upstream_t *u = (size_t)fd < e->ups_cap ? e->ups[fd] : NULL;
  if (u && u->gateway) {
    int err = length > MAX_FRAMED ? EMSGSIZE : gw_send_one(e, u, (uint8_t *)data + offset, (size_t)length);
    pthread_mutex_unlock(&e->lock);
    return int_value(env, err);
  }
  pthread_mutex_unlock(&e->lock);
  ssize_t n = send(fd, (uint8_t *)data + offset, (size_t)length, MSG_DONTWAIT);
  return int_value(env, n < 0 ? errno : 0);
}

/* Under the lock: room in the by-fd table for fd; 0 without memory. */
static int ups_grow(engine_t *e, int fd) {
  if ((size_t)fd < e->ups_cap) return 1;
  size_t cap = e->ups_cap ? e->ups_cap : 256;
  while (cap <= (size_t)fd) cap *= 2;
  upstream_t **grown = realloc(e->ups, cap * sizeof *grown);
  if (!grown) return 0;
  memset(grown + e->ups_cap, 0, (cap - e->ups_cap) * sizeof *grown);
  e->ups = grown;
  e->ups_cap = cap;
  return 1;
}

/* gatewayFlow(engine, tcpFd, replyFd, "client", "dst", held, rest) → fd: takes over a flow's
 * connection to the node's gateway once JS has read its `OK`. The addon keeps a dup of tcpFd
 * (JS closes its own, which sends nothing while the dup is open); `held` (the datagrams JS
 * framed while the connection opened) is written first, `rest` (bytes read after the OK
 * line) deframed and sent to `client` from replyFd; then the flow is indexed and this thread
 * carries its datagrams both ways. The returned fd is the flow's until close(engine, fd). */
static napi_value js_gateway_flow(napi_env env, napi_callback_info info) {
  ARGS(7)
  engine_t *e = get_engine(env, argv[0]);
  int tcp_fd, reply_fd;
  struct sockaddr_storage client, dst;
  socklen_t client_len, dst_len;
  void *held, *rest;
  size_t held_len, rest_len;
  if (!e || !get_int(env, argv[1], 0, 1 << 30, "gateway fd", &tcp_fd) ||
      !get_int(env, argv[2], 0, 1 << 30, "reply fd", &reply_fd) ||
      !get_addr(env, argv[3], "client", &client, &client_len) || !get_addr(env, argv[4], "dst", &dst, &dst_len))
    return NULL;
  if (napi_get_buffer_info(env, argv[5], &held, &held_len) != napi_ok ||
      napi_get_buffer_info(env, argv[6], &rest, &rest_len) != napi_ok) {
    napi_throw_type_error(env, NULL, "held and rest must be Buffers");
    return NULL;
  }
  if (client.ss_family != dst.ss_family) {
    napi_throw_type_error(env, NULL, "client and dst must be of one address family");
    return NULL;
  }
  int type = 0;
  socklen_t type_len = sizeof type;
  if (getsockopt(tcp_fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || type != SOCK_STREAM)
    return throw_errno(env, "udp gateway flow: the gateway fd is not a stream socket", ENOTSOCK);
  upstream_t *u = calloc(1, sizeof *u);
  if (!u) return throw_errno(env, "udp gateway flow", ENOMEM);
  int fd = fcntl(tcp_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    free(u);
    return throw_errno(env, "udp gateway flow: dup", errno);
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int sndbuf = GATEWAY_SNDBUF;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  u->fd = fd;
  u->reply_fd = reply_fd;
  u->client = client;
  u->client_len = client_len;
  u->gateway = 1;
  make_key((struct sockaddr *)&client, (struct sockaddr *)&dst, &u->key);
  /* The replies framed in `rest`: their lengths checked before anything is sent. */
  const uint8_t *in = rest;
  size_t whole = 0; /* bytes of `rest` in whole frames */
  while (rest_len - whole >= FRAME_HEADER) {
    size_t len = ((size_t)in[whole] << 8) | in[whole + 1];
    if (len > MAX_FRAMED) {
      close(fd);
      up_free(u);
      return throw_errno(env, "udp gateway flow: a frame length over 65507 from the gateway", EPROTO);
    }
    if (rest_len - whole - FRAME_HEADER < len) break;
    whole += FRAME_HEADER + len;
  }
  if (rest_len > whole) {
    u->rx = malloc(FRAME_HEADER + MAX_FRAMED);
    if (!u->rx) {
      close(fd);
      up_free(u);
      return throw_errno(env, "udp gateway flow", ENOMEM);
    }
    memcpy(u->rx, in + whole, rest_len - whole);
    u->rx_len = rest_len - whole;
  }
  /* One section: nothing is sent until the flow can be taken, and the thread finds it by key,
   * by fd and in epoll at once, after the held datagrams and the early replies (in order). */
  pthread_mutex_lock(&e->lock);
  int err = !ups_grow(e, fd) ? ENOMEM : index_find(e, &u->key) ? EEXIST : 0;
  if (!err && held_len) {
    /* A part the kernel did not take waits for EPOLLOUT (at most the proxy's hold). */
    ssize_t n = send(fd, held, held_len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) n = 0;
    if ((size_t)n < held_len) {
      u->tx = malloc(held_len - (size_t)n);
      if (u->tx) memcpy(u->tx, (uint8_t *)held + n, held_len - (size_t)n);
      else err = ENOMEM;
      u->tx_len = u->tx ? held_len - (size_t)n : 0;
    }
  }
  uint64_t replied = 0;
  for (size_t pos = 0; !err && pos < whole;) {
    size_t len = ((size_t)in[pos] << 8) | in[pos + 1];
    if (sendto(reply_fd, in + pos + FRAME_HEADER, len, MSG_DONTWAIT, (struct sockaddr *)&client, client_len) >= 0)
      replied++;
    pos += FRAME_HEADER + len;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (u->tx ? EPOLLOUT : 0u),
                           .data.u64 = ((uint64_t)KIND_GATEWAY << 32) | (uint32_t)fd};
  if (!err && epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) err = errno;
  if (!err && !index_add(e, u)) {
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
    err = ENOMEM;
  }
  if (!err) {
    u->gen = next_gen(e);
    e->ups[fd] = u;
  }
  pthread_mutex_unlock(&e->lock);
  if (replied) atomic_fetch_add(&e->replies, replied);
  if (err) {
    close(fd);
    up_free(u);
    return throw_errno(env, "udp gateway flow: flow index (a flow with this key exists, or no memory)", err);
  }
  return int_value(env, fd);
}

/* sendTo(engine, replyFd, "client", data, offset, length) → 0 or errno: one reply of a flow
 * that JS carries itself (its endpoint is behind the node's gateway, so its datagrams never
 * enter the index and reach JS as new-flow records), sent from the reply socket bound to the
 * original destination, as this thread sends the replies of indexed flows. */
static napi_value js_send_to(napi_env env, napi_callback_info info) {
  ARGS(6)
  int fd, offset, length;
  void *data;
  size_t size;
  struct sockaddr_storage to;
  socklen_t to_len;
  if (!get_engine(env, argv[0]) || !get_int(env, argv[1], 0, 1 << 30, "fd", &fd) ||
      !get_addr(env, argv[2], "client", &to, &to_len) ||
      napi_get_buffer_info(env, argv[3], &data, &size) != napi_ok ||
      !get_int(env, argv[4], 0, 1 << 30, "offset", &offset) || !get_int(env, argv[5], 0, 65535, "length", &length))
    return NULL;
  if ((size_t)offset + (size_t)length > size) {
    napi_throw_range_error(env, NULL, "offset + length beyond the buffer");
    return NULL;
  }
  ssize_t n = sendto(fd, (uint8_t *)data + offset, (size_t)length, MSG_DONTWAIT, (struct sockaddr *)&to, to_len);
  return int_value(env, n < 0 ? errno : 0);
}

/* close(engine, fd): an upstream or reply socket (the upstream leaves the table first). */
static napi_value js_close(napi_env env, napi_callback_info info) {
  ARGS(2)
  engine_t *e = get_engine(env, argv[0]);
  int fd;
  if (!e || !get_int(env, argv[1], 0, 1 << 30, "fd", &fd)) return NULL;
  pthread_mutex_lock(&e->lock);
  epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
  if ((size_t)fd < e->ups_cap && e->ups[fd]) {
    index_remove(e, e->ups[fd]);
    up_free(e->ups[fd]);
    e->ups[fd] = NULL;
  }
  close(fd);
  pthread_mutex_unlock(&e->lock);
  return NULL;
}

/* stats(engine) → [sent by this thread, replies forwarded, sends that failed here, gateway
 * flows' datagrams dropped for a full connection, and for an ended one, reports dropped as
 * stale (their flow had left the fd: "Generations")]. */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  ARGS(1)
  engine_t *e = get_engine(env, argv[0]);
  if (!e) return NULL;
  napi_value out, v;
  napi_create_array_with_length(env, 6, &out);
  napi_create_double(env, (double)atomic_load(&e->fast_out), &v);
  napi_set_element(env, out, 0, v);
  napi_create_double(env, (double)atomic_load(&e->replies), &v);
  napi_set_element(env, out, 1, v);
  napi_create_double(env, (double)atomic_load(&e->fast_failed), &v);
  napi_set_element(env, out, 2, v);
  napi_create_double(env, (double)atomic_load(&e->gw_full), &v);
  napi_set_element(env, out, 3, v);
  napi_create_double(env, (double)atomic_load(&e->gw_down), &v);
  napi_set_element(env, out, 4, v);
  napi_create_double(env, (double)atomic_load(&e->stale), &v);
  napi_set_element(env, out, 5, v);
  return out;
}

/* stop(engine): joins the thread, closes every upstream; listeners are closed by JS. */
static napi_value js_stop(napi_env env, napi_callback_info info) {
  ARGS(1)
  engine_t *e = NULL;
  if (napi_get_value_external(env, argv[0], (void **)&e) != napi_ok || !e) return NULL;
  engine_stop(e);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"create", NULL, js_create, NULL, NULL, NULL, napi_default, NULL},
      {"listen", NULL, js_listen, NULL, NULL, NULL, napi_default, NULL},
      {"replySocket", NULL, js_reply_socket, NULL, NULL, NULL, napi_default, NULL},
      {"upstream", NULL, js_upstream, NULL, NULL, NULL, napi_default, NULL},
      {"gatewayFlow", NULL, js_gateway_flow, NULL, NULL, NULL, napi_default, NULL},
      {"retarget", NULL, js_retarget, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, js_send, NULL, NULL, NULL, napi_default, NULL},
      {"sendTo", NULL, js_send_to, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(edgemesh_udp, init)
