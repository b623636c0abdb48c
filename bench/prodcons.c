// prodcons — threads that allocate, other threads that free everything.
//
// P producers (-t, 1) malloc N blocks between them (sizes uniform in [MIN,
// MAX]), write the first and last byte of each, and pass them in batches of
// 256 pointers to P consumers, which read the first byte and free them. At
// most Q batches (64, so 16 384 blocks) are in flight; a producer waits when
// the queue is full, so the live data stays small and any growth of peak RSS
// beyond a few MiB is the allocator's: thread-caching allocators that keep
// remotely freed blocks in the consumer's cache, where the producer can never
// reuse them, blow up here. With -t above 1 the batches go to whichever
// consumer is free (xmalloc-test's pattern: every consumer frees every
// producer's blocks). -c sets the consumers apart from the producers: one
// producer feeding many consumers that only free (a thread pool's workers)
// is where blocks cached by the threads that free them add up per thread.
//
// With --touch pages the producer writes a byte in every 4 KiB page of each
// block, as a program filling its buffers would (large blocks: what the
// allocator keeps resident, and faults in again, decides the time).
//
// Figure: allocator calls (N mallocs + N frees) per second of wall time.
// Options: -n BLOCKS (5M), --min (16), --max (512), -q QUEUE_BATCHES (64),
// -t PRODUCERS (1), -c CONSUMERS (as many as producers), --touch ends|pages
// (ends), -s SEED.
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>

#define BATCH 256
#define MAX_PAIRS 64

typedef struct { char *p[BATCH]; uint32_t count; } batch_t;

static uint64_t g_blocks = 5000000, g_seed = 42;
static size_t g_min = 16, g_max = 512;
static uint32_t g_qcap = 64, g_pairs = 1, g_consumers = 0;   // (0: as many as producers)
static int g_touch_pages = 0;
static batch_t *g_ring;                  // g_qcap batches, reused (no allocation)
// Under g_lock: the indexes of filled batches in order (a ring of g_qcap:
// consumed g_head, produced g_tail), and of empty ones (a stack).
static uint32_t *g_full, *g_empty;
static uint64_t g_head, g_tail;
static uint32_t g_empty_n, g_producing;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_not_full = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_not_empty = PTHREAD_COND_INITIALIZER;

typedef struct { uint64_t id, blocks, sum; } worker_t;

static void *producer(void *arg) {
  worker_t *w = arg;
  bench_rng_t rng = bench_rng(g_seed, w->id);
  uint32_t span = (uint32_t)(g_max - g_min + 1);
  uint64_t made = 0;
  while (made < w->blocks) {
    pthread_mutex_lock(&g_lock);
    while (g_empty_n == 0) pthread_cond_wait(&g_not_full, &g_lock);
    uint32_t slot = g_empty[--g_empty_n];
    pthread_mutex_unlock(&g_lock);
    batch_t *b = &g_ring[slot];          // ours until published in g_full
    uint32_t n = 0;
    for (; n < BATCH && made < w->blocks; n++, made++) {
      size_t size = g_min + bench_below((uint32_t)bench_rand(&rng), span);
      char *p = malloc(size);
      if (__builtin_expect(p == NULL, 0)) {
        fprintf(stderr, "malloc(%zu) failed\n", size);
        exit(3);
      }
      if (g_touch_pages)
        for (size_t off = 4096; off < size; off += 4096) p[off] = 3;
      p[0] = 1;
      p[size - 1] = 2;
      b->p[n] = p;
    }
    b->count = n;
    pthread_mutex_lock(&g_lock);
    g_full[g_tail++ % g_qcap] = slot;
    pthread_cond_signal(&g_not_empty);
    pthread_mutex_unlock(&g_lock);
  }
  pthread_mutex_lock(&g_lock);
  g_producing--;
  pthread_cond_broadcast(&g_not_empty);
  pthread_mutex_unlock(&g_lock);
  return NULL;
}

static void *consumer(void *arg) {
  worker_t *w = arg;
  uint64_t s = 0;
  for (;;) {
    pthread_mutex_lock(&g_lock);
    while (g_head == g_tail && g_producing > 0) pthread_cond_wait(&g_not_empty, &g_lock);
    if (g_head == g_tail) {              // every producer done, the queue drained
      pthread_mutex_unlock(&g_lock);
      break;
    }
    uint32_t slot = g_full[g_head++ % g_qcap];
    pthread_mutex_unlock(&g_lock);
    batch_t *b = &g_ring[slot];
    for (uint32_t i = 0; i < b->count; i++) {
      s += (unsigned char)b->p[i][0];
      free(b->p[i]);
    }
    pthread_mutex_lock(&g_lock);
    g_empty[g_empty_n++] = slot;
    pthread_cond_signal(&g_not_full);
    pthread_mutex_unlock(&g_lock);
  }
  w->sum = s;
  return NULL;
}

static void usage(void) {
  fprintf(stderr, "usage: prodcons [-n BLOCKS] [--min B] [--max B] [-q QUEUE_BATCHES] [-t PRODUCERS] "
                  "[-c CONSUMERS] [--touch ends|pages] [-s SEED]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "min", required_argument, NULL, 'a' }, { "max", required_argument, NULL, 'b' },
    { "touch", required_argument, NULL, 'T' }, { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  int c;
  while ((c = getopt_long(argc, argv, "n:q:s:t:c:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': g_blocks = bench_parse_count("-n", optarg); break;
    case 'q': g_qcap = (uint32_t)bench_parse_count("-q", optarg); break;
    case 's': g_seed = bench_parse_count("-s", optarg); break;
    case 't': g_pairs = (uint32_t)bench_parse_count("-t", optarg); break;
    case 'c': g_consumers = (uint32_t)bench_parse_count("-c", optarg); break;
    case 'a': g_min = bench_parse_size("--min", optarg); break;
    case 'b': g_max = bench_parse_size("--max", optarg); break;
    case 'T':
      if (strcmp(optarg, "pages") == 0) g_touch_pages = 1;
      else if (strcmp(optarg, "ends") == 0) g_touch_pages = 0;
      else usage();
      break;
    default: usage();
    }
  }
  if (optind != argc || g_blocks < 1 || g_qcap < 1 || g_min < 1 || g_max < g_min ||
      g_max - g_min >= UINT32_MAX || g_pairs < 1 || g_pairs > MAX_PAIRS || g_consumers > MAX_PAIRS) usage();
  if (g_consumers == 0) g_consumers = g_pairs;
  g_ring = bench_xmalloc(g_qcap * sizeof(batch_t));
  g_full = bench_xmalloc(g_qcap * sizeof(uint32_t));
  g_empty = bench_xmalloc(g_qcap * sizeof(uint32_t));
  for (uint32_t i = 0; i < g_qcap; i++) g_empty[i] = g_qcap - 1 - i;
  g_empty_n = g_qcap;
  g_producing = g_pairs;

  pthread_t pt[MAX_PAIRS], ct[MAX_PAIRS];
  worker_t prod[MAX_PAIRS], cons[MAX_PAIRS];
  double t0 = bench_now();
  for (uint32_t i = 0; i < g_pairs || i < g_consumers; i++) {
    // Producer 0 takes the remainder; producer i's sizes are stream i + 1
    // (one producer: the sizes of earlier versions of this program).
    prod[i] = (worker_t){ .id = i + 1, .blocks = g_blocks / g_pairs + (i == 0 ? g_blocks % g_pairs : 0) };
    cons[i] = (worker_t){ 0 };
    if ((i < g_consumers && pthread_create(&ct[i], NULL, consumer, &cons[i]) != 0) ||
        (i < g_pairs && pthread_create(&pt[i], NULL, producer, &prod[i]) != 0)) {
      fprintf(stderr, "pthread_create failed\n");
      return 3;
    }
  }
  uint64_t sum = 0;
  for (uint32_t i = 0; i < g_pairs; i++) pthread_join(pt[i], NULL);
  for (uint32_t i = 0; i < g_consumers; i++) {
    pthread_join(ct[i], NULL);
    sum += cons[i].sum;
  }
  double t1 = bench_now();
  if (sum != g_blocks) {
    fprintf(stderr, "prodcons: consumers saw %" PRIu64 " blocks, expected %" PRIu64 "\n",
            sum, g_blocks);
    return 1;
  }
  char extra[224];
  snprintf(extra, sizeof extra, "blocks=%" PRIu64 " min=%zu max=%zu queue=%u producers=%u consumers=%u touch=%s",
           g_blocks, g_min, g_max, g_qcap, g_pairs, g_consumers, g_touch_pages ? "pages" : "ends");
  bench_result("prodcons", "calls", 2 * g_blocks, t1 - t0, extra);
  free(g_empty);
  free(g_full);
  free(g_ring);
  return 0;
}
