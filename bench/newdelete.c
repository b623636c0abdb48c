// newdelete — ws8192's local row through C++'s operator new and sized
// operator delete, the calls a C++ program compiles `new T` and `delete p` to.
//
// One thread owns WS slots (default 8192) and performs exactly N operations
// (default 20M): draw a slot uniformly; if it holds a block, `operator
// delete(p, size)` it (g++ emits the sized form since C++14); if it is empty,
// `operator new(size)` with size uniform in [MIN, MAX], write the first and
// the last byte, and keep it. Written in C under the Itanium-ABI names
// (_Znwm, _ZdlPvm) and linked with libstdc++, whose operators run when no
// preloaded library defines them (glibc's row: libstdc++'s new calls malloc).
//
// Options: -w WS, -n N, -s SEED, --min, --max (bytes, K/M suffixes).
#include "bench_common.h"

#include <getopt.h>

void *_Znwm(size_t size);                  // operator new(std::size_t)
void _ZdlPvm(void *p, size_t size);        // operator delete(void *, std::size_t)

static uint64_t g_ops = 20000000, g_seed = 42;
static uint32_t g_ws = 8192;
static size_t g_min = 16, g_max = 1024;

static void usage(void) {
  fprintf(stderr,
          "usage: newdelete [-w WS] [-n OPS] [-s SEED] [--min BYTES] [--max BYTES]\n"
          "  defaults: -w 8192 -n 20M -s 42 --min 16 --max 1024\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "ws", required_argument, NULL, 'w' },   { "ops", required_argument, NULL, 'n' },
    { "seed", required_argument, NULL, 's' }, { "min", required_argument, NULL, 'a' },
    { "max", required_argument, NULL, 'b' },  { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  int c;
  while ((c = getopt_long(argc, argv, "w:n:s:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'w': g_ws = (uint32_t)bench_parse_count("-w", optarg); break;
    case 'n': g_ops = bench_parse_count("-n", optarg); break;
    case 's': g_seed = bench_parse_count("-s", optarg); break;
    case 'a': g_min = bench_parse_size("--min", optarg); break;
    case 'b': g_max = bench_parse_size("--max", optarg); break;
    default: usage();
    }
  }
  if (optind != argc || g_ws < 1 || g_min < 1 || g_max < g_min || g_max - g_min >= UINT32_MAX) usage();

  char **slots = calloc(g_ws, sizeof(char *));
  uint32_t *sizes = calloc(g_ws, sizeof(uint32_t));
  if (slots == NULL || sizes == NULL) return 3;
  bench_rng_t rng = bench_rng(g_seed, 0);
  const uint32_t span = (uint32_t)(g_max - g_min + 1);
  uint64_t news = 0;
  double t0 = bench_now();
  for (uint64_t i = 0; i < g_ops; i++) {
    uint64_t r = bench_rand(&rng);
    uint32_t s = bench_below((uint32_t)(r >> 32), g_ws);
    char *p = slots[s];
    if (p != NULL) {
      _ZdlPvm(p, sizes[s]);
      slots[s] = NULL;
    } else {
      size_t size = g_min + bench_below((uint32_t)r, span);
      p = _Znwm(size);                     // throws std::bad_alloc on failure
      p[0] = 1;
      p[size - 1] = 2;
      slots[s] = p;
      sizes[s] = (uint32_t)size;
      news++;
    }
  }
  double t1 = bench_now();
  char extra[160];
  snprintf(extra, sizeof extra, "news=%" PRIu64 " deletes=%" PRIu64 " ws=%u min=%zu max=%zu", news,
           g_ops - news, g_ws, g_min, g_max);
  bench_result("newdelete", "ops", g_ops, t1 - t0, extra);
  for (uint32_t s = 0; s < g_ws; s++)
    if (slots[s] != NULL) _ZdlPvm(slots[s], sizes[s]);
  free(slots);
  free(sizes);
  return 0;
}
