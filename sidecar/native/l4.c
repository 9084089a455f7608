/*
 * The sidecar's native L4 data path: accepts redirected connections, reads their original
 * destination, and splices the bytes of the connections JavaScript hands back (plain TCP to
 * a pod, a passthrough address, or the node's gateway after its CONNECT handshake) on one
 * epoll thread, so no Node socket exists for them.
 *
 * Why: through Node's net.Socket a short connection costs the sidecar ~100 µs of CPU (two
 * stream objects, handles, callbacks, GC); bench/proxy.ts `Connection: close` stayed at
 * 0.29-0.39x of direct. Here a connection is a 120-byte struct and a few syscalls.
 *
 * The split with JavaScript (sidecar/proxy/native-l4.ts):
 *   thread → JS  ACCEPTED fd, original destination, peer (and local address when the
 *                destination port is the listener's own: JS refuses such loops)
 *   JS → thread  connect(fd, ip, port, timeout[, hello]): dial and splice; or JS keeps
 *                the fd for itself (HTTP ports: net.Socket({ fd })), or resets it
 *   thread → JS  CONNECTED / CONNECT_FAILED (the fd is JS's again: it may try another
 *                endpoint) / CLOSED (the balancer's slot can be released); with a hello,
 *                REPLY (the peer's answer line) first, and JS says proceed or abandon
 *   JS → thread  httpRoutes: destinations whose connections this thread carries as HTTP/1.1
 *                itself from accept on, with no ACCEPTED event ("the accept-time route table")
 * Routing and load balancing stay in JavaScript; this file only moves bytes.
 *
 * Splicing: level-triggered epoll; one shared 64 KiB read buffer; a write the kernel does
 * not take whole leaves its rest in a per-direction buffer and stops reading the source
 * until the destination drains (backpressure: at most one read per direction is held).
 * A FIN read on one side becomes shutdown(SHUT_WR) on the other once its bytes are out
 * (half-close); both directions finished → both closed. An error on either side closes
 * both (the client with a reset). Idle connections (no byte either way for idle_ms) are
 * closed by a coarse sweep. Bulk flows move by splice(2); accepting pauses at an fd budget.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <node_api.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http1.h"

#define SO_ORIGINAL_DST 80      /* linux/netfilter_ipv4.h */
#define IP6T_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv6/ip6_tables.h */
#define READ_BUFFER (64 * 1024)
#define MAX_LISTENERS 8
#define ACCEPTS_PER_WAKE 64
/* Accepted fds JavaScript has not decided on yet: above this the thread stops accepting
 * (the kernel's backlog holds the rest) so a slow JS thread cannot pile up fds. */
#define MAX_UNDECIDED 1024
#define CONNECT_CHECK_MS 20
/* Empty pipes kept for bulk transfers: a pipe costs two fds and a pipe2(2) to make. */
#define PIPE_POOL 64
/* The capacity a pipe carrying an HTTP body is grown to, and the most one splice of it asks
 * for: on this VM a syscall's entry and exit are most of its cost, and a 1 MiB body then takes
 * a few splices each way instead of 16+ (CPU per 1 MiB response 584-714 µs vs 803-862 with
 * 64 KiB pipes in bench/proxy.ts, docs/proxy.md). It bounds what a slow reader holds per
 * direction in a pipe. At most H_BIG_PIPES grown pipes per engine: the kernel charges a
 * pipe's capacity to the user's pipe-user-pages-soft (16,384 pages by default) whether or not
 * it holds bytes, and past that limit every new pipe (the L4 splice's too) gets 2 pages; 64 ×
 * 64 pages is a quarter of it. Past the cap, or when F_SETPIPE_SZ fails, a pipe keeps its
 * 64 KiB and works, moving less per call. */
#define H_SPLICE_MAX (256 * 1024)
#define H_BIG_PIPES 64

enum {
  EV_ACCEPTED = 1,
  EV_CONNECTED = 2,
  EV_CONNECT_FAILED = 3,
  EV_CLOSED = 4,
  EV_ACCEPT_ERROR = 5,
  EV_FATAL = 6,
  EV_REPLY = 7,
  EV_HTTP_FALLBACK = 8, /* an HTTP connection back to JS: fd, num = bytes, line = the bytes */
  EV_HTTP_CLOSED = 9,   /* an HTTP connection closed: bytes each way */
};
enum { CLOSE_DONE = 0, CLOSE_ERROR = 1, CLOSE_IDLE = 2, CLOSE_SHUTDOWN = 3 };
enum {
  CMD_CONNECT = 1,
  CMD_LISTEN = 2,
  CMD_CLOSE_LISTENERS = 3,
  CMD_CLOSE_ALL = 4,
  CMD_STOP = 5,
  CMD_PROCEED = 6,
  CMD_ABANDON = 7,
  CMD_HTTP = 8,
  CMD_HTTP_DRAIN = 9,
};
/* A handshake reply line (the gateway's `OK <path>`), as lib/gateway-protocol.ts bounds it. */
#define MAX_REPLY 512
enum { HANDSHAKE_NONE = 0, HANDSHAKE_READING = 1, HANDSHAKE_DECIDING = 2 };
/* epoll data: a pointer (8-aligned) with the kind in its low bits. */
enum { TAG_CLIENT = 0, TAG_UPSTREAM = 1, TAG_LISTENER = 2, TAG_WAKE = 3, TAG_HCLIENT = 4, TAG_HUP = 5 };

typedef struct {
  int type, fd, num; /* num: port (accepted), errno (failed), close reason (closed) */
  char dst[INET6_ADDRSTRLEN], peer[INET6_ADDRSTRLEN], local[INET6_ADDRSTRLEN];
  char *line; /* EV_REPLY: the reply line (malloc'd) */
  int port;   /* EV_HTTP_FALLBACK of a connection this engine took at accept: its destination port */
  double sent, received; /* EV_CLOSED: bytes client → upstream and back (doubles: exact to 2^53) */
} event_t;

typedef struct {
  size_t len, cap;
  event_t *items;
} batch_t;

/* One direction of a connection: bytes read from `from` not yet written to the other side. */
typedef struct {
  char *rest;
  uint32_t rest_len, rest_off;
  int pipe[2];      /* bulk mode: splice(2) through this pipe (-1: none yet) */
  uint32_t in_pipe; /* bytes spliced in and not yet out */
  uint8_t bulk;     /* a read filled the whole buffer: move the rest by splice(2) */
  uint8_t eof;      /* `from` sent its FIN */
  uint8_t fin;      /* ...and it was carried (shutdown on the other side) */
  uint8_t big;      /* the pipe was grown to H_SPLICE_MAX (h_pipe_grow) */
  uint64_t moved;   /* bytes written to the other side: reported at close (per-service metrics) */
} dir_t;

typedef struct conn {
  struct conn *prev, *next;
  int cfd, ufd;
  int connecting; /* not spliced yet: connect, handshake, or JS deciding on its reply */
  int handshake;
  char *hello; /* sent once connected; then a reply line is read and given to JS */
  uint32_t hello_len, reply_len;
  char *reply;
  int dead; /* closed: freed after the current epoll round, which may still hold its events */
  uint32_t cmask, umask; /* epoll interest now registered (0: not registered) */
  uint64_t deadline_ms;  /* connect deadline */
  uint64_t active_ms;    /* last byte either way */
  dir_t up, down;        /* up: client → upstream; down: upstream → client */
} conn_t;

/* 8-aligned: its address goes into epoll data with a tag in the low bits. */
typedef struct {
  _Alignas(8) int fd;
  int port;
} listener_t;

/* The HTTP/1.1 connections' types (their code: "HTTP/1.1 connections" below). */
#define H_MAX_EP 64
#define H_POOL_MAX 64
#define H_POOL_IDLE_MS 4000
#define H_IN_CAP (H1_MAX_HEAD + READ_BUFFER)
#define H_RESP_CAP (H1_MAX_HEAD + READ_BUFFER)
#define H_MAX_SVC 4096
#define H_MAX_EPID 65536
#define H_ATTEMPTS 3
#define H_LINGER_MS 2000
#define H_CODES 8
#define H_BUCKETS 14
static const double H_BOUNDS[H_BUCKETS - 1] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                               0.25,  0.5,    1,     2.5,  5,     10};

typedef struct {
  int id; /* JS's endpoint number: the key of the shared pool */
  socklen_t len;
  struct sockaddr_storage addr;
} h_ep_t;

/* An upstream connection, apart from the client connection using it, so that it stays
 * registered with epoll (EPOLLIN) while it idles in its pool: a server's FIN or stray bytes on
 * an idle connection arrive as an event and close it then, instead of a MSG_PEEK per request
 * when it is taken, and a request on a pooled connection changes no epoll interest (before:
 * EPOLL_CTL_ADD when taken, EPOLL_CTL_DEL when given back, the peek: 3 of a keep-alive
 * request's ~8 syscalls). epoll data points here; freed after the round (h_free_dead), which
 * may still hold its event. */
typedef struct h_up {
  struct h_up *next_dead;
  struct hconn *owner; /* the client connection using it; NULL while pooled */
  int fd, id;          /* id: the endpoint's pool */
  uint32_t mask;       /* epoll interest registered (0: none) */
  uint32_t limit_ms;   /* pooled: H_POOL_IDLE_MS, or 1 s short of the server's Keep-Alive: timeout */
  uint64_t since;      /* pooled: when it went idle */
} h_up_t;

typedef struct {
  h_up_t *items[H_POOL_MAX];
  int n;
} h_pool_t;

typedef struct {
  /* conns, sent, received: connections taken at accept (h_accept) and their bytes, which JS
   * never hears of one by one (ProxyMetrics' connections and the service's bytes). */
  double classes[5], buckets[H_BUCKETS], sum, count, conns, sent, received;
  int codes[H_CODES][2];
  int dirty;
} h_stats_t;

enum { HS_IDLE = 0, HS_CONNECTING = 1, HS_EXCHANGE = 2, HS_LINGER = 3 };
enum { HR_HEAD = 0, HR_LENGTH = 1, HR_CHUNKED = 2, HR_UNTIL_CLOSE = 3, HR_DONE = 4 };

typedef struct hconn {
  struct hconn *prev, *next;
  int cfd, ufd, dead, state; /* ufd: up's fd, or -1 */
  uint32_t cmask;
  h_up_t *up;
  int svc, nep, ep, attempt, reused, connect_ms;
  uint32_t rr;
  uint64_t tried; /* endpoints tried for this request (bit per index) */
  h_ep_t *eps;
  char *key; /* the service's `namespace/name:port`, for 502 bodies */
  uint8_t *in, *out, *back, *resp;
  uint32_t in_len, in_cap, out_len, out_off, back_len, back_off, resp_len;
  int client_eof, client_closes, retryable, req_close, req_minor, head_req;
  int64_t req_remaining;
  int resp_state, resp_started, resp_close;
  int32_t idle_limit_ms; /* how long the upstream may idle in the pool (fast.ts's idleLimit) */
  int64_t resp_remaining;
  h1_chunked_t chunk;
  struct timespec started;
  uint64_t active_ms, deadline_ms, sent, received;
  char why[192]; /* the last attempt's failure, as fast.ts words it (502 bodies) */
  /* Taken at accept from the route table (h_accept), not handed over by JS: its end is
   * counted here, not reported; a fallback names its destination and peer (JS never saw it). */
  int accepted;
  struct sockaddr_storage odst, opeer;
  /* Content-Length bodies after their head, moved socket → pipe → socket by splice(2) (only
   * `pipe` and `in_pipe` are used): sup the request body, sdown the response body. */
  dir_t sup, sdown;
} hconn_t;

/* The accept-time route table (httpRoutes): original destination → what httpTake would have
 * been given. Open addressing over a power-of-two array, rebuilt whole by JS and swapped. */
#define H_MAX_ROUTES 8192
#define H_MAX_ROUTE_EPS 16384
typedef struct {
  uint8_t addr[16]; /* IPv4 as ::ffff:a.b.c.d */
  uint16_t port;
  uint8_t used;
  int svc, nep;
  h_ep_t *eps;
  char *key;
} h_route_t;

typedef struct {
  size_t cap, n;
  int timeout_ms;
  h_route_t *slots;
} h_routes_t;

typedef struct cmd {
  struct cmd *next;
  int type, fd, timeout_ms;
  /* CMD_HTTP: the endpoints, the service's metrics slot and key; `hello` holds the bytes read. */
  int svc, nep;
  h_ep_t *eps;
  char *key;
  char *hello;
  uint32_t hello_len;
  socklen_t addr_len;
  struct sockaddr_storage addr;
  listener_t listener;
} cmd_t;

typedef struct {
  napi_threadsafe_function tsfn;
  pthread_t thread;
  int started, stopped;
  int epfd, wakefd;
  uint32_t idle_ms;
  pthread_mutex_t lock;
  cmd_t *cmd_head, *cmd_tail;
  atomic_int undecided;
  /* Thread-owned from here. */
  listener_t listeners[MAX_LISTENERS];
  int nlisteners;
  int accept_paused;
  uint64_t accept_resume_ms;
  conn_t open;       /* list head: connections splicing */
  conn_t connecting; /* list head: connects in progress */
  conn_t dead;       /* list head: closed this round, freed after it */
  size_t nopen, nconnecting, npipes_alive;
  /* Accepting stops while this engine's fds + a reserve for the JS side would pass the limit:
   * a connection then waits in the kernel's backlog instead of being accepted and reset for
   * want of an fd for its upstream. */
  size_t fd_budget;
  uint64_t now_ms, next_sweep_ms;
  batch_t *batch;
  int pipes[PIPE_POOL][2];
  uint8_t pipe_big[PIPE_POOL];
  int npipes;
  size_t nbig; /* grown pipes alive (pooled or in use), at most H_BIG_PIPES */
  /* HTTP/1.1 connections: open and freed-this-round lists, shared upstream pools per endpoint
   * id, the parse scratch (a head's drop list is large), metrics (the lock: JS reads them). */
  hconn_t hopen, hdead;
  h_up_t *hup_dead; /* upstream connections closed this round */
  size_t nh, npooled;
  uint32_t hrr;
  int h_draining;
  h_pool_t **pools;
  int npools;
  uint64_t next_pool_sweep_ms, next_h_check_ms;
  h1_head_t hhead;
  h_stats_t *hstats;
  pthread_mutex_t hstats_lock;
  /* The accept-time route table: JS swaps it (httpRoutes) under routes_lock, the thread looks
   * up under it; nroutes lets an engine without one skip the lock. */
  h_routes_t *routes;
  pthread_mutex_t routes_lock;
  atomic_int nroutes;
  atomic_int h_accepted_open; /* connections taken at accept, open now (the active gauge) */
  char buf[READ_BUFFER];
} engine_t;

static uint64_t monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void list_init(conn_t *head) { head->prev = head->next = head; }
static void list_add(conn_t *head, conn_t *c) {
  c->next = head->next;
  c->prev = head;
  head->next->prev = c;
  head->next = c;
}
static void list_del(conn_t *c) {
  c->prev->next = c->next;
  c->next->prev = c->prev;
  c->prev = c->next = c;
}

static void format_addr(const struct sockaddr_storage *sa, char *out) {
  out[0] = 0;
  if (sa->ss_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, INET6_ADDRSTRLEN);
  else if (sa->ss_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, INET6_ADDRSTRLEN);
}

static int addr_port(const struct sockaddr_storage *sa) {
  return ntohs(sa->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                         : ((const struct sockaddr_in *)sa)->sin_port);
}

/* ---------- events to JavaScript ---------- */

static event_t *event_push(engine_t *e, int type, int fd, int num) {
  batch_t *b = e->batch;
  if (!b) {
    b = e->batch = calloc(1, sizeof(batch_t));
    if (!b) return NULL;
  }
  if (b->len == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 16;
    event_t *items = realloc(b->items, cap * sizeof(event_t));
    if (!items) return NULL;
    b->items = items;
    b->cap = cap;
  }
  event_t *ev = &b->items[b->len++];
  ev->type = type;
  ev->fd = fd;
  ev->num = num;
  ev->dst[0] = ev->peer[0] = ev->local[0] = 0;
  ev->line = NULL;
  ev->port = 0;
  ev->sent = ev->received = 0;
  return ev;
}

static void batch_free(batch_t *b) {
  if (!b) return;
  for (size_t i = 0; i < b->len; i++) free(b->items[i].line);
  free(b->items);
  free(b);
}

/* One cross-thread call per epoll round, however many events it produced. */
static void events_flush(engine_t *e) {
  if (!e->batch || e->batch->len == 0) return;
  if (napi_call_threadsafe_function(e->tsfn, e->batch, napi_tsfn_nonblocking) == napi_ok) e->batch = NULL;
  else {
    /* JS is going away: nobody to tell. */
    for (size_t i = 0; i < e->batch->len; i++) free(e->batch->items[i].line);
    e->batch->len = 0;
  }
}

static napi_value str_or_undefined(napi_env env, const char *s) {
  napi_value v;
  if (s[0]) napi_create_string_latin1(env, s, NAPI_AUTO_LENGTH, &v);
  else napi_get_undefined(env, &v);
  return v;
}

static void call_js(napi_env env, napi_value callback, void *context, void *data) {
  (void)context;
  batch_t *b = data;
  if (env && callback) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    for (size_t i = 0; i < b->len; i++) {
      event_t *ev = &b->items[i];
      napi_value argv[9];
      napi_create_int32(env, ev->type, &argv[0]);
      napi_create_int32(env, ev->fd, &argv[1]);
      napi_create_int32(env, ev->num, &argv[2]);
      if (ev->type == EV_HTTP_FALLBACK) {
        void *copy;
        napi_create_buffer_copy(env, (size_t)ev->num, ev->line ? ev->line : "", &copy, &argv[3]);
      } else argv[3] = ev->line ? str_or_undefined(env, ev->line) : str_or_undefined(env, ev->dst);
      argv[4] = str_or_undefined(env, ev->peer);
      argv[5] = str_or_undefined(env, ev->local);
      napi_create_double(env, ev->sent, &argv[6]);
      napi_create_double(env, ev->received, &argv[7]);
      napi_create_int32(env, ev->port, &argv[8]);
      if (napi_call_function(env, undefined, callback, 9, argv, NULL) == napi_pending_exception) {
        /* A throwing handler must not lose the rest of the batch: report it, go on. */
        napi_value err;
        napi_get_and_clear_last_exception(env, &err);
        napi_fatal_exception(env, err);
      }
    }
  }
  batch_free(b);
}

/* ---------- connections ---------- */

static void epoll_set(engine_t *e, int fd, uint32_t *current, uint32_t want, uintptr_t tag) {
  if (*current == want) return;
  struct epoll_event ev = {.events = want, .data.u64 = tag};
  if (want == 0) epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
  else epoll_ctl(e->epfd, *current == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
  *current = want;
}

/* Interest follows state: read a side while its direction is neither paused nor ended; wait
 * for writability where bytes are held. A side whose reading is only paused (the other side
 * is backpressured) or half-closed stays registered for errors alone, edge-triggered: epoll always reports
 * EPOLLERR/EPOLLHUP, so a peer's RST still frees the connection at once (before, the side
 * was deregistered and a client that reset kept both fds until the upstream drained or the
 * 1 h sweep). Edge-triggered because a FIN we have not read yet plus our own shutdown is a
 * standing EPOLLHUP, which level-triggered would report on every round. A side done both
 * ways (its FIN read, ours sent) is deregistered. */
static int held(const dir_t *d) { return d->rest != NULL || d->in_pipe > 0; }

static uint32_t side_interest(const dir_t *from, const dir_t *to) {
  uint32_t want = (!from->eof && !held(from) ? EPOLLIN : 0) | (held(to) ? EPOLLOUT : 0);
  /* Paused, or half-closed with bytes still to come its way: errors only. */
  if (want == 0 && !(from->eof && to->fin)) want = EPOLLET;
  return want;
}

static void update_interest(engine_t *e, conn_t *c) {
  epoll_set(e, c->cfd, &c->cmask, side_interest(&c->up, &c->down), (uintptr_t)c | TAG_CLIENT);
  epoll_set(e, c->ufd, &c->umask, side_interest(&c->down, &c->up), (uintptr_t)c | TAG_UPSTREAM);
}

static void dir_init(dir_t *d) { d->pipe[0] = d->pipe[1] = -1; }

/* A pipe for bulk mode: from the pool, or a new one. 0 if none can be had (stay in read/write). */
static int pipe_take(engine_t *e, dir_t *d) {
  if (d->pipe[0] >= 0) return 1;
  if (e->npipes > 0) {
    e->npipes--;
    d->pipe[0] = e->pipes[e->npipes][0];
    d->pipe[1] = e->pipes[e->npipes][1];
    d->big = e->pipe_big[e->npipes];
    return 1;
  }
  if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) != 0) return 0;
  d->big = 0;
  e->npipes_alive++;
  return 1;
}

/* Gives a direction's pipe up: an empty one to the pool (or closed when the pool is full), one
 * still holding bytes closed with them. */
static void pipe_put(engine_t *e, dir_t *d) {
  if (d->pipe[0] < 0) return;
  if (d->in_pipe == 0 && e->npipes < PIPE_POOL) {
    e->pipes[e->npipes][0] = d->pipe[0];
    e->pipes[e->npipes][1] = d->pipe[1];
    e->pipe_big[e->npipes] = d->big;
    e->npipes++;
  } else {
    close(d->pipe[0]);
    close(d->pipe[1]);
    e->npipes_alive--;
    if (d->big) e->nbig--;
  }
  d->big = 0;
  d->pipe[0] = d->pipe[1] = -1;
  d->in_pipe = 0;
}

/* Frees what a direction holds. */
static void dir_release(engine_t *e, dir_t *d) {
  free(d->rest);
  d->rest = NULL;
  pipe_put(e, d);
}

/* Closes with an RST (SO_LINGER 0) instead of a FIN. */
static void reset_close(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

static void conn_free(engine_t *e, conn_t *c, int reason, int close_client) {
  list_del(c);
  if (c->connecting) e->nconnecting--;
  else e->nopen--;
  /* close(2) removes the fds from epoll. */
  if (c->ufd >= 0) close(c->ufd);
  if (close_client) {
    /* After an error: reset, as the peer did, so the app learns at once that the stream broke. */
    if (reason == CLOSE_ERROR) reset_close(c->cfd);
    else close(c->cfd);
    event_t *ev = event_push(e, EV_CLOSED, c->cfd, reason);
    if (ev) {
      ev->sent = (double)c->up.moved;
      ev->received = (double)c->down.moved;
    }
  }
  dir_release(e, &c->up);
  dir_release(e, &c->down);
  free(c->hello);
  free(c->reply);
  c->hello = c->reply = NULL;
  c->dead = 1;
  list_add(&e->dead, c);
}

static void free_dead(engine_t *e) {
  while (e->dead.next != &e->dead) {
    conn_t *c = e->dead.next;
    list_del(c);
    free(c);
  }
}

/* Writes what `d` holds to `to`. Returns -1 on a write error, else 0. */
static int flush_rest(dir_t *d, int to) {
  while (d->in_pipe > 0) {
    ssize_t n = splice(d->pipe[0], NULL, to, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    d->in_pipe -= (uint32_t)n;
    d->moved += (uint64_t)n;
  }
  while (d->rest) {
    ssize_t n = send(to, d->rest + d->rest_off, d->rest_len - d->rest_off, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    d->rest_off += (uint32_t)n;
    d->moved += (uint64_t)n;
    if (d->rest_off == d->rest_len) {
      free(d->rest);
      d->rest = NULL;
      d->rest_len = d->rest_off = 0;
    }
  }
  return 0;
}

/* Carries a FIN read earlier once nothing is held for that direction. */
static int carry_fin(dir_t *d, int to) {
  if (d->eof && !held(d) && !d->fin) {
    d->fin = 1;
    if (shutdown(to, SHUT_WR) < 0 && errno != ENOTCONN) return -1;
  }
  return 0;
}

/*
 * Bulk mode: socket → pipe → socket with splice(2), so the bytes are not copied through this
 * process: on 1 MiB bodies the sidecar spent 35% less CPU per GB (0.24 vs 0.37 s) and carried
 * ~9% more (docs/proxy.md). What the destination does not take
 * stays in the pipe, and the source is not read until it drains.
 */
static int pump_splice(dir_t *d, int from, int to) {
  for (int i = 0; i < 16 && !d->eof && d->in_pipe == 0; i++) {
    ssize_t n = splice(from, NULL, d->pipe[1], NULL, READ_BUFFER, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0) {
      d->eof = 1;
      break;
    }
    d->in_pipe = (uint32_t)n;
    if (flush_rest(d, to) < 0) return -1;
    if (n < READ_BUFFER) break;
  }
  return 0;
}

/* Moves bytes `from` → `to` until the source has none or the destination is full. */
static int pump(engine_t *e, dir_t *d, int from, int to) {
  for (int i = 0; i < 16 && !d->eof && !held(d); i++) {
    if (d->bulk) {
      if (pipe_take(e, d)) {
        int rc = pump_splice(d, from, to);
        /* A pipe is held only while bytes wait in it: thousands of quiet bulk connections
         * then share the pool instead of keeping two fds and pipe pages each. */
        if (d->in_pipe == 0) pipe_put(e, d);
        if (rc < 0) return -1;
        break;
      }
      d->bulk = 0; /* no pipe to be had (fds short): copy instead */
    }
    ssize_t n = read(from, e->buf, READ_BUFFER);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0) {
      d->eof = 1;
      break;
    }
    ssize_t w = send(to, e->buf, (size_t)n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno != EAGAIN && errno != EINTR) return -1;
      w = 0;
    }
    d->moved += (uint64_t)w;
    if (w < n) {
      d->rest = malloc((size_t)(n - w));
      if (!d->rest) return -1;
      memcpy(d->rest, e->buf + w, (size_t)(n - w));
      d->rest_len = (uint32_t)(n - w);
      d->rest_off = 0;
      break;
    }
    if (n < READ_BUFFER) break; /* level-triggered: epoll says when there is more */
    /* A full buffer: a bulk flow. Small exchanges never pay for a pipe. */
    d->bulk = 1;
  }
  return carry_fin(d, to);
}

/* A connect that failed hands the client fd back to JS (undecided again: it may try another). */
static void connect_failed(engine_t *e, int cfd, int err) {
  atomic_fetch_add(&e->undecided, 1);
  event_push(e, EV_CONNECT_FAILED, cfd, err);
}

/* Connected (and handshake accepted, if any): splice from now on. */
static void conn_open(engine_t *e, conn_t *c) {
  list_del(c);
  c->connecting = 0;
  e->nconnecting--;
  c->active_ms = e->now_ms;
  list_add(&e->open, c);
  e->nopen++;
  update_interest(e, c);
}

/* Fails a connect in progress: the upstream closes, the client fd is JS's again. */
static void conn_fail(engine_t *e, conn_t *c, int err) {
  int cfd = c->cfd;
  conn_free(e, c, CLOSE_ERROR, 0);
  connect_failed(e, cfd, err);
}

/* Reads the handshake reply up to its "\n"; then JS decides (EV_REPLY, then PROCEED/ABANDON).
 * Bytes after the line already belong to the stream: they go to the client first. */
static void read_reply(engine_t *e, conn_t *c) {
  ssize_t n = read(c->ufd, c->reply + c->reply_len, MAX_REPLY - c->reply_len);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    conn_fail(e, c, n == 0 ? ECONNRESET : errno);
    return;
  }
  c->reply_len += (uint32_t)n;
  char *nl = memchr(c->reply, '\n', c->reply_len);
  if (!nl) {
    if (c->reply_len == MAX_REPLY) conn_fail(e, c, EPROTO); /* no line within bounds */
    return;
  }
  size_t line_len = (size_t)(nl - c->reply), rest = c->reply_len - line_len - 1;
  char *line = malloc(line_len + 1);
  event_t *ev = line ? event_push(e, EV_REPLY, c->cfd, 0) : NULL;
  if (!ev) {
    free(line);
    conn_fail(e, c, ENOMEM);
    return;
  }
  memcpy(line, c->reply, line_len);
  line[line_len] = 0;
  ev->line = line;
  if (rest > 0) {
    c->down.rest = malloc(rest);
    if (c->down.rest) {
      memcpy(c->down.rest, nl + 1, rest);
      c->down.rest_len = (uint32_t)rest;
    }
  }
  free(c->reply);
  c->reply = NULL;
  c->handshake = HANDSHAKE_DECIDING;
  c->deadline_ms = UINT64_MAX; /* JS answers at once; a late timeout would contradict it */
  epoll_set(e, c->ufd, &c->umask, 0, (uintptr_t)c | TAG_UPSTREAM);
}

static void conn_event(engine_t *e, conn_t *c, int upstream_side, uint32_t events) {
  if (c->dead) return;
  if (c->connecting) {
    if (c->handshake == HANDSHAKE_READING) {
      read_reply(e, c);
      return;
    }
    if (c->handshake == HANDSHAKE_DECIDING) return;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == EINPROGRESS || (err == 0 && !(events & EPOLLOUT))) return;
    if (err != 0) {
      conn_fail(e, c, err);
      return;
    }
    if (c->hello) {
      /* A fresh connection's send buffer takes a header line whole. */
      ssize_t w = send(c->ufd, c->hello, c->hello_len, MSG_NOSIGNAL);
      if (w != (ssize_t)c->hello_len) {
        conn_fail(e, c, w < 0 ? errno : EPROTO);
        return;
      }
      free(c->hello);
      c->hello = NULL;
      c->reply = malloc(MAX_REPLY);
      if (!c->reply) {
        conn_fail(e, c, ENOMEM);
        return;
      }
      c->handshake = HANDSHAKE_READING;
      epoll_set(e, c->ufd, &c->umask, EPOLLIN, (uintptr_t)c | TAG_UPSTREAM);
      return;
    }
    event_push(e, EV_CONNECTED, c->cfd, 0);
    conn_open(e, c);
    return;
  }
  int failed = 0;
  int cfd = c->cfd, ufd = c->ufd;
  if (events & EPOLLOUT) {
    dir_t *d = upstream_side ? &c->up : &c->down;
    failed |= flush_rest(d, upstream_side ? ufd : cfd) < 0;
    if (d->pipe[0] >= 0 && d->in_pipe == 0) pipe_put(e, d);
    if (!failed) failed |= carry_fin(d, upstream_side ? ufd : cfd) < 0;
  }
  if (!failed && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
    if (upstream_side) failed |= pump(e, &c->down, ufd, cfd) < 0;
    else failed |= pump(e, &c->up, cfd, ufd) < 0;
  }
  /* An error or hang-up on a side we only wait to write to: the write would fail too. */
  if (!failed && (events & EPOLLERR)) failed = 1;
  if (failed) {
    conn_free(e, c, CLOSE_ERROR, 1);
    return;
  }
  c->active_ms = e->now_ms;
  if (c->up.fin && c->down.fin) {
    conn_free(e, c, CLOSE_DONE, 1);
    return;
  }
  update_interest(e, c);
}

/* The client fd is the engine's from here until it closes or a connect fails. */
static void start_connect(engine_t *e, cmd_t *cmd) {
  atomic_fetch_sub(&e->undecided, 1);
  int fd = socket(cmd->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = fd < 0 ? errno : 0;
  if (!err) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&cmd->addr, cmd->addr_len) < 0 && errno != EINPROGRESS) err = errno;
  }
  if (err) {
    if (fd >= 0) close(fd);
    connect_failed(e, cmd->fd, err);
    return;
  }
  conn_t *c = calloc(1, sizeof(conn_t));
  if (!c) {
    close(fd);
    connect_failed(e, cmd->fd, ENOMEM);
    return;
  }
  c->cfd = cmd->fd;
  c->ufd = fd;
  c->hello = cmd->hello; /* the connection owns it now */
  c->hello_len = cmd->hello_len;
  cmd->hello = NULL;
  dir_init(&c->up);
  dir_init(&c->down);
  c->connecting = 1;
  e->nconnecting++;
  c->deadline_ms = e->now_ms + (uint64_t)cmd->timeout_ms;
  list_add(&e->connecting, c);
  c->umask = EPOLLOUT;
  struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uintptr_t)c | TAG_UPSTREAM};
  epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev);
  int one = 1;
  setsockopt(c->cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void check_deadlines(engine_t *e) {
  for (conn_t *c = e->connecting.next, *next; c != &e->connecting; c = next) {
    next = c->next;
    if (e->now_ms >= c->deadline_ms) conn_fail(e, c, ETIMEDOUT);
  }
  if (e->idle_ms > 0 && e->nopen > 0 && e->now_ms >= e->next_sweep_ms) {
    for (conn_t *c = e->open.next, *next; c != &e->open; c = next) {
      next = c->next;
      if (e->now_ms - c->active_ms >= e->idle_ms) conn_free(e, c, CLOSE_IDLE, 1);
    }
  }
  if (e->now_ms >= e->next_sweep_ms) e->next_sweep_ms = e->now_ms + (e->idle_ms > 4 ? e->idle_ms / 4 : 1);
}

/* ---------- HTTP/1.1 connections (EDGEMESH_HTTP1_PATH=native) ----------
 *
 * A client connection on an HTTP service port whose requests need nothing of JavaScript but
 * round-robin balancing (sidecar/proxy/native-http1.ts decides) is handed over with its
 * endpoints: this thread reads each request head (http1.c), picks the next endpoint, sends the
 * head without its hop-by-hop lines on a pooled keep-alive connection (or a new one), forwards
 * a Content-Length body, reads the response head, forwards it and its body (Content-Length,
 * chunked, until close; 1xx passed on; HEAD/204/304 without one) and counts the exchange.
 *
 *   anything else goes back to JavaScript (EV_HTTP_FALLBACK: the fd and the bytes not yet
 *     handled), at a request boundary only: chunked or Upgrade requests, malformed heads
 *     (JavaScript answers 400/431/405 as the JS path does), CONNECT
 *   retries: an idempotent request without a body, on a failed connect or an upstream that
 *     closed before any response byte, on the next endpoint, up to H_ATTEMPTS; else 502
 *   backpressure: at most one read is held per direction (the client's bytes wait in `in`,
 *     bounded by H_IN_CAP; the upstream is not read while bytes for the client wait)
 *   idle upstream connections: shared per endpoint (H_POOL_MAX), closed after H_POOL_IDLE_MS
 *     (fast.ts's POOL_IDLE_MS, same reason), checked with a MSG_PEEK when taken (a FIN or
 *     stray bytes from the server: not reused)
 *   bodies: a Content-Length body after its head moves by splice(2), socket → pipe → socket
 *     (h_splice_request, h_splice_response); heads, chunked bodies and bodies until close are
 *     read and copied, as they must be parsed or their end found
 *   metrics: per service slot (JS's index), classes, the duration histogram with
 *     service-metrics.ts's buckets, status codes; JS takes the deltas (httpStats)
 *   taken at accept (h_accept): the engine that accepts looks the original destination up in
 *     the table JS gave it (httpRoutes) and starts the connection on its own thread: no event
 *     to JS, no hand-over to another engine's thread (JS's wake-up and the hand-over were most
 *     of a `Connection: close` request's cost above the exchange itself). Such a connection
 *     counts itself and its bytes in the slot's stats (JS adds them at its poll) and is closed
 *     without an event; a fallback names its destination and peer (JS never saw it)
 */

static double h_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void h_list_add(hconn_t *head, hconn_t *c) {
  c->next = head->next;
  c->prev = head;
  head->next->prev = c;
  head->next = c;
}
static void h_list_del(hconn_t *c) {
  c->prev->next = c->next;
  c->next->prev = c->prev;
  c->prev = c->next = c;
}

static h_stats_t *h_stats(engine_t *e, int svc) {
  if (svc < 0 || svc >= H_MAX_SVC) return NULL;
  if (!e->hstats) e->hstats = calloc(H_MAX_SVC, sizeof(h_stats_t));
  return e->hstats ? &e->hstats[svc] : NULL;
}

static void h_count(engine_t *e, hconn_t *c, int status, double seconds) {
  pthread_mutex_lock(&e->hstats_lock);
  h_stats_t *s = h_stats(e, c->svc);
  if (s) {
    int cls = status / 100 - 1;
    if (cls >= 0 && cls < 5) s->classes[cls]++;
    int b = 0;
    while (b < H_BUCKETS - 1 && seconds > H_BOUNDS[b]) b++;
    s->buckets[b]++;
    s->sum += seconds;
    s->count++;
    int k = 0;
    while (k < H_CODES && s->codes[k][0] != 0 && s->codes[k][0] != status) k++;
    if (k == H_CODES) k = H_CODES - 1; /* more distinct codes than slots: the last one carries them */
    if (s->codes[k][0] == 0) s->codes[k][0] = status;
    s->codes[k][1]++;
    s->dirty = 1;
  }
  pthread_mutex_unlock(&e->hstats_lock);
}

static h_pool_t *h_pool(engine_t *e, int id) {
  if (id < 0 || id >= H_MAX_EPID) return NULL;
  if (id >= e->npools) {
    int n = e->npools ? e->npools : 16;
    while (n <= id) n *= 2;
    h_pool_t **p = realloc(e->pools, (size_t)n * sizeof *p);
    if (!p) return NULL;
    memset(p + e->npools, 0, (size_t)(n - e->npools) * sizeof *p);
    e->pools = p;
    e->npools = n;
  }
  if (!e->pools[id]) e->pools[id] = calloc(1, sizeof(h_pool_t));
  return e->pools[id];
}

/* Closes an upstream connection (out of epoll first: a forked child may briefly share the
 * socket, and epoll drops an item only when the last reference closes); freed after the round. */
static void h_up_close(engine_t *e, h_up_t *u) {
  if (u->fd < 0) return;
  if (u->mask) epoll_ctl(e->epfd, EPOLL_CTL_DEL, u->fd, NULL);
  close(u->fd);
  u->fd = -1;
  u->mask = 0;
  u->owner = NULL;
  u->next_dead = e->hup_dead;
  e->hup_dead = u;
}

/* A pooled connection to endpoint `id` not idle too long, or NULL. One the server closed is
 * gone already (h_pool_event), or fails its request as a reused connection (retried). */
static h_up_t *h_pool_take(engine_t *e, int id) {
  h_pool_t *p = h_pool(e, id);
  while (p && p->n > 0) {
    h_up_t *u = p->items[--p->n];
    e->npooled--;
    if (e->now_ms - u->since < u->limit_ms) return u;
    h_up_close(e, u);
  }
  return NULL;
}

static void h_pool_give(engine_t *e, int id, h_up_t *u, int32_t limit_ms) {
  h_pool_t *p = h_pool(e, id);
  u->owner = NULL;
  if (!p || p->n >= H_POOL_MAX || limit_ms <= 0) {
    h_up_close(e, u);
    return;
  }
  /* Watched while idle: readable means the server closed it or broke framing. */
  epoll_set(e, u->fd, &u->mask, EPOLLIN, (uintptr_t)u | TAG_HUP);
  u->id = id;
  u->limit_ms = (uint32_t)limit_ms;
  u->since = e->now_ms;
  p->items[p->n++] = u;
  e->npooled++;
}

/* An event on an idle pooled connection: a FIN, a reset or stray bytes; it is not reused. */
static void h_pool_event(engine_t *e, h_up_t *u, uint32_t events) {
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  h_pool_t *p = h_pool(e, u->id);
  for (int k = 0; p && k < p->n; k++) {
    if (p->items[k] != u) continue;
    memmove(&p->items[k], &p->items[k + 1], (size_t)(p->n - k - 1) * sizeof p->items[0]);
    p->n--;
    e->npooled--;
    break;
  }
  h_up_close(e, u);
}

static void h_pool_sweep(engine_t *e) {
  for (int id = 0; id < e->npools; id++) {
    h_pool_t *p = e->pools[id];
    if (!p) continue;
    int kept = 0;
    for (int k = 0; k < p->n; k++) {
      if (e->now_ms - p->items[k]->since >= p->items[k]->limit_ms) {
        h_up_close(e, p->items[k]);
        e->npooled--;
      } else p->items[kept++] = p->items[k];
    }
    p->n = kept;
  }
}

static void h_pools_free(engine_t *e) {
  for (int id = 0; id < e->npools; id++) {
    h_pool_t *p = e->pools[id];
    if (!p) continue;
    for (int k = 0; k < p->n; k++) h_up_close(e, p->items[k]);
    free(p);
  }
  free(e->pools);
  e->pools = NULL;
  e->npools = 0;
  e->npooled = 0;
}

/* Bytes waiting for the client (copied in `back`, or spliced into sdown's pipe) or for the
 * upstream (`out`, or sup's pipe): while they wait, their source is not read. */
static int h_back_held(const hconn_t *c) { return c->back_off < c->back_len || c->sdown.in_pipe > 0; }
static int h_out_held(const hconn_t *c) { return c->out_off < c->out_len || c->sup.in_pipe > 0; }

static void h_interest(engine_t *e, hconn_t *c) {
  uint32_t cw = 0, uw = 0;
  int body_blocked = c->req_remaining > 0 && h_out_held(c);
  if (!c->client_eof && c->in_len < H_IN_CAP && !body_blocked) cw |= EPOLLIN;
  if (c->state == HS_LINGER) cw = EPOLLIN;
  if (h_back_held(c)) cw |= EPOLLOUT;
  if (c->up) {
    if (c->state == HS_CONNECTING || h_out_held(c)) uw |= EPOLLOUT;
    if (c->state == HS_EXCHANGE && !h_back_held(c)) uw |= EPOLLIN;
  }
  epoll_set(e, c->cfd, &c->cmask, cw, (uintptr_t)c | TAG_HCLIENT);
  if (c->up) epoll_set(e, c->up->fd, &c->up->mask, uw, (uintptr_t)c->up | TAG_HUP);
}

static void h_drop_upstream(engine_t *e, hconn_t *c) {
  if (!c->up) return;
  h_up_close(e, c->up);
  c->up = NULL;
  c->ufd = -1;
}

/* Room for `more` bytes in `in`: it grows from 4 KiB as needed (up to H_IN_CAP) and is freed
 * whenever it empties, so an idle keep-alive connection holds no buffer. 0, or -1 (no memory). */
static int h_in_room(hconn_t *c, size_t more) {
  size_t need = c->in_len + more;
  if (need <= c->in_cap) return 0;
  size_t cap = c->in_cap ? c->in_cap : 4096;
  while (cap < need) cap *= 2;
  if (cap > H_IN_CAP) cap = H_IN_CAP;
  if (need > cap) return -1;
  uint8_t *b = realloc(c->in, cap);
  if (!b) return -1;
  c->in = b;
  c->in_cap = (uint32_t)cap;
  return 0;
}

static void h_in_consumed(hconn_t *c, size_t used) {
  memmove(c->in, c->in + used, c->in_len - used);
  c->in_len -= (uint32_t)used;
  if (c->in_len == 0) {
    free(c->in);
    c->in = NULL;
    c->in_cap = 0;
  }
}

/* Frees the connection; the client fd is closed (reset after an error) unless JS takes it. */
static void h_free(engine_t *e, hconn_t *c, int how /* 0 close, 1 reset, 2 keep (fallback) */) {
  if (c->dead) return;
  h_drop_upstream(e, c);
  epoll_set(e, c->cfd, &c->cmask, 0, 0);
  if (c->accepted) atomic_fetch_sub(&e->h_accepted_open, 1);
  if (how != 2) {
    if (how == 1) reset_close(c->cfd);
    else close(c->cfd);
    if (c->accepted) {
      /* No event: JS never held it; its bytes go with the next stats poll. */
      pthread_mutex_lock(&e->hstats_lock);
      h_stats_t *s = h_stats(e, c->svc);
      if (s) {
        s->sent += (double)c->sent;
        s->received += (double)c->received;
        s->dirty = 1;
      }
      pthread_mutex_unlock(&e->hstats_lock);
    } else {
      event_t *ev = event_push(e, EV_HTTP_CLOSED, c->cfd, 0);
      if (ev) {
        ev->sent = (double)c->sent;
        ev->received = (double)c->received;
      }
    }
  }
  dir_release(e, &c->sup);
  dir_release(e, &c->sdown);
  free(c->in);
  free(c->out);
  free(c->back);
  free(c->resp);
  free(c->eps);
  free(c->key);
  c->in = c->out = c->back = c->resp = NULL;
  c->in_cap = 0;
  c->eps = NULL;
  c->key = NULL;
  c->dead = 1;
  h_list_del(c);
  e->nh--;
  h_list_add(&e->hdead, c);
}

/* Back to JavaScript at a request boundary, with the client's bytes not handled yet. */
static void h_fallback(engine_t *e, hconn_t *c) {
  char *copy = malloc(c->in_len ? c->in_len : 1);
  event_t *ev = copy ? event_push(e, EV_HTTP_FALLBACK, c->cfd, (int)c->in_len) : NULL;
  if (!ev) {
    free(copy);
    h_free(e, c, 1);
    return;
  }
  if (c->in_len) memcpy(copy, c->in, c->in_len);
  ev->line = copy;
  ev->sent = (double)c->sent;
  ev->received = (double)c->received;
  if (c->accepted) {
    /* JS has no context for it: the original destination (`local`, `port`) and the peer. */
    format_addr(&c->opeer, ev->peer);
    format_addr(&c->odst, ev->local);
    ev->port = addr_port(&c->odst);
  }
  h_free(e, c, 2);
}

/* Bytes for the client: sent now, the rest kept (the upstream is not read until it drains). */
static int h_to_client(hconn_t *c, const uint8_t *data, size_t len) {
  if (len == 0) return 0;
  size_t done = 0;
  if (!h_back_held(c)) {
    ssize_t w = send(c->cfd, data, len, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno != EAGAIN && errno != EINTR) return -1;
      w = 0;
    }
    done = (size_t)w;
    c->received += (uint64_t)w;
    if (done == len) return 0;
    c->back_len = c->back_off = 0;
  }
  uint8_t *b = realloc(c->back, c->back_len + (len - done));
  if (!b) return -1;
  memcpy(b + c->back_len, data + done, len - done);
  c->back = b;
  c->back_len += (uint32_t)(len - done);
  return 0;
}

/* What a direction's pipe holds, out to `to` as far as it takes it (*counter: bytes out). The
 * pipe goes back to the pool once empty. -1 on a write error. */
static int h_pipe_out(engine_t *e, dir_t *d, int to, uint64_t *counter) {
  while (d->in_pipe > 0) {
    ssize_t n = splice(d->pipe[0], NULL, to, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    d->in_pipe -= (uint32_t)n;
    *counter += (uint64_t)n;
  }
  pipe_put(e, d);
  return 0;
}

/* Spliced bytes first: `back` gains bytes only while nothing is held (h_to_client), so what
 * the pipe holds always came before it. */
static int h_flush_client(engine_t *e, hconn_t *c) {
  if (h_pipe_out(e, &c->sdown, c->cfd, &c->received) < 0) return -1;
  if (c->sdown.in_pipe > 0) return 0;
  while (c->back_off < c->back_len) {
    ssize_t w = send(c->cfd, c->back + c->back_off, c->back_len - c->back_off, MSG_NOSIGNAL);
    if (w < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    c->back_off += (uint32_t)w;
    c->received += (uint64_t)w;
  }
  free(c->back);
  c->back = NULL;
  c->back_len = c->back_off = 0;
  return 0;
}

/* The head (`out`) first, then body bytes spliced behind it. */
static int h_flush_upstream(engine_t *e, hconn_t *c) {
  while (c->out_off < c->out_len) {
    ssize_t w = send(c->ufd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (w < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    c->out_off += (uint32_t)w;
    c->sent += (uint64_t)w;
  }
  return h_pipe_out(e, &c->sup, c->ufd, &c->sent);
}

static const char *h_reason(int status) {
  return status == 502 ? "Bad Gateway" : status == 503 ? "Service Unavailable" : "Error";
}

/* An answer of ours (502), then the connection closes (JS's #writeReply with close). */
static void h_reply_close(engine_t *e, hconn_t *c, int status, const char *why) {
  char body[512], msg[1024];
  int bl = snprintf(body, sizeof body, "edgemesh: upstream of %s failed: %s\n", c->key, why);
  if (bl < 0 || bl >= (int)sizeof body) bl = (int)sizeof body - 1;
  int ml = snprintf(msg, sizeof msg,
                    "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%.*s",
                    status, h_reason(status), bl, bl, body);
  h_count(e, c, status, h_now_s() - ((double)c->started.tv_sec + (double)c->started.tv_nsec / 1e9));
  h_drop_upstream(e, c);
  dir_release(e, &c->sup); /* request body bytes for the upstream that failed */
  c->client_closes = 1;
  c->resp_state = HR_DONE;
  c->req_remaining = 0;
  if (ml > 0 && h_to_client(c, (const uint8_t *)msg, (size_t)(ml < (int)sizeof msg ? ml : (int)sizeof msg - 1)) < 0) {
    h_free(e, c, 1);
    return;
  }
  c->state = HS_IDLE;
  c->in_len = 0; /* what the client sent after this request is not answered */
}

static void h_next(engine_t *e, hconn_t *c);
static void h_dispatch(engine_t *e, hconn_t *c);

/* A failed connect to the current endpoint, in dialer.ts's words (connectError). */
static void h_connect_failed(hconn_t *c, int err, int timed_out) {
  char id[INET6_ADDRSTRLEN + 8], ip[INET6_ADDRSTRLEN];
  const struct sockaddr_storage *a = &c->eps[c->ep].addr;
  format_addr(a, ip);
  snprintf(id, sizeof id, a->ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, addr_port(a));
  if (timed_out)
    snprintf(c->why, sizeof c->why, "EDGEMESH_ERR_DIAL_REFUSED: connect to %s failed: no answer within %d ms", id,
             c->connect_ms);
  else {
    const char *name = strerrorname_np(err);
    snprintf(c->why, sizeof c->why, "EDGEMESH_ERR_DIAL_REFUSED: connect to %s failed: %s", id, name ? name : "error");
  }
  c->tried |= 1ull << c->ep;
}

/* The upstream failed before any response byte: the next endpoint (retryable), else 502. */
static void h_upstream_failed(engine_t *e, hconn_t *c, const char *why) {
  h_drop_upstream(e, c);
  if (c->resp_started) {
    h_free(e, c, 1); /* cut mid-response: the client cannot be told otherwise */
    return;
  }
  if (c->retryable) {
    snprintf(c->why, sizeof c->why, "%s", why);
    c->out_off = 0;
    c->sent = 0;
    h_dispatch(e, c);
    return;
  }
  h_reply_close(e, c, 502, why);
  h_next(e, c);
}

static void h_dispatch(engine_t *e, hconn_t *c) {
  for (;;) {
    int pick = -1;
    if (c->attempt < H_ATTEMPTS) {
      for (int k = 0; k < c->nep; k++) {
        int i = (int)(c->rr++ % (uint32_t)c->nep);
        if (!(c->tried & (1ull << i))) {
          pick = i;
          break;
        }
      }
    }
    if (pick < 0) {
      h_reply_close(e, c, 502, c->why[0] ? c->why : "no endpoint reachable");
      h_next(e, c);
      return;
    }
    c->attempt++;
    c->ep = pick;
    h_ep_t *ep = &c->eps[pick];
    h_up_t *u = h_pool_take(e, ep->id);
    if (u) {
      u->owner = c;
      c->up = u;
      c->ufd = u->fd;
      c->reused = 1;
      c->state = HS_EXCHANGE;
      if (h_flush_upstream(e, c) < 0) {
        /* A reused connection the server closed as we sent: retried like a failed connect. */
        h_drop_upstream(e, c);
        if (!c->retryable) {
          h_reply_close(e, c, 502, "upstream closed a reused connection");
          h_next(e, c);
          return;
        }
        c->out_off = 0;
        continue;
      }
      h_interest(e, c);
      return;
    }
    c->reused = 0;
    int fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int err = fd < 0 ? errno : 0;
    if (!err) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (connect(fd, (struct sockaddr *)&ep->addr, ep->len) < 0 && errno != EINPROGRESS) err = errno;
    }
    u = err ? NULL : calloc(1, sizeof(h_up_t));
    if (!err && !u) err = ENOMEM;
    if (err) {
      if (fd >= 0) close(fd);
      h_connect_failed(c, err, 0);
      continue;
    }
    u->fd = fd;
    u->owner = c;
    c->up = u;
    c->ufd = fd;
    c->state = HS_CONNECTING;
    c->deadline_ms = e->now_ms + (uint64_t)c->connect_ms;
    h_interest(e, c);
    return;
  }
}

/* The response is complete: the upstream goes back to its pool (or closes); the next request. */
static void h_finish(engine_t *e, hconn_t *c) {
  if (c->up) {
    h_up_t *u = c->up;
    c->up = NULL;
    c->ufd = -1;
    /* Pooled only with the whole request sent: body bytes still in `out` or the pipe would
     * precede the next request on it. */
    if (!c->resp_close && c->req_minor == 1 && c->req_remaining == 0 && !h_out_held(c))
      h_pool_give(e, c->eps[c->ep].id, u, c->idle_limit_ms);
    else h_up_close(e, u);
  }
  dir_release(e, &c->sup);
  c->state = HS_IDLE;
  c->resp_state = HR_DONE;
  if (c->req_remaining > 0) c->client_closes = 1; /* the rest of the body cannot be skipped reliably */
  h_next(e, c);
}

/* How many of `len` response body bytes belong to this response (*complete: its end is among
 * them); -1 on bad chunked framing. */
static int64_t h_body_frame(hconn_t *c, const uint8_t *data, size_t len, int *complete) {
  size_t end = len;
  *complete = 0;
  if (c->resp_state == HR_LENGTH) {
    end = (uint64_t)c->resp_remaining < len ? (size_t)c->resp_remaining : len;
    c->resp_remaining -= (int64_t)end;
    *complete = c->resp_remaining == 0;
  } else if (c->resp_state == HR_CHUNKED) {
    const char *why = NULL;
    int64_t at = h1_chunked_feed(&c->chunk, data, len, &why);
    if (at == -2) return -1;
    if (at >= 0) {
      end = (size_t)at;
      *complete = 1;
    }
  }
  if (end < len) c->resp_close = 1; /* bytes past the response: the upstream broke framing */
  return (int64_t)end;
}

/* Body bytes of the response: framed, passed on. 0 done or waiting, -1 the connection is gone. */
static int h_body(engine_t *e, hconn_t *c, const uint8_t *data, size_t len) {
  int complete;
  int64_t end = h_body_frame(c, data, len, &complete);
  if (end < 0 || h_to_client(c, data, (size_t)end) < 0) {
    h_free(e, c, 1);
    return -1;
  }
  if (complete) h_finish(e, c);
  return 0;
}

/* Response bytes from the upstream: the head (1xx passed on), then the body. */
static void h_response(engine_t *e, hconn_t *c, const uint8_t *data, size_t len) {
  if (c->resp_state != HR_HEAD) {
    if (h_body(e, c, data, len) == 0 && !c->dead) h_interest(e, c);
    return;
  }
  if (c->resp_len + len > H_RESP_CAP) {
    h_upstream_failed(e, c, "response head too large");
    return;
  }
  uint8_t *r = realloc(c->resp, c->resp_len + len);
  if (!r) {
    h_free(e, c, 1);
    return;
  }
  memcpy(r + c->resp_len, data, len);
  c->resp = r;
  c->resp_len += (uint32_t)len;
  for (;;) {
    h1_head_t *h = &e->hhead;
    int rc = h1_parse_response(c->resp, c->resp_len, c->head_req, h);
    if (rc == H1_INCOMPLETE) {
      if (c->resp_len > H1_MAX_HEAD) h_upstream_failed(e, c, "response head too large");
      else h_interest(e, c);
      return;
    }
    if (rc == H1_ERROR || h->status == 101) {
      /* Not retried: the request reached the endpoint. */
      c->retryable = 0;
      h_upstream_failed(e, c, rc == H1_ERROR ? h->error : "101 to a request without Upgrade");
      return;
    }
    c->resp_started = 1;
    uint32_t head_end = h->head_end;
    if (h->status < 200) {
      /* 100 Continue and other interim responses: passed on; the final one follows. */
      if (h_to_client(c, c->resp, head_end) < 0) {
        h_free(e, c, 1);
        return;
      }
      memmove(c->resp, c->resp + head_end, c->resp_len - head_end);
      c->resp_len -= head_end;
      if (c->resp_len == 0) {
        h_interest(e, c);
        return;
      }
      continue;
    }
    int closes = c->req_close || h->until_close || c->client_eof || c->req_remaining > 0 || e->h_draining;
    if (closes) c->client_closes = 1;
    h_count(e, c, h->status, h_now_s() - ((double)c->started.tv_sec + (double)c->started.tv_nsec / 1e9));
    c->resp_close = h->close;
    c->idle_limit_ms = H_POOL_IDLE_MS;
    if (h->keep_alive_ms >= 0 && h->keep_alive_ms - 1000 < c->idle_limit_ms) c->idle_limit_ms = h->keep_alive_ms - 1000;
    c->resp_state = h->chunked ? HR_CHUNKED : h->until_close ? HR_UNTIL_CLOSE : HR_LENGTH;
    c->resp_remaining = h->content_length > 0 ? h->content_length : 0;
    memset(&c->chunk, 0, sizeof c->chunk);
    uint8_t *rest = c->resp + head_end;
    uint32_t rest_len = c->resp_len - head_end;
    /* The body bytes read with the head go out in the same send as the head (one syscall, one
     * segment for a small response, instead of two). */
    int complete = 0;
    int64_t body = 0;
    if (c->resp_state == HR_LENGTH && c->resp_remaining == 0) {
      if (rest_len > 0) c->resp_close = 1;
      complete = 1;
    } else if (rest_len > 0) {
      body = h_body_frame(c, rest, rest_len, &complete);
    }
    static const char extra[] = "connection: close\r\n";
    uint8_t *out = body >= 0 ? malloc(head_end + sizeof extra + (size_t)body) : NULL;
    if (!out) {
      h_free(e, c, 1);
      return;
    }
    size_t n = h1_rewrite(c->resp, h, closes ? extra : NULL, closes ? sizeof extra - 1 : 0, out);
    memcpy(out + n, rest, (size_t)body);
    int failed = h_to_client(c, out, n + (size_t)body) < 0;
    free(out);
    free(c->resp);
    c->resp = NULL;
    c->resp_len = 0;
    if (failed) {
      h_free(e, c, 1);
      return;
    }
    if (complete) h_finish(e, c);
    else h_interest(e, c);
    return;
  }
}

/* Client bytes that are request body: to the upstream (what the upstream does not take waits in `out`). */
static int h_forward_body(hconn_t *c, const uint8_t *data, size_t len) {
  size_t take = (uint64_t)c->req_remaining < len ? (size_t)c->req_remaining : len;
  c->req_remaining -= (int64_t)take;
  if (!h_out_held(c)) {
    ssize_t w = send(c->ufd, data, take, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno != EAGAIN && errno != EINTR) return -1;
      w = 0;
    }
    c->sent += (uint64_t)w;
    if ((size_t)w == take) return (int)take;
    free(c->out);
    c->out = malloc(take - (size_t)w);
    if (!c->out) return -1;
    memcpy(c->out, data + w, take - (size_t)w);
    c->out_len = (uint32_t)(take - (size_t)w);
    c->out_off = 0;
    return (int)take;
  }
  return -1; /* not reached: the client is not read while `out` holds bytes */
}

static int h_idempotent(const uint8_t *m, uint32_t n) {
  return (n == 3 && (!memcmp(m, "GET", 3) || !memcmp(m, "PUT", 3))) || (n == 4 && !memcmp(m, "HEAD", 4)) ||
         (n == 7 && !memcmp(m, "OPTIONS", 7)) || (n == 5 && !memcmp(m, "TRACE", 5)) ||
         (n == 6 && !memcmp(m, "DELETE", 6));
}

/* Between requests: the next one from `in`, or close when the client is done. */
static void h_next(engine_t *e, hconn_t *c) {
  if (c->dead || c->state != HS_IDLE) return;
  if (h_back_held(c)) {
    h_interest(e, c); /* the last response first */
    return;
  }
  if (c->client_closes || e->h_draining) {
    /* Our FIN, then close once the client's comes (closing first would reset a response
     * still in flight: the lingering-close problem), at most H_LINGER_MS. */
    if (c->client_eof) {
      h_free(e, c, 0);
      return;
    }
    shutdown(c->cfd, SHUT_WR);
    c->state = HS_LINGER;
    c->deadline_ms = e->now_ms + H_LINGER_MS;
    h_interest(e, c);
    return;
  }
  if (c->in_len == 0) {
    if (c->client_eof) h_free(e, c, 0);
    else h_interest(e, c);
    return;
  }
  h1_head_t *h = &e->hhead;
  int rc = h1_parse_request(c->in, c->in_len, h);
  if (rc == H1_INCOMPLETE) {
    if (c->client_eof) h_free(e, c, 0);
    else h_interest(e, c);
    return;
  }
  const uint8_t *method = c->in + h->start;
  /* JavaScript answers what is not plain: refusals (same 4xx bodies), chunked, Upgrade. */
  if (rc == H1_ERROR || h->chunked || h->upgrade) {
    h_fallback(e, c);
    return;
  }
  size_t body_here = c->in_len - h->head_end;
  int64_t length = h->content_length > 0 ? h->content_length : 0;
  if ((int64_t)body_here > length) body_here = (size_t)length;
  uint8_t *out = malloc(h->head_end + body_here);
  if (!out) {
    h_free(e, c, 1);
    return;
  }
  size_t n = h1_rewrite(c->in, h, NULL, 0, out);
  memcpy(out + n, c->in + h->head_end, body_here);
  free(c->out);
  c->out = out;
  c->out_len = (uint32_t)(n + body_here);
  c->out_off = 0;
  c->retryable = length == 0 && h_idempotent(method, h->method_len);
  c->req_close = h->close;
  c->req_minor = h->minor;
  c->head_req = h->method_len == 4 && !memcmp(method, "HEAD", 4);
  c->req_remaining = length - (int64_t)body_here;
  size_t used = h->head_end + body_here;
  h_in_consumed(c, used);
  c->resp_state = HR_HEAD;
  c->resp_started = 0;
  c->resp_close = 0;
  c->attempt = 0;
  c->tried = 0;
  c->why[0] = 0;
  clock_gettime(CLOCK_MONOTONIC, &c->started);
  h_dispatch(e, c);
}

/*
 * Content-Length bodies by splice(2): after its head, a body whose length is known needs no
 * parsing, so its bytes go socket → pipe → socket without being copied through this process
 * (as the L4 path's bulk mode; pipes from the same pool). Each splice asks for at most what is
 * left of the body, so bytes after it (a pipelined request, a server's stray bytes) stay in
 * their socket for the copy path that parses them. Backpressure as with copies: what the
 * destination does not take stays in the pipe, and the source is not read until it drains.
 */
/* How much one splice into d's pipe may ask for: H_SPLICE_MAX once the pipe is grown (here,
 * the first time it carries a body, while fewer than H_BIG_PIPES are), else READ_BUFFER. */
static size_t h_pipe_grow(engine_t *e, dir_t *d) {
  if (!d->big && e->nbig < H_BIG_PIPES && fcntl(d->pipe[1], F_SETPIPE_SZ, H_SPLICE_MAX) >= H_SPLICE_MAX) {
    d->big = 1;
    e->nbig++;
  }
  return d->big ? H_SPLICE_MAX : READ_BUFFER;
}

static void h_splice_request(engine_t *e, hconn_t *c) {
  for (int i = 0; i < 16; i++) {
    size_t cap = h_pipe_grow(e, &c->sup);
    size_t want = (uint64_t)c->req_remaining < cap ? (size_t)c->req_remaining : cap;
    ssize_t n = splice(c->cfd, NULL, c->sup.pipe[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      h_free(e, c, 1);
      return;
    }
    if (n == 0) {
      c->client_eof = 1;
      h_free(e, c, 0); /* the request body was cut short */
      return;
    }
    c->sup.in_pipe = (uint32_t)n;
    c->req_remaining -= n;
    if (h_pipe_out(e, &c->sup, c->ufd, &c->sent) < 0) {
      h_upstream_failed(e, c, "upstream write failed");
      return;
    }
    if (c->sup.in_pipe > 0 || c->req_remaining == 0 || (size_t)n < want) break;
    if (!pipe_take(e, &c->sup)) break;
  }
  if (c->sup.in_pipe == 0) pipe_put(e, &c->sup);
  h_interest(e, c);
}

static void h_splice_response(engine_t *e, hconn_t *c) {
  for (int i = 0; i < 16; i++) {
    size_t cap = h_pipe_grow(e, &c->sdown);
    size_t want = (uint64_t)c->resp_remaining < cap ? (size_t)c->resp_remaining : cap;
    ssize_t n = splice(c->ufd, NULL, c->sdown.pipe[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    if (n <= 0) {
      /* Mid-response (the head went out): the client is reset. */
      h_upstream_failed(e, c, n == 0 ? "upstream closed the connection" : "upstream read failed");
      return;
    }
    c->sdown.in_pipe = (uint32_t)n;
    c->resp_remaining -= n;
    if (h_pipe_out(e, &c->sdown, c->cfd, &c->received) < 0) {
      h_free(e, c, 1);
      return;
    }
    if (c->resp_remaining == 0) {
      /* The whole response is read: the upstream can serve the next request while the pipe
       * drains to the client. */
      h_finish(e, c);
      return;
    }
    if (c->sdown.in_pipe > 0 || (size_t)n < want) break;
    if (!pipe_take(e, &c->sdown)) break;
  }
  if (c->sdown.in_pipe == 0) pipe_put(e, &c->sdown);
  h_interest(e, c);
}

static void h_client_event(engine_t *e, hconn_t *c, uint32_t events) {
  if (events & EPOLLOUT) {
    if (h_flush_client(e, c) < 0) {
      h_free(e, c, 1);
      return;
    }
    if (!h_back_held(c) && c->state == HS_IDLE) {
      h_next(e, c);
      if (c->dead) return;
    }
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    if (c->state == HS_LINGER) {
      ssize_t n = read(c->cfd, e->buf, READ_BUFFER);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) h_free(e, c, 0);
      return;
    }
    if (!c->client_eof && c->in_len < H_IN_CAP) {
      /* Request body straight through when nothing waits before it. */
      int body_direct = c->state == HS_EXCHANGE && c->req_remaining > 0 && !h_out_held(c) && c->in_len == 0;
      if (body_direct && pipe_take(e, &c->sup)) {
        h_splice_request(e, c);
        return;
      }
      size_t room = H_IN_CAP - c->in_len;
      ssize_t n = read(c->cfd, e->buf, body_direct ? READ_BUFFER : (room < READ_BUFFER ? room : READ_BUFFER));
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        h_free(e, c, 1);
        return;
      }
      if (n == 0) {
        c->client_eof = 1;
        if (c->state != HS_IDLE && c->req_remaining > 0) {
          h_free(e, c, 0); /* the request body was cut short */
          return;
        }
      } else if (n > 0) {
        const uint8_t *data = (const uint8_t *)e->buf;
        size_t len = (size_t)n;
        if (body_direct) {
          int took = h_forward_body(c, data, len);
          if (took < 0) {
            h_upstream_failed(e, c, "upstream write failed");
            return;
          }
          data += took;
          len -= (size_t)took;
        }
        if (len > 0) {
          if (len > H_IN_CAP - c->in_len) {
            h_free(e, c, 1); /* cannot happen: reads are bounded by the room left */
            return;
          }
          if (h_in_room(c, len) < 0) {
            h_free(e, c, 1);
            return;
          }
          memcpy(c->in + c->in_len, data, len);
          c->in_len += (uint32_t)len;
        }
      }
    } else if (events & (EPOLLHUP | EPOLLERR)) {
      h_free(e, c, 1);
      return;
    }
    if (c->state == HS_IDLE) {
      h_next(e, c);
      return;
    }
  }
  if (!c->dead) h_interest(e, c);
}

static void h_upstream_event(engine_t *e, hconn_t *c, uint32_t events) {
  if (c->state == HS_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == EINPROGRESS || (err == 0 && !(events & EPOLLOUT))) return;
    if (err != 0) {
      h_connect_failed(c, err, 0);
      h_drop_upstream(e, c);
      c->out_off = 0;
      c->sent = 0;
      h_dispatch(e, c);
      return;
    }
    c->state = HS_EXCHANGE;
  }
  if (c->state != HS_EXCHANGE) return;
  if (h_out_held(c) && ((events & EPOLLOUT) || (c->up->mask & EPOLLOUT))) {
    if (h_flush_upstream(e, c) < 0) {
      if (!c->reused) c->tried |= 1ull << c->ep;
      h_upstream_failed(e, c, "upstream write failed");
      return;
    }
    if (!h_out_held(c) && c->req_remaining > 0 && c->in_len > 0) {
      /* Body bytes that waited in `in` behind the head. */
      int took = h_forward_body(c, c->in, c->in_len);
      if (took < 0) {
        h_upstream_failed(e, c, "upstream write failed");
        return;
      }
      h_in_consumed(c, (size_t)took);
    }
  }
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !h_back_held(c)) {
    if (c->resp_state == HR_LENGTH && c->resp_remaining > 0 && pipe_take(e, &c->sdown)) {
      h_splice_response(e, c);
      return;
    }
    ssize_t n = read(c->ufd, e->buf, READ_BUFFER);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      h_interest(e, c);
      return;
    }
    if (n <= 0) {
      if (c->resp_state == HR_UNTIL_CLOSE) {
        h_drop_upstream(e, c);
        c->client_closes = 1;
        h_finish(e, c);
        return;
      }
      if (!c->reused && !c->resp_started) c->tried |= 1ull << c->ep;
      h_upstream_failed(e, c, c->reused ? "upstream closed a reused connection" : "upstream closed the connection");
      return;
    }
    h_response(e, c, (const uint8_t *)e->buf, (size_t)n);
    return;
  }
  h_interest(e, c);
}

static void h_event(engine_t *e, hconn_t *c, int upstream, uint32_t events) {
  if (c->dead) return;
  c->active_ms = e->now_ms;
  if (upstream) h_upstream_event(e, c, events);
  else h_client_event(e, c, events);
}

static void h_check(engine_t *e) {
  for (hconn_t *c = e->hopen.next, *next; c != &e->hopen; c = next) {
    next = c->next;
    if ((c->state == HS_CONNECTING || c->state == HS_LINGER) && e->now_ms >= c->deadline_ms) {
      if (c->state == HS_LINGER) h_free(e, c, 0);
      else {
        h_connect_failed(c, 0, 1);
        h_drop_upstream(e, c);
        c->out_off = 0;
        h_dispatch(e, c);
      }
    } else if (e->idle_ms > 0 && e->now_ms - c->active_ms >= e->idle_ms) h_free(e, c, 0);
  }
  if (e->now_ms >= e->next_pool_sweep_ms) {
    h_pool_sweep(e);
    e->next_pool_sweep_ms = e->now_ms + 1000;
  }
}

static void h_free_dead(engine_t *e) {
  while (e->hdead.next != &e->hdead) {
    hconn_t *c = e->hdead.next;
    h_list_del(c);
    free(c);
  }
  while (e->hup_dead) {
    h_up_t *u = e->hup_dead;
    e->hup_dead = u->next_dead;
    free(u);
  }
}

/* A new HTTP connection on `fd` with its endpoints and key (both owned from here). */
static hconn_t *h_new(engine_t *e, int fd, int svc, int nep, h_ep_t *eps, char *key, int timeout_ms) {
  hconn_t *c = calloc(1, sizeof(hconn_t));
  if (!c) return NULL;
  c->prev = c->next = c;
  c->cfd = fd;
  c->ufd = -1;
  dir_init(&c->sup);
  dir_init(&c->sdown);
  c->svc = svc;
  c->nep = nep;
  c->eps = eps;
  c->key = key;
  c->connect_ms = timeout_ms;
  c->rr = e->hrr++;
  c->active_ms = e->now_ms;
  h_list_add(&e->hopen, c);
  e->nh++;
  return c;
}

static void h_start(engine_t *e, cmd_t *cmd) {
  hconn_t *c = h_new(e, cmd->fd, cmd->svc, cmd->nep, cmd->eps, cmd->key, cmd->timeout_ms);
  if (!c) {
    close(cmd->fd);
    return; /* run_commands frees eps and key */
  }
  cmd->eps = NULL;
  cmd->key = NULL;
  if (cmd->hello_len > 0) {
    if (cmd->hello_len > H_IN_CAP || h_in_room(c, cmd->hello_len) < 0) {
      h_free(e, c, 1);
      return;
    }
    memcpy(c->in, cmd->hello, cmd->hello_len);
    c->in_len = cmd->hello_len;
  }
  int one = 1;
  setsockopt(c->cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  h_next(e, c);
}

/* ---------- the accept-time route table ---------- */

static void h_route_key(const struct sockaddr_storage *sa, uint8_t out[16], uint16_t *port) {
  memset(out, 0, 16);
  if (sa->ss_family == AF_INET6) memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
  else {
    out[10] = out[11] = 0xff;
    memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
  }
  *port = (uint16_t)addr_port(sa);
}

static size_t h_route_hash(const uint8_t addr[16], uint16_t port) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (int i = 0; i < 16; i++) h = (h ^ addr[i]) * 1099511628211ull;
  h = (h ^ (port & 0xff)) * 1099511628211ull;
  h = (h ^ (port >> 8)) * 1099511628211ull;
  return (size_t)(h ^ (h >> 29));
}

/* The entry for addr:port (with probing), or the empty slot where it would go. */
static h_route_t *h_route_slot(h_routes_t *t, const uint8_t addr[16], uint16_t port) {
  size_t mask = t->cap - 1;
  for (size_t i = h_route_hash(addr, port) & mask;; i = (i + 1) & mask) {
    h_route_t *r = &t->slots[i];
    if (!r->used || (r->port == port && !memcmp(r->addr, addr, 16))) return r;
  }
}

static void h_routes_free(h_routes_t *t) {
  if (!t) return;
  for (size_t i = 0; i < t->cap; i++) {
    free(t->slots[i].eps);
    free(t->slots[i].key);
  }
  free(t->slots);
  free(t);
}

/* A connection just accepted whose original destination is in the route table: this thread
 * carries it as httpTake would have (no event, no hand-over to another thread). 0: not in the
 * table (or no memory, or draining): it goes to JS as before. */
static int h_accept(engine_t *e, int fd, const struct sockaddr_storage *dst, const struct sockaddr_storage *peer) {
  if (e->h_draining) return 0;
  uint8_t addr[16];
  uint16_t port;
  h_route_key(dst, addr, &port);
  h_ep_t *eps = NULL;
  char *key = NULL;
  int svc = 0, nep = 0, timeout_ms = 0;
  pthread_mutex_lock(&e->routes_lock);
  h_routes_t *t = e->routes;
  h_route_t *r = t ? h_route_slot(t, addr, port) : NULL;
  if (r && r->used) {
    eps = malloc((size_t)r->nep * sizeof *eps);
    key = strdup(r->key);
    if (eps) memcpy(eps, r->eps, (size_t)r->nep * sizeof *eps);
    svc = r->svc;
    nep = r->nep;
    timeout_ms = t->timeout_ms;
  }
  pthread_mutex_unlock(&e->routes_lock);
  hconn_t *c = eps && key ? h_new(e, fd, svc, nep, eps, key, timeout_ms) : NULL;
  if (!c) {
    free(eps);
    free(key);
    return 0;
  }
  c->accepted = 1;
  c->odst = *dst;
  c->opeer = *peer;
  atomic_fetch_add(&e->h_accepted_open, 1);
  pthread_mutex_lock(&e->hstats_lock);
  h_stats_t *s = h_stats(e, svc);
  if (s) {
    s->conns++;
    s->dirty = 1;
  }
  pthread_mutex_unlock(&e->hstats_lock);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  h_next(e, c);
  return 1;
}

static void h_close_all(engine_t *e) {
  while (e->hopen.next != &e->hopen) h_free(e, e->hopen.next, 0);
  h_pools_free(e);
}

/* ---------- accepting ---------- */

static void set_accepting(engine_t *e, int on) {
  for (int i = 0; i < e->nlisteners; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uintptr_t)&e->listeners[i] | TAG_LISTENER};
    epoll_ctl(e->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, e->listeners[i].fd, &ev);
  }
  e->accept_paused = !on;
}

/* What this engine holds or will: an fd JS has not decided on yet will likely get an upstream. */
static size_t fds_in_use(engine_t *e) {
  return 2 * (e->nopen + e->nconnecting + e->npipes_alive + e->nh + (size_t)atomic_load(&e->undecided)) +
         e->npooled;
}

static int may_accept(engine_t *e) {
  return atomic_load(&e->undecided) < MAX_UNDECIDED && fds_in_use(e) + 2 <= e->fd_budget;
}

static void accept_some(engine_t *e, listener_t *l) {
  if (l->fd < 0) return;
  for (int i = 0; i < ACCEPTS_PER_WAKE; i++) {
    if (!may_accept(e)) {
      if (fds_in_use(e) + 2 > e->fd_budget) event_push(e, EV_ACCEPT_ERROR, -1, EMFILE);
      set_accepting(e, 0);
      return;
    }
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    int fd = accept4(l->fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
      /* Out of fds (or memory): pause a moment instead of spinning on a ready listener. */
      event_push(e, EV_ACCEPT_ERROR, -1, errno);
      set_accepting(e, 0);
      e->accept_resume_ms = e->now_ms + 100;
      return;
    }
    struct sockaddr_storage dst;
    socklen_t dst_len = sizeof dst;
    memset(&dst, 0, sizeof dst);
    int level = peer.ss_family == AF_INET6 ? SOL_IPV6 : SOL_IP;
    int name = peer.ss_family == AF_INET6 ? IP6T_SO_ORIGINAL_DST : SO_ORIGINAL_DST;
    event_t *ev = NULL;
    int have_dst = getsockopt(fd, level, name, &dst, &dst_len) == 0;
    if (have_dst && atomic_load(&e->nroutes) > 0 && h_accept(e, fd, &dst, &peer)) continue;
    if (have_dst) ev = event_push(e, EV_ACCEPTED, fd, addr_port(&dst));
    else ev = event_push(e, EV_ACCEPTED, fd, -errno); /* JS refuses it, with the reason */
    if (!ev) {
      close(fd);
      continue;
    }
    atomic_fetch_add(&e->undecided, 1);
    format_addr(&peer, ev->peer);
    if (ev->num >= 0) {
      format_addr(&dst, ev->dst);
      if (ev->num == l->port) {
        struct sockaddr_storage local;
        socklen_t local_len = sizeof local;
        if (getsockname(fd, (struct sockaddr *)&local, &local_len) == 0) format_addr(&local, ev->local);
      }
    }
  }
}

/* ---------- the thread ---------- */

static void close_all(engine_t *e, int tell) {
  h_close_all(e);
  while (e->open.next != &e->open) conn_free(e, e->open.next, CLOSE_SHUTDOWN, 1);
  while (e->connecting.next != &e->connecting) {
    conn_t *c = e->connecting.next;
    int cfd = c->cfd;
    conn_free(e, c, CLOSE_ERROR, 0);
    if (tell) connect_failed(e, cfd, ECANCELED);
    else close(cfd);
  }
}

static void close_listeners(engine_t *e) {
  for (int i = 0; i < e->nlisteners; i++) {
    close(e->listeners[i].fd);
    e->listeners[i].fd = -1; /* an event of this round may still name it */
  }
  e->nlisteners = 0;
}

/* JS's answer to a handshake reply: splice, or give the client fd back (JS tries another). */
static void decide(engine_t *e, int cfd, int proceed) {
  for (conn_t *c = e->connecting.next; c != &e->connecting; c = c->next) {
    if (c->cfd != cfd || c->handshake != HANDSHAKE_DECIDING) continue;
    c->handshake = HANDSHAKE_NONE;
    if (proceed) {
      conn_open(e, c);
    } else {
      conn_free(e, c, CLOSE_ERROR, 0);
      atomic_fetch_add(&e->undecided, 1);
    }
    return;
  }
}

static int run_commands(engine_t *e) {
  uint64_t count;
  if (read(e->wakefd, &count, sizeof count) < 0 && errno != EAGAIN) return 0;
  pthread_mutex_lock(&e->lock);
  cmd_t *cmd = e->cmd_head;
  e->cmd_head = e->cmd_tail = NULL;
  pthread_mutex_unlock(&e->lock);
  int stop = 0;
  while (cmd) {
    cmd_t *next = cmd->next;
    switch (cmd->type) {
    case CMD_CONNECT:
      start_connect(e, cmd);
      break;
    case CMD_LISTEN:
      if (e->nlisteners < MAX_LISTENERS) {
        e->listeners[e->nlisteners++] = cmd->listener;
        if (!e->accept_paused) {
          listener_t *l = &e->listeners[e->nlisteners - 1];
          struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uintptr_t)l | TAG_LISTENER};
          epoll_ctl(e->epfd, EPOLL_CTL_ADD, l->fd, &ev);
        }
      } else {
        close(cmd->listener.fd);
      }
      break;
    case CMD_CLOSE_LISTENERS:
      close_listeners(e);
      break;
    case CMD_CLOSE_ALL:
      close_all(e, 1);
      break;
    case CMD_STOP:
      stop = 1;
      break;
    case CMD_PROCEED:
    case CMD_ABANDON:
      decide(e, cmd->fd, cmd->type == CMD_PROCEED);
      break;
    case CMD_HTTP:
      h_start(e, cmd);
      break;
    case CMD_HTTP_DRAIN:
      e->h_draining = 1;
      for (hconn_t *c = e->hopen.next, *next; c != &e->hopen; c = next) {
        next = c->next;
        if (c->state == HS_IDLE) h_next(e, c);
      }
      break;
    }
    free(cmd->eps);
    free(cmd->key);
    free(cmd->hello);
    free(cmd);
    cmd = next;
  }
  return stop;
}

static void *thread_main(void *arg) {
  engine_t *e = arg;
  struct epoll_event events[128];
  for (;;) {
    int timeout = -1;
    if (e->connecting.next != &e->connecting || e->accept_paused) timeout = CONNECT_CHECK_MS;
    /* HTTP connections: connect and linger deadlines, the pool sweep (coarse, 100 ms). */
    if (e->nh > 0 || e->npooled > 0) timeout = timeout < 0 || timeout > 100 ? 100 : timeout;
    if (e->idle_ms > 0 && e->nopen > 0) {
      int64_t until = (int64_t)e->next_sweep_ms - (int64_t)monotonic_ms();
      int t = until < 0 ? 0 : until > 60000 ? 60000 : (int)until;
      if (timeout < 0 || t < timeout) timeout = t;
    }
    int n = epoll_wait(e->epfd, events, 128, timeout);
    e->now_ms = monotonic_ms();
    int stop = 0;
    for (int i = 0; i < n; i++) {
      uintptr_t data = (uintptr_t)events[i].data.u64;
      int tag = (int)(data & 7);
      void *ptr = (void *)(data & ~(uintptr_t)7);
      if (tag == TAG_WAKE) stop |= run_commands(e);
      else if (tag == TAG_LISTENER) accept_some(e, ptr);
      else if (tag == TAG_HCLIENT) h_event(e, ptr, 0, events[i].events);
      else if (tag == TAG_HUP) {
        h_up_t *u = ptr;
        if (u->fd < 0) continue; /* closed earlier in this round */
        if (u->owner) h_event(e, u->owner, 1, events[i].events);
        else h_pool_event(e, u, events[i].events);
      }
      else conn_event(e, ptr, tag == TAG_UPSTREAM, events[i].events);
    }
    if (n < 0 && errno != EINTR) {
      /* Cannot happen with a valid epoll fd; if it does, say so rather than go quiet. */
      event_push(e, EV_FATAL, -1, errno);
      events_flush(e);
      break;
    }
    if (e->accept_paused && e->nlisteners > 0 && e->now_ms >= e->accept_resume_ms && may_accept(e))
      set_accepting(e, 1);
    check_deadlines(e);
    /* Every 50 ms at most: the scan is over every HTTP connection, and a busy thread runs
     * thousands of rounds a second. */
    if ((e->nh > 0 || e->npooled > 0) && e->now_ms >= e->next_h_check_ms) {
      h_check(e);
      e->next_h_check_ms = e->now_ms + 50;
    }
    free_dead(e);
    h_free_dead(e);
    events_flush(e);
    if (stop) break;
  }
  close_all(e, 0);
  close_listeners(e);
  free_dead(e);
  h_free_dead(e);
  for (int i = 0; i < e->npipes; i++) {
    close(e->pipes[i][0]);
    close(e->pipes[i][1]);
  }
  e->npipes = 0;
  batch_free(e->batch);
  e->batch = NULL;
  napi_release_threadsafe_function(e->tsfn, napi_tsfn_release);
  return NULL;
}

/* ---------- the JavaScript surface ---------- */

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char code[32], msg[160];
  const char *name = err == EADDRINUSE ? "EADDRINUSE"
                     : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL"
                     : err == EAFNOSUPPORT ? "EAFNOSUPPORT"
                     : err == EACCES ? "EACCES"
                     : err == EINVAL ? "EINVAL"
                     : NULL;
  if (name) snprintf(code, sizeof code, "%s", name);
  else snprintf(code, sizeof code, "E%d", err);
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, code, msg);
  return NULL;
}

static void post(engine_t *e, cmd_t *cmd) {
  pthread_mutex_lock(&e->lock);
  int was_empty = e->cmd_head == NULL;
  if (e->cmd_tail) e->cmd_tail->next = cmd;
  else e->cmd_head = cmd;
  e->cmd_tail = cmd;
  pthread_mutex_unlock(&e->lock);
  if (was_empty) {
    uint64_t one = 1;
    ssize_t ignored = write(e->wakefd, &one, sizeof one);
    (void)ignored;
  }
}

static void engine_stop(engine_t *e) {
  if (!e->started || e->stopped) return;
  e->stopped = 1;
  cmd_t *cmd = calloc(1, sizeof(cmd_t));
  if (cmd) {
    cmd->type = CMD_STOP;
    post(e, cmd);
  }
  pthread_join(e->thread, NULL);
}

static void engine_cleanup_hook(void *arg) { engine_stop(arg); }

static void engine_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  engine_t *e = data;
  engine_stop(e);
  napi_remove_env_cleanup_hook(env, engine_cleanup_hook, e);
  close(e->epfd);
  close(e->wakefd);
  pthread_mutex_destroy(&e->lock);
  pthread_mutex_destroy(&e->hstats_lock);
  pthread_mutex_destroy(&e->routes_lock);
  h_routes_free(e->routes);
  free(e->hstats);
  for (cmd_t *c = e->cmd_head, *next; c; c = next) {
    next = c->next;
    free(c->eps);
    free(c->key);
    free(c->hello);
    free(c);
  }
  free(e);
}

#define ARGS(n)                                                                                         \
  size_t argc = n;                                                                                      \
  napi_value argv[n];                                                                                   \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) {                    \
    napi_throw_type_error(env, NULL, "expected " #n " arguments");                                      \
    return NULL;                                                                                        \
  }

/* `stopped_ok`: calls that only touch an fd JS holds (reset, detach) work after stop too:
 * accept events already queued when the engine stopped still reach JS, which closes them. */
static engine_t *get_engine_of(napi_env env, napi_value v, int stopped_ok) {
  engine_t *e = NULL;
  if (napi_get_value_external(env, v, (void **)&e) != napi_ok || !e) {
    napi_throw_type_error(env, NULL, "not an engine");
    return NULL;
  }
  if (e->stopped && !stopped_ok) {
    napi_throw_error(env, "ERR_ENGINE_STOPPED", "the L4 engine is stopped");
    return NULL;
  }
  return e;
}

static engine_t *get_engine(napi_env env, napi_value v) { return get_engine_of(env, v, 0); }

static int get_int(napi_env env, napi_value v, int min, int max, const char *what, int *out) {
  double d;
  if (napi_get_value_double(env, v, &d) == napi_ok && d >= min && d <= max && d == (double)(int)d) {
    *out = (int)d;
    return 1;
  }
  char msg[96];
  snprintf(msg, sizeof msg, "%s must be an integer in [%d, %d]", what, min, max);
  napi_throw_range_error(env, NULL, msg);
  return 0;
}

static int get_addr(napi_env env, napi_value v, int port, struct sockaddr_storage *out, socklen_t *len) {
  char ip[INET6_ADDRSTRLEN + 1];
  size_t n = 0;
  memset(out, 0, sizeof *out);
  if (napi_get_value_string_latin1(env, v, ip, sizeof ip, &n) == napi_ok && n < INET6_ADDRSTRLEN) {
    struct sockaddr_in *a4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
      a4->sin_family = AF_INET;
      a4->sin_port = htons((uint16_t)port);
      *len = sizeof *a4;
      return 1;
    }
    if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
      a6->sin6_family = AF_INET6;
      a6->sin6_port = htons((uint16_t)port);
      *len = sizeof *a6;
      return 1;
    }
  }
  napi_throw_type_error(env, "ERR_INVALID_IP", "not an IPv4 or IPv6 address");
  return 0;
}

/* create(onEvent, idleMs) → engine. onEvent(type, fd, num, dst, peer, local). */
static napi_value js_create(napi_env env, napi_callback_info info) {
  ARGS(2)
  int idle_ms;
  if (!get_int(env, argv[1], 0, 0x7fffffff, "idleMs", &idle_ms)) return NULL;
  engine_t *e = calloc(1, sizeof(engine_t));
  if (!e) return throw_errno(env, "create", ENOMEM);
  e->idle_ms = (uint32_t)idle_ms;
  struct rlimit nofile = {1024, 1024};
  getrlimit(RLIMIT_NOFILE, &nofile);
  size_t limit = nofile.rlim_cur == RLIM_INFINITY || nofile.rlim_cur > (1u << 30) ? (1u << 30) : nofile.rlim_cur;
  size_t reserve = limit / 8 > 64 ? limit / 8 : 64;
  e->fd_budget = limit > reserve ? limit - reserve : 0;
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  e->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  list_init(&e->open);
  list_init(&e->connecting);
  list_init(&e->dead);
  e->hopen.prev = e->hopen.next = &e->hopen;
  e->hdead.prev = e->hdead.next = &e->hdead;
  pthread_mutex_init(&e->lock, NULL);
  pthread_mutex_init(&e->hstats_lock, NULL);
  pthread_mutex_init(&e->routes_lock, NULL);
  if (e->epfd < 0 || e->wakefd < 0) {
    int err = errno;
    if (e->epfd >= 0) close(e->epfd);
    if (e->wakefd >= 0) close(e->wakefd);
    free(e);
    return throw_errno(env, "epoll/eventfd", err);
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uintptr_t)e | TAG_WAKE};
  epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->wakefd, &ev);
  napi_value name;
  napi_create_string_utf8(env, "edgemesh-l4", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &e->tsfn) !=
      napi_ok) {
    close(e->epfd);
    close(e->wakefd);
    free(e);
    napi_throw_type_error(env, NULL, "onEvent must be a function");
    return NULL;
  }
  napi_value external;
  napi_create_external(env, e, engine_finalize, NULL, &external);
  napi_add_env_cleanup_hook(env, engine_cleanup_hook, e);
  if (pthread_create(&e->thread, NULL, thread_main, e) != 0) {
    napi_release_threadsafe_function(e->tsfn, napi_tsfn_abort);
    e->stopped = 1;
    return throw_errno(env, "pthread_create", errno);
  }
  e->started = 1;
  return external;
}

/* listen(engine, host, port, backlog): binds here (errors thrown with their code), then the
 * thread accepts. IPv6 listeners are IPv6-only, as the Node listener's. */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  ARGS(4)
  engine_t *e = get_engine(env, argv[0]);
  int port, backlog;
  struct sockaddr_storage addr;
  socklen_t len;
  if (!e || !get_int(env, argv[2], 1, 65535, "port", &port) ||
      !get_int(env, argv[3], 1, 65535, "backlog", &backlog) || !get_addr(env, argv[1], port, &addr, &len))
    return NULL;
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (addr.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&addr, len) < 0 || listen(fd, backlog) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "listen", err);
  }
  cmd_t *cmd = calloc(1, sizeof(cmd_t));
  if (!cmd) {
    close(fd);
    return throw_errno(env, "listen", ENOMEM);
  }
  cmd->type = CMD_LISTEN;
  cmd->listener.fd = fd;
  cmd->listener.port = port;
  post(e, cmd);
  return NULL;
}

/* connect(engine, fd, ip, port, timeoutMs[, hello]): dial and splice `fd` (an accepted fd
 * given to JS by ACCEPTED or CONNECT_FAILED). The answer comes as CONNECTED or
 * CONNECT_FAILED. With `hello` (a header line, at most MAX_REPLY bytes) the engine sends it
 * once connected and reads one reply line, which JS judges (REPLY, then proceed/abandon):
 * the gateway hop, `EDGEMESH/1 CONNECT …` answered by `OK <path>`. */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5) {
    napi_throw_type_error(env, NULL, "expected 5 or 6 arguments");
    return NULL;
  }
  engine_t *e = get_engine(env, argv[0]);
  int fd, port, timeout_ms;
  cmd_t *cmd = calloc(1, sizeof(cmd_t));
  if (!cmd) return throw_errno(env, "connect", ENOMEM);
  if (!e || !get_int(env, argv[1], 0, 0x7fffffff, "fd", &fd) ||
      !get_int(env, argv[3], 1, 65535, "port", &port) ||
      !get_int(env, argv[4], 1, 0x7fffffff, "timeoutMs", &timeout_ms) ||
      !get_addr(env, argv[2], port, &cmd->addr, &cmd->addr_len)) {
    free(cmd);
    return NULL;
  }
  napi_valuetype type = napi_undefined;
  if (argc > 5) napi_typeof(env, argv[5], &type);
  if (type != napi_undefined) {
    size_t len = 0;
    cmd->hello = malloc(MAX_REPLY + 1);
    if (!cmd->hello || napi_get_value_string_latin1(env, argv[5], cmd->hello, MAX_REPLY + 1, &len) != napi_ok ||
        len == 0 || len >= MAX_REPLY) {
      free(cmd->hello);
      free(cmd);
      napi_throw_type_error(env, "ERR_INVALID_HELLO", "hello must be a string of 1 to 511 bytes");
      return NULL;
    }
    cmd->hello_len = (uint32_t)len;
  }
  cmd->type = CMD_CONNECT;
  cmd->fd = fd;
  cmd->timeout_ms = timeout_ms;
  post(e, cmd);
  return NULL;
}

/* A command with no answer: (engine) for closeListeners/closeAll, (engine, fd) for
 * proceed/abandon, JS's verdict on a REPLY line (after abandon the fd is JS's again, as after
 * CONNECT_FAILED). */
static napi_value post_command(napi_env env, napi_callback_info info, int type, int with_fd) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < (size_t)(1 + with_fd)) {
    napi_throw_type_error(env, NULL, with_fd ? "expected 2 arguments" : "expected 1 argument");
    return NULL;
  }
  engine_t *e = get_engine(env, argv[0]);
  int fd = -1;
  if (!e || (with_fd && !get_int(env, argv[1], 0, 0x7fffffff, "fd", &fd))) return NULL;
  cmd_t *cmd = calloc(1, sizeof(cmd_t));
  if (!cmd) return throw_errno(env, "command", ENOMEM);
  cmd->type = type;
  cmd->fd = fd;
  post(e, cmd);
  return NULL;
}

static napi_value js_proceed(napi_env env, napi_callback_info info) {
  return post_command(env, info, CMD_PROCEED, 1);
}
static napi_value js_abandon(napi_env env, napi_callback_info info) {
  return post_command(env, info, CMD_ABANDON, 1);
}

/* The (engine, fd) arguments of detach and reset; NULL with an exception pending when bad. */
static engine_t *engine_and_fd(napi_env env, napi_callback_info info, int *fd) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, NULL, "expected 2 arguments");
    return NULL;
  }
  engine_t *e = get_engine_of(env, argv[0], 1);
  return e && get_int(env, argv[1], 0, 0x7fffffff, "fd", fd) ? e : NULL;
}

/* detach(engine, fd): JS keeps an accepted fd for itself (net.Socket({ fd })). */
static napi_value js_detach(napi_env env, napi_callback_info info) {
  int fd;
  engine_t *e = engine_and_fd(env, info, &fd);
  if (e) atomic_fetch_sub(&e->undecided, 1);
  return NULL;
}

/* reset(engine, fd): refuses an accepted fd JS holds: RST, so the app sees a refused stream. */
static napi_value js_reset(napi_env env, napi_callback_info info) {
  int fd;
  engine_t *e = engine_and_fd(env, info, &fd);
  if (!e) return NULL;
  reset_close(fd);
  atomic_fetch_sub(&e->undecided, 1);
  return NULL;
}

static napi_value js_close_listeners(napi_env env, napi_callback_info info) {
  return post_command(env, info, CMD_CLOSE_LISTENERS, 0);
}
static napi_value js_close_all(napi_env env, napi_callback_info info) {
  return post_command(env, info, CMD_CLOSE_ALL, 0);
}

/* stop(engine): closes everything without events and joins the thread. */
static napi_value js_stop(napi_env env, napi_callback_info info) {
  ARGS(1)
  engine_t *e = NULL;
  if (napi_get_value_external(env, argv[0], (void **)&e) != napi_ok || !e) return NULL;
  engine_stop(e);
  return NULL;
}


/* httpTake(engine, fd, bytes, endpoints, svc, key, timeoutMs, own) → the engine's own fd for
 * the connection. own false: `fd` stays JavaScript's (its net.Socket closes it; the connection
 * lives on in a duplicate, made non-blocking). own true: the engine takes `fd` itself, which
 * must be non-blocking (an fd the L4 engine accepted, not yet read: no dup, no fcntl, no close
 * in JS: 4 syscalls of a `Connection: close` request). `bytes`: what JS already read from it
 * (a Buffer, may be empty); `endpoints`: [id, ip, port, ...] (id: JS's number for the
 * endpoint, the shared pool's key); `svc`: the metrics slot (httpStats); `key`: the service's
 * name for 502 bodies. */
static napi_value js_http_take(napi_env env, napi_callback_info info) {
  ARGS(8)
  engine_t *e = get_engine(env, argv[0]);
  int fd, svc, timeout_ms;
  uint32_t n = 0;
  uint8_t *bytes = NULL;
  size_t nbytes = 0;
  if (!e || !get_int(env, argv[1], 0, 0x7fffffff, "fd", &fd) ||
      !get_int(env, argv[4], 0, H_MAX_SVC - 1, "svc", &svc) ||
      !get_int(env, argv[6], 1, 0x7fffffff, "timeoutMs", &timeout_ms))
    return NULL;
  if (napi_get_buffer_info(env, argv[2], (void **)&bytes, &nbytes) != napi_ok || nbytes > H_IN_CAP) {
    napi_throw_type_error(env, "ERR_INVALID_BYTES", "bytes must be a Buffer of at most 96 KiB");
    return NULL;
  }
  if (napi_get_array_length(env, argv[3], &n) != napi_ok || n == 0 || n % 3 != 0 || n / 3 > H_MAX_EP) {
    napi_throw_type_error(env, "ERR_INVALID_ENDPOINTS", "endpoints must be [id, ip, port, ...] with 1 to 64 endpoints");
    return NULL;
  }
  cmd_t *cmd = calloc(1, sizeof(cmd_t));
  h_ep_t *eps = calloc(n / 3, sizeof(h_ep_t));
  char *key = malloc(256);
  size_t key_len = 0;
  if (!cmd || !eps || !key) {
    free(cmd);
    free(eps);
    free(key);
    return throw_errno(env, "httpTake", ENOMEM);
  }
  for (uint32_t k = 0; k < n / 3; k++) {
    napi_value id, ip, port;
    int id_n, port_n;
    napi_get_element(env, argv[3], 3 * k, &id);
    napi_get_element(env, argv[3], 3 * k + 1, &ip);
    napi_get_element(env, argv[3], 3 * k + 2, &port);
    if (!get_int(env, id, 0, H_MAX_EPID - 1, "endpoint id", &id_n) || !get_int(env, port, 1, 65535, "port", &port_n) ||
        !get_addr(env, ip, port_n, &eps[k].addr, &eps[k].len)) {
      free(cmd);
      free(eps);
      free(key);
      return NULL;
    }
    eps[k].id = id_n;
  }
  if (napi_get_value_string_utf8(env, argv[5], key, 256, &key_len) != napi_ok) {
    free(cmd);
    free(eps);
    free(key);
    napi_throw_type_error(env, NULL, "key must be a string");
    return NULL;
  }
  if (nbytes > 0) {
    cmd->hello = malloc(nbytes);
    if (!cmd->hello) {
      free(cmd);
      free(eps);
      free(key);
      return throw_errno(env, "httpTake", ENOMEM);
    }
    memcpy(cmd->hello, bytes, nbytes);
    cmd->hello_len = (uint32_t)nbytes;
  }
  bool own = false;
  if (napi_get_value_bool(env, argv[7], &own) != napi_ok) {
    free(cmd->hello);
    free(cmd);
    free(eps);
    free(key);
    napi_throw_type_error(env, NULL, "own must be a boolean");
    return NULL;
  }
  int dup_fd = own ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) {
    int err = errno;
    free(cmd->hello);
    free(cmd);
    free(eps);
    free(key);
    return throw_errno(env, "httpTake: dup", err);
  }
  if (!own) {
    int flags = fcntl(dup_fd, F_GETFL);
    if (flags >= 0) fcntl(dup_fd, F_SETFL, flags | O_NONBLOCK);
  }
  cmd->type = CMD_HTTP;
  cmd->fd = dup_fd;
  cmd->svc = svc;
  cmd->nep = (int)(n / 3);
  cmd->eps = eps;
  cmd->key = key;
  cmd->timeout_ms = timeout_ms;
  post(e, cmd);
  napi_value out;
  napi_create_int32(env, dup_fd, &out);
  return out;
}

/* Throws a RangeError/TypeError with `code` and frees a half-built table. NULL. */
static napi_value h_routes_refuse(napi_env env, h_routes_t *t, int range, const char *code, const char *msg) {
  h_routes_free(t);
  if (range) napi_throw_range_error(env, code, msg);
  else napi_throw_type_error(env, code, msg);
  return NULL;
}

/* httpRoutes(engine, entries, timeoutMs): the accept-time route table, replacing the one before
 * (`entries` empty: none; every connection goes to JS as before). An entry is
 * [ip, port, svc, key, endpoints] with httpTake's svc, key and endpoints: a connection this
 * engine accepts whose original destination is ip:port is carried by its thread at once, no
 * event. Bounded: H_MAX_ROUTES entries and H_MAX_ROUTE_EPS endpoints over all of them; past
 * either the call throws and the table before stays (JS sends fewer). Once this returns, every
 * accept after it sees the new table (the swap is under the lock the accept looks up under). */
static napi_value js_http_routes(napi_env env, napi_callback_info info) {
  ARGS(3)
  engine_t *e = get_engine(env, argv[0]);
  int timeout_ms;
  uint32_t n = 0;
  bool is_array = false;
  if (!e || !get_int(env, argv[2], 1, 0x7fffffff, "timeoutMs", &timeout_ms)) return NULL;
  if (napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &n) != napi_ok)
    return h_routes_refuse(env, NULL, 0, "ERR_INVALID_ROUTES", "entries must be an array");
  if (n > H_MAX_ROUTES)
    return h_routes_refuse(env, NULL, 1, "ERR_TOO_MANY_ROUTES", "at most 8192 route entries");
  h_routes_t *t = NULL;
  if (n > 0) {
    t = calloc(1, sizeof *t);
    size_t cap = 16;
    while (cap < 2 * (size_t)n) cap *= 2;
    if (t) t->slots = calloc(cap, sizeof(h_route_t));
    if (!t || !t->slots) {
      if (t) free(t);
      return throw_errno(env, "httpRoutes", ENOMEM);
    }
    t->cap = cap;
    t->timeout_ms = timeout_ms;
  }
  size_t total_eps = 0;
  for (uint32_t i = 0; i < n; i++) {
    napi_value entry, v[5];
    uint32_t len = 0, nv = 0;
    is_array = false;
    napi_get_element(env, argv[1], i, &entry);
    if (napi_is_array(env, entry, &is_array) != napi_ok || !is_array ||
        napi_get_array_length(env, entry, &len) != napi_ok || len != 5)
      return h_routes_refuse(env, t, 0, "ERR_INVALID_ROUTES", "an entry must be [ip, port, svc, key, endpoints]");
    for (uint32_t k = 0; k < 5; k++) napi_get_element(env, entry, k, &v[k]);
    int port, svc;
    struct sockaddr_storage dst;
    socklen_t dst_len;
    if (!get_int(env, v[1], 1, 65535, "port", &port) || !get_addr(env, v[0], port, &dst, &dst_len) ||
        !get_int(env, v[2], 0, H_MAX_SVC - 1, "svc", &svc)) {
      h_routes_free(t);
      return NULL;
    }
    is_array = false;
    if (napi_is_array(env, v[4], &is_array) != napi_ok || !is_array ||
        napi_get_array_length(env, v[4], &nv) != napi_ok || nv == 0 || nv % 3 != 0 || nv / 3 > H_MAX_EP)
      return h_routes_refuse(env, t, 0, "ERR_INVALID_ENDPOINTS",
                             "endpoints must be [id, ip, port, ...] with 1 to 64 endpoints");
    total_eps += nv / 3;
    if (total_eps > H_MAX_ROUTE_EPS)
      return h_routes_refuse(env, t, 1, "ERR_TOO_MANY_ROUTES", "at most 16384 endpoints over all route entries");
    uint8_t addr[16];
    uint16_t key_port;
    h_route_key(&dst, addr, &key_port);
    h_route_t *r = h_route_slot(t, addr, key_port);
    if (r->used) return h_routes_refuse(env, t, 0, "ERR_INVALID_ROUTES", "the same ip and port twice");
    r->used = 1;
    memcpy(r->addr, addr, 16);
    r->port = key_port;
    r->svc = svc;
    r->eps = calloc(nv / 3, sizeof(h_ep_t));
    r->key = calloc(1, 256);
    if (!r->eps || !r->key) {
      h_routes_free(t);
      return throw_errno(env, "httpRoutes", ENOMEM);
    }
    size_t key_len = 0;
    if (napi_get_value_string_utf8(env, v[3], r->key, 256, &key_len) != napi_ok)
      return h_routes_refuse(env, t, 0, "ERR_INVALID_ROUTES", "key must be a string");
    for (uint32_t k = 0; k < nv / 3; k++) {
      napi_value id, ip, p;
      int id_n, port_n;
      napi_get_element(env, v[4], 3 * k, &id);
      napi_get_element(env, v[4], 3 * k + 1, &ip);
      napi_get_element(env, v[4], 3 * k + 2, &p);
      if (!get_int(env, id, 0, H_MAX_EPID - 1, "endpoint id", &id_n) || !get_int(env, p, 1, 65535, "port", &port_n) ||
          !get_addr(env, ip, port_n, &r->eps[k].addr, &r->eps[k].len)) {
        h_routes_free(t);
        return NULL;
      }
      r->eps[k].id = id_n;
    }
    r->nep = (int)(nv / 3);
    t->n++;
  }
  pthread_mutex_lock(&e->routes_lock);
  h_routes_t *old = e->routes;
  e->routes = t;
  atomic_store(&e->nroutes, (int)n);
  pthread_mutex_unlock(&e->routes_lock);
  h_routes_free(old);
  return NULL;
}

/* httpOpen(engine) → connections this engine took at accept and has not closed or given back. */
static napi_value js_http_open(napi_env env, napi_callback_info info) {
  ARGS(1)
  engine_t *e = get_engine_of(env, argv[0], 1);
  if (!e) return NULL;
  napi_value out;
  napi_create_int32(env, atomic_load(&e->h_accepted_open), &out);
  return out;
}

/* httpStats(engine) → [svc, 1xx..5xx, 14 buckets, sum, count, 8 × (code, count), then the
 * connections taken at accept and their bytes sent, received] per service slot with news since
 * the last call (each 41 numbers); the engine's counts restart. */
static napi_value js_http_stats(napi_env env, napi_callback_info info) {
  ARGS(1)
  engine_t *e = get_engine_of(env, argv[0], 1);
  if (!e) return NULL;
  napi_value out;
  napi_create_array(env, &out);
  uint32_t at = 0;
  pthread_mutex_lock(&e->hstats_lock);
  for (int svc = 0; e->hstats && svc < H_MAX_SVC; svc++) {
    h_stats_t *s = &e->hstats[svc];
    if (!s->dirty) continue;
    double row[1 + 5 + H_BUCKETS + 2 + 2 * H_CODES + 3];
    int k = 0;
    row[k++] = svc;
    for (int j = 0; j < 5; j++) row[k++] = s->classes[j];
    for (int j = 0; j < H_BUCKETS; j++) row[k++] = s->buckets[j];
    row[k++] = s->sum;
    row[k++] = s->count;
    for (int j = 0; j < H_CODES; j++) {
      row[k++] = s->codes[j][0];
      row[k++] = s->codes[j][1];
    }
    row[k++] = s->conns;
    row[k++] = s->sent;
    row[k++] = s->received;
    for (int j = 0; j < k; j++) {
      napi_value v;
      napi_create_double(env, row[j], &v);
      napi_set_element(env, out, at++, v);
    }
    memset(s, 0, sizeof *s);
  }
  pthread_mutex_unlock(&e->hstats_lock);
  return out;
}

static napi_value js_http_drain(napi_env env, napi_callback_info info) {
  return post_command(env, info, CMD_HTTP_DRAIN, 0);
}

/* ---------- HTTP/1.1 framing, for tests (http1.c; the golden and fuzz tests compare it with
 * sidecar/proxy/http1/parse.ts byte for byte) ---------- */

static void set_num(napi_env env, napi_value obj, const char *key, double n) {
  napi_value v;
  napi_create_double(env, n, &v);
  napi_set_named_property(env, obj, key, v);
}

static void set_str(napi_env env, napi_value obj, const char *key, const char *s, size_t n) {
  napi_value v;
  napi_create_string_latin1(env, s, n, &v);
  napi_set_named_property(env, obj, key, v);
}

/* httpParse(buffer, response, headRequest) → undefined (incomplete), { error, status } or the
 * head's framing fields (names as parse.ts's Head). */
static napi_value js_http_parse(napi_env env, napi_callback_info info) {
  ARGS(3)
  uint8_t *buf = NULL;
  size_t len = 0;
  bool response = false, head_request = false;
  if (napi_get_buffer_info(env, argv[0], (void **)&buf, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "buffer must be a Buffer");
    return NULL;
  }
  napi_get_value_bool(env, argv[1], &response);
  napi_get_value_bool(env, argv[2], &head_request);
  static h1_head_t h; /* large (drop ranges); the JS thread is the only caller */
  int r = response ? h1_parse_response(buf, len, head_request, &h) : h1_parse_request(buf, len, &h);
  napi_value out;
  if (r == H1_INCOMPLETE) {
    napi_get_undefined(env, &out);
    return out;
  }
  napi_create_object(env, &out);
  set_num(env, out, "status", h.status);
  if (r == H1_ERROR) {
    set_str(env, out, "error", h.error, strlen(h.error));
    return out;
  }
  if (!response) {
    set_str(env, out, "method", (const char *)buf + h.start, h.method_len);
    set_str(env, out, "target", (const char *)buf + h.target_off, h.target_len);
  }
  set_num(env, out, "minor", h.minor);
  set_num(env, out, "headEnd", h.head_end);
  set_num(env, out, "contentLength", (double)h.content_length);
  set_num(env, out, "keepAliveMs", h.keep_alive_ms);
  const char *flags[] = {"chunked", "close", "upgrade", "untilClose"};
  uint8_t values[] = {h.chunked, h.close, h.upgrade, h.until_close};
  for (int k = 0; k < 4; k++) {
    napi_value v;
    napi_get_boolean(env, values[k], &v);
    napi_set_named_property(env, out, flags[k], v);
  }
  napi_value drop;
  napi_create_array_with_length(env, h.ndrop, &drop);
  for (uint32_t k = 0; k < h.ndrop; k++) {
    napi_value v;
    napi_create_uint32(env, h.drop[k], &v);
    napi_set_element(env, drop, k, v);
  }
  napi_set_named_property(env, out, "drop", drop);
  uint8_t *rewritten = malloc(h.head_end + 1);
  if (rewritten) {
    size_t n = h1_rewrite(buf, &h, NULL, 0, rewritten);
    napi_value v;
    void *data;
    napi_create_buffer_copy(env, n, rewritten, &data, &v);
    napi_set_named_property(env, out, "rewritten", v);
    free(rewritten);
  }
  return out;
}

/* httpChunked(buffer, cuts) → the index past a chunked body's end, -1 (goes on) or the error
 * text; the buffer is fed in pieces ending at each of `cuts` (framing must not depend on them). */
static napi_value js_http_chunked(napi_env env, napi_callback_info info) {
  ARGS(2)
  uint8_t *buf = NULL;
  size_t len = 0;
  if (napi_get_buffer_info(env, argv[0], (void **)&buf, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "buffer must be a Buffer");
    return NULL;
  }
  uint32_t ncuts = 0;
  napi_get_array_length(env, argv[1], &ncuts);
  h1_chunked_t s = {0};
  size_t at = 0;
  napi_value out;
  for (uint32_t k = 0; k <= ncuts; k++) {
    double cut = (double)len;
    if (k < ncuts) {
      napi_value v;
      napi_get_element(env, argv[1], k, &v);
      napi_get_value_double(env, v, &cut);
    }
    size_t to = cut > (double)len ? len : cut < (double)at ? at : (size_t)cut;
    const char *error = NULL;
    int64_t r = h1_chunked_feed(&s, buf + at, to - at, &error);
    if (r == -2) {
      napi_create_string_latin1(env, error, NAPI_AUTO_LENGTH, &out);
      return out;
    }
    if (r >= 0) {
      napi_create_double(env, (double)(at + (size_t)r), &out);
      return out;
    }
    at = to;
  }
  napi_create_double(env, -1, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"create", NULL, js_create, NULL, NULL, NULL, napi_default, NULL},
      {"listen", NULL, js_listen, NULL, NULL, NULL, napi_default, NULL},
      {"connect", NULL, js_connect, NULL, NULL, NULL, napi_default, NULL},
      {"detach", NULL, js_detach, NULL, NULL, NULL, napi_default, NULL},
      {"proceed", NULL, js_proceed, NULL, NULL, NULL, napi_default, NULL},
      {"abandon", NULL, js_abandon, NULL, NULL, NULL, napi_default, NULL},
      {"reset", NULL, js_reset, NULL, NULL, NULL, napi_default, NULL},
      {"closeListeners", NULL, js_close_listeners, NULL, NULL, NULL, napi_default, NULL},
      {"closeAll", NULL, js_close_all, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
      {"httpTake", NULL, js_http_take, NULL, NULL, NULL, napi_default, NULL},
      {"httpStats", NULL, js_http_stats, NULL, NULL, NULL, napi_default, NULL},
      {"httpDrain", NULL, js_http_drain, NULL, NULL, NULL, napi_default, NULL},
      {"httpRoutes", NULL, js_http_routes, NULL, NULL, NULL, napi_default, NULL},
      {"httpOpen", NULL, js_http_open, NULL, NULL, NULL, napi_default, NULL},
      {"httpParse", NULL, js_http_parse, NULL, NULL, NULL, napi_default, NULL},
      {"httpChunked", NULL, js_http_chunked, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(edgemesh_l4, init)
