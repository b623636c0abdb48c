// spawn — a program that starts child processes one after another, as a
// shell running a script, make running its recipes or a test driver does.
//
// The parent holds a few hundred blocks of mixed sizes (a shell's variables
// and parsed commands). Each round forks; the child either mallocs and frees
// a few blocks and exits (default: what fork itself costs the allocator,
// its atfork handlers and the pages they write in both processes), or with
// --exec runs /bin/true (what a shell does: fork, then a new image that loads
// the allocator again); the parent waits for it. A fork write-protects every
// private page of the parent, so each page the allocator writes after it, in
// the parent or the child, is a page fault.
//
// Figure: processes per second (fork + child + wait). The RESULT line adds
// the children's page faults (child_minflt: RUSAGE_CHILDREN) beside the
// parent's own (minflt).
// Options: -n PROCESSES (1000), --exec.
#include "bench_common.h"

#include <getopt.h>
#include <sys/wait.h>
#include <unistd.h>

enum { HELD = 256 };

static void usage(void) {
  fprintf(stderr, "usage: spawn [-n PROCESSES] [--exec]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "exec", no_argument, NULL, 'e' }, { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
  };
  uint64_t n = 1000;
  int do_exec = 0, c;
  while ((c = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': n = bench_parse_count("-n", optarg); break;
    case 'e': do_exec = 1; break;
    default: usage();
    }
  }
  if (optind != argc || n == 0) usage();
  bench_rng_t rng = bench_rng(42, 0);
  void *held[HELD];
  for (unsigned i = 0; i < HELD; i++) {
    size_t size = 16 + bench_below((uint32_t)bench_rand(&rng), i % 16 == 0 ? 20000 : 500);
    held[i] = bench_xmalloc(size);
    memset(held[i], (int)i, size);
  }

  double t0 = bench_now();
  for (uint64_t i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("spawn: fork");
      return 3;
    }
    if (pid == 0) {
      if (do_exec) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(4);
      }
      void *p = malloc(100), *q = malloc(3000);
      bench_escape(p);
      bench_escape(q);
      free(q);
      free(p);
      _exit(p != NULL && q != NULL ? 0 : 5);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "spawn: child %" PRIu64 " failed\n", i);
      return 3;
    }
    // The parent goes on working between its children.
    unsigned k = (unsigned)bench_below((uint32_t)bench_rand(&rng), HELD);
    free(held[k]);
    held[k] = bench_xmalloc(16 + bench_below((uint32_t)bench_rand(&rng), 500));
  }
  double t1 = bench_now();

  struct rusage ru;
  if (getrusage(RUSAGE_CHILDREN, &ru) != 0) memset(&ru, 0, sizeof ru);
  char extra[96];
  snprintf(extra, sizeof extra, "exec=%d child_minflt=%ld", do_exec, ru.ru_minflt);
  bench_result("spawn", "processes", n, t1 - t0, extra);
  for (unsigned i = 0; i < HELD; i++) free(held[i]);
  return 0;
}
