// stats_prog.c — a workload whose statistics are known, for test_stats.sh:
// main holds 1000 blocks of 48 bytes; a second thread allocates 2000 blocks
// of 100 bytes that main frees (remote frees), then main calls malloc_info
// (stdout) and, with argument "stats", malloc_stats (stderr). Other
// arguments end it as programs do:
//   close-stderr    closes stderr before it returns (GNU sort's and xz's close_stdout)
//   reuse-fd2 FILE  closes stderr, opens FILE (as fd 2) and writes "DATA\n" to it
//   exit3           returns 3
//   flock FILE      holds a flock on FILE (open) when it returns
//   fork N          N children and the parent exit at once
//   signal-exit     a SIGALRM handler calls exit(0) while main allocates and
//                   frees 48 MiB blocks in a loop (not async-signal-safe, but common)
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define HELD 1000
#define REMOTE 2000
static void *g_held[HELD];
static void *g_remote[REMOTE];

// The producer lives until the freer is done: had it exited first, its
// small heap would have waited parked (HAKMEM_PARK_THREADS) for the freer,
// whose frees would then have been its own.
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static int g_produced, g_freed;

static void *producer(void *arg) {
  (void)arg;
  for (int i = 0; i < REMOTE; i++) g_remote[i] = malloc(100);
  pthread_mutex_lock(&g_lock);
  g_produced = 1;
  pthread_cond_broadcast(&g_cond);
  while (!g_freed) pthread_cond_wait(&g_cond, &g_lock);
  pthread_mutex_unlock(&g_lock);
  return NULL;
}

static void *freer(void *arg) {
  (void)arg;
  for (int i = 0; i < REMOTE; i++) free(g_remote[i]);
  return NULL;
}

static void exit_from_handler(int sig) {
  (void)sig;
  exit(0);
}

_Noreturn static void signal_exit(void) {
  signal(SIGALRM, exit_from_handler);
  struct itimerval at = {{0, 0}, {0, 20000}};
  setitimer(ITIMER_REAL, &at, NULL);
  void *keep[8] = {0};
  for (unsigned i = 0;; i++) {
    unsigned k = i % 8u;
    free(keep[k]);
    keep[k] = malloc((48u << 20) + (i % 7u) * 4096u);
  }
}

// n children and the parent wait for the pipe to close, then all exit; child
// i holds blocks of i more size classes, so the reports differ in length.
static int fork_exit_together(int n) {
  int go[2];
  if (pipe(go) != 0) return 1;
  for (int i = 0; i < n; i++) {
    if (fork() == 0) {
      char c;
      close(go[1]);
      for (int k = 0; k <= i; k++) g_remote[k] = malloc(1100 + (size_t)k * 2100);
      (void)!read(go[0], &c, 1);
      return 0;
    }
  }
  close(go[0]);
  close(go[1]);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "signal-exit") == 0) signal_exit();
  for (int i = 0; i < HELD; i++) memset(g_held[i] = malloc(48), 1, 48);
  pthread_t p, t;
  pthread_create(&p, NULL, producer, NULL);
  pthread_mutex_lock(&g_lock);
  while (!g_produced) pthread_cond_wait(&g_cond, &g_lock);
  pthread_mutex_unlock(&g_lock);
  // freed by a thread that is not the slabs' owner, which then exits (its
  // cache goes home: the remote frees are counted)
  pthread_create(&t, NULL, freer, NULL);
  pthread_join(t, NULL);
  pthread_mutex_lock(&g_lock);
  g_freed = 1;
  pthread_cond_broadcast(&g_cond);
  pthread_mutex_unlock(&g_lock);
  pthread_join(p, NULL);
  malloc_info(0, stdout);
  fflush(stdout);
  if (argc > 1 && strcmp(argv[1], "stats") == 0) malloc_stats();
  if (argc > 1 && strcmp(argv[1], "close-stderr") == 0) fclose(stderr);
  if (argc > 2 && strcmp(argv[1], "reuse-fd2") == 0) {
    close(2);
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);   // fd 2 now
    if (fd != 2 || write(fd, "DATA\n", 5) != 5) return 5;
  }
  if (argc > 1 && strcmp(argv[1], "exit3") == 0) return 3;
  if (argc > 2 && strcmp(argv[1], "flock") == 0) {
    int fd = open(argv[2], O_WRONLY | O_CREAT, 0644);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) return 5;
  }
  if (argc > 2 && strcmp(argv[1], "fork") == 0) return fork_exit_together(atoi(argv[2]));
  return 0;   // g_held stays live: the exit report sees it
}
