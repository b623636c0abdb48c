// churn — many short-lived threads that allocate.
//
// The main thread starts N threads in waves of C at a time (create C, join C).
// Each thread mallocs K blocks (sizes uniform in [MIN, MAX]) and writes them,
// frees the ones the previous thread left in a shared hand-off bin (blocks
// allocated by a thread that has exited since), puts K/8 of its own blocks in
// the bin, frees the rest, and exits. So every thread sets up the allocator's
// per-thread state, uses it, and leaves it behind with blocks still live, and
// frees of blocks whose owner thread is gone are routine. An allocator that
// does not recycle an exited thread's caches grows here: compare peak RSS.
//
// Figure: threads per second (create + work + exit + join).
// Options: -n THREADS (20000), -c CONCURRENT (4), -k BLOCKS per thread (200),
// --min (16), --max (1024), -s SEED, --default-stack (glibc's default stack
// size, 8 MiB here, instead of 256 KiB: glibc keeps 40 MiB of exited threads'
// stacks for reuse, so with more than a few threads at a time most threads
// get a fresh mapping, and the static TLS that glibc copies and clears at
// the top of it costs page faults).
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>

static uint64_t g_seed = 42;
static uint32_t g_blocks = 200;
static int g_default_stack;
static size_t g_min = 16, g_max = 1024;
static pthread_mutex_t g_bin_lock = PTHREAD_MUTEX_INITIALIZER;
static char **g_bin;                     // K/8 blocks left by an earlier thread
static uint32_t g_bin_count;

static void *worker_main(void *arg) {
  bench_rng_t rng = bench_rng(g_seed, (uint64_t)(uintptr_t)arg);
  uint32_t span = (uint32_t)(g_max - g_min + 1);
  uint32_t keep = g_blocks / 8;
  // Sized by -k: a 4096-entry array (32 KiB) of which a thread of 16 blocks
  // wrote only its far end left the pages between the thread's first frames
  // and that end untouched, and whatever reached them later (the allocators'
  // exit paths) took page faults no thread with dense stack use would.
  char *mine[g_blocks];
  for (uint32_t i = 0; i < g_blocks; i++) {
    size_t size = g_min + bench_below((uint32_t)bench_rand(&rng), span);
    char *p = malloc(size);
    if (p == NULL) {
      fprintf(stderr, "malloc(%zu) failed\n", size);
      exit(3);
    }
    memset(p, (int)i, size < 64 ? size : 64);
    p[size - 1] = 2;
    mine[i] = p;
  }
  pthread_mutex_lock(&g_bin_lock);
  for (uint32_t i = 0; i < g_bin_count; i++) free(g_bin[i]);
  for (uint32_t i = 0; i < keep; i++) g_bin[i] = mine[i];
  g_bin_count = keep;
  pthread_mutex_unlock(&g_bin_lock);
  for (uint32_t i = keep; i < g_blocks; i++) free(mine[i]);
  return NULL;
}

static void usage(void) {
  fprintf(stderr, "usage: churn [-n THREADS] [-c CONCURRENT] [-k BLOCKS<=4096] [--min B] "
                  "[--max B] [-s SEED] [--default-stack]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "min", required_argument, NULL, 'a' }, { "max", required_argument, NULL, 'b' },
    { "default-stack", no_argument, NULL, 'd' },
    { "help", no_argument, NULL, 'h' },      { NULL, 0, NULL, 0 },
  };
  uint64_t nthreads = 20000;
  uint32_t conc = 4;
  int c;
  while ((c = getopt_long(argc, argv, "n:c:k:s:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': nthreads = bench_parse_count("-n", optarg); break;
    case 'c': conc = (uint32_t)bench_parse_count("-c", optarg); break;
    case 'k': g_blocks = (uint32_t)bench_parse_count("-k", optarg); break;
    case 's': g_seed = bench_parse_count("-s", optarg); break;
    case 'a': g_min = bench_parse_size("--min", optarg); break;
    case 'b': g_max = bench_parse_size("--max", optarg); break;
    case 'd': g_default_stack = 1; break;
    default: usage();
    }
  }
  if (optind != argc || conc < 1 || conc > 1024 || g_blocks > 4096 || g_min < 1 ||
      g_max < g_min || g_max - g_min >= UINT32_MAX) usage();
  g_bin = bench_xmalloc((g_blocks / 8 + 1) * sizeof(char *));
  pthread_t *tid = bench_xmalloc(conc * sizeof(pthread_t));
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (!g_default_stack) pthread_attr_setstacksize(&attr, 256 << 10);    // `mine` needs up to 32 KiB

  double t0 = bench_now();
  uint64_t started = 0;
  while (started < nthreads) {
    uint32_t wave = 0;
    for (; wave < conc && started < nthreads; wave++, started++) {
      if (pthread_create(&tid[wave], &attr, worker_main, (void *)(uintptr_t)(started + 1)) != 0) {
        fprintf(stderr, "pthread_create failed after %" PRIu64 " threads\n", started);
        return 3;
      }
    }
    for (uint32_t i = 0; i < wave; i++) pthread_join(tid[i], NULL);
  }
  double t1 = bench_now();

  char extra[160];
  snprintf(extra, sizeof extra, "concurrent=%u blocks=%u min=%zu max=%zu stack=%s", conc, g_blocks,
           g_min, g_max, g_default_stack ? "default" : "256K");
  bench_result("churn", "threads", nthreads, t1 - t0, extra);
  for (uint32_t i = 0; i < g_bin_count; i++) free(g_bin[i]);
  free(g_bin);
  free(tid);
  return 0;
}
