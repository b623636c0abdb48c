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
//
// --reuse also prints where the program's writes land: for every byte it
// writes, how many bytes it had written since it last wrote that byte's page
// (its reuse distance), in buckets. Most of the run's time is the memset of
// each buffer, and a page last written more than a last-level cache's worth
// of writes ago comes from memory: an allocator that hands out the memory
// freed last keeps the distances short. (The table of pages costs 4 MiB and
// its lookups time: read the peak RSS and the rate from a run without it.)
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>
#include <sched.h>

// --reuse: the last write of each page, in bytes written before it (an open
// hash table of page numbers; pages past its room are not counted).
#define REUSE_SLOTS (1u << 18)
#define REUSE_BUCKETS 8
static const char *const g_reuse_name[REUSE_BUCKETS] = {"<1M", "<4M", "<8M", "<16M", "<24M", "<32M", ">=32M", "new"};
static const uint64_t g_reuse_limit[REUSE_BUCKETS - 2] = {1u << 20, 4u << 20, 8u << 20, 16u << 20, 24u << 20, 32u << 20};
static uintptr_t *g_reuse_page;
static uint64_t *g_reuse_at;
static uint64_t g_reuse_clock, g_reuse_bytes[REUSE_BUCKETS], g_reuse_lost;

static uint64_t *reuse_slot(uintptr_t page) {
  uint32_t h = (uint32_t)((page * 0x9E3779B97F4A7C15ull) >> 46) & (REUSE_SLOTS - 1);
  for (uint32_t probes = 0; probes < REUSE_SLOTS; probes++, h = (h + 1) & (REUSE_SLOTS - 1)) {
    if (g_reuse_page[h] == page) return &g_reuse_at[h];
    if (g_reuse_page[h] == 0) {
      g_reuse_page[h] = page;
      g_reuse_at[h] = UINT64_MAX;   // never written
      return &g_reuse_at[h];
    }
  }
  return NULL;
}

static void reuse_note(const char *p, size_t size) {
  uintptr_t a = (uintptr_t)p, end = a + size;
  for (uintptr_t page = a >> 12; page <= (end - 1) >> 12; page++) {
    uintptr_t lo = page << 12 > a ? page << 12 : a, hi = (page + 1) << 12 < end ? (page + 1) << 12 : end;
    uint64_t *at = reuse_slot(page);
    if (at == NULL) {
      g_reuse_lost += hi - lo;
      continue;
    }
    unsigned b = REUSE_BUCKETS - 1;
    if (*at != UINT64_MAX) {
      uint64_t d = g_reuse_clock - *at;
      for (b = 0; b < REUSE_BUCKETS - 2 && d >= g_reuse_limit[b]; b++) {
      }
    }
    g_reuse_bytes[b] += hi - lo;
    *at = g_reuse_clock;
  }
  g_reuse_clock += size;
}

static void reuse_print(void) {
  double total = (double)g_reuse_clock;
  printf("drift: bytes written by reuse distance (bytes written since the page's last write):");
  for (unsigned b = 0; b < REUSE_BUCKETS; b++) printf(" %s %.1f%%", g_reuse_name[b], 100.0 * (double)g_reuse_bytes[b] / total);
  if (g_reuse_lost != 0) printf(" (not counted %.1f%%)", 100.0 * (double)g_reuse_lost / total);
  printf("\n");
}

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
  fprintf(stderr, "usage: drift [-n BUFFERS] [-k KEEP] [--min B] [--max B] [--step B] [-t 1|2] [--reuse]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "min", required_argument, NULL, 'a' }, { "max", required_argument, NULL, 'b' },
    { "step", required_argument, NULL, 'p' }, { "reuse", no_argument, NULL, 'r' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  uint64_t n = 30000;
  uint32_t keep = 150, threads = 1;
  size_t min = 500, max = 111 << 10, step = 37;
  int c, reuse = 0;
  while ((c = getopt_long(argc, argv, "n:k:t:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': n = bench_parse_count("-n", optarg); break;
    case 'k': keep = (uint32_t)bench_parse_count("-k", optarg); break;
    case 't': threads = (uint32_t)bench_parse_count("-t", optarg); break;
    case 'a': min = bench_parse_size("--min", optarg); break;
    case 'b': max = bench_parse_size("--max", optarg); break;
    case 'p': step = bench_parse_size("--step", optarg); break;
    case 'r': reuse = 1; break;
    default: usage();
    }
  }
  if (optind != argc || keep < 1 || min < 1 || max < min || step < 1 || threads < 1 || threads > 2) usage();

  char **live = bench_xmalloc(keep * sizeof(char *));   // a ring of the last KEEP buffers
  memset(live, 0, keep * sizeof(char *));
  if (reuse) {
    g_reuse_page = bench_xmalloc(REUSE_SLOTS * sizeof *g_reuse_page);
    g_reuse_at = bench_xmalloc(REUSE_SLOTS * sizeof *g_reuse_at);
    memset(g_reuse_page, 0, REUSE_SLOTS * sizeof *g_reuse_page);
  }
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
    if (reuse) reuse_note(p, size);
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
  if (reuse) reuse_print();
  bench_result("drift", "calls", calls, t1 - t0, extra);
  free(live);
  free(g_reuse_page);
  free(g_reuse_at);
  return 0;
}
