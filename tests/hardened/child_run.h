// child_run.h — run one case of a hardened test program in a forked child and
// capture what it printed on stderr (misuse.c, mprotect_refused.c).
#ifndef HAK_TEST_CHILD_RUN_H
#define HAK_TEST_CHILD_RUN_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int status;        // waitpid's status of the child
  double secs;       // its wall time
  char err[8192];    // its stderr, NUL-terminated
  int err_lines;     // newlines in err
} child_result_t;

static double child_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// Runs fn in a child with stderr going to a temporary file, no core files and
// a 20 s alarm; the child ends with exit(fn()) (exit, not _exit: the library's
// exit checks run). Fills *r.
static void child_run(int (*fn)(void), child_result_t *r) {
  char path[] = "/tmp/hakmem-hardened-test-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) { perror("mkstemp"); exit(2); }
  unlink(path);
  fflush(stdout);
  double t0 = child_now_s();
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); exit(2); }
  if (pid == 0) {
    dup2(fd, 2);
    close(fd);
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    alarm(20);
    exit(fn());
  }
  r->status = 0;
  while (waitpid(pid, &r->status, 0) < 0 && errno == EINTR) {}
  r->secs = child_now_s() - t0;
  lseek(fd, 0, SEEK_SET);
  ssize_t n = read(fd, r->err, sizeof r->err - 1);
  close(fd);
  r->err[n > 0 ? n : 0] = 0;
  r->err_lines = 0;
  for (ssize_t i = 0; i < n; i++) r->err_lines += r->err[i] == '\n';
}

#endif
