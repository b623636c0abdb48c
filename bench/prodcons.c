// prodcons — one thread allocates, another frees everything.
//
// The producer mallocs N blocks (sizes uniform in [MIN, MAX]), writes the first
// and last byte of each, and passes them in batches of 256 pointers to the
// consumer, which reads the first byte and frees them. At most Q batches (64,
// so 16 384 blocks) are in flight; the producer waits when the queue is full,
// so the live data stays small and any growth of peak RSS beyond a few MiB is
// the allocator's: thread-caching allocators that keep remotely freed blocks in
// the consumer's cache, where the producer can never reuse them, blow up here.
//
// Figure: allocator calls (N mallocs + N frees) per second of wall time.
// Options: -n BLOCKS (5M), --min (16), --max (512), -q QUEUE_BATCHES (64), -s SEED.
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>

#define BATCH 256

typedef struct { char *p[BATCH]; uint32_t count; } batch_t;

static uint64_t g_blocks = 5000000, g_seed = 42;
static size_t g_min = 16, g_max = 512;
static uint32_t g_qcap = 64;
static batch_t *g_ring;                  // g_qcap batches, reused (no allocation)
static uint64_t g_head, g_tail;          // consumed / produced batches
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_not_full = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_not_empty = PTHREAD_COND_INITIALIZER;
static int g_done;

static void *producer(void *arg) {
  (void)arg;
  bench_rng_t rng = bench_rng(g_seed, 1);
  uint32_t span = (uint32_t)(g_max - g_min + 1);
  uint64_t made = 0;
  while (made < g_blocks) {
    pthread_mutex_lock(&g_lock);
    while (g_tail - g_head == g_qcap) pthread_cond_wait(&g_not_full, &g_lock);
    batch_t *b = &g_ring[g_tail % g_qcap];
    pthread_mutex_unlock(&g_lock);
    // The slot is ours until we publish it by advancing g_tail.
    uint32_t n = 0;
    for (; n < BATCH && made < g_blocks; n++, made++) {
      size_t size = g_min + bench_below((uint32_t)bench_rand(&rng), span);
      char *p = malloc(size);
      if (__builtin_expect(p == NULL, 0)) {
        fprintf(stderr, "malloc(%zu) failed\n", size);
        exit(3);
      }
      p[0] = 1;
      p[size - 1] = 2;
      b->p[n] = p;
    }
    b->count = n;
    pthread_mutex_lock(&g_lock);
    g_tail++;
    if (made == g_blocks) g_done = 1;
    pthread_cond_signal(&g_not_empty);
    pthread_mutex_unlock(&g_lock);
  }
  return NULL;
}

static void *consumer(void *arg) {
  uint64_t *sum = arg;
  uint64_t s = 0;
  for (;;) {
    pthread_mutex_lock(&g_lock);
    while (g_head == g_tail && !g_done) pthread_cond_wait(&g_not_empty, &g_lock);
    if (g_head == g_tail) {              // done and drained
      pthread_mutex_unlock(&g_lock);
      break;
    }
    batch_t *b = &g_ring[g_head % g_qcap];
    pthread_mutex_unlock(&g_lock);
    for (uint32_t i = 0; i < b->count; i++) {
      s += (unsigned char)b->p[i][0];
      free(b->p[i]);
    }
    pthread_mutex_lock(&g_lock);
    g_head++;
    pthread_cond_signal(&g_not_full);
    pthread_mutex_unlock(&g_lock);
  }
  *sum = s;
  return NULL;
}

static void usage(void) {
  fprintf(stderr, "usage: prodcons [-n BLOCKS] [--min B] [--max B] [-q QUEUE_BATCHES] [-s SEED]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "min", required_argument, NULL, 'a' }, { "max", required_argument, NULL, 'b' },
    { "help", no_argument, NULL, 'h' },      { NULL, 0, NULL, 0 },
  };
  int c;
  while ((c = getopt_long(argc, argv, "n:q:s:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': g_blocks = bench_parse_count("-n", optarg); break;
    case 'q': g_qcap = (uint32_t)bench_parse_count("-q", optarg); break;
    case 's': g_seed = bench_parse_count("-s", optarg); break;
    case 'a': g_min = bench_parse_size("--min", optarg); break;
    case 'b': g_max = bench_parse_size("--max", optarg); break;
    default: usage();
    }
  }
  if (optind != argc || g_blocks < 1 || g_qcap < 1 || g_min < 1 || g_max < g_min ||
      g_max - g_min >= UINT32_MAX) usage();
  g_ring = bench_xmalloc(g_qcap * sizeof(batch_t));

  pthread_t pt, ct;
  uint64_t sum = 0;
  double t0 = bench_now();
  if (pthread_create(&ct, NULL, consumer, &sum) != 0 ||
      pthread_create(&pt, NULL, producer, NULL) != 0) {
    fprintf(stderr, "pthread_create failed\n");
    return 3;
  }
  pthread_join(pt, NULL);
  pthread_join(ct, NULL);
  double t1 = bench_now();
  if (sum != g_blocks) {
    fprintf(stderr, "prodcons: consumer saw %" PRIu64 " blocks, expected %" PRIu64 "\n",
            sum, g_blocks);
    return 1;
  }
  char extra[128];
  snprintf(extra, sizeof extra, "blocks=%" PRIu64 " min=%zu max=%zu queue=%u", g_blocks,
           g_min, g_max, g_qcap);
  bench_result("prodcons", "calls", 2 * g_blocks, t1 - t0, extra);
  free(g_ring);
  return 0;
}
