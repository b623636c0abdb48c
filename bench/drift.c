// drift — buffers whose size drifts upward, as a program's buffers grow with
// its input (a JavaScript program's Buffers, a parser's token arrays).
//
// Each step allocates a buffer STEP bytes larger than the last one, from MIN
// up to MAX, then starts again at MIN, and writes every byte of it; the last
// KEEP buffers stay live and the oldest is freed. Every size class the sizes
// pass through is used for a while and then not again until the next sweep,
// so an allocator that keeps a class's memory for the class (a thread's
// cached blocks, its current slab, slabs of one kind) touches new memory for
// every class, where one that gives an unused class's memory back to the
// others reuses it. With -t 2 a second thread frees the buffers (handed over
// through a ring, the way a garbage collector's sweeper thread frees what the
// program's thread allocated).
//
// Figure: allocator calls (mallocs + frees) per second. Peak RSS is the other
// figure: the live data is KEEP buffers, at most KEEP * MAX (17 MB by default).
// Options: -n BUFFERS (30000: ten sweeps), -k KEEP (150), --min (500),
// --max (111K), --step (37), -t 1|2.
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>
#include <sched.h>

static spsc_t g_ring;                   // -t 2: buffers to free, in allocation order
static _Atomic int g_done;

static void *freer(void *arg) {
  (void)arg;
  for (;;) {
    void *p = spsc_pop(&g_ring);
    if (p != NULL) {
      free(p);
      continue;
    }
    if (atomic_load_explicit(&g_done, memory_order_acquire)) {
      while ((p = spsc_pop(&g_ring)) != NULL) free(p);
      return NULL;
    }
    sched_yield();
  }
}

static void usage(void) {
  fprintf(stderr, "usage: drift [-n BUFFERS] [-k KEEP] [--min B] [--max B] [--step B] [-t 1|2]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "min", required_argument, NULL, 'a' }, { "max", required_argument, NULL, 'b' },
    { "step", required_argument, NULL, 'p' }, { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  uint64_t n = 30000;
  uint32_t keep = 150, threads = 1;
  size_t min = 500, max = 111 << 10, step = 37;
  int c;
  while ((c = getopt_long(argc, argv, "n:k:t:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': n = bench_parse_count("-n", optarg); break;
    case 'k': keep = (uint32_t)bench_parse_count("-k", optarg); break;
    case 't': threads = (uint32_t)bench_parse_count("-t", optarg); break;
    case 'a': min = bench_parse_size("--min", optarg); break;
    case 'b': max = bench_parse_size("--max", optarg); break;
    case 'p': step = bench_parse_size("--step", optarg); break;
    default: usage();
    }
  }
  if (optind != argc || keep < 1 || min < 1 || max < min || step < 1 || threads < 1 || threads > 2) usage();

  char **live = bench_xmalloc(keep * sizeof(char *));   // a ring of the last KEEP buffers
  memset(live, 0, keep * sizeof(char *));
  pthread_t th;
  if (threads == 2) {
    g_ring.mask = 1023;
    g_ring.buf = bench_xmalloc((g_ring.mask + 1) * sizeof(void *));
    if (pthread_create(&th, NULL, freer, NULL) != 0) return 3;
  }
  uint64_t calls = 0;
  size_t size = min;
  double t0 = bench_now();
  for (uint64_t i = 0; i < n; i++) {
    char **slot = &live[i % keep];
    if (*slot != NULL) {
      if (threads == 2) {
        while (!spsc_push(&g_ring, *slot)) sched_yield();
      } else {
        free(*slot);
      }
      calls++;
    }
    char *p = malloc(size);
    if (__builtin_expect(p == NULL, 0)) {
      fprintf(stderr, "malloc(%zu) failed\n", size);
      return 3;
    }
    memset(p, (int)(i & 255), size);
    *slot = p;
    calls++;
    size = size + step <= max ? size + step : min;
  }
  for (uint32_t k = 0; k < keep; k++) {
    if (live[k] == NULL) continue;
    if (threads == 2) {
      while (!spsc_push(&g_ring, live[k])) sched_yield();
    } else {
      free(live[k]);
    }
    calls++;
  }
  if (threads == 2) {
    atomic_store_explicit(&g_done, 1, memory_order_release);
    pthread_join(th, NULL);
  }
  double t1 = bench_now();
  char extra[160];
  snprintf(extra, sizeof extra, "buffers=%" PRIu64 " keep=%u min=%zu max=%zu step=%zu threads=%u", n, keep, min,
           max, step, threads);
  bench_result("drift", "calls", calls, t1 - t0, extra);
  free(live);
  return 0;
}
