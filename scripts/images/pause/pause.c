/*
 * The pod sandbox's process: holds the pod's namespaces open and does nothing else.
 *
 * Same behaviour as Kubernetes' own (kubernetes/kubernetes build/pause/linux/pause.c), written
 * here so the image needs no registry: exit 0 on SIGINT/SIGTERM (the runtime stops the sandbox
 * with SIGTERM and would otherwise wait for SIGKILL), reap every exited child on SIGCHLD (with
 * a shared PID namespace it is PID 1, and orphans re-parent to it), `-v` prints a version,
 * and a warning when it is not PID 1. Built with `gcc -static -Os -s`: no libc in the image.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "3.10-edgemesh"

static void sigdown(int signo) {
  /* Only async-signal-safe calls here: write(2) and _exit(2), no stdio. */
  static const char msg[] = "pause: shutting down\n";
  (void)signo;
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
  _exit(0);
}

static void sigreap(int signo) {
  (void)signo;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    printf("pause.c %s\n", VERSION);
    return 0;
  }
  if (getpid() != 1) fprintf(stderr, "pause: warning: not PID 1\n");

  struct sigaction down = {0}, reap = {0};
  down.sa_handler = sigdown;
  if (sigaction(SIGINT, &down, NULL) < 0 || sigaction(SIGTERM, &down, NULL) < 0) return 1;
  reap.sa_handler = sigreap;
  reap.sa_flags = SA_NOCLDSTOP; /* stopped children are not exits */
  if (sigaction(SIGCHLD, &reap, NULL) < 0) return 2;

  for (;;) pause();
  return 42; /* unreachable, as in the original */
}
