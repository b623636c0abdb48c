// stress.c — multi-threaded allocator stress with content verification.
//
// T threads x R rounds (threads are created anew each round). Each thread runs
// a random mix of malloc/calloc/aligned/realloc/free over sizes from 8 bytes to
// several MiB (mostly small). Every block is filled with a pattern derived from
// its address and size and verified before it is freed or reallocated (realloc
// must keep the prefix). About half the frees go through a shared exchange table
// so another thread frees the block (cross-thread / remote frees); blocks left in
// the table at the end of a round are freed by the next round's threads after
// their owners have exited. One thread forks in the middle of each round; the
// child verifies its inherited blocks, allocates, frees and exits 0.
//
// One source, two builds:
//   -DSTRESS_HAK   calls the hak_* API (links libhakmem_core.a; also the ASan/TSan builds)
//   (default)      calls plain malloc; run it under LD_PRELOAD=build/libhakmem.so
// Any corruption prints one line starting with "stress: FAIL" and aborts.
#include <errno.h>
#include <stdarg.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef STRESS_HAK
#include "hakmem.h"
#define S_MALLOC(n)           hak_malloc(n)
#define S_CALLOC(c, n)        hak_calloc(c, n)
#define S_REALLOC(p, n)       hak_realloc(p, n)
#define S_FREE(p)             hak_free(p)
#define S_MEMALIGN(out, a, n) hak_posix_memalign(out, a, n)
#define S_ALIGNED(a, n)       hak_aligned_alloc(a, n)
#define S_USABLE(p)           hak_usable_size(p)
#define S_VARIANT             "hak_*"
#else
#include <malloc.h>
#define S_MALLOC(n)           malloc(n)
#define S_CALLOC(c, n)        calloc(c, n)
#define S_REALLOC(p, n)       realloc(p, n)
#define S_FREE(p)             free(p)
#define S_MEMALIGN(out, a, n) posix_memalign(out, a, n)
#define S_ALIGNED(a, n)       aligned_alloc(a, n)
#define S_USABLE(p)           malloc_usable_size(p)
#define S_VARIANT             "malloc"
#endif

#define MAX_THREADS   64
#define LIVE_DEFAULT  512            // live blocks per thread (-l)
#define XCHG_SLOTS    256            // shared exchange table
#define LARGE_MIN     (256u << 10)   // blocks from here on count against the large budget
#define LARGE_BUDGET  (24u << 20)    // live large bytes per thread

// ---------------------------------------------------------------- options
static int      o_threads = 8;
static int      o_rounds  = 6;
static long     o_ops     = 60000;   // operations per thread per round
static int      o_fork    = 1;
static size_t   o_maxsize = 6u << 20;
static uint64_t o_seed    = 0x5eed;
static int      o_verbose = 0;
static unsigned o_watchdog = 900;    // seconds; the whole run (and each fork child) must end by then
static unsigned o_nap_ms  = 0;       // -z: odd threads sleep this long, four times a round
// -l: live blocks a thread keeps at most; -S: sizes of 8 B-1 KiB only. Together
// they make a thread's slabs big enough for it to batch its own frees
// (FREE_BATCH_HEAP_LINES: 24 k blocks of ~500 B), and its end frees them in a
// scattered order (the live list's swaps): the heap batch's paths, which
// the default 512 blocks never reach.
static int      o_live    = LIVE_DEFAULT;
static int      o_small   = 0;

// ---------------------------------------------------------------- failure
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = snprintf(buf, sizeof buf, "stress: FAIL (" S_VARIANT ", pid %d, seed %llu): ",
                   (int)getpid(), (unsigned long long)o_seed);
  vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
  va_end(ap);
  size_t len = strlen(buf);
  if (len + 1 < sizeof buf) buf[len++] = '\n';
  ssize_t w = write(2, buf, len);
  (void)w;
  abort();
}

// A hung run (deadlock) fails instead of blocking `make test` forever.
static void watchdog(int sig) {
  (void)sig;
  static const char msg[] = "stress: FAIL: watchdog expired (deadlock or far too slow)\n";
  ssize_t w = write(2, msg, sizeof msg - 1);
  (void)w;
  _exit(3);
}

// ---------------------------------------------------------------- random
static inline uint64_t rnd_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}
static inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// Mostly small, some medium, a few large (up to o_maxsize).
static size_t rnd_size(uint64_t *s, size_t large_left) {
  uint64_t r = rnd_next(s);
  unsigned pick = (unsigned)(r % 1000);
  size_t n;
  r >>= 10;
  if (o_small)         n = 8 + r % 1017;                // -S: 8..1024
  else if (pick < 700) n = 8 + r % 249;                 // 8..256
  else if (pick < 900) n = 257 + r % (4096 - 257);      // ..4 KiB
  else if (pick < 995) n = 4097 + r % (128u << 10);     // ..132 KiB
  else                 n = (128u << 10) + r % (o_maxsize - (128u << 10) + 1);
  if (n >= LARGE_MIN && n > large_left) n = 8 + r % 1024;
  return n;
}

// ---------------------------------------------------------------- pattern
// The pattern of a block depends on the address it was handed out at and the
// size that was asked for; after realloc the prefix keeps the *old* pattern.
static inline uint64_t pat_seed(uintptr_t addr, size_t size) {
  return mix64((uint64_t)addr ^ ((uint64_t)size << 20) ^ 0xa5a5a5a5u);
}
// Byte i of the pattern (the same bytes the word loops below write).
static inline unsigned char pat_byte(uint64_t seed, size_t i) {
  return (unsigned char)((seed + (uint64_t)(i / 8) * 0x9E3779B97F4A7C15ULL) >> ((i & 7) * 8));
}
static void pat_fill(void *p, size_t size) {
  uint64_t seed = pat_seed((uintptr_t)p, size);
  unsigned char *b = p;
  size_t i = 0, words = size / 8;
  for (size_t w = 0; w < words; w++, i += 8) {
    uint64_t v = seed + w * 0x9E3779B97F4A7C15ULL;
    memcpy(b + i, &v, 8);
  }
  for (; i < size; i++) b[i] = pat_byte(seed, i);
}
// Returns the offset of the first bad byte among the first len bytes, or -1.
static long pat_check(const void *p, uintptr_t addr, size_t size, size_t len) {
  uint64_t seed = pat_seed(addr, size);
  const unsigned char *b = p;
  size_t i = 0, words = len / 8;
  for (size_t w = 0; w < words; w++, i += 8) {
    uint64_t v = seed + w * 0x9E3779B97F4A7C15ULL, got;
    memcpy(&got, b + i, 8);
    if (got != v) {
      for (size_t k = 0; k < 8; k++)
        if (((got >> (8 * k)) & 0xff) != ((v >> (8 * k)) & 0xff)) return (long)(i + k);
    }
  }
  for (; i < len; i++)
    if (b[i] != pat_byte(seed, i)) return (long)i;
  return -1;
}
static void verify(const void *p, size_t size, const char *what) {
  long bad = pat_check(p, (uintptr_t)p, size, size);
  if (bad >= 0)
    fail("corrupted block %p (%zu bytes) at offset %ld, found before %s", p, size, bad, what);
}

// ---------------------------------------------------------------- checks on a new block
static void check_new(void *p, size_t size, size_t align, const char *what) {
  if (p == NULL) fail("%s(%zu) returned NULL (errno %d)", what, size, errno);
  uintptr_t a = (uintptr_t)p;
  if (size >= 16 && (a & 15)) fail("%s(%zu) = %p is not 16-byte aligned", what, size, p);
  if (align && (a & (align - 1))) fail("%s(align %zu, %zu) = %p is misaligned", what, align, size, p);
  size_t us = S_USABLE(p);
  if (us < size) fail("usable size of %p is %zu < request %zu (%s)", p, us, size, what);
}

// ---------------------------------------------------------------- exchange table
enum { X_EMPTY = 0, X_BUSY = 1, X_FULL = 2 };
typedef struct {
  _Atomic int state;
  void       *p;
  size_t      size;
  char        pad[64 - sizeof(int) - sizeof(void *) - sizeof(size_t)];
} xslot_t;
static xslot_t g_xchg[XCHG_SLOTS];

static int xchg_put(unsigned k, void *p, size_t size) {
  xslot_t *s = &g_xchg[k % XCHG_SLOTS];
  int e = X_EMPTY;
  if (!atomic_compare_exchange_strong_explicit(&s->state, &e, X_BUSY, memory_order_acquire,
                                               memory_order_relaxed))
    return 0;
  s->p = p;
  s->size = size;
  atomic_store_explicit(&s->state, X_FULL, memory_order_release);
  return 1;
}
static int xchg_take(unsigned k, void **p, size_t *size) {
  xslot_t *s = &g_xchg[k % XCHG_SLOTS];
  int f = X_FULL;
  if (!atomic_compare_exchange_strong_explicit(&s->state, &f, X_BUSY, memory_order_acquire,
                                               memory_order_relaxed))
    return 0;
  *p = s->p;
  *size = s->size;
  atomic_store_explicit(&s->state, X_EMPTY, memory_order_release);
  return 1;
}

// ---------------------------------------------------------------- counters
static _Atomic unsigned long c_allocs, c_frees, c_remote, c_reallocs, c_forks, c_large;

// ---------------------------------------------------------------- per thread
typedef struct { void *p; size_t size; } blk_t;
typedef struct {
  int      id, round;
  uint64_t rng;
  blk_t   *live;        // o_live entries (mapped once a thread slot, kept across rounds)
  int      nlive;
  size_t   large_bytes;
  unsigned long allocs, frees, remote, reallocs, large;
} thr_t;

static size_t large_left(const thr_t *t) {
  return t->large_bytes < LARGE_BUDGET ? LARGE_BUDGET - t->large_bytes : 0;
}
static void live_add(thr_t *t, void *p, size_t size) {
  t->live[t->nlive].p = p;
  t->live[t->nlive].size = size;
  t->nlive++;
  if (size >= LARGE_MIN) { t->large_bytes += size; t->large++; }
}
static blk_t live_remove(thr_t *t, int i) {
  blk_t b = t->live[i];
  t->live[i] = t->live[--t->nlive];
  if (b.size >= LARGE_MIN) t->large_bytes -= b.size;
  return b;
}
static void free_checked(thr_t *t, void *p, size_t size, const char *what) {
  verify(p, size, what);
  S_FREE(p);
  t->frees++;
}

static void op_alloc(thr_t *t) {
  size_t n = rnd_size(&t->rng, large_left(t));
  unsigned kind = (unsigned)(rnd_next(&t->rng) % 100);
  void *p;
  if (kind < 80) {
    p = S_MALLOC(n);
    check_new(p, n, 0, "malloc");
  } else if (kind < 88) {
    size_t cnt = 1 + rnd_next(&t->rng) % 8, each = n / cnt ? n / cnt : 1;
    n = cnt * each;
    p = S_CALLOC(cnt, each);
    check_new(p, n, 0, "calloc");
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
      if (b[i]) fail("calloc(%zu, %zu) = %p has non-zero byte at %zu", cnt, each, p, i);
  } else if (kind < 96) {
    size_t align = (size_t)1 << (4 + rnd_next(&t->rng) % 9);      // 16 .. 4096
    if (rnd_next(&t->rng) % 16 == 0) align = (size_t)1 << (13 + rnd_next(&t->rng) % 9); // .. 2 MiB
    if (kind < 92) {
      p = NULL;
      int rc = S_MEMALIGN(&p, align, n);
      if (rc != 0) fail("posix_memalign(%zu, %zu) failed: %d", align, n, rc);
    } else {
      n = (n + align - 1) & ~(align - 1);  // aligned_alloc: size a multiple of alignment
      p = S_ALIGNED(align, n);
    }
    check_new(p, n, align, "aligned");
  } else {
    p = S_REALLOC(NULL, n);
    check_new(p, n, 0, "realloc(NULL)");
  }
  pat_fill(p, n);
  live_add(t, p, n);
  t->allocs++;
}

static void op_realloc(thr_t *t) {
  int i = (int)(rnd_next(&t->rng) % (uint64_t)t->nlive);
  blk_t b = live_remove(t, i);
  verify(b.p, b.size, "realloc");
  size_t n;
  unsigned how = (unsigned)(rnd_next(&t->rng) % 4);
  if (how == 0)      n = b.size + 1 + rnd_next(&t->rng) % 64;             // grow a little
  else if (how == 1) n = b.size > 16 ? b.size - rnd_next(&t->rng) % (b.size / 2) : b.size; // shrink
  else               n = rnd_size(&t->rng, large_left(t));
  if (n >= LARGE_MIN && n > b.size && n - b.size > large_left(t)) n = b.size;
  uintptr_t old = (uintptr_t)b.p;
  void *q = S_REALLOC(b.p, n);
  check_new(q, n, 0, "realloc");
  size_t keep = n < b.size ? n : b.size;
  long bad = pat_check(q, old, b.size, keep);
  if (bad >= 0)
    fail("realloc(%p, %zu -> %zu) = %p lost its contents at offset %ld", (void *)old, b.size, n,
         q, bad);
  pat_fill(q, n);
  live_add(t, q, n);
  t->reallocs++;
}

static void op_free(thr_t *t) {
  int i = (int)(rnd_next(&t->rng) % (uint64_t)t->nlive);
  blk_t b = live_remove(t, i);
  verify(b.p, b.size, "free");
  if (rnd_next(&t->rng) & 1) {            // hand it to another thread
    unsigned k = (unsigned)rnd_next(&t->rng);
    void *op; size_t osz;
    if (xchg_put(k, b.p, b.size)) { t->remote++; return; }
    if (xchg_take(k, &op, &osz)) {        // slot full: swap
      if (xchg_put(k, b.p, b.size)) t->remote++;
      else { S_FREE(b.p); t->frees++; }
      free_checked(t, op, osz, "free of a block from another thread");
      return;
    }
  }
  S_FREE(b.p);
  t->frees++;
}

static void op_take(thr_t *t) {
  void *p; size_t size;
  if (xchg_take((unsigned)rnd_next(&t->rng), &p, &size))
    free_checked(t, p, size, "free of a block from another thread");
}

// A big structure built and freed at random: BURST_BLOCKS blocks of one
// small size freed in a shuffled order, an eighth of them handed to other
// threads through the exchange table, then taken again. The refills find
// slabs whose free lists lie in random order and sweep them into address
// order (tiny/slab_sweep_box.h) while other threads' frees land in them; no
// address may come back twice.
#define BURST_BLOCKS 3000
static int addr_cmp(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
  return x < y ? -1 : x > y;
}
static void do_burst(thr_t *t) {
  void **b = S_MALLOC(BURST_BLOCKS * sizeof *b);
  check_new(b, BURST_BLOCKS * sizeof *b, 0, "malloc (burst array)");
  size_t size = (size_t)16 << (rnd_next(&t->rng) % 5);   // 16 .. 256 bytes
  for (int i = 0; i < BURST_BLOCKS; i++) {
    b[i] = S_MALLOC(size);
    check_new(b[i], size, 0, "malloc (burst)");
    pat_fill(b[i], size);
    t->allocs++;
  }
  for (int i = BURST_BLOCKS - 1; i > 0; i--) {
    int j = (int)(rnd_next(&t->rng) % (uint64_t)(i + 1));
    void *x = b[i];
    b[i] = b[j];
    b[j] = x;
  }
  for (int i = 0; i < BURST_BLOCKS; i++) {
    verify(b[i], size, "free (burst)");
    if ((rnd_next(&t->rng) & 7) == 0 && xchg_put((unsigned)rnd_next(&t->rng), b[i], size)) {
      t->remote++;
      continue;
    }
    S_FREE(b[i]);
    t->frees++;
  }
  for (int i = 0; i < BURST_BLOCKS; i++) {
    b[i] = S_MALLOC(size);
    check_new(b[i], size, 0, "malloc (burst, again)");
    pat_fill(b[i], size);
    t->allocs++;
  }
  qsort(b, BURST_BLOCKS, sizeof *b, addr_cmp);
  for (int i = 0; i < BURST_BLOCKS; i++) {
    if (i > 0 && b[i] == b[i - 1]) fail("malloc(%zu) returned %p twice in one burst", size, b[i]);
    verify(b[i], size, "free (burst, again)");
    S_FREE(b[i]);
    t->frees++;
  }
  S_FREE(b);
}

// The child of a fork: only this thread exists. It checks what it inherited,
// frees some of it (including blocks other threads own), allocates and exits.
static void fork_child(thr_t *t) {
  alarm(60);                                // the parent's alarm is not inherited
  for (int i = 0; i < t->nlive; i++) verify(t->live[i].p, t->live[i].size, "use in fork child");
  while (t->nlive > o_live / 2) {
    blk_t b = live_remove(t, t->nlive - 1);
    S_FREE(b.p);
  }
  for (int k = 0; k < 32; k++) {            // blocks that other (now absent) threads allocated
    void *p; size_t size;
    if (xchg_take((unsigned)k * 7, &p, &size)) { verify(p, size, "free in fork child"); S_FREE(p); }
  }
  for (int i = 0; i < 3000; i++) {
    unsigned r = (unsigned)(rnd_next(&t->rng) % 10);
    if (t->nlive < o_live && r < 5) op_alloc(t);
    else if (t->nlive > 0 && r < 7) op_realloc(t);
    else if (t->nlive > 0) {
      blk_t b = live_remove(t, (int)(rnd_next(&t->rng) % (uint64_t)t->nlive));
      free_checked(t, b.p, b.size, "free in fork child");
    }
  }
  while (t->nlive > 0) {
    blk_t b = live_remove(t, t->nlive - 1);
    free_checked(t, b.p, b.size, "free in fork child");
  }
  _exit(0);
}

static void do_fork(thr_t *t) {
  pid_t pid = fork();
  if (pid < 0) fail("fork failed: %s", strerror(errno));
  if (pid == 0) fork_child(t);
  int st;
  if (waitpid(pid, &st, 0) != pid) fail("waitpid failed: %s", strerror(errno));
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail("fork child (round %d) ended with %s %d", t->round,
         WIFSIGNALED(st) ? "signal" : "exit status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
  atomic_fetch_add(&c_forks, 1);
}

static void *thread_main(void *arg) {
  thr_t *t = arg;
  long fork_at = (o_fork && t->id == 0) ? o_ops / 2 : -1;
  long nap_every = o_ops / 4 > 0 ? o_ops / 4 : 1;
  long burst_every = o_ops / 2 > 0 ? o_ops / 2 : 1;
  for (long op = 0; op < o_ops; op++) {
    if (op == fork_at) do_fork(t);
    if (op % burst_every == burst_every / 3) do_burst(t);
    // A sleeping owner leaves the remote lists of its slabs alone: the other
    // threads' frees into them wait there until they are stale, and their
    // flushes then keep tickets (remote_free_box.h), which this run's end
    // must find all taken back or sent home.
    if (o_nap_ms != 0 && (t->id & 1) && op % nap_every == nap_every / 2) {
      struct timespec nap = {o_nap_ms / 1000, (long)(o_nap_ms % 1000) * 1000000L};
      nanosleep(&nap, NULL);
    }
    unsigned r = (unsigned)(rnd_next(&t->rng) % 100);
    if (t->nlive == 0 || (r < 40 && t->nlive < o_live)) op_alloc(t);
    else if (r < 40) op_free(t);                // full: free instead
    else if (r < 50) op_realloc(t);
    else if (r < 85) op_free(t);
    else op_take(t);
  }
  // Leave a few blocks in the exchange table for the next round (freed after
  // this thread has exited); free the rest here.
  while (t->nlive > 0) {
    blk_t b = live_remove(t, t->nlive - 1);
    verify(b.p, b.size, "free at thread end");
    if (t->nlive < 8 && xchg_put((unsigned)rnd_next(&t->rng), b.p, b.size)) { t->remote++; continue; }
    S_FREE(b.p);
    t->frees++;
  }
  atomic_fetch_add(&c_allocs, t->allocs);
  atomic_fetch_add(&c_frees, t->frees);
  atomic_fetch_add(&c_remote, t->remote);
  atomic_fetch_add(&c_reallocs, t->reallocs);
  atomic_fetch_add(&c_large, t->large);
  return NULL;
}

static void usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s [-t threads] [-r rounds] [-n ops-per-thread-per-round] [-m max-size]\n"
          "          [-s seed] [-F (no fork)] [-w watchdog-seconds] [-z nap-ms (odd threads sleep)]\n"
          "          [-l live-blocks-per-thread] [-S (sizes of 8 B-1 KiB only)] [-v]\n", argv0);
  exit(2);
}

int main(int argc, char **argv) {
  int c;
  while ((c = getopt(argc, argv, "t:r:n:m:s:w:z:l:SFv")) != -1) {
    switch (c) {
    case 't': o_threads = atoi(optarg); break;
    case 'r': o_rounds = atoi(optarg); break;
    case 'n': o_ops = atol(optarg); break;
    case 'm': o_maxsize = strtoull(optarg, NULL, 0); break;
    case 's': o_seed = strtoull(optarg, NULL, 0); break;
    case 'F': o_fork = 0; break;
    case 'v': o_verbose = 1; break;
    case 'w': o_watchdog = (unsigned)atoi(optarg); break;
    case 'z': o_nap_ms = (unsigned)atoi(optarg); break;
    case 'l': o_live = atoi(optarg); break;
    case 'S': o_small = 1; break;
    default: usage(argv[0]);
    }
  }
  if (o_threads < 1 || o_threads > MAX_THREADS || o_rounds < 1 || o_ops < 1 || o_live < 8 ||
      o_maxsize < (256u << 10))
    usage(argv[0]);
#ifndef STRESS_HAK
  // The LD_PRELOAD run must really be using hakmem.
  const char *want = getenv("STRESS_EXPECT_HAKMEM");
  if (want && *want == '1' && dlsym(RTLD_DEFAULT, "hak_malloc") == NULL)
    fail("STRESS_EXPECT_HAKMEM=1 but hakmem is not loaded (LD_PRELOAD=%s)",
         getenv("LD_PRELOAD") ? getenv("LD_PRELOAD") : "");
#endif
  signal(SIGALRM, watchdog);
  alarm(o_watchdog);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  static thr_t thr[MAX_THREADS];
  static blk_t *live[MAX_THREADS];
  pthread_t tid[MAX_THREADS];
  for (int i = 0; i < o_threads; i++) {   // (not from the allocator under test)
    live[i] = mmap(NULL, (size_t)o_live * sizeof(blk_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (live[i] == MAP_FAILED) fail("mmap of %d live entries: %s", o_live, strerror(errno));
  }
  for (int round = 0; round < o_rounds; round++) {
    for (int i = 0; i < o_threads; i++) {
      memset(&thr[i], 0, sizeof thr[i]);
      thr[i].live = live[i];
      thr[i].id = i;
      thr[i].round = round;
      thr[i].rng = mix64(o_seed * 1000003u + (uint64_t)round * 131u + (uint64_t)i) | 1;
      int rc = pthread_create(&tid[i], NULL, thread_main, &thr[i]);
      if (rc) fail("pthread_create: %s", strerror(rc));
    }
    for (int i = 0; i < o_threads; i++) pthread_join(tid[i], NULL);
    if (o_verbose) fprintf(stderr, "stress: round %d done\n", round);
  }
  // Free what is left in the exchange table (owners have all exited).
  unsigned long left = 0;
  for (unsigned k = 0; k < XCHG_SLOTS; k++) {
    void *p; size_t size;
    if (xchg_take(k, &p, &size)) { verify(p, size, "final free"); S_FREE(p); left++; }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("stress: OK (%s) threads=%d rounds=%d ops/thread/round=%ld fork=%s seed=%llu: "
         "%lu allocs, %lu frees, %lu handed to other threads, %lu reallocs, %lu large, "
         "%lu forks, %.1f s\n",
         S_VARIANT, o_threads, o_rounds, o_ops, o_fork ? "on" : "off",
         (unsigned long long)o_seed, atomic_load(&c_allocs), atomic_load(&c_frees) + left,
         atomic_load(&c_remote), atomic_load(&c_reallocs), atomic_load(&c_large),
         atomic_load(&c_forks), secs);
#ifdef STRESS_HAK
  hak_stats_t st;
  hak_get_stats(&st);
  printf("stress: hak stats: mapped %zu KiB, superslabs %zu, slabs in use %zu, free %zu, "
         "in-use %zu KiB, huge %zu, remote frees %zu, threads live %zu\n",
         st.mapped_bytes >> 10, st.superslab_count, st.slabs_in_use, st.slabs_free,
         st.in_use_bytes >> 10, st.huge_count, st.remote_frees_total, st.threads_live);
  // Every worker has exited: their per-thread state must have gone back.
  if (st.threads_live > 1)
    fail("hak_get_stats reports %zu live threads after all workers exited", st.threads_live);
  if (st.huge_count != 0) fail("hak_get_stats reports %zu live huge blocks after all frees",
                               st.huge_count);
  // Everything is free: trimming gives the cached huge mappings back (the rest of the
  // figures are informational).
  hak_thread_flush();
  int trimmed = hak_trim();
  hak_get_stats(&st);
  printf("stress: after hak_trim (returned %d): mapped %zu KiB, superslabs %zu, slabs in use %zu, "
         "free %zu, in-use %zu KiB, huge cached %zu KiB\n", trimmed, st.mapped_bytes >> 10,
         st.superslab_count, st.slabs_in_use, st.slabs_free, st.in_use_bytes >> 10,
         st.huge_cached_bytes >> 10);
  // Byte counts near 2^64 are a counter that went below zero.
  const size_t *f = (const size_t *)&st;
  for (size_t i = 0; i < sizeof st / sizeof(size_t); i++)
    if (f[i] > ((size_t)1 << 50))
      fail("hak_get_stats field %zu is %zu (a counter went below zero): mapped %zd, superslab "
           "bytes %zd, huge bytes %zd, huge cached %zd", i, f[i], (ssize_t)st.mapped_bytes,
           (ssize_t)st.superslab_bytes, (ssize_t)st.huge_bytes, (ssize_t)st.huge_cached_bytes);
  if (st.huge_cached_bytes != 0)
    fail("hak_trim left %zu bytes of huge mappings cached", st.huge_cached_bytes);
  // Every block was freed and every thread's state went back: a block still
  // counted in use is one the allocator lost (a free whose push onto a full
  // list failed left 48-80 KiB in use in 1 run of ~12 at -t 16 -r 4 -n 20000).
  if (st.in_use_bytes != 0 || st.slabs_in_use != 0)
    fail("%zu bytes in %zu slabs still in use after every block was freed and a trim: lost blocks",
         st.in_use_bytes, st.slabs_in_use);
#endif
  return 0;
}
