/*
 * bench/lib/relay-chain.c — the first DNS query's hops with no mesh code in them, so the
 * first-query latency in bench/on-demand.ts has the machine's own floor beside it in the
 * same run: the client's UDP query wakes a "sidecar" process, which writes a short line
 * to a "gateway" process over loopback TCP, which answers with REPLY-BYTES (a LOOKUP
 * answer's size), which the "sidecar" reads whole and answers the client with (the query's
 * bytes, QR set, NOERROR). Four process wake-ups per query, as a first query has; no
 * allocation, no collector, no JIT.
 *
 *   relay-chain UDP-PORT REPLY-BYTES      (on 127.0.0.1; the client is dns-probe.c)
 *
 * Runs until SIGTERM/SIGKILL; the "gateway" child exits when the relay's connection closes.
 * Built by bench/on-demand.ts with `cc -O2` into its temp dir.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_REPLY 65536

/* Reads (writing = 0) or writes exactly n bytes; -1 when the connection ends first. */
static int exactly(int fd, char *buf, size_t n, int writing) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
    if (r <= 0) return -1;
    done += (size_t)r;
  }
  return 0;
}

/* The "gateway": reads one query line (up to '\n') per answer and writes REPLY-BYTES. */
static void gateway(int conn, size_t replyBytes) {
  static char reply[MAX_REPLY], in[4096];
  memset(reply, 'x', replyBytes);
  reply[replyBytes - 1] = '\n';
  size_t have = 0;
  for (;;) {
    ssize_t r = read(conn, in + have, sizeof in - have);
    if (r <= 0) exit(0);
    have += (size_t)r;
    char *nl;
    while ((nl = memchr(in, '\n', have)) != NULL) {
      size_t line = (size_t)(nl - in) + 1;
      if (exactly(conn, reply, replyBytes, 1) != 0) exit(0);
      memmove(in, in + line, have - line);
      have -= line;
    }
    if (have == sizeof in) exit(1); /* a line longer than the buffer: not ours */
  }
}

int main(int argc, char **argv) {
  int port = argc > 2 ? atoi(argv[1]) : 0;
  long replyBytes = argc > 2 ? atol(argv[2]) : 0;
  if (port <= 0 || port > 65535 || replyBytes < 2 || replyBytes > MAX_REPLY) {
    fprintf(stderr, "usage: relay-chain UDP-PORT REPLY-BYTES (2..%d)\n", MAX_REPLY);
    return 2;
  }
  int one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  socklen_t al = sizeof a;
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 1) != 0 ||
      getsockname(ls, (struct sockaddr *)&a, &al) != 0) {
    perror("relay-chain: gateway listen");
    return 1;
  }
  pid_t child = fork();
  if (child < 0) {
    perror("relay-chain: fork");
    return 1;
  }
  if (child == 0) {
    int conn = accept(ls, NULL, NULL);
    if (conn < 0) exit(1);
    close(ls);
    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    gateway(conn, (size_t)replyBytes);
  }
  close(ls);
  int up = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(up, (struct sockaddr *)&a, sizeof a) != 0) {
    perror("relay-chain: connect to the gateway");
    return 1;
  }
  setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int us = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in u = {.sin_family = AF_INET, .sin_port = htons(port)};
  u.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(us, (struct sockaddr *)&u, sizeof u) != 0) {
    perror("relay-chain: bind the UDP port");
    return 1;
  }
  static char reply[MAX_REPLY];
  unsigned char q[512];
  char line[] = "Q 1 SVC bench/svc-0\n"; /* a LOOKUP query's size */
  for (;;) {
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(us, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
    if (n < 12) continue;
    if (exactly(up, line, sizeof line - 1, 1) != 0 || exactly(up, reply, (size_t)replyBytes, 0) != 0) {
      fprintf(stderr, "relay-chain: the gateway side closed: %s\n", strerror(errno));
      return 1;
    }
    q[2] |= 0x80;        /* QR: a response */
    q[3] &= 0xf0;        /* NOERROR */
    sendto(us, q, (size_t)n, 0, (struct sockaddr *)&from, fl);
  }
}
