// shbench — the shapes of MicroQuill SmartHeap's sh6bench and sh8bench as
// mimalloc-bench runs them (written here from their description, not their
// code): a thread takes runs of blocks of one size into a ring of pointers,
// writing each block's first and last byte; when the ring is full it frees
// every block but a window of a fifth of the ring (the most recent ones),
// those below the window in the order it took them, those above it in
// reverse. Frees come in bursts of thousands, of blocks taken in a row.
//
// --sh 6: a sweep takes, for each base size 1, 2, 4, 7, 11, ... (x * 3/2 + 1,
//   below 1000) and each halving of it down to 1, 250 blocks of a size under
//   100 bytes and 50 of a larger one: 19 300 mallocs a sweep, 57% of them of
//   1-8 bytes. A ring of 10 000 / T pointers a thread. -n: sweeps, shared
//   out among the threads.
// --sh 8: an iteration takes the next entry of the histogram {8 x1000,
//   16 x5000, 48 x1000, 72 x100, 148 x100, 200 x100, 520 x10, 1056 x5,
//   4096 x3, 9162 x1, 34562 x1, 168524 x1}; a ring of 1 000 000 / T pointers
//   a thread. Meanwhile the main thread takes -f blocks of 8 bytes into a
//   shared table of T regions and each worker frees its chunk of every
//   region as they appear (every one of them freed by a thread that did not
//   take it). -n: iterations, shared out.
// Unlike the originals, every block is freed by the end.
//
// Figure: allocator calls (mallocs + frees) per second of wall time.
// Options: --sh 6|8 (6), -t THREADS (1), -n WORK (sh6 1 500 sweeps, sh8
// 25 000 iterations), -f FOREIGN (sh8: 357 000 blocks).
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>

// ---- the ring ---------------------------------------------------------------------
// Slots [lo, hi) are the kept window (none before the first wrap: lo = hi =
// n); the thread fills the others from i on, skipping the window.
typedef struct {
  char **slot;
  size_t n, i, lo, hi;
  uint64_t frees;
} ring_t;

static void ring_init(ring_t *r, size_t n) {
  r->slot = bench_xmalloc(n * sizeof(char *));
  r->n = n;
  r->i = 0;
  r->lo = r->hi = n;
  r->frees = 0;
}

// The ring is full: the new window is the fifth after the old one (the
// blocks taken last); everything else is freed.
static void ring_wrap(ring_t *r) {
  size_t lo = r->hi >= r->n ? 0 : r->hi, hi = lo + r->n / 5;
  if (hi > r->n) hi = r->n;
  for (size_t k = 0; k < lo; k++) free(r->slot[k]);         // in the order taken
  for (size_t k = r->n; k-- > hi;) free(r->slot[k]);        // in reverse
  r->frees += r->n - (hi - lo);
  r->lo = lo;
  r->hi = hi;
  r->i = lo == 0 ? hi : 0;
}

static inline void ring_put(ring_t *r, char *p) {
  r->slot[r->i++] = p;
  if (r->i == r->lo) r->i = r->hi;
  if (r->i >= r->n) ring_wrap(r);
}

// Every block still held: the window and what this round filled.
static void ring_drain(ring_t *r) {
  if (r->lo < r->n) {
    for (size_t k = r->lo; k < r->hi; k++) free(r->slot[k]);
    r->frees += r->hi - r->lo;
  }
  size_t end = r->i;
  for (size_t k = 0; k < end; k++) {
    if (k >= r->lo && k < r->hi) continue;   // (freed above)
    free(r->slot[k]);
    r->frees++;
  }
  free(r->slot);
}

static inline char *take(size_t size) {
  char *p = bench_xmalloc(size);
  p[0] = 0;
  p[size - 1] = 0;
  return p;
}

// ---- sh8's blocks taken by main, freed by the workers ----------------------------
static _Atomic(char *) *g_foreign;
static size_t g_foreign_n, g_region, g_chunk;   // regions of g_region slots, chunks of g_chunk
static uint32_t g_threads = 1;

// Worker t's slots: chunk t of each region, k = 0 .. g_chunk * T - 1.
static inline size_t foreign_slot(uint32_t t, size_t k) {
  return (k / g_chunk) * g_region + t * g_chunk + k % g_chunk;
}

// Free worker t's published blocks from *next on; with `all`, wait for each.
static uint64_t foreign_free(uint32_t t, size_t *next, int all) {
  uint64_t n = 0;
  for (; *next < g_chunk * g_threads; ++*next) {
    _Atomic(char *) *s = &g_foreign[foreign_slot(t, *next)];
    char *p = atomic_load_explicit(s, memory_order_acquire);
    while (p == NULL && all) p = atomic_load_explicit(s, memory_order_acquire);
    if (p == NULL) break;
    free(p);
    n++;
  }
  return n;
}

// ---- the workers ------------------------------------------------------------------
static int g_sh = 6;
static uint64_t g_work = 0;

typedef struct {
  pthread_t tid;
  uint32_t id;
  uint64_t calls;
} worker_t;

static const struct { uint32_t count; size_t size; } k_sh8[] = {
  {1000, 8}, {5000, 16}, {1000, 48}, {100, 72}, {100, 148}, {100, 200},
  {10, 520}, {5, 1056}, {3, 4096}, {1, 9162}, {1, 34562}, {1, 168524},
};
#define SH8_ENTRIES (sizeof k_sh8 / sizeof k_sh8[0])

static void *worker(void *arg) {
  worker_t *w = arg;
  uint64_t mallocs = 0, work = g_work / g_threads;
  ring_t r;
  if (g_sh == 6) {
    ring_init(&r, 10000 / g_threads);
    for (uint64_t s = 0; s < work; s++) {
      for (size_t base = 1; base < 1000; base = base * 3 / 2 + 1) {
        for (size_t size = base; size > 0; size /= 2) {
          uint32_t runs = size < 100 ? 250 : 50;
          for (uint32_t k = 0; k < runs; k++) ring_put(&r, take(size));
          mallocs += runs;
        }
      }
    }
  } else {
    size_t next = 0;
    uint64_t foreign = 0;
    ring_init(&r, 1000000 / g_threads);
    for (uint64_t it = 0; it < work; it++) {
      foreign += foreign_free(w->id, &next, 0);
      uint32_t e = (uint32_t)((it + w->id) % SH8_ENTRIES);
      for (uint32_t k = 0; k < k_sh8[e].count; k++) ring_put(&r, take(k_sh8[e].size));
      mallocs += k_sh8[e].count;
    }
    foreign += foreign_free(w->id, &next, 1);
    w->calls += foreign;
  }
  ring_drain(&r);
  w->calls += mallocs + r.frees;
  return NULL;
}

static void usage(void) {
  fprintf(stderr, "usage: shbench [--sh 6|8] [-t THREADS] [-n WORK] [-f FOREIGN]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "sh", required_argument, NULL, 'S' }, { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
  };
  uint64_t threads = 1, foreign = 357000;
  int c;
  while ((c = getopt_long(argc, argv, "t:n:f:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'S': g_sh = (int)bench_parse_count("--sh", optarg); break;
    case 't': threads = bench_parse_count("-t", optarg); break;
    case 'n': g_work = bench_parse_count("-n", optarg); break;
    case 'f': foreign = bench_parse_count("-f", optarg); break;
    default: usage();
    }
  }
  if (optind != argc || (g_sh != 6 && g_sh != 8) || threads < 1 || threads > 64) usage();
  if (g_work == 0) g_work = g_sh == 6 ? 1500 : 25000;
  g_threads = (uint32_t)threads;
  if (g_work < threads) g_work = threads;

  uint64_t main_calls = 0;
  if (g_sh == 8) {
    // Regions of g_region slots, one per worker; chunks of g_chunk in each.
    g_chunk = foreign / threads / threads;
    if (g_chunk == 0) g_chunk = 1;
    g_region = g_chunk * threads;
    g_foreign_n = g_region * threads;
    g_foreign = bench_xmalloc(g_foreign_n * sizeof *g_foreign);
    for (size_t k = 0; k < g_foreign_n; k++) atomic_init(&g_foreign[k], NULL);
  }
  worker_t *w = bench_xmalloc(threads * sizeof *w);
  double t0 = bench_now();
  for (uint32_t t = 0; t < threads; t++) {
    w[t].id = t;
    w[t].calls = 0;
    if (pthread_create(&w[t].tid, NULL, worker, &w[t]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      return 1;
    }
  }
  for (size_t k = 0; k < g_foreign_n; k++) {
    char *p = take(8);
    atomic_store_explicit(&g_foreign[k], p, memory_order_release);
  }
  main_calls = g_foreign_n;
  uint64_t calls = main_calls;
  for (uint32_t t = 0; t < threads; t++) {
    pthread_join(w[t].tid, NULL);
    calls += w[t].calls;
  }
  double t1 = bench_now();
  char extra[160];
  snprintf(extra, sizeof extra, "sh=%d threads=%" PRIu64 " work=%" PRIu64 " foreign=%zu", g_sh, threads, g_work,
           g_foreign_n);
  bench_result("shbench", "calls", calls, t1 - t0, extra);
  free(w);
  free(g_foreign);
  return 0;
}
