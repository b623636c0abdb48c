// contract_util.h — helpers shared by the contract tests: reach the engine's
// hak_* API through dlsym (the tests are linked normally and get hakmem only
// through LD_PRELOAD), run a piece of code in a forked child and collect its
// exit status and stderr, and find the helper programs built beside the test.
#ifndef HAK_CONTRACT_UTIL_H
#define HAK_CONTRACT_UTIL_H
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

// Set HAKMEM_CONTRACT_GLIBC=1 to run the glibc-contract tests against plain
// glibc (no LD_PRELOAD): that is how the expectations were checked. The tests
// about hakmem itself are then skipped.
static inline int contract_under_glibc(void) { return getenv("HAKMEM_CONTRACT_GLIBC") != NULL; }

static inline void *hak_sym(const char *name) { return dlsym(RTLD_DEFAULT, name); }

static inline int hak_owns_ptr(const void *p) {
  int (*owns)(const void *) = (int (*)(const void *))hak_sym("hak_owns");
  return owns != NULL && owns(p);
}

// Group setup: refuses to run the tests unless hakmem is the allocator of
// this process (or HAKMEM_CONTRACT_GLIBC=1 asked for plain glibc).
static inline int require_hakmem(void **state) {
  (void)state;
  if (contract_under_glibc()) return 0;
  void *p = malloc(32);
  int ok = hak_sym("hak_malloc") != NULL && hak_owns_ptr(p);
  free(p);
  if (!ok) {
    static const char msg[] = "hakmem is not the allocator here: run with LD_PRELOAD=libhakmem.so\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    return -1;
  }
  return 0;
}

typedef struct {
  int status;            // from waitpid
  char err[4096];        // what the child wrote on stderr (NUL-terminated)
  size_t err_len;
} child_result_t;

// Runs fn(arg) in a forked child with stderr captured; the child exits 0 if
// fn returns. A child that hangs is killed after timeout_s seconds (SIGALRM).
static inline child_result_t run_in_child(void (*fn)(void *), void *arg, unsigned timeout_s) {
  child_result_t r;
  memset(&r, 0, sizeof r);
  int fds[2];
  if (pipe(fds) != 0) abort();
  pid_t pid = fork();
  if (pid < 0) abort();
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2);
    close(fds[1]);
    alarm(timeout_s);
    fn(arg);
    _exit(0);
  }
  close(fds[1]);
  for (;;) {
    ssize_t n = read(fds[0], r.err + r.err_len, sizeof r.err - 1 - r.err_len);
    if (n > 0) { r.err_len += (size_t)n; if (r.err_len == sizeof r.err - 1) break; continue; }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  r.err[r.err_len] = 0;
  close(fds[0]);
  while (waitpid(pid, &r.status, 0) < 0 && errno == EINTR) {}
  return r;
}

static inline int count_lines(const char *s) {
  int n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

// Directory of the running test executable (helpers are built beside it).
static inline const char *test_dir(void) {
  static char dir[PATH_MAX];
  if (dir[0]) return dir;
  ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
  if (n <= 0) return ".";
  dir[n] = 0;
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  return dir;
}
#endif
