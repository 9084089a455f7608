/* bench/udp.ts and bench/udp-natlab.ts: a UDP load generator and echo backend in C (a Node
 * generator would be slower than the paths they measure).
 *   echo IP PORT | load IP PORT FLOWS RATE(0 = max) SECONDS SIZE → one JSON line. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static uint64_t now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec; }
static int addr(const char *ip, int port, struct sockaddr_in *a) { memset(a, 0, sizeof *a); a->sin_family = AF_INET; a->sin_port = htons(port); return inet_pton(AF_INET, ip, &a->sin_addr) == 1; }
static int cmp(const void *a, const void *b) { uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b; return x < y ? -1 : x > y; }
#define B 64
static int echo(const char *ip, int port) {
  struct sockaddr_in a; if (!addr(ip, port, &a)) return 2;
  int fd = socket(AF_INET, SOCK_DGRAM, 0); int big = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
  printf("ready\n"); fflush(stdout);
  static char bufs[B][2048]; struct mmsghdr m[B]; struct iovec v[B]; struct sockaddr_in from[B];
  for (;;) {
    for (int i = 0; i < B; i++) { v[i].iov_base = bufs[i]; v[i].iov_len = sizeof bufs[i]; memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
      m[i].msg_hdr.msg_iov = &v[i]; m[i].msg_hdr.msg_iovlen = 1; m[i].msg_hdr.msg_name = &from[i]; m[i].msg_hdr.msg_namelen = sizeof from[i]; }
    int n = recvmmsg(fd, m, B, MSG_WAITFORONE, NULL);
    if (n <= 0) continue;
    for (int i = 0; i < n; i++) v[i].iov_len = m[i].msg_len;
    sendmmsg(fd, m, n, 0);
  }
}
static int load(const char *ip, int port, int flows, double rate, double seconds, int size) {
  struct sockaddr_in a; if (!addr(ip, port, &a) || size < 16 || size > 1400) return 2;
  struct rlimit r = {flows + 64, flows + 64}; setrlimit(RLIMIT_NOFILE, &r);
  int *fds = calloc(flows, sizeof *fds); int ep = epoll_create1(0);
  for (int i = 0; i < flows; i++) {
    fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&a, sizeof a) != 0) { perror("socket"); return 1; }
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = i}; epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
  }
  size_t cap = 4u << 20; uint32_t *rtt = malloc(cap * sizeof *rtt);
  uint64_t sent = 0, got = 0, sendfail = 0, nrtt = 0; char buf[2048]; memset(buf, 'x', sizeof buf);
  uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), stop = end + 300000000u;
  struct epoll_event evs[256];
  for (;;) {
    uint64_t t = now_ns();
    if (t >= stop) break;
    if (t < end) {
      uint64_t due = rate > 0 ? (uint64_t)((t - start) * rate / 1e9) + 1 : sent + 32;
      for (int k = 0; sent < due && k < 256; k++) {
        uint64_t hdr[2] = {sent, now_ns()}; memcpy(buf, hdr, 16);
        if (send(fds[sent % flows], buf, size, 0) < 0) sendfail++;
        sent++;
      }
    }
    /* Wait for replies until the next datagram is due (ns precision: a sleep would add its
     * length to the RTTs measured at low rates). */
    struct timespec wait = {0, 20000000};
    if (t < end) {
      uint64_t next = rate > 0 ? start + (uint64_t)(sent * 1e9 / rate) : t;
      uint64_t d = next > t ? next - t : 0;
      wait.tv_sec = d / 1000000000u;
      wait.tv_nsec = d % 1000000000u;
    }
    int n = epoll_pwait2(ep, evs, 256, &wait, NULL);
    for (int i = 0; i < n; i++) {
      int fd = fds[evs[i].data.u32];
      for (;;) {
        ssize_t len = recv(fd, buf + 1024, 1024, 0);
        if (len < 16) break;
        uint64_t hdr[2]; memcpy(hdr, buf + 1024, 16); got++;
        uint64_t d = now_ns() - hdr[1];
        if (nrtt < cap && d < 4000000000u) rtt[nrtt++] = (uint32_t)d;
      }
    }
  }
  qsort(rtt, nrtt, sizeof *rtt, cmp);
  double p50 = nrtt ? rtt[nrtt / 2] / 1000.0 : -1, p99 = nrtt ? rtt[(size_t)(nrtt * 0.99)] / 1000.0 : -1;
  printf("{\"sent\":%llu,\"received\":%llu,\"sendFailures\":%llu,\"seconds\":%.3f,\"p50us\":%.1f,\"p99us\":%.1f}\n",
    (unsigned long long)sent, (unsigned long long)got, (unsigned long long)sendfail, seconds, p50, p99);
  return 0;
}
int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "echo")) return echo(argv[2], atoi(argv[3]));
  if (argc == 8 && !strcmp(argv[1], "load")) return load(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), atof(argv[6]), atoi(argv[7]));
  fprintf(stderr, "usage: echo IP PORT | load IP PORT FLOWS RATE SECONDS SIZE\n"); return 2;
}
