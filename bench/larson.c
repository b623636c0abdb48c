// larson — a server-style workload after Larson & Krishnan (1998).
//
// T worker threads each hold C blocks (random sizes in [MIN, MAX]), filled before
// the clock starts. One iteration: pick a random block, free it, malloc a new one
// of a random size in its place, write its first and last byte. Every H
// iterations a thread hands C/4 of its blocks to the other threads through a
// shared exchange bin (under a mutex) and takes the same number that other
// threads left there, so a good part of the frees are of blocks another thread
// allocated (like a server whose requests are served by a different thread than
// the one that accepted them). The original benchmark replaces threads with new
// ones; here the threads live for the whole run (thread churn is bench/churn).
//
// Figure: allocator calls (each iteration is one free and one malloc = 2 calls)
// per second of wall time, all threads together.
// Options: -t THREADS (2), -n ITERATIONS per thread (2M), -c CHUNKS per thread
// (1000), --min (8), --max (1000), -H HANDOFF interval in iterations (1000), -s SEED.
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>

typedef struct {
  int id;
  char **blocks;
  double finish;
  _Alignas(64) char pad[1];
} worker_t;

static uint64_t g_iters = 2000000, g_seed = 42, g_handoff = 1000;
static uint32_t g_chunks = 1000;
static size_t g_min = 8, g_max = 1000;
static int g_threads = 2;
static pthread_barrier_t g_start;
static pthread_mutex_t g_bin_lock = PTHREAD_MUTEX_INITIALIZER;
static char **g_bin;                     // the exchange bin, g_chunks / 4 blocks
static uint32_t g_bin_size;

static char *new_block(bench_rng_t *rng) {
  size_t span = g_max - g_min + 1;
  size_t size = g_min + bench_below((uint32_t)bench_rand(rng), (uint32_t)span);
  char *p = malloc(size);
  if (__builtin_expect(p == NULL, 0)) {
    fprintf(stderr, "malloc(%zu) failed\n", size);
    exit(3);
  }
  p[0] = 1;
  p[size - 1] = 2;
  return p;
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  bench_rng_t rng = bench_rng(g_seed, (uint64_t)w->id + 1);
  char **blocks = w->blocks;
  for (uint32_t i = 0; i < g_chunks; i++) blocks[i] = new_block(&rng);
  pthread_barrier_wait(&g_start);
  uint32_t offset = 0;
  for (uint64_t it = 1; it <= g_iters; it++) {
    uint32_t i = bench_below((uint32_t)(bench_rand(&rng) >> 32), g_chunks);
    free(blocks[i]);
    blocks[i] = new_block(&rng);
    if (it % g_handoff == 0 && g_bin_size > 0) {
      // Swap a window of our blocks with the bin's content.
      pthread_mutex_lock(&g_bin_lock);
      for (uint32_t k = 0; k < g_bin_size; k++) {
        uint32_t j = (offset + k) % g_chunks;
        char *t = blocks[j];
        blocks[j] = g_bin[k];
        g_bin[k] = t;
      }
      pthread_mutex_unlock(&g_bin_lock);
      offset = (offset + g_bin_size) % g_chunks;
    }
  }
  w->finish = bench_now();
  return NULL;
}

static void usage(void) {
  fprintf(stderr, "usage: larson [-t THREADS] [-n ITERS_PER_THREAD] [-c CHUNKS] [--min B] "
                  "[--max B] [-H HANDOFF] [-s SEED]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "min", required_argument, NULL, 'a' }, { "max", required_argument, NULL, 'b' },
    { "help", no_argument, NULL, 'h' },      { NULL, 0, NULL, 0 },
  };
  int c;
  while ((c = getopt_long(argc, argv, "t:n:c:H:s:h", longopts, NULL)) != -1) {
    switch (c) {
    case 't': g_threads = (int)bench_parse_count("-t", optarg); break;
    case 'n': g_iters = bench_parse_count("-n", optarg); break;
    case 'c': g_chunks = (uint32_t)bench_parse_count("-c", optarg); break;
    case 'H': g_handoff = bench_parse_count("-H", optarg); break;
    case 's': g_seed = bench_parse_count("-s", optarg); break;
    case 'a': g_min = bench_parse_size("--min", optarg); break;
    case 'b': g_max = bench_parse_size("--max", optarg); break;
    default: usage();
    }
  }
  if (optind != argc || g_threads < 1 || g_threads > 1024 || g_chunks < 1 || g_min < 1 ||
      g_max < g_min || g_max - g_min >= UINT32_MAX || g_handoff < 1) usage();

  bench_rng_t rng = bench_rng(g_seed, 0);
  g_bin_size = g_chunks / 4;
  g_bin = bench_xmalloc((g_bin_size + 1) * sizeof(char *));
  for (uint32_t k = 0; k < g_bin_size; k++) g_bin[k] = new_block(&rng);

  worker_t *w = calloc((size_t)g_threads, sizeof *w);
  pthread_t *tid = calloc((size_t)g_threads, sizeof *tid);
  if (w == NULL || tid == NULL) return 3;
  pthread_barrier_init(&g_start, NULL, (unsigned)g_threads + 1);
  for (int i = 0; i < g_threads; i++) {
    w[i].id = i;
    w[i].blocks = bench_xmalloc(g_chunks * sizeof(char *));
    if (pthread_create(&tid[i], NULL, worker_main, &w[i]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      return 3;
    }
  }
  pthread_barrier_wait(&g_start);
  double t0 = bench_now(), t1 = t0;
  for (int i = 0; i < g_threads; i++) pthread_join(tid[i], NULL);
  for (int i = 0; i < g_threads; i++) if (w[i].finish > t1) t1 = w[i].finish;

  char extra[160];
  snprintf(extra, sizeof extra, "threads=%d chunks=%u min=%zu max=%zu handoff=%" PRIu64,
           g_threads, g_chunks, g_min, g_max, g_handoff);
  bench_result("larson", "calls", 2 * g_iters * (uint64_t)g_threads, t1 - t0, extra);

  for (int i = 0; i < g_threads; i++) {
    for (uint32_t k = 0; k < g_chunks; k++) free(w[i].blocks[k]);
    free(w[i].blocks);
  }
  for (uint32_t k = 0; k < g_bin_size; k++) free(g_bin[k]);
  free(g_bin);
  free(w);
  free(tid);
  return 0;
}
