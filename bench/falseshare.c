// falseshare — allocator-induced false sharing (Hoard's cache-scratch and
// cache-thrash).
//
// T threads each repeat I times: malloc a small object (8 bytes), write every
// byte of it R times, free it. The threads share nothing, so the run scales
// perfectly unless the allocator places different threads' objects in the
// same cache line; then every write invalidates the other core's copy and the
// run slows by an order of magnitude.
//   -m thrash   each thread allocates its own objects from the start
//               (active false sharing: the allocator itself hands neighbours
//               to different threads);
//   -m scratch  (default) the main thread first allocates one object per
//               thread, side by side, and each thread starts by freeing the
//               one it was given (passive false sharing: an allocator that
//               reuses a remotely freed block in the freeing thread hands each
//               thread a block in a line it shares with the others).
//
// Figure: byte writes per second (T * I * R * SIZE writes / wall time).
// Options: -m thrash|scratch, -t THREADS (2), -i ITERATIONS (1000),
// -r REPETITIONS (2000), -o OBJECT_SIZE (8).
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>

typedef struct {
  char *given;                         // scratch: the object to free first
  double finish;
  _Alignas(64) char pad[1];
} worker_t;

static uint64_t g_iters = 1000, g_reps = 2000;
static size_t g_size = 8;
static int g_threads = 2, g_scratch = 1;
static pthread_barrier_t g_start;

static void *worker_main(void *arg) {
  worker_t *w = arg;
  pthread_barrier_wait(&g_start);
  if (w->given != NULL) free(w->given);
  for (uint64_t i = 0; i < g_iters; i++) {
    volatile char *p = malloc(g_size);
    if (p == NULL) {
      fprintf(stderr, "malloc(%zu) failed\n", g_size);
      exit(3);
    }
    for (uint64_t r = 0; r < g_reps; r++)
      for (size_t k = 0; k < g_size; k++) p[k] = (char)(p[k] + 1);
    free((void *)p);
  }
  w->finish = bench_now();
  return NULL;
}

static void usage(void) {
  fprintf(stderr, "usage: falseshare [-m thrash|scratch] [-t THREADS] [-i ITERATIONS] "
                  "[-r REPETITIONS] [-o OBJECT_SIZE]\n");
  exit(2);
}

int main(int argc, char **argv) {
  int c;
  while ((c = getopt(argc, argv, "m:t:i:r:o:h")) != -1) {
    switch (c) {
    case 'm':
      if (strcmp(optarg, "scratch") == 0) g_scratch = 1;
      else if (strcmp(optarg, "thrash") == 0) g_scratch = 0;
      else usage();
      break;
    case 't': g_threads = (int)bench_parse_count("-t", optarg); break;
    case 'i': g_iters = bench_parse_count("-i", optarg); break;
    case 'r': g_reps = bench_parse_count("-r", optarg); break;
    case 'o': g_size = bench_parse_size("-o", optarg); break;
    default: usage();
    }
  }
  if (optind != argc || g_threads < 1 || g_threads > 1024 || g_size < 1) usage();

  worker_t *w = calloc((size_t)g_threads, sizeof *w);
  pthread_t *tid = calloc((size_t)g_threads, sizeof *tid);
  if (w == NULL || tid == NULL) return 3;
  if (g_scratch)
    for (int i = 0; i < g_threads; i++) w[i].given = bench_xmalloc(g_size);
  pthread_barrier_init(&g_start, NULL, (unsigned)g_threads + 1);
  for (int i = 0; i < g_threads; i++) {
    if (pthread_create(&tid[i], NULL, worker_main, &w[i]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      return 3;
    }
  }
  pthread_barrier_wait(&g_start);
  double t0 = bench_now(), t1 = t0;
  for (int i = 0; i < g_threads; i++) pthread_join(tid[i], NULL);
  for (int i = 0; i < g_threads; i++) if (w[i].finish > t1) t1 = w[i].finish;

  char extra[128];
  snprintf(extra, sizeof extra, "mode=%s threads=%d iters=%" PRIu64 " reps=%" PRIu64 " size=%zu",
           g_scratch ? "scratch" : "thrash", g_threads, g_iters, g_reps, g_size);
  uint64_t writes = (uint64_t)g_threads * g_iters * g_reps * g_size;
  bench_result("falseshare", "writes", writes, t1 - t0, extra);
  free(w);
  free(tid);
  return 0;
}
