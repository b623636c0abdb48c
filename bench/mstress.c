// mstress — threads that come and go while they trade blocks, the workload of
// mimalloc's stress test (the "mstress" row of issue 9), written for this suite.
//
// The main thread runs R rounds; each round starts T threads at once and joins
// them. Thread i allocates N * (i % 8 + 1) / 4.5 blocks (N on average; some
// threads do eight times the work of others) and keeps half as many aside to
// the end of its life. Between allocations it frees a random one of its blocks (2 in
// 3 steps) and swaps one of its blocks with a slot of a global transfer array
// of 1 000 (1 in 4 steps, an atomic exchange), so it frees blocks that other
// threads allocated, some of them threads of earlier rounds that have exited.
// Sizes: 8 << (0..4) bytes; 1 in 100 allocations is 40 times larger, 1 in
// 1 000 another 25 times (up to ~128 KiB). Every word of a block is written at
// allocation and checked at free (a mismatch ends the program with status 4).
// The array of a thread's blocks grows with realloc.
//
// Figure: allocations per second over the whole run (thread start and exit
// included). Options: -t THREADS (4), -n N (10000), -r ROUNDS (10), -x SEED,
// -T SLOTS (1000: the transfer array; 0: none, so a thread frees only its own
// blocks: `mstress -t 1 -T 0` times one thread's final frees with no other
// thread's blocks among them).
// Beside it, where a round's time goes, summed over the rounds (milliseconds):
// start_ms, from the round's start to its last thread's first step (the
// creation of T threads); work_ms, to the last thread's end of work (before
// it frees its blocks); free_ms, to the last thread's return (its frees at
// the end); exit_ms, from there to the last join (the threads' exits: the
// allocator's thread-exit work and the C library's). A round takes as long
// as its slowest thread, so an allocator can spend the same CPU time as
// another and take longer.
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>

#define TRANSFERS_MAX 65536u

static uint64_t g_seed = 42;
static uint64_t g_allocs_avg = 10000;
static uint32_t g_transfers = 1000;        // -T: slots of the transfer array (0: none)
static _Atomic(uintptr_t *) g_transfer[TRANSFERS_MAX];   // (the unused slots' pages are never touched)
static _Atomic uint64_t g_allocs;

typedef struct { double start, work_end, end; } worker_times_t;
static worker_times_t *g_times;   // one per thread slot of a round

static inline int chance(bench_rng_t *r, uint32_t per_mille) {
  return bench_below((uint32_t)bench_rand(r), 1000) < per_mille;
}

// A block of `words` words; word 0 holds the count, every word its check value.
static uintptr_t *alloc_words(bench_rng_t *r) {
  size_t words = (size_t)1 << bench_below((uint32_t)bench_rand(r), 5);
  if (chance(r, 10)) words *= 40;
  if (chance(r, 1)) words *= 25;
  uintptr_t *p = malloc(words * sizeof(uintptr_t));
  if (p == NULL) {
    fprintf(stderr, "mstress: malloc(%zu) failed\n", words * sizeof(uintptr_t));
    exit(3);
  }
  p[0] = words;
  for (size_t i = 1; i < words; i++) p[i] = (words - i) ^ (uintptr_t)p;
  return p;
}

static void free_words(uintptr_t *p) {
  if (p == NULL) return;
  size_t words = p[0];
  for (size_t i = 1; i < words; i++)
    if (p[i] != ((words - i) ^ (uintptr_t)p)) {
      fprintf(stderr, "mstress: block %p word %zu changed\n", (void *)p, i);
      exit(4);
    }
  free(p);
}

typedef struct { uintptr_t **v; size_t n, cap; } block_array_t;

static void push(block_array_t *a, uintptr_t *p) {
  if (a->n == a->cap) {
    a->cap = a->cap ? a->cap * 2 : 64;
    a->v = realloc(a->v, a->cap * sizeof *a->v);
    if (a->v == NULL) exit(3);
  }
  a->v[a->n++] = p;
}

static void *worker(void *arg) {
  uint64_t id = (uint64_t)(uintptr_t)arg;
  worker_times_t *times = &g_times[id >> 32];
  id &= 0xffffffffu;
  times->start = bench_now();
  bench_rng_t r = bench_rng(g_seed, id);
  size_t allocs = (size_t)(g_allocs_avg * 2 * (id % 8 + 1) / 9);
  size_t retain = allocs / 2, done = 0;
  block_array_t data = {0}, kept = {0};
  while (allocs > 0 || retain > 0) {
    if (retain == 0 || (allocs > 0 && chance(&r, 500))) {
      allocs--;
      push(&data, alloc_words(&r));
    } else {
      retain--;
      push(&kept, alloc_words(&r));
    }
    done++;
    if (data.n > 0 && chance(&r, 667)) {
      size_t i = bench_below((uint32_t)bench_rand(&r), (uint32_t)data.n);
      free_words(data.v[i]);
      data.v[i] = NULL;
    }
    if (g_transfers > 0 && data.n > 0 && chance(&r, 250)) {
      size_t i = bench_below((uint32_t)bench_rand(&r), (uint32_t)data.n);
      size_t t = bench_below((uint32_t)bench_rand(&r), g_transfers);
      data.v[i] = atomic_exchange_explicit(&g_transfer[t], data.v[i], memory_order_acq_rel);
    }
  }
  times->work_end = bench_now();
  for (size_t i = 0; i < kept.n; i++) free_words(kept.v[i]);
  for (size_t i = 0; i < data.n; i++) free_words(data.v[i]);
  free(kept.v);
  free(data.v);
  atomic_fetch_add_explicit(&g_allocs, done, memory_order_relaxed);
  times->end = bench_now();
  return NULL;
}

static void usage(void) {
  fprintf(stderr, "usage: mstress [-t THREADS] [-n ALLOCS] [-r ROUNDS] [-x SEED] [-T SLOTS]\n");
  exit(2);
}

int main(int argc, char **argv) {
  uint32_t threads = 4, rounds = 10;
  int c;
  while ((c = getopt(argc, argv, "t:n:r:x:T:h")) != -1) {
    switch (c) {
    case 't': threads = (uint32_t)bench_parse_count("-t", optarg); break;
    case 'n': g_allocs_avg = bench_parse_count("-n", optarg); break;
    case 'r': rounds = (uint32_t)bench_parse_count("-r", optarg); break;
    case 'x': g_seed = bench_parse_count("-x", optarg); break;
    case 'T': g_transfers = (uint32_t)bench_parse_count("-T", optarg); break;
    default: usage();
    }
  }
  if (optind != argc || threads < 1 || threads > 1024 || g_allocs_avg < 1 || rounds < 1 || g_transfers > TRANSFERS_MAX)
    usage();
  pthread_t *tid = bench_xmalloc(threads * sizeof(pthread_t));
  g_times = bench_xmalloc(threads * sizeof(worker_times_t));

  double t0 = bench_now(), start_s = 0, work_s = 0, free_s = 0, exit_s = 0;
  for (uint32_t round = 0; round < rounds; round++) {
    double r0 = bench_now();
    for (uint32_t i = 0; i < threads; i++) {
      uint64_t arg = (uint64_t)i << 32 | ((uint64_t)round * threads + i + 1);
      if (pthread_create(&tid[i], NULL, worker, (void *)(uintptr_t)arg) != 0) {
        fprintf(stderr, "mstress: pthread_create failed\n");
        return 3;
      }
    }
    for (uint32_t i = 0; i < threads; i++) pthread_join(tid[i], NULL);
    double r1 = bench_now(), start = r0, work_end = r0, end = r0;
    for (uint32_t i = 0; i < threads; i++) {
      if (g_times[i].start > start) start = g_times[i].start;
      if (g_times[i].work_end > work_end) work_end = g_times[i].work_end;
      if (g_times[i].end > end) end = g_times[i].end;
    }
    start_s += start - r0;
    work_s += work_end - r0;
    free_s += end - work_end;
    exit_s += r1 - end;
  }
  for (uint32_t t = 0; t < g_transfers; t++) free_words(atomic_exchange(&g_transfer[t], NULL));
  double t1 = bench_now();

  char extra[256];
  snprintf(extra, sizeof extra, "threads=%u allocs=%" PRIu64 " rounds=%u transfers=%u start_ms=%.2f work_ms=%.2f free_ms=%.2f exit_ms=%.2f",
           threads, g_allocs_avg, rounds, g_transfers, start_s * 1e3, work_s * 1e3, free_s * 1e3, exit_s * 1e3);
  bench_result("mstress", "allocs", atomic_load(&g_allocs), t1 - t0, extra);
  free(tid);
  free(g_times);
  return 0;
}
