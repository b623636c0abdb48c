// faults.c — fault and edge-condition tests for a malloc replacement.
//
// Plain malloc/free program, meant to run under LD_PRELOAD=build/libhakmem.so.
// Every test runs in its own forked child with stderr captured to a file and a
// watchdog (a hung child is killed and reported as a deadlock). Prints one line
// per test and a closing line "faults: N passed, N failed".
//
//   faults [-l] [name...]    -l lists the tests; names select tests (default: all)
//
// A test marked KNOWN_LIMITATION that fails is reported XFAIL and not counted as
// a failure (one that passes is reported XPASS).
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// ---------------------------------------------------------------- helpers
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  ssize_t w = write(2, buf, (size_t)n);
  (void)w;
  _exit(1);
}
#define CHECK(cond, ...) do { if (!(cond)) die(__VA_ARGS__); } while (0)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kib(void) {
  char buf[256];
  int fd = open("/proc/self/statm", O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  long size, res;
  if (sscanf(buf, "%ld %ld", &size, &res) != 2) return -1;
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static size_t pick_size(uint64_t *s) {
  uint64_t r = rnd(s);
  switch (r % 16) {
  case 0:  return 4096 + (r >> 8) % (64u << 10);
  case 1:  return (r >> 8) % 64 == 0 ? (256u << 10) + (r >> 16) % (2u << 20) : 300;
  default: return 8 + (r >> 8) % 512;
  }
}

// Child work after a fork: allocate, fill, check, free; exit status says.
static int child_alloc_free(void) {
  void *p[64];
  for (int i = 0; i < 64; i++) {
    size_t n = (size_t)16 << (i % 17);            // 16 B .. 1 MiB
    p[i] = malloc(n);
    if (!p[i]) return 2;
    memset(p[i], i, n);
  }
  for (int i = 0; i < 64; i++) {
    size_t n = (size_t)16 << (i % 17);
    unsigned char *b = p[i];
    if (b[0] != (unsigned char)i || b[n - 1] != (unsigned char)i) return 3;
    free(p[i]);
  }
  void *q = realloc(NULL, 100);
  if (!q) return 4;
  q = realloc(q, 100000);
  if (!q) return 5;
  free(q);
  return 0;
}

// ---------------------------------------------------------------- 1. thread churn
#define CHURN_THREADS 20000
#define CHURN_KEEP    64
static void *volatile g_kept[CHURN_KEEP];   // one block per thread, freed by main after exit

static void *churn_thread(void *arg) {
  uintptr_t i = (uintptr_t)arg;
  void *a = malloc(24), *b = malloc(200), *c = malloc(3000 + (i % 7) * 1000);
  CHECK(a && b && c, "churn: malloc failed in thread %lu", (unsigned long)i);
  memset(a, 1, 24); memset(b, 2, 200); memset(c, 3, 3000);
  void *d = malloc(i % 100 == 0 ? 200000 : 64);
  CHECK(d != NULL, "churn: malloc failed");
  free(b); free(a); free(c);
  return d;                                   // freed by the main thread after join
}

static int test_thread_churn(void) {
  long rss_base = -1;
  pthread_t t[2];
  for (int i = 0; i < CHURN_THREADS; i += 2) {
    for (int k = 0; k < 2; k++)
      CHECK(pthread_create(&t[k], NULL, churn_thread, (void *)(uintptr_t)(i + k)) == 0,
            "pthread_create failed at thread %d", i + k);
    for (int k = 0; k < 2; k++) {
      void *d;
      pthread_join(t[k], &d);
      // Keep some blocks alive across many thread exits, then free them.
      unsigned slot = (unsigned)(i + k) % CHURN_KEEP;
      if (g_kept[slot]) free(g_kept[slot]);
      g_kept[slot] = d;
    }
    if (i + 2 == 1000) rss_base = rss_kib();
  }
  long rss_end = rss_kib();
  for (int i = 0; i < CHURN_KEEP; i++) { free(g_kept[i]); g_kept[i] = NULL; }
  long margin = 4096;                          // KiB
  printf("  rss after 1000 threads %ld KiB, after %d threads %ld KiB (margin %ld KiB)\n",
         rss_base, CHURN_THREADS, rss_end, margin);
  CHECK(rss_base > 0 && rss_end > 0, "cannot read /proc/self/statm");
  CHECK(rss_end <= rss_base + margin, "RSS grew with thread churn: %ld KiB -> %ld KiB",
        rss_base, rss_end);
  return 0;
}

// ---------------------------------------------------------------- 1b. producer / consumer
// One thread allocates, another frees (every free is a remote free). Memory must
// stay bounded by what is in flight, not grow with the number of blocks passed.
#define PC_BLOCKS   3000000
#define PC_RING     4096
static void *_Atomic g_ring[PC_RING];

static void *consumer_thread(void *arg) {
  (void)arg;
  for (long i = 0; i < PC_BLOCKS; i++) {
    void *p;
    unsigned k = (unsigned)(i % PC_RING);
    while ((p = atomic_exchange_explicit(&g_ring[k], NULL, memory_order_acquire)) == NULL)
      sched_yield();
    if (((unsigned char *)p)[0] != (unsigned char)i) die("producer/consumer: block %ld damaged", i);
    free(p);
  }
  return NULL;
}

static int test_producer_consumer(void) {
  pthread_t t;
  CHECK(pthread_create(&t, NULL, consumer_thread, NULL) == 0, "pthread_create failed");
  long rss_base = -1;
  for (long i = 0; i < PC_BLOCKS; i++) {
    size_t n = 16 + (size_t)(i * 7919) % 500;
    unsigned char *p = malloc(n);
    CHECK(p != NULL, "malloc failed");
    p[0] = (unsigned char)i;
    unsigned k = (unsigned)(i % PC_RING);
    while (atomic_load_explicit(&g_ring[k], memory_order_relaxed) != NULL) sched_yield();
    atomic_store_explicit(&g_ring[k], p, memory_order_release);
    if (i == PC_BLOCKS / 10) rss_base = rss_kib();
  }
  pthread_join(t, NULL);
  long rss_end = rss_kib();
  long margin = 8192;
  printf("  rss after %d blocks %ld KiB, after %d blocks %ld KiB (margin %ld KiB)\n",
         PC_BLOCKS / 10, rss_base, PC_BLOCKS, rss_end, margin);
  CHECK(rss_end <= rss_base + margin, "RSS grew with producer/consumer traffic: %ld -> %ld KiB",
        rss_base, rss_end);
  return 0;
}

// ---------------------------------------------------------------- 2. fork while threads allocate
#define FORK_ROUNDS 50
static atomic_int g_stop;

static void *busy_thread(void *arg) {
  uint64_t s = (uintptr_t)arg * 0x9E3779B97F4A7C15ULL | 1;
  void *keep[32] = {0};
  while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
    unsigned k = (unsigned)(rnd(&s) % 32);
    if (keep[k]) { free(keep[k]); keep[k] = NULL; }
    else {
      size_t n = pick_size(&s);
      keep[k] = malloc(n);
      CHECK(keep[k] != NULL, "busy thread: malloc(%zu) failed", n);
      memset(keep[k], 0x5a, n < 256 ? n : 256);
    }
    if ((rnd(&s) & 255) == 0) { void *r = realloc(keep[k], 5000); if (r) keep[k] = r; }
  }
  for (int k = 0; k < 32; k++) free(keep[k]);
  return NULL;
}

static int wait_child(pid_t pid, double timeout, int *status) {
  double end = now_s() + timeout;
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) return 0;
    if (r < 0 && errno != EINTR) return -1;
    if (now_s() > end) { kill(pid, SIGKILL); waitpid(pid, status, 0); return 1; }
    usleep(1000);
  }
}

static int test_fork_with_threads(void) {
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    CHECK(pthread_create(&t[i], NULL, busy_thread, (void *)(uintptr_t)(i + 1)) == 0,
          "pthread_create failed");
  for (int round = 0; round < FORK_ROUNDS; round++) {
    usleep(2000 + (round % 5) * 1000);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed: %s", strerror(errno));
    if (pid == 0) {
      alarm(10);                               // a deadlocked child dies of SIGALRM
      _exit(child_alloc_free());
    }
    int st = 0;
    int r = wait_child(pid, 15, &st);
    CHECK(r == 0 || r == 1, "waitpid failed");
    CHECK(r == 0, "fork round %d: child hung (deadlock after fork?)", round);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork round %d: child ended with %s %d", round,
          WIFSIGNALED(st) ? "signal" : "status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
  }
  atomic_store(&g_stop, 1);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  printf("  %d forks while 4 threads allocate: all children exited 0\n", FORK_ROUNDS);
  return 0;
}

// ---------------------------------------------------------------- 3. fork from a signal handler
// glibc's tst-mallocfork2: a timer signal interrupts malloc/free in the main
// loop; the handler forks; the child allocates, frees and _exits.
#define SIGFORK_SECONDS 3.0
static volatile sig_atomic_t g_sig_forks, g_sig_fork_errors;

static void sigfork_handler(int sig) {
  (void)sig;
  int saved = errno;
  pid_t pid = fork();
  if (pid == 0) {
    signal(SIGALRM, SIG_DFL);
    sigset_t set;                              // SIGALRM is blocked inside its handler
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    alarm(5);                                  // a deadlocked child dies of SIGALRM
    void *p = malloc(64), *q = malloc(5000), *r = malloc(300000);
    if (!p || !q || !r) _exit(2);
    memset(p, 1, 64); memset(q, 2, 5000); memset(r, 3, 300000);
    free(q); free(p); free(r);
    _exit(0);
  }
  if (pid < 0) g_sig_fork_errors++;
  else g_sig_forks++;
  errno = saved;
}

static int reap(int block) {
  int st, bad = 0;
  pid_t r;
  while ((r = waitpid(-1, &st, block ? 0 : WNOHANG)) > 0) {
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "  signal-fork child %d ended with %s %d\n", (int)r,
              WIFSIGNALED(st) ? "signal" : "status",
              WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
      bad++;
    }
  }
  return bad;
}

static int test_fork_in_signal_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = sigfork_handler;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  CHECK(sigaction(SIGALRM, &sa, NULL) == 0, "sigaction failed");
  struct itimerval it = {{0, 3000}, {0, 3000}};   // every 3 ms
  CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0, "setitimer failed");
  uint64_t s = 12345;
  void *keep[64] = {0};
  int bad = 0;
  unsigned long iters = 0;
  double end = now_s() + SIGFORK_SECONDS;
  while (now_s() < end) {
    for (int i = 0; i < 1000; i++, iters++) {
      unsigned k = (unsigned)(rnd(&s) % 64);
      if (keep[k]) { free(keep[k]); keep[k] = NULL; }
      else {
        size_t n = pick_size(&s);
        keep[k] = malloc(n);
        CHECK(keep[k] != NULL, "malloc(%zu) failed", n);
        ((char *)keep[k])[0] = 1;
      }
    }
    bad += reap(0);
  }
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  bad += reap(1);
  for (int k = 0; k < 64; k++) free(keep[k]);
  printf("  %d forks from a signal handler during %lu malloc/free calls, %d fork errors\n",
         (int)g_sig_forks, iters, (int)g_sig_fork_errors);
  CHECK(bad == 0, "%d signal-handler fork children failed", bad);
  CHECK(g_sig_forks >= 50, "only %d forks happened", (int)g_sig_forks);
  return 0;
}

// ---------------------------------------------------------------- 4. RLIMIT_AS exhaustion
#define AS_LIMIT   (512ul << 20)
#define SMALL_N    4000
static void *g_big[4096];
static void *g_small[SMALL_N];

static size_t small_size(int i) { return (size_t)(16 + (i * 37) % 1000); }

// Through a volatile pointer: GCC would warn about reading the block after a realloc
// that is expected to fail.
static void *(*volatile realloc_fn)(void *, size_t) = realloc;

static int exhaust(size_t chunk, const char *what, int *count) {
  int n = 0;
  for (;;) {
    CHECK(n < 4096, "%s: %d blocks of %zu bytes under a %lu MiB limit", what, n, chunk,
          AS_LIMIT >> 20);
    errno = 0;
    void *p = malloc(chunk);
    if (!p) {
      CHECK(errno == ENOMEM, "%s: malloc(%zu) returned NULL with errno %d, not ENOMEM", what,
            chunk, errno);
      break;
    }
    ((volatile char *)p)[0] = 1;
    ((volatile char *)p)[chunk - 1] = 2;
    g_big[n++] = p;
  }
  *count = n;
  return n;
}

static int test_rlimit_as(void) {
  // Small blocks with free slots in their slabs: after exhaustion, small
  // requests can be served from memory the allocator already has.
  for (int i = 0; i < SMALL_N; i++) {
    g_small[i] = malloc(small_size(i));
    CHECK(g_small[i] != NULL, "malloc failed before the limit");
  }
  for (int i = 0; i < SMALL_N; i += 2) { free(g_small[i]); g_small[i] = NULL; }

  struct rlimit rl = {AS_LIMIT, AS_LIMIT};
  CHECK(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit failed: %s", strerror(errno));

  static const size_t chunks[] = {4u << 20, 200u << 10};
  for (int round = 0; round < 2; round++) {
    int n = 0;
    exhaust(chunks[round], "exhaustion", &n);
    CHECK(n >= 8, "only %d blocks of %zu bytes fit under the limit", n, chunks[round]);
    // calloc and realloc fail cleanly too
    errno = 0;
    void *c = calloc(1, 64u << 20);
    CHECK(c == NULL && errno == ENOMEM, "round %d: calloc(1, %zu) under exhaustion gave %p, "
          "errno %d (want NULL, ENOMEM)", round, (size_t)64 << 20, c, errno);
    errno = 0;
    uintptr_t old = (uintptr_t)g_big[0];
    void *r = realloc_fn(g_big[0], 64u << 20);
    CHECK(r == NULL && errno == ENOMEM, "round %d: realloc(%#lx, %zu) under exhaustion gave %p, "
          "errno %d (want NULL, ENOMEM)", round, (unsigned long)old, (size_t)64 << 20, r, errno);
    CHECK(((volatile char *)g_big[0])[0] == 1, "realloc failure damaged the old block");
    // Small allocations still work.
    for (int i = 0; i < SMALL_N; i += 2) {
      g_small[i] = malloc(small_size(i));
      CHECK(g_small[i] != NULL, "round %d: small malloc(%zu) #%d failed after exhaustion "
            "(errno %d)", round, small_size(i), i, errno);
      memset(g_small[i], 0x77, small_size(i));
    }
    for (int i = 0; i < SMALL_N; i += 2) { free(g_small[i]); g_small[i] = NULL; }
    // Free everything, then a large block must fit again.
    for (int i = 0; i < n; i++) { free(g_big[i]); g_big[i] = NULL; }
    size_t big = 256u << 20;
    void *p = malloc(big);
    CHECK(p != NULL, "round %d: malloc(%zu MiB) failed after freeing everything (errno %d)",
          round, big >> 20, errno);
    memset(p, 1, 1 << 20);
    free(p);
    printf("  round %d: %d blocks of %zu KiB until ENOMEM; recovered\n", round, n,
           chunks[round] >> 10);
  }
  for (int i = 0; i < SMALL_N; i++) free(g_small[i]);
  return 0;
}

// ---------------------------------------------------------------- 5. bad frees
// Each of these must print one line starting with "hakmem:" and abort.
// Called through a volatile pointer so the compiler does not see the misuse.
static void (*volatile free_fn)(void *) = free;
static int test_interior_free_small(void) {
  char *p = malloc(64);
  memset(p, 0, 64);
  free_fn(p + 16);
  return 0;
}
static int test_interior_free_medium(void) {
  char *p = malloc(20000);
  memset(p, 0, 20000);
  free_fn(p + 4096);
  return 0;
}
static int test_interior_free_large(void) {
  char *p = malloc(4u << 20);
  memset(p, 0, 4096);
  free_fn(p + 8192);
  return 0;
}
static int test_stack_free(void) {
  char buf[64];
  memset(buf, 0, sizeof buf);
  void *volatile p = buf;
  free_fn(p);
  return 0;
}
static char g_static_buf[64];
static int test_static_free(void) {
  void *volatile p = g_static_buf;
  free_fn(p);
  return 0;
}
static int test_double_free_small(void) {
  void *p = malloc(48);
  memset(p, 0, 48);
  free_fn(p);
  free_fn(p);
  return 0;
}
static int test_double_free_small_later(void) {
  void *p = malloc(48), *q = malloc(48);
  free_fn(p);
  free_fn(q);
  free_fn(p);
  return 0;
}
static int test_double_free_medium(void) {
  void *p = malloc(20000);
  free_fn(p);
  free_fn(p);
  return 0;
}
static int test_double_free_large(void) {
  void *p = malloc(4u << 20);
  free_fn(p);
  free_fn(p);
  return 0;
}

static void *free_in_thread(void *p) { free_fn(p); return NULL; }
static int test_double_free_after_remote_free(void) {
  void *p = malloc(48);
  memset(p, 0, 48);
  pthread_t t;
  pthread_create(&t, NULL, free_in_thread, p);   // a remote free onto main's slab
  pthread_join(t, NULL);
  free_fn(p);
  return 0;
}
// A thread whose frees are mostly other threads' blocks checks them in
// batches of 32 (src/tiny/free_batch_box.h): a double free there is reported
// up to 32 frees later, or when the thread exits, but reported.
#define BATCH_BLOCKS 2048
static void *g_batch_blocks[BATCH_BLOCKS];
static void *alloc_batch_blocks(void *arg) {
  (void)arg;
  for (int i = 0; i < BATCH_BLOCKS; i++) g_batch_blocks[i] = malloc(256);
  return NULL;
}
static void *free_then_double_free(void *arg) {
  int more = *(int *)arg;
  for (int i = 0; i < BATCH_BLOCKS / 2; i++) free_fn(g_batch_blocks[i]);
  free_fn(g_batch_blocks[7]);
  for (int i = BATCH_BLOCKS / 2; i < BATCH_BLOCKS / 2 + more; i++) free_fn(g_batch_blocks[i]);
  return NULL;
}
static int double_free_on_a_consumer_thread(int more) {
  pthread_t t;
  pthread_create(&t, NULL, alloc_batch_blocks, NULL);
  pthread_join(t, NULL);
  pthread_create(&t, NULL, free_then_double_free, &more);
  pthread_join(t, NULL);
  return 0;
}
static int test_double_free_on_a_consumer_thread(void) { return double_free_on_a_consumer_thread(64); }
static int test_double_free_on_a_consumer_thread_then_exit(void) { return double_free_on_a_consumer_thread(0); }
static void *(*volatile realloc_fn2)(void *, size_t) = realloc;
static int test_realloc_interior(void) {
  char *p = malloc(64);
  memset(p, 0, 64);
  void *q = realloc_fn2(p + 16, 200);
  (void)q;
  return 0;
}

// Free-list poisoning: an address written into a freed block (a use after
// free) must never come back from malloc. Unprotected free lists hand it out
// on the second malloc; hakmem reports the corrupted link and aborts.
static char g_poison_target[64] __attribute__((aligned(16)));
static void *(*volatile malloc_fn)(size_t) = malloc;
static int poison_check(void *p) {
  if (p == (void *)g_poison_target) {
    fprintf(stderr, "malloc returned the address written after free\n");
    return 1;
  }
  return 0;
}
static int test_uaf_poison_tls_list(void) {
  void *p = malloc_fn(48), *q = malloc_fn(48);
  free_fn(p);
  free_fn(q);
  *(void *volatile *)q = g_poison_target;
  if (poison_check(malloc_fn(48)) | poison_check(malloc_fn(48))) return 1;
  return 0;
}
static void *free_list_in_thread(void *arg) {
  void **b = arg;
  for (int i = 0; i < 64; i++) free_fn(b[i]);
  return NULL;
}
static int test_uaf_poison_remote_list(void) {
  static void *b[64];
  for (int i = 0; i < 64; i++) b[i] = malloc_fn(48);
  pthread_t t;
  pthread_create(&t, NULL, free_list_in_thread, b);   // freed by another thread ...
  pthread_join(t, NULL);
  for (int i = 0; i < 64; i++) *(void *volatile *)b[i] = g_poison_target;   // ... then written
  for (int i = 0; i < 8192; i++)
    if (poison_check(malloc_fn(48))) return 1;
  return 0;
}

// The class exchange: thread A allocates 1000 blocks of 256 bytes, thread B
// frees them all (its list overflows with another thread's blocks: chains of
// them go to the exchange) and exits while a third thread C lives (with this
// one alone left, B's exit would send the exchange home), then A exits (alive
// until then: had it exited first, its small heap would have waited parked
// and B would have taken it, the blocks B's own); then an address is written
// into every one of them, and this thread, which has no block of the class,
// mallocs: its refill takes a chain from the exchange first.
#define EXCHANGE_BLOCKS 1000
static int g_alloc_done_pipe[2], g_alloc_exit_pipe[2];
static void *alloc_list_in_thread(void *arg) {
  void **b = arg;
  char c = 1;
  for (int i = 0; i < EXCHANGE_BLOCKS; i++) b[i] = malloc_fn(256);
  while (write(g_alloc_done_pipe[1], &c, 1) < 0) {}
  while (read(g_alloc_exit_pipe[0], &c, 1) < 0) {}
  return NULL;
}
static void *free_exchange_list_in_thread(void *arg) {
  void **b = arg;
  for (int i = 0; i < EXCHANGE_BLOCKS; i++) free_fn(b[i]);
  return NULL;
}
static int g_stay_pipe[2], g_ready_pipe[2];
static void *stay_until_told(void *arg) {
  (void)arg;
  free_fn(malloc_fn(16));   // a live thread of the allocator
  char c = 1;
  while (write(g_ready_pipe[1], &c, 1) < 0) {}
  while (read(g_stay_pipe[0], &c, 1) < 0) {}   // never told: the child ends first
  return NULL;
}
static int test_uaf_poison_exchange(void) {
  static void *b[EXCHANGE_BLOCKS];
  pthread_t a, t, stay;
  char c = 1;
  if (pipe(g_stay_pipe) != 0 || pipe(g_ready_pipe) != 0 || pipe(g_alloc_done_pipe) != 0 || pipe(g_alloc_exit_pipe) != 0)
    return 0;   // (no report: the test fails)
  pthread_create(&stay, NULL, stay_until_told, NULL);
  while (read(g_ready_pipe[0], &c, 1) < 0) {}
  pthread_create(&a, NULL, alloc_list_in_thread, b);
  while (read(g_alloc_done_pipe[0], &c, 1) < 0) {}
  pthread_create(&t, NULL, free_exchange_list_in_thread, b);
  pthread_join(t, NULL);
  while (write(g_alloc_exit_pipe[1], &c, 1) < 0) {}
  pthread_join(a, NULL);
  for (int i = 0; i < EXCHANGE_BLOCKS; i++) *(void *volatile *)b[i] = g_poison_target;
  for (int i = 0; i < 8192; i++)
    if (poison_check(malloc_fn(256))) return 1;
  return 0;
}

// A block-aligned address of the same slab that was never handed out (beyond
// the slab's carve point): accepted, it would later come out of malloc twice.
static int test_free_never_allocated_slot(void) {
  char *p = malloc_fn(16);
  free_fn(p + 16384);
  return 0;
}
static size_t (*volatile usable_fn)(void *) = malloc_usable_size;
static int test_usable_size_of_freed_block(void) {
  void *p = malloc_fn(48);
  free_fn(p);
  return usable_fn(p) == 0 ? 0 : 0;   // must not return: the report aborts
}

// malloc_usable_size's inline path (free's lookup, then the class's size)
// hands every pointer that is not a live block's start to the checked path:
// an address beyond the carve point, an interior pointer and a non-canonical
// one are each reported, never sized.
static int test_usable_size_of_never_allocated_slot(void) {
  char *p = malloc_fn(16);
  return usable_fn(p + 16384) == 0 ? 0 : 0;
}
static int test_usable_size_of_interior_pointer(void) {
  char *p = malloc_fn(256);
  return usable_fn(p + 8) == 0 ? 0 : 0;
}
static int test_usable_size_of_noncanonical_pointer(void) {
  char *p = malloc_fn(48);
  return usable_fn((void *)((uintptr_t)p | 0xffff800000000000ull)) == 0 ? 0 : 0;
}

// A non-canonical address whose low 47 bits name a live block: the free fast
// path reads the registry bit of the cut address, so this checks that the
// metadata lookup stays inside the SuperSlab and the pointer is reported.
static int test_free_of_noncanonical_pointer(void) {
  char *p = malloc_fn(48);
  free_fn((void *)((uintptr_t)p | 0xffff800000000000ull));
  return 0;
}

// ---------------------------------------------------------------- harness
enum { EXPECT_EXIT0, EXPECT_ABORT_REPORT };
typedef struct {
  const char *name;
  int (*fn)(void);
  int expect;
  double timeout;
  const char *known_limitation;  // non-NULL: a failure is XFAIL, with this reason
} test_t;

static const test_t g_tests[] = {
  {"thread_churn_rss_flat", test_thread_churn, EXPECT_EXIT0, 120, NULL},
  {"producer_consumer_rss_bounded", test_producer_consumer, EXPECT_EXIT0, 120, NULL},
  {"fork_while_4_threads_allocate", test_fork_with_threads, EXPECT_EXIT0, 120, NULL},
  // glibc's tst-mallocfork2 idea. An allocator with locks on its slow path cannot
  // do this: the interrupted thread holds a pool lock and the atfork prepare handler
  // waits for it (seen on the first engine: shared_pool_fork_prepare blocked on
  // g_alloc_lock, today a kind's pool lock). A process that never started a
  // thread skips the handlers (init.c), so its forks all happen; a child whose
  // parent was interrupted holding a lock hangs on it (19 of 1 000 here).
  // glibc's own malloc also fails this single-threaded form (the child sees
  // half-updated bins).
  {"fork_in_signal_handler_during_malloc", test_fork_in_signal_handler, EXPECT_EXIT0, 10,
   "fork() in a signal handler that interrupted malloc/free: a child inherits a lock the "
   "interrupted call held and hangs on it (a threaded parent self-deadlocks in the atfork "
   "prepare handler instead)"},
  {"rlimit_as_exhaustion_recovers", test_rlimit_as, EXPECT_EXIT0, 60, NULL},
  {"interior_free_small_aborts", test_interior_free_small, EXPECT_ABORT_REPORT, 10, NULL},
  {"interior_free_medium_aborts", test_interior_free_medium, EXPECT_ABORT_REPORT, 10, NULL},
  {"interior_free_large_aborts", test_interior_free_large, EXPECT_ABORT_REPORT, 10, NULL},
  {"stack_pointer_free_aborts", test_stack_free, EXPECT_ABORT_REPORT, 10, NULL},
  {"static_pointer_free_aborts", test_static_free, EXPECT_ABORT_REPORT, 10, NULL},
  {"double_free_small_aborts", test_double_free_small, EXPECT_ABORT_REPORT, 10, NULL},
  {"double_free_small_not_last_aborts", test_double_free_small_later, EXPECT_ABORT_REPORT, 10, NULL},
  {"double_free_after_remote_free_aborts", test_double_free_after_remote_free, EXPECT_ABORT_REPORT, 10, NULL},
  {"double_free_on_a_consumer_thread_aborts", test_double_free_on_a_consumer_thread, EXPECT_ABORT_REPORT, 10, NULL},
  {"double_free_on_a_consumer_thread_then_its_exit_aborts", test_double_free_on_a_consumer_thread_then_exit,
   EXPECT_ABORT_REPORT, 10, NULL},
  {"realloc_of_interior_pointer_aborts", test_realloc_interior, EXPECT_ABORT_REPORT, 10, NULL},
  {"double_free_medium_aborts", test_double_free_medium, EXPECT_ABORT_REPORT, 10, NULL},
  {"double_free_large_aborts", test_double_free_large, EXPECT_ABORT_REPORT, 10, NULL},
  {"free_of_never_allocated_slot_aborts", test_free_never_allocated_slot, EXPECT_ABORT_REPORT, 10, NULL},
  {"usable_size_of_freed_block_aborts", test_usable_size_of_freed_block, EXPECT_ABORT_REPORT, 10, NULL},
  {"usable_size_of_never_allocated_slot_aborts", test_usable_size_of_never_allocated_slot, EXPECT_ABORT_REPORT, 10, NULL},
  {"usable_size_of_interior_pointer_aborts", test_usable_size_of_interior_pointer, EXPECT_ABORT_REPORT, 10, NULL},
  {"usable_size_of_noncanonical_pointer_aborts", test_usable_size_of_noncanonical_pointer, EXPECT_ABORT_REPORT, 10, NULL},
  {"free_of_noncanonical_pointer_aborts", test_free_of_noncanonical_pointer, EXPECT_ABORT_REPORT, 10, NULL},
  {"uaf_poisoned_tls_list_aborts", test_uaf_poison_tls_list, EXPECT_ABORT_REPORT, 10, NULL},
  {"uaf_poisoned_remote_list_aborts", test_uaf_poison_remote_list, EXPECT_ABORT_REPORT, 10, NULL},
  {"uaf_poisoned_class_exchange_aborts", test_uaf_poison_exchange, EXPECT_ABORT_REPORT, 10, NULL},
};
#define NTESTS ((int)(sizeof g_tests / sizeof g_tests[0]))

// Reads the captured stderr; returns its number of lines, copies it to out.
static int read_capture(int fd, char *out, size_t cap) {
  lseek(fd, 0, SEEK_SET);
  ssize_t n = read(fd, out, cap - 1);
  if (n < 0) n = 0;
  out[n] = 0;
  int lines = 0;
  for (ssize_t i = 0; i < n; i++) lines += out[i] == '\n';
  if (n > 0 && out[n - 1] != '\n') lines++;
  return lines;
}

static void print_indented(const char *s) {
  const char *p = s;
  while (*p) {
    const char *e = strchr(p, '\n');
    int len = e ? (int)(e - p) : (int)strlen(p);
    printf("    | %.*s\n", len, p);
    if (!e) break;
    p = e + 1;
  }
}

// 0 pass, 1 fail
static int run_test(const test_t *t) {
  char path[] = "/tmp/hakmem-faults-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0, "mkstemp failed");
  unlink(path);
  fflush(stdout);
  double t0 = now_s();
  pid_t pid = fork();
  CHECK(pid >= 0, "fork failed");
  if (pid == 0) {
    dup2(fd, 2);
    close(fd);
    if (t->expect == EXPECT_ABORT_REPORT) {    // no core files
      struct rlimit rl = {0, 0};
      setrlimit(RLIMIT_CORE, &rl);
    }
    int rc = t->fn();
    fflush(stdout);
    _exit(rc);
  }
  int st = 0;
  int r = wait_child(pid, t->timeout, &st);
  double secs = now_s() - t0;
  static char err[8192];
  int lines = read_capture(fd, err, sizeof err);
  close(fd);
  char why[256] = "";
  if (r == 1) {
    snprintf(why, sizeof why, "timed out after %.0f s (deadlock?)", t->timeout);
  } else if (t->expect == EXPECT_EXIT0) {
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      snprintf(why, sizeof why, "child ended with %s %d", WIFSIGNALED(st) ? "signal" : "status",
               WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
  } else {
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT)
      snprintf(why, sizeof why, "expected abort (SIGABRT), child ended with %s %d",
               WIFSIGNALED(st) ? "signal" : "status",
               WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    else if (strncmp(err, "hakmem:", 7) != 0)
      snprintf(why, sizeof why, "aborted, but stderr does not start with \"hakmem:\"");
    else if (lines != 1)
      snprintf(why, sizeof why, "aborted, but the report is %d lines, not one", lines);
  }
  if (why[0] == 0) {
    printf("PASS  %-40s (%.1f s)%s%s", t->name, secs,
           t->expect == EXPECT_ABORT_REPORT ? "  " : "",
           t->expect == EXPECT_ABORT_REPORT ? err : "\n");
    if (t->known_limitation) printf("      (XPASS: marked as a known limitation: %s)\n",
                                    t->known_limitation);
    return 0;
  }
  if (t->known_limitation) {
    printf("XFAIL %-40s (%.1f s): %s — known limitation: %s\n", t->name, secs, why,
           t->known_limitation);
    if (err[0]) print_indented(err);
    return 0;
  }
  printf("FAIL  %-40s (%.1f s): %s\n", t->name, secs, why);
  if (err[0]) print_indented(err);
  return 1;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc > 1 && strcmp(argv[1], "-l") == 0) {
    for (int i = 0; i < NTESTS; i++) printf("%s\n", g_tests[i].name);
    return 0;
  }
  int hak = dlsym(RTLD_DEFAULT, "hak_malloc") != NULL;
  printf("faults: allocator: %s\n", hak ? "hakmem (LD_PRELOAD)" : "NOT hakmem (glibc?)");
  const char *want = getenv("FAULTS_EXPECT_HAKMEM");
  if (want && *want == '1' && !hak) {
    printf("faults: FAIL: FAULTS_EXPECT_HAKMEM=1 but hakmem is not loaded\n");
    return 1;
  }
  int passed = 0, failed = 0;
  for (int i = 0; i < NTESTS; i++) {
    if (argc > 1) {
      int sel = 0;
      for (int a = 1; a < argc; a++) sel |= strcmp(argv[a], g_tests[i].name) == 0;
      if (!sel) continue;
    }
    if (run_test(&g_tests[i])) failed++;
    else passed++;
  }
  printf("faults: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
