// bursts — a thread that cycles through a few sizes in bursts: it takes N
// blocks of one size, writes their first bytes, frees them, then does the
// same with the next size, K sizes in turn, round after round (a server whose
// requests each need a batch of buffers of one of a few sizes, a codec's
// frames of a few shapes).
//
// The sizes are STEP, 2 STEP, ..., K STEP (less 100 bytes, inside a class).
// Between two bursts of one size come K - 1 bursts of the others: an
// allocator that judges a size left behind by what moved through it since
// gives the size's cached blocks back between its bursts, and takes them
// again at its next one.
//
// Figure: allocator calls (mallocs + frees) per second; peak RSS beside it.
// Options: -n ROUNDS (2000), -k K sizes (4), -b N blocks a burst (60),
// --step STEP (16K).
#include "bench_common.h"

#include <getopt.h>

static void usage(void) {
  fprintf(stderr, "usage: bursts [-n ROUNDS] [-k SIZES] [-b BLOCKS] [--step STEP]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "step", required_argument, NULL, 's' }, { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
  };
  uint64_t rounds = 2000, k = 4, n = 60;
  size_t step = 16 << 10;
  int c;
  while ((c = getopt_long(argc, argv, "n:k:b:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': rounds = bench_parse_count("-n", optarg); break;
    case 'k': k = bench_parse_count("-k", optarg); break;
    case 'b': n = bench_parse_count("-b", optarg); break;
    case 's': step = bench_parse_size("--step", optarg); break;
    default: usage();
    }
  }
  if (optind != argc || rounds < 1 || k < 1 || k > 64 || n < 1 || n > (1u << 20) || step <= 100) usage();

  void **slots = bench_xmalloc(n * sizeof(void *));
  uint64_t calls = 0;
  double t0 = bench_now();
  for (uint64_t r = 0; r < rounds; r++) {
    for (uint64_t s = 1; s <= k; s++) {
      size_t size = s * step - 100;
      for (uint64_t i = 0; i < n; i++) {
        char *p = malloc(size);
        if (__builtin_expect(p == NULL, 0)) {
          fprintf(stderr, "malloc(%zu) failed\n", size);
          exit(3);
        }
        p[0] = (char)i;
        slots[i] = p;
      }
      for (uint64_t i = 0; i < n; i++) free(slots[i]);
      calls += 2 * n;
    }
  }
  double t1 = bench_now();
  char extra[160];
  snprintf(extra, sizeof extra, "rounds=%" PRIu64 " sizes=%" PRIu64 " blocks=%" PRIu64 " step=%zu", rounds, k, n, step);
  bench_result("bursts", "calls", calls, t1 - t0, extra);
  free(slots);
  return 0;
}
