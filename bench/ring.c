// ring — every free is a cross-thread free.
//
// T threads (default 2) form a ring. Thread t mallocs blocks (size uniform in
// [MIN, MAX], first and last byte written) and hands each one to thread t+1
// through a single-producer/single-consumer queue; thread t+1 frees every block
// it receives. No thread ever frees a block it allocated, and no thread frees
// anything else: unlike ws8192 -x (where a received block sits in a slot for a
// while and a thread whose successor is behind frees blocks itself), here
// 100 % of the frees are remote and happen as soon as the block arrives.
//
// One step of a thread: malloc one block and push it to its successor, then pop
// one block from its predecessor (if one is there) and free it. When the
// successor's queue is full the thread frees what it has received until there
// is room (sched_yield when there is nothing to free), so the ring cannot
// deadlock. Blocks in flight per thread are bounded by the queue capacity (-q),
// so live memory is at most T * Q * MAX bytes whatever the relative speeds.
//
// -n N is the number of operations per thread: N/2 mallocs and N/2 frees (N is
// rounded down to even), so, as in ws8192, an operation is one call of malloc
// or free. Throughput = all threads' operations / wall time from the common
// start (barrier) to the last thread's last free.
//
// Options: -t THREADS (2, at least 2), -n OPS_PER_THREAD (4M), --min (16),
// --max (1024) (bytes, K/M suffixes), -q QUEUE capacity per thread (1024,
// rounded up to a power of two), -s SEED (42).
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

typedef struct {
  int id;
  spsc_t *in, *out;               // from thread id-1, to thread id+1
  uint64_t mallocs, frees, yields;
  double finish;
  _Alignas(64) char pad[1];
} worker_t;

static uint64_t g_ops = 4000000, g_seed = 42, g_queue = 1024;
static size_t g_min = 16, g_max = 1024;
static int g_threads = 2;
static pthread_barrier_t g_start;

static void *worker_main(void *arg) {
  worker_t *w = arg;
  bench_rng_t rng = bench_rng(g_seed, (uint64_t)w->id);
  const uint64_t target = g_ops / 2;      // mallocs here = frees here (the predecessor's mallocs)
  const uint32_t span = (uint32_t)(g_max - g_min + 1);
  const size_t min = g_min;
  spsc_t *in = w->in, *out = w->out;
  uint64_t mallocs = 0, frees = 0, yields = 0;
  pthread_barrier_wait(&g_start);
  while (mallocs < target || frees < target) {
    if (mallocs < target) {
      size_t size = min + bench_below((uint32_t)bench_rand(&rng), span);
      char *p = malloc(size);
      if (__builtin_expect(p == NULL, 0)) {
        fprintf(stderr, "malloc(%zu) failed\n", size);
        exit(3);
      }
      p[0] = 1;
      p[size - 1] = 2;
      mallocs++;
      while (!spsc_push(out, p)) {        // the successor is behind: free what we received
        void *q = spsc_pop(in);
        if (q != NULL) {
          free(q);
          frees++;
        } else {
          sched_yield();
          yields++;
        }
      }
    }
    void *q = spsc_pop(in);
    if (q != NULL) {
      free(q);
      frees++;
    } else if (mallocs >= target) {       // only waiting for the predecessor's last blocks
      sched_yield();
      yields++;
    }
  }
  w->finish = bench_now();
  w->mallocs = mallocs;
  w->frees = frees;
  w->yields = yields;
  return NULL;
}

static void usage(void) {
  fprintf(stderr,
          "usage: ring [-t THREADS] [-n OPS_PER_THREAD] [--min BYTES] [--max BYTES] [-q QUEUE]\n"
          "            [-s SEED]\n"
          "  defaults: -t 2 -n 4M --min 16 --max 1024 -q 1024 -s 42\n"
          "  every block is freed by the next thread in the ring (T >= 2)\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "threads", required_argument, NULL, 't' }, { "ops", required_argument, NULL, 'n' },
    { "seed", required_argument, NULL, 's' },    { "min", required_argument, NULL, 'a' },
    { "max", required_argument, NULL, 'b' },     { "queue", required_argument, NULL, 'q' },
    { "help", no_argument, NULL, 'h' },          { NULL, 0, NULL, 0 },
  };
  int c;
  while ((c = getopt_long(argc, argv, "t:n:s:q:h", longopts, NULL)) != -1) {
    switch (c) {
    case 't': g_threads = (int)bench_parse_count("-t", optarg); break;
    case 'n': g_ops = bench_parse_count("-n", optarg); break;
    case 's': g_seed = bench_parse_count("-s", optarg); break;
    case 'q': g_queue = bench_parse_count("-q", optarg); break;
    case 'a': g_min = bench_parse_size("--min", optarg); break;
    case 'b': g_max = bench_parse_size("--max", optarg); break;
    default: usage();
    }
  }
  if (optind != argc || g_threads < 2 || g_threads > 1024 || g_min < 1 || g_max < g_min ||
      g_max - g_min >= UINT32_MAX || g_queue < 1 || g_queue > (1u << 24) || g_ops < 2) usage();

  uint64_t cap = 1;
  while (cap < g_queue) cap <<= 1;
  worker_t *w = calloc((size_t)g_threads, sizeof *w);
  pthread_t *tid = calloc((size_t)g_threads, sizeof *tid);
  spsc_t *queues = aligned_alloc(64, sizeof(spsc_t) * (size_t)g_threads);
  if (w == NULL || tid == NULL || queues == NULL) return 3;
  memset(queues, 0, sizeof(spsc_t) * (size_t)g_threads);
  for (int i = 0; i < g_threads; i++) {
    queues[i].buf = bench_xmalloc(cap * sizeof(void *));
    queues[i].mask = cap - 1;
  }
  pthread_barrier_init(&g_start, NULL, (unsigned)g_threads + 1);
  for (int i = 0; i < g_threads; i++) {
    w[i].id = i;
    w[i].out = &queues[i];
    w[i].in = &queues[(i + g_threads - 1) % g_threads];
    if (pthread_create(&tid[i], NULL, worker_main, &w[i]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      return 3;
    }
  }
  pthread_barrier_wait(&g_start);
  double t0 = bench_now(), t1 = t0;
  for (int i = 0; i < g_threads; i++) pthread_join(tid[i], NULL);
  uint64_t mallocs = 0, frees = 0, yields = 0;
  for (int i = 0; i < g_threads; i++) {
    if (w[i].finish > t1) t1 = w[i].finish;
    mallocs += w[i].mallocs;
    frees += w[i].frees;
    yields += w[i].yields;
  }
  if (mallocs != frees) {                 // every block must have been freed by its receiver
    fprintf(stderr, "ring: %" PRIu64 " mallocs but %" PRIu64 " frees\n", mallocs, frees);
    return 4;
  }

  char extra[256];
  snprintf(extra, sizeof extra,
           "mallocs=%" PRIu64 " frees=%" PRIu64 " threads=%d min=%zu max=%zu queue=%" PRIu64
           " yields=%" PRIu64,
           mallocs, frees, g_threads, g_min, g_max, cap, yields);
  bench_result("ring", "ops", mallocs + frees, t1 - t0, extra);

  for (int i = 0; i < g_threads; i++) free(queues[i].buf);
  free(queues);
  free(w);
  free(tid);
  return 0;
}
