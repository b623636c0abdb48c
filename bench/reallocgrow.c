// reallocgrow — many buffers grown by realloc, the way string builders and
// growable arrays grow.
//
// B buffers (1000) start at malloc(16). One step picks a buffer at random and
// grows it with realloc to old + 1 + rand(old / 2 + 16) bytes (about 1.25x on
// average, so each buffer takes ~40 reallocs from 16 B to 64 KiB), then writes
// its first and last byte. A buffer that would pass MAX (64 KiB) is freed and
// restarted with malloc(16). Picking buffers at random interleaves their
// growth, so the block after a buffer is usually taken and in-place growth
// depends on the allocator's size classes and on its realloc, not on luck.
//
// Figure: allocator calls (reallocs plus the restart mallocs and frees) per
// second. Live data is about B * MAX / 2 (32 MiB by default).
// Options: -n STEPS (2M), -b BUFFERS (1000), --max BYTES (64K), -s SEED.
#include "bench_common.h"

#include <getopt.h>

typedef struct { char *p; size_t size; } buf_t;

static void usage(void) {
  fprintf(stderr, "usage: reallocgrow [-n STEPS] [-b BUFFERS] [--max BYTES] [-s SEED]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "max", required_argument, NULL, 'b' + 256 }, { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  uint64_t steps = 2000000, seed = 42;
  uint32_t nbuf = 1000;
  size_t max = 64 << 10;
  const size_t start = 16;
  int c;
  while ((c = getopt_long(argc, argv, "n:b:s:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': steps = bench_parse_count("-n", optarg); break;
    case 'b': nbuf = (uint32_t)bench_parse_count("-b", optarg); break;
    case 's': seed = bench_parse_count("-s", optarg); break;
    case 'b' + 256: max = bench_parse_size("--max", optarg); break;
    default: usage();
    }
  }
  if (optind != argc || nbuf < 1 || max < 2 * start || max > (1ull << 32)) usage();

  bench_rng_t rng = bench_rng(seed, 0);
  buf_t *bufs = bench_xmalloc(nbuf * sizeof(buf_t));
  for (uint32_t i = 0; i < nbuf; i++) {        // not timed
    bufs[i].p = bench_xmalloc(start);
    bufs[i].size = start;
    bufs[i].p[0] = 1;
    bufs[i].p[start - 1] = 2;
  }
  uint64_t calls = 0, reallocs = 0, restarts = 0;
  double t0 = bench_now();
  for (uint64_t s = 0; s < steps; s++) {
    uint64_t r = bench_rand(&rng);
    buf_t *b = &bufs[bench_below((uint32_t)(r >> 32), nbuf)];
    size_t size = b->size + 1 + bench_below((uint32_t)r, (uint32_t)(b->size / 2 + 16));
    char *p;
    if (size > max) {
      free(b->p);
      size = start;
      p = malloc(size);
      calls += 2;
      restarts++;
    } else {
      p = realloc(b->p, size);
      calls++;
      reallocs++;
    }
    if (__builtin_expect(p == NULL, 0)) {
      fprintf(stderr, "realloc(%zu) failed\n", size);
      return 3;
    }
    p[0] = 1;
    p[size - 1] = 2;
    b->p = p;
    b->size = size;
  }
  double t1 = bench_now();
  char extra[160];
  snprintf(extra, sizeof extra, "steps=%" PRIu64 " reallocs=%" PRIu64 " restarts=%" PRIu64
           " buffers=%u max=%zu", steps, reallocs, restarts, nbuf, max);
  bench_result("reallocgrow", "calls", calls, t1 - t0, extra);
  for (uint32_t i = 0; i < nbuf; i++) free(bufs[i].p);
  free(bufs);
  return 0;
}
