// rounds — a program that works in rounds: it allocates a batch of blocks,
// writes them, frees them all, and starts again (a batch job per input file,
// a request's arena of buffers, a compiler's pass).
//
// Each round allocates MB megabytes (64) of blocks of size A (20 KB) and
// writes every byte, then frees them all; with --then B it then does the same
// with blocks of size B, so the round's second half needs memory of another
// size than the first just freed (a parse into small nodes, then a render
// into big buffers). An allocator that returns a round's freed memory to the
// system at once faults it in again in the next round; one that keeps it
// for blocks of any size reuses it in both halves.
//
// With --shuffle each half frees its blocks in a shuffled order (one fixed
// permutation, drawn before the timed loop), as a program tears down a big
// structure (a list, a hash table, a tree) whose nodes it allocated in
// another order: each slab or page is left with its free list in random
// order, which the next round's mallocs walk.
//
// Figure: allocator calls (mallocs + frees) per second. Peak RSS is the other
// figure: one half's blocks are live at a time, MB megabytes. The RESULT line
// adds the time spent allocating and writing (alloc_secs) and freeing
// (free_secs), summed over the rounds: which phase a gap lies in (a shuffled
// teardown's frees, a first round's page faults).
// Options: -n ROUNDS (10), --mb MB (64), --size A (20K), --then B (none),
// --shuffle.
#include "bench_common.h"

#include <getopt.h>

static void usage(void) {
  fprintf(stderr, "usage: rounds [-n ROUNDS] [--mb MB] [--size A] [--then B] [--shuffle]\n");
  exit(2);
}

// A permutation of 0 .. n-1 (Fisher-Yates), or NULL when not shuffling.
static uint32_t *free_order(size_t n, int shuffle) {
  if (!shuffle) return NULL;
  uint32_t *perm = bench_xmalloc(n * sizeof *perm);
  for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
  bench_rng_t rng = bench_rng(42, 0);
  for (size_t i = n - 1; i > 0; i--) {
    uint32_t j = bench_below((uint32_t)bench_rand(&rng), (uint32_t)(i + 1));
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return perm;
}

static double g_alloc_secs, g_free_secs;   // the two phases, summed over the rounds

// One half of a round: MB of blocks of `size`, written, then freed (in the
// order `perm` gives, when not NULL).
static uint64_t half_round(void **slots, size_t n, size_t size, const uint32_t *perm) {
  double t0 = bench_now();
  for (size_t i = 0; i < n; i++) {
    char *p = malloc(size);
    if (__builtin_expect(p == NULL, 0)) {
      fprintf(stderr, "malloc(%zu) failed\n", size);
      exit(3);
    }
    memset(p, (int)(i & 255), size);
    slots[i] = p;
  }
  double t1 = bench_now();
  if (perm != NULL) {
    for (size_t i = 0; i < n; i++) free(slots[perm[i]]);
  } else {
    for (size_t i = 0; i < n; i++) free(slots[i]);
  }
  g_alloc_secs += t1 - t0;
  g_free_secs += bench_now() - t1;
  return 2 * (uint64_t)n;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "mb", required_argument, NULL, 'm' }, { "size", required_argument, NULL, 'a' },
    { "then", required_argument, NULL, 'b' }, { "shuffle", no_argument, NULL, 's' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  uint64_t rounds = 10, mb = 64;
  size_t a = 20 << 10, b = 0;
  int c, shuffle = 0;
  while ((c = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n': rounds = bench_parse_count("-n", optarg); break;
    case 'm': mb = bench_parse_count("--mb", optarg); break;
    case 'a': a = bench_parse_size("--size", optarg); break;
    case 'b': b = bench_parse_size("--then", optarg); break;
    case 's': shuffle = 1; break;
    default: usage();
    }
  }
  if (optind != argc || rounds < 1 || mb < 1 || a < 1 || mb > (1u << 20)) usage();

  size_t na = (mb << 20) / a, nb = b != 0 ? (mb << 20) / b : 0;
  if (na < 1 || (b != 0 && nb < 1)) usage();
  if (na > UINT32_MAX || nb > UINT32_MAX) usage();
  void **slots = bench_xmalloc((na > nb ? na : nb) * sizeof(void *));
  uint32_t *perm_a = free_order(na, shuffle), *perm_b = b != 0 ? free_order(nb, shuffle) : NULL;
  uint64_t calls = 0;
  double t0 = bench_now();
  for (uint64_t r = 0; r < rounds; r++) {
    calls += half_round(slots, na, a, perm_a);
    if (b != 0) calls += half_round(slots, nb, b, perm_b);
  }
  double t1 = bench_now();
  char extra[224];
  snprintf(extra, sizeof extra,
           "rounds=%" PRIu64 " mb=%" PRIu64 " size=%zu then=%zu shuffle=%d alloc_secs=%.6f free_secs=%.6f", rounds,
           mb, a, b, shuffle, g_alloc_secs, g_free_secs);
  bench_result("rounds", "calls", calls, t1 - t0, extra);
  free(perm_a);
  free(perm_b);
  free(slots);
  return 0;
}
