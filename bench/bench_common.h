// bench_common.h — helpers shared by the hakmem benchmark programs.
//
// Every program calls plain malloc/free/realloc; the allocator under test is
// chosen from outside with LD_PRELOAD. This header gives them:
//   - a fast inline PRNG (splitmix64: 1 add, 2 xorshift-multiplies, no table),
//   - bounded random numbers without division (multiply-high),
//   - a monotonic clock, peak RSS (VmHWM, KiB; see bench_peak_rss_kb),
//   - size parsing with K/M/G suffixes,
//   - bench_escape(), which keeps the compiler from removing a malloc/free
//     pair whose pointer never escapes,
//   - bench_result(), which prints the one machine-readable line every program
//     ends with:
//       RESULT prog=NAME unit=UNIT ops=N secs=S ops_per_sec=X mops=Y peak_rss_kb=K
//              minflt=F nvcsw=V alloc=LIB
//     `alloc` names the malloc library mapped into the process (found in
//     /proc/self/maps), so a runner can check that LD_PRELOAD took effect.
//     `minflt` and `nvcsw` are the process's page faults and voluntary
//     context switches (getrusage, start-up included): what a many-core machine
//     pays in the kernel (the address space's locks, zeroing, TLB shootdowns;
//     threads that sleep on a lock) and two cores hide.
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

// ---- PRNG -----------------------------------------------------------------
typedef struct { uint64_t s; } bench_rng_t;

static inline uint64_t bench_rand(bench_rng_t *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A generator for stream `id` of `seed` (one per thread).
static inline bench_rng_t bench_rng(uint64_t seed, uint64_t id) {
  bench_rng_t r = { seed * 0x2545f4914f6cdd1dull + id * 0x9e3779b97f4a7c15ull + 1 };
  (void)bench_rand(&r);
  return r;
}

// Uniform in [0, n) from 32 random bits (n < 2^32), no division.
static inline uint32_t bench_below(uint32_t bits32, uint32_t n) {
  return (uint32_t)(((uint64_t)bits32 * n) >> 32);
}

// ---- time, memory -------------------------------------------------------------
static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// Peak RSS of this process in KiB: VmHWM from /proc/self/status, the high-water
// mark of this program's own address space. getrusage's ru_maxrss is the
// fallback only: Linux carries ru_maxrss across exec, so a program spawned by
// a large parent (python's subprocess uses vfork) reports the parent's peak.
static inline long bench_peak_rss_kb(void) {
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (f != NULL) {
    char line[256];
    while (fgets(line, sizeof line, f) != NULL)
      if (strncmp(line, "VmHWM:", 6) == 0) { kb = strtol(line + 6, NULL, 10); break; }
    fclose(f);
  }
  if (kb <= 0) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) kb = ru.ru_maxrss;
  }
  return kb;
}

// The compiler may delete malloc+free of a pointer that never escapes; this
// makes the pointer (and the memory behind it) observable at no cost.
static inline void bench_escape(void *p) {
  __asm__ volatile("" : : "r"(p) : "memory");
}

// ---- options ----------------------------------------------------------------------
// Numbers with an optional suffix. Sizes ("32K", "1M", "8MiB") use binary
// multiples; counts ("20M", "500k", "2e6") decimal ones. Exits on garbage.
static inline uint64_t bench_parse_num(const char *opt, const char *s, int binary) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  double mul = 1;
  if (end != s) {
    switch (*end) {
    case 'k': case 'K': mul = binary ? 1024.0 : 1e3; end++; break;
    case 'm': case 'M': mul = binary ? 1048576.0 : 1e6; end++; break;
    case 'g': case 'G': mul = binary ? 1073741824.0 : 1e9; end++; break;
    default: break;
    }
    if (*end == 'i') end++;                            // KiB
    if (*end == 'B') end++;
  }
  if (end == s || *end != '\0' || errno != 0 || v < 0 || v * mul > 1.8e19) {
    fprintf(stderr, "bad value for %s: '%s'\n", opt, s);
    exit(2);
  }
  return (uint64_t)(v * mul + 0.5);
}
static inline uint64_t bench_parse_size(const char *opt, const char *s) {
  return bench_parse_num(opt, s, 1);
}
static inline uint64_t bench_parse_count(const char *opt, const char *s) {
  return bench_parse_num(opt, s, 0);
}

// ---- reporting -----------------------------------------------------------------------
// Which malloc library is mapped: the first of the known names found in
// /proc/self/maps, "glibc" when none is.
static inline void bench_alloc_name(char *out, size_t cap) {
  static const char *const known[] = { "libhakmem", "libjemalloc", "libtcmalloc",
                                       "libmimalloc", NULL };
  snprintf(out, cap, "glibc");
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL) return;
  char line[4096];
  while (fgets(line, sizeof line, f) != NULL) {
    char *slash = strrchr(line, '/');
    if (slash == NULL) continue;
    for (int i = 0; known[i] != NULL; i++) {
      if (strncmp(slash + 1, known[i], strlen(known[i])) == 0) {
        char *nl = strchr(slash + 1, '\n');
        if (nl) *nl = '\0';
        snprintf(out, cap, "%s", slash + 1);
        fclose(f);
        return;
      }
    }
  }
  fclose(f);
}

// The final line of every program. `extra` is appended as is (may be "").
static inline void bench_result(const char *prog, const char *unit, uint64_t ops,
                                double secs, const char *extra) {
  char alloc[256];
  bench_alloc_name(alloc, sizeof alloc);
  double rate = secs > 0 ? (double)ops / secs : 0.0;
  long rss = bench_peak_rss_kb();
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) memset(&ru, 0, sizeof ru);
  printf("%s: %" PRIu64 " %s in %.3f s = %.3f M%s/s, peak RSS %.1f MiB (%s)\n",
         prog, ops, unit, secs, rate / 1e6, unit, (double)rss / 1024.0, alloc);
  printf("RESULT prog=%s unit=%s ops=%" PRIu64 " secs=%.6f ops_per_sec=%.0f mops=%.4f "
         "peak_rss_kb=%ld minflt=%ld nvcsw=%ld alloc=%s%s%s\n",
         prog, unit, ops, secs, rate, rate / 1e6, rss, ru.ru_minflt, ru.ru_nvcsw, alloc,
         (extra && *extra) ? " " : "", extra ? extra : "");
  fflush(stdout);
}

static inline void *bench_xmalloc(size_t n) {
  void *p = malloc(n);
  if (p == NULL && n != 0) {
    fprintf(stderr, "malloc(%zu) failed\n", n);
    exit(3);
  }
  return p;
}

// A single-producer/single-consumer ring of pointers (ws8192 -x, ring): the
// producer writes tail, the consumer head, each on its own line; each side
// caches its last view of the other's index. mask + 1 slots, a power of two.
typedef struct {
  _Alignas(64) _Atomic uint64_t head;     // next index to pop (consumer writes)
  uint64_t tail_seen;                     // consumer's last view of tail
  _Alignas(64) _Atomic uint64_t tail;     // next index to push (producer writes)
  uint64_t head_seen;                     // producer's last view of head
  _Alignas(64) void **buf;
  uint64_t mask;
} spsc_t;

// 0 when the ring is full. release: the consumer that acquires tail sees the slot.
static inline int spsc_push(spsc_t *q, void *p) {
  uint64_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
  if (t - q->head_seen > q->mask) {
    q->head_seen = atomic_load_explicit(&q->head, memory_order_acquire);
    if (t - q->head_seen > q->mask) return 0;
  }
  q->buf[t & q->mask] = p;
  atomic_store_explicit(&q->tail, t + 1, memory_order_release);
  return 1;
}

// NULL when the ring is empty.
static inline void *spsc_pop(spsc_t *q) {
  uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
  if (h == q->tail_seen) {
    q->tail_seen = atomic_load_explicit(&q->tail, memory_order_acquire);
    if (h == q->tail_seen) return NULL;
  }
  void *p = q->buf[h & q->mask];
  atomic_store_explicit(&q->head, h + 1, memory_order_release);
  return p;
}

#endif
