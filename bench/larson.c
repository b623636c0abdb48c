// larson — a server-style workload after Larson & Krishnan (1998).
//
// T worker threads each hold C blocks (random sizes in [MIN, MAX]), filled before
// the clock starts. One iteration: pick a random block, free it, malloc a new one
// of a random size in its place, write its first and last byte. Every H
// iterations a thread hands C/4 of its blocks to the other threads through a
// shared exchange bin (under a mutex) and takes the same number that other
// threads left there, so a good part of the frees are of blocks another thread
// allocated (like a server whose requests are served by a different thread than
// the one that accepted them). By default the threads live for the whole run
// (thread churn is bench/churn); --respawn N takes the original's shape: every
// N iterations a worker hands its blocks to a new thread and exits, and
// --main-fills has the main thread allocate every worker's first blocks, then
// wait idle (mimalloc-bench's larson: the frees of the main thread's blocks
// all come from other threads, and no later malloc of the main thread takes
// them back).
//
// Figure: allocator calls (each iteration is one free and one malloc = 2 calls)
// per second of wall time, all threads together.
// Options: -t THREADS (2), -n ITERATIONS per thread (2M), -c CHUNKS per thread
// (1000), --min (8), --max (1000), -H HANDOFF interval in iterations (1000), -s SEED,
// --respawn N (0: never), --main-fills.
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>

typedef struct {
  int id;
  char **blocks;
  double finish;
  bench_rng_t rng;       // carried from thread to thread (--respawn)
  uint64_t it;           // the next iteration
  uint32_t offset;       // the next window handed to the bin
  _Alignas(64) char pad[1];
} worker_t;

static uint64_t g_iters = 2000000, g_seed = 42, g_handoff = 1000;
static uint32_t g_chunks = 1000;
static size_t g_min = 8, g_max = 1000;
static int g_threads = 2;
static uint64_t g_respawn;                 // --respawn: iterations a thread runs before its successor
static int g_main_fills;                   // --main-fills
static pthread_mutex_t g_done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_done_cond = PTHREAD_COND_INITIALIZER;
static int g_done;                         // workers finished (--respawn: their threads are detached)
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

static void fill(worker_t *w) {
  for (uint32_t i = 0; i < g_chunks; i++) w->blocks[i] = new_block(&w->rng);
}

static void *worker_main(void *arg);

// --respawn: w's work goes on in a new (detached) thread.
static void respawn(worker_t *w) {
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &attr, worker_main, w) != 0) {
    fprintf(stderr, "pthread_create failed\n");
    exit(3);
  }
  pthread_attr_destroy(&attr);
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  if (w->it == 0) {   // the first thread of this worker
    if (!g_main_fills) fill(w);
    pthread_barrier_wait(&g_start);
    w->it = 1;
  }
  char **blocks = w->blocks;
  for (; w->it <= g_iters; w->it++) {
    uint32_t i = bench_below((uint32_t)(bench_rand(&w->rng) >> 32), g_chunks);
    free(blocks[i]);
    blocks[i] = new_block(&w->rng);
    if (w->it % g_handoff == 0 && g_bin_size > 0) {
      // Swap a window of our blocks with the bin's content.
      pthread_mutex_lock(&g_bin_lock);
      for (uint32_t k = 0; k < g_bin_size; k++) {
        uint32_t j = (w->offset + k) % g_chunks;
        char *t = blocks[j];
        blocks[j] = g_bin[k];
        g_bin[k] = t;
      }
      pthread_mutex_unlock(&g_bin_lock);
      w->offset = (w->offset + g_bin_size) % g_chunks;
    }
    if (g_respawn != 0 && w->it % g_respawn == 0 && w->it < g_iters) {
      w->it++;
      respawn(w);
      return NULL;
    }
  }
  w->finish = bench_now();
  pthread_mutex_lock(&g_done_lock);
  g_done++;
  pthread_cond_signal(&g_done_cond);
  pthread_mutex_unlock(&g_done_lock);
  return NULL;
}

static void usage(void) {
  fprintf(stderr, "usage: larson [-t THREADS] [-n ITERS_PER_THREAD] [-c CHUNKS] [--min B] "
                  "[--max B] [-H HANDOFF] [-s SEED] [--respawn N] [--main-fills]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "min", required_argument, NULL, 'a' }, { "max", required_argument, NULL, 'b' },
    { "respawn", required_argument, NULL, 'r' }, { "main-fills", no_argument, NULL, 'm' },
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
    case 'r': g_respawn = bench_parse_count("--respawn", optarg); break;
    case 'm': g_main_fills = 1; break;
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
    w[i].rng = bench_rng(g_seed, (uint64_t)i + 1);
    w[i].blocks = bench_xmalloc(g_chunks * sizeof(char *));
    if (g_main_fills) fill(&w[i]);
  }
  for (int i = 0; i < g_threads; i++) {
    if (pthread_create(&tid[i], NULL, worker_main, &w[i]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      return 3;
    }
  }
  pthread_barrier_wait(&g_start);
  double t0 = bench_now(), t1 = t0;
  if (g_respawn == 0) {
    for (int i = 0; i < g_threads; i++) pthread_join(tid[i], NULL);
  } else {   // each worker's last thread is a detached one
    for (int i = 0; i < g_threads; i++) pthread_detach(tid[i]);
    pthread_mutex_lock(&g_done_lock);
    while (g_done < g_threads) pthread_cond_wait(&g_done_cond, &g_done_lock);
    pthread_mutex_unlock(&g_done_lock);
  }
  for (int i = 0; i < g_threads; i++) if (w[i].finish > t1) t1 = w[i].finish;

  char extra[200];
  snprintf(extra, sizeof extra, "threads=%d chunks=%u min=%zu max=%zu handoff=%" PRIu64 " respawn=%" PRIu64 " main_fills=%d",
           g_threads, g_chunks, g_min, g_max, g_handoff, g_respawn, g_main_fills);
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
