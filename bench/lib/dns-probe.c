/*
 * bench/lib/dns-probe.c — sequential DNS A queries over UDP, one at a time, each timed from
 * send to the answer with CLOCK_MONOTONIC: bench/on-demand.ts's latency client with no
 * collector or event loop of its own in the tail (the Node probe, dns-probe.ts, adds its own
 * scavenges; dnsperf hands each answer between a sender and a receiver thread). The same
 * output as dns-probe.ts: one JSON line {"ms":[...],"rcodes":{...}}.
 *
 *   dns-probe PORT NAMES-FILE [TIMEOUT-MS [PACE-US]]   (one name per line, to 127.0.0.1:PORT)
 *
 * PACE-US > 0: each query starts that long after the previous one started (or at once when
 * the previous answer took longer), as a pod's names come one at a time; 0 (default): back to
 * back, each query sent as soon as the previous answer arrived.
 *
 * Built by bench/on-demand.ts with `cc -O2` into its temp dir.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_NAMES 100000

static const char *RCODES[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN"};

/* Encodes a query for `name` (dotted, no trailing dot needed); returns its length or -1. */
static int encode(unsigned char *out, size_t cap, unsigned id, const char *name) {
  size_t n = 12;
  memset(out, 0, 12);
  out[0] = id >> 8;
  out[1] = id & 0xff;
  out[2] = 0x01; /* RD */
  out[5] = 1;    /* QDCOUNT */
  const char *p = name;
  while (*p) {
    const char *dot = strchr(p, '.');
    size_t len = dot ? (size_t)(dot - p) : strlen(p);
    if (len == 0 || len > 63 || n + len + 1 >= cap) return -1;
    out[n++] = (unsigned char)len;
    memcpy(out + n, p, len);
    n += len;
    p += len;
    if (*p == '.') p++;
  }
  if (n + 5 > cap) return -1;
  out[n++] = 0;
  out[n++] = 0, out[n++] = 1; /* A */
  out[n++] = 0, out[n++] = 1; /* IN */
  return (int)n;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: dns-probe PORT NAMES-FILE [TIMEOUT-MS [PACE-US]]\n");
    return 2;
  }
  int port = atoi(argv[1]);
  int timeoutMs = argc > 3 ? atoi(argv[3]) : 2000;
  long paceUs = argc > 4 ? atol(argv[4]) : 0;
  FILE *f = fopen(argv[2], "r");
  if (!f || port <= 0 || port > 65535 || timeoutMs <= 0 || paceUs < 0 || paceUs > 10000000) {
    fprintf(stderr, "dns-probe: bad port, timeout or names file %s: %s\n", argv[2], strerror(errno));
    return 2;
  }
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct timeval tv = {timeoutMs / 1000, (timeoutMs % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
    perror("dns-probe: connect");
    return 1;
  }
  long counts[6] = {0}; /* NOERROR FORMERR SERVFAIL NXDOMAIN other TIMEOUT */
  char line[512];
  unsigned char q[512], a[4096];
  unsigned id = 1;
  int done = 0;
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  printf("{\"ms\":[");
  while (done < MAX_NAMES && fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    if (!line[0]) continue;
    id = (id + 1) & 0xffff;
    int len = encode(q, sizeof q, id, line);
    if (len < 0) {
      fprintf(stderr, "dns-probe: cannot encode %s\n", line);
      return 2;
    }
    if (paceUs > 0) {
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
      next.tv_nsec += (paceUs % 1000000) * 1000;
      next.tv_sec += paceUs / 1000000 + next.tv_nsec / 1000000000;
      next.tv_nsec %= 1000000000;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (send(fd, q, (size_t)len, 0) != len) {
      perror("dns-probe: send");
      return 1;
    }
    int rcode = 5;
    for (;;) {
      ssize_t r = recv(fd, a, sizeof a, 0);
      if (r < 0) break; /* timeout (EAGAIN) or refused: counted as TIMEOUT */
      if (r < 12 || a[0] != q[0] || a[1] != q[1]) continue; /* a late answer to an earlier query */
      rcode = (a[3] & 0xf) < 4 ? (a[3] & 0xf) : 4;
      break;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    counts[rcode]++;
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("%s%.4f", done ? "," : "", ms);
    done++;
  }
  printf("],\"rcodes\":{");
  int first = 1;
  for (int i = 0; i < 6; i++) {
    if (!counts[i]) continue;
    const char *name = i < 4 ? RCODES[i] : i == 4 ? "OTHER" : "TIMEOUT";
    printf("%s\"%s\":%ld", first ? "" : ",", name, counts[i]);
    first = 0;
  }
  printf("}}\n");
  return 0;
}
