// large — random malloc/free of large blocks, 64 KiB to 8 MiB.
//
// Like ws8192 with few slots (W = 32): each operation draws a slot; a full slot
// is freed, an empty one gets malloc(size) and the program writes one byte in
// every 4 KiB page of the block (--touch ends: only the first and last byte).
// Touching every page is what a real program does with a large buffer, and it
// is where large-block allocators differ: one that unmaps on free and maps
// again on the next malloc pays a page fault and a page of zeroing per 4 KiB;
// one that keeps memory pays in RSS instead. Both show in the figures.
//
// Sizes are log-uniform in [MIN, MAX] (each doubling equally likely; mean
// ~1.7 MiB, so ~27 MiB live on average); --uniform draws them uniformly
// instead (mean 4 MiB, nearly all blocks above 1 MiB).
//
// Figure: allocator calls per second. Options: -n OPS (4000), -w SLOTS (32),
// --min (64K), --max (8M), --uniform, --touch pages|ends, -s SEED.
#include "bench_common.h"

#include <getopt.h>
#include <math.h>

static void usage(void) {
  fprintf(stderr, "usage: large [-n OPS] [-w SLOTS] [--min B] [--max B] [--uniform] "
                  "[--touch pages|ends] [-s SEED]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "min", required_argument, NULL, 'a' },  { "max", required_argument, NULL, 'b' },
    { "uniform", no_argument, NULL, 'u' },    { "touch", required_argument, NULL, 'T' },
    { "help", no_argument, NULL, 'h' },       { NULL, 0, NULL, 0 },
  };
  uint64_t ops = 4000, seed = 42;
  uint32_t nslots = 32;
  size_t min = 64 << 10, max = 8 << 20;
  int uniform = 0, touch_pages = 1;
  int c;
  while ((c = getopt_long(argc, argv, "n:w:s:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': ops = bench_parse_count("-n", optarg); break;
    case 'w': nslots = (uint32_t)bench_parse_count("-w", optarg); break;
    case 's': seed = bench_parse_count("-s", optarg); break;
    case 'a': min = bench_parse_size("--min", optarg); break;
    case 'b': max = bench_parse_size("--max", optarg); break;
    case 'u': uniform = 1; break;
    case 'T':
      if (strcmp(optarg, "pages") == 0) touch_pages = 1;
      else if (strcmp(optarg, "ends") == 0) touch_pages = 0;
      else usage();
      break;
    default: usage();
    }
  }
  if (optind != argc || nslots < 1 || min < 1 || max < min || max - min >= UINT32_MAX) usage();

  bench_rng_t rng = bench_rng(seed, 0);
  char **slots = calloc(nslots, sizeof(char *));
  if (slots == NULL) return 3;
  const double lmin = log((double)min), lspan = log((double)max) - log((double)min);
  uint64_t mallocs = 0, bytes = 0;
  double t0 = bench_now();
  for (uint64_t i = 0; i < ops; i++) {
    uint64_t r = bench_rand(&rng);
    uint32_t s = bench_below((uint32_t)(r >> 32), nslots);
    if (slots[s] != NULL) {
      free(slots[s]);
      slots[s] = NULL;
      continue;
    }
    size_t size;
    if (uniform) {
      size = min + bench_below((uint32_t)r, (uint32_t)(max - min + 1));
    } else {
      double u = (double)(uint32_t)r / 4294967296.0;
      size = (size_t)exp(lmin + u * lspan);
      if (size < min) size = min;
      if (size > max) size = max;
    }
    char *p = malloc(size);
    if (p == NULL) {
      fprintf(stderr, "malloc(%zu) failed\n", size);
      return 3;
    }
    if (touch_pages)
      for (size_t off = 0; off < size; off += 4096) p[off] = 1;
    p[0] = 1;
    p[size - 1] = 2;
    slots[s] = p;
    mallocs++;
    bytes += size;
  }
  double t1 = bench_now();
  char extra[160];
  snprintf(extra, sizeof extra, "mallocs=%" PRIu64 " frees=%" PRIu64 " slots=%u min=%zu max=%zu "
           "dist=%s touch=%s mean_kb=%" PRIu64, mallocs, ops - mallocs, nslots, min, max,
           uniform ? "uniform" : "log", touch_pages ? "pages" : "ends",
           mallocs ? bytes / mallocs / 1024 : 0);
  bench_result("large", "calls", ops, t1 - t0, extra);
  for (uint32_t s = 0; s < nslots; s++) free(slots[s]);
  free(slots);
  return 0;
}
