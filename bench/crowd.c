// crowd — many threads live at once, each holding a few blocks of many sizes
// (a server's pool of worker threads, each with its own requests' data).
//
// The main thread starts T threads (256 KiB stacks); each mallocs K blocks of
// each of twelve sizes from 16 B to 5 000 B, writes them whole, and waits
// until all T threads hold theirs; then each frees its blocks and exits. The
// peak RSS comes at that point: T times what a thread's few blocks cost,
// which is their bytes plus whatever the allocator keeps per thread (a slab
// or page per size class, pages faulted in ahead, blocks carved ahead).
//
// Figure: blocks per second (thread creation, mallocs, frees and joins), and
// the peak RSS to compare. Options: -t THREADS (256), -k BLOCKS per size and
// thread (16), -n ROUNDS (1: the whole crowd again, after the joins).
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>

static const size_t g_sizes[] = {16, 24, 40, 64, 100, 200, 300, 500, 800, 1000, 2000, 5000};
#define NSIZES (sizeof g_sizes / sizeof g_sizes[0])

static uint32_t g_blocks = 16;
static pthread_barrier_t g_all_hold;

static void *worker_main(void *arg) {
  (void)arg;
  uint32_t n = g_blocks * (uint32_t)NSIZES;
  char **mine = bench_xmalloc(n * sizeof *mine);
  uint32_t k = 0;
  for (uint32_t i = 0; i < g_blocks; i++)
    for (size_t s = 0; s < NSIZES; s++) {
      mine[k] = bench_xmalloc(g_sizes[s]);
      memset(mine[k], (int)(k & 0xff), g_sizes[s]);
      k++;
    }
  pthread_barrier_wait(&g_all_hold);
  k = 0;
  for (uint32_t i = 0; i < g_blocks; i++)
    for (size_t s = 0; s < NSIZES; s++) {
      if ((unsigned char)mine[k][g_sizes[s] - 1] != (k & 0xff)) {
        fprintf(stderr, "crowd: block %u changed while held\n", k);
        exit(4);
      }
      free(mine[k++]);
    }
  free(mine);
  return NULL;
}

static void usage(void) {
  fprintf(stderr, "usage: crowd [-t THREADS] [-k BLOCKS_PER_SIZE] [-n ROUNDS]\n");
  exit(2);
}

int main(int argc, char **argv) {
  uint64_t threads = 256, rounds = 1;
  int c;
  while ((c = getopt(argc, argv, "t:k:n:h")) != -1) {
    switch (c) {
    case 't': threads = bench_parse_count("-t", optarg); break;
    case 'k': g_blocks = (uint32_t)bench_parse_count("-k", optarg); break;
    case 'n': rounds = bench_parse_count("-n", optarg); break;
    default: usage();
    }
  }
  if (optind != argc || threads < 1 || threads > 100000 || g_blocks < 1 || g_blocks > 100000 || rounds < 1) usage();

  pthread_t *tid = bench_xmalloc(threads * sizeof *tid);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256u << 10);
  double t0 = bench_now();
  for (uint64_t r = 0; r < rounds; r++) {
    pthread_barrier_init(&g_all_hold, NULL, (unsigned)threads);
    for (uint64_t i = 0; i < threads; i++) {
      if (pthread_create(&tid[i], &attr, worker_main, NULL) != 0) {
        fprintf(stderr, "crowd: pthread_create failed at thread %" PRIu64 "\n", i);
        return 3;
      }
    }
    for (uint64_t i = 0; i < threads; i++) pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&g_all_hold);
  }
  double secs = bench_now() - t0;
  free(tid);

  char extra[128];
  snprintf(extra, sizeof extra, "threads=%" PRIu64 " blocks=%u rounds=%" PRIu64, threads, g_blocks, rounds);
  bench_result("crowd", "blocks", rounds * threads * g_blocks * NSIZES, secs, extra);
  return 0;
}
